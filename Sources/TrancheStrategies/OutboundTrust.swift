import Foundation
import NIOSSL
import Synchronization

/// The certificate authorities outbound https calls (the `http` strategy and
/// webhooks) trust: the system's roots, and optionally extra CA certificates
/// (`--http-ca-file`) for internal APIs whose certificates a private CA
/// signs. Verification is full either way: the chain up to a trusted root,
/// and the URL's host name in the certificate.
///
/// Part of ``OutboundPolicy``, so both callers trust the same authorities.
public struct OutboundTrust: Sendable {
    /// The TLS settings built from these roots once (loading them is
    /// costly); nil for the system's roots alone.
    let extra: Extra?

    /// The system's trust roots alone. The default.
    public static let system = OutboundTrust(extra: nil)

    private init(extra: Extra?) { self.extra = extra }

    /// The system's roots and the CA certificates in the PEM file at `path`.
    /// Throws ``OutboundTrustError`` naming the file when it cannot be read
    /// or holds no certificate.
    public init(caFile path: String) throws(OutboundTrustError) {
        let bytes: Data
        do {
            bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw OutboundTrustError(description: "cannot read the CA file \(path)")
        }
        try self.init(pem: Array(bytes), source: path)
    }

    /// The system's roots and the CA certificates in `pem` (one or more
    /// `BEGIN CERTIFICATE` blocks). `source` names them in errors.
    public init(pem: [UInt8], source: String) throws(OutboundTrustError) {
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(pem)
        } catch {
            throw OutboundTrustError(description: "\(source) is no PEM file of CA certificates")
        }
        guard !certificates.isEmpty else {
            throw OutboundTrustError(description: "\(source) holds no PEM certificate")
        }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.additionalTrustRoots = [.certificates(certificates)]
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw OutboundTrustError(description: "the certificates of \(source) cannot be trusted: \(error)")
        }
        self.init(extra: Extra(context: context, certificates: certificates.count))
    }

    /// CA certificates trusted besides the system's roots.
    public var additionalCertificates: Int { extra?.certificates ?? 0 }

    /// Tells connections made under one trust from another's in the pool:
    /// 0 for the system's roots.
    var id: Int { extra?.id ?? 0 }

    /// The TLS settings for a connection under this trust.
    func context() throws -> NIOSSLContext {
        if let extra { return extra.context }
        return try Self.systemContext.get()
    }

    /// The system's roots, full verification: made on the first https call.
    static let systemContext = Result { try NIOSSLContext(configuration: .makeClientConfiguration()) }

    final class Extra: Sendable {
        let context: NIOSSLContext
        let certificates: Int
        let id = Extra.ids.add(1, ordering: .relaxed).newValue

        init(context: NIOSSLContext, certificates: Int) {
            self.context = context
            self.certificates = certificates
        }

        static let ids = Atomic<Int>(0)
    }
}

/// CA certificates that could not be loaded; `description` names the file.
public struct OutboundTrustError: Error, Sendable, CustomStringConvertible {
    public var description: String
}
