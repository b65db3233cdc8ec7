import Foundation
import NIOCore
import NIOSSL
import Synchronization
import Testing
import TrancheEngine
import TrancheTestSupport

@testable import TrancheStrategies

/// A throwaway certificate authority and server certificates, made with the
/// `openssl` command in a test's temporary directory.
struct TestPKI {
    var directory: URL

    /// A file of the directory.
    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// Runs `openssl` with `arguments` in the directory; throws when it fails.
    func openssl(_ arguments: [String]) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let ended = Flag()
        process.terminationHandler = { _ in ended.fire() }
        try process.run()
        try await ended.wait(for: "openssl \(arguments.first ?? "")")
        guard process.terminationStatus == 0 else {
            throw OpenSSLFailed(arguments: arguments)
        }
    }

    /// A self-signed CA: `NAME.pem` and `NAME.key`.
    func makeCA(_ name: String) async throws {
        try await openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "\(name).key", "-out", "\(name).pem", "-days", "2", "-subj", "/CN=Tranche test \(name)",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
    }

    /// A server certificate `NAME.pem` (and its key `NAME.key`) for the
    /// subject alternative names `names` (`DNS:…`, `IP:…`), signed by `ca`.
    func makeServer(_ name: String, names: String, ca: String) async throws {
        try await openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "\(name).key", "-out", "\(name).pem", "-days", "2", "-subj", "/CN=\(name)",
            "-CA", "\(ca).pem", "-CAkey", "\(ca).key", "-addext", "subjectAltName=\(names)",
            "-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth",
        ])
    }

    /// TLS settings for a server presenting `name`'s certificate; every
    /// client hello's server name (SNI) is passed to `hello`.
    func serverContext(_ name: String, hello: @escaping @Sendable (String?) -> Void) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(path("\(name).pem")).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: path("\(name).key"), format: .pem)))
        configuration.sslContextCallback = { values, promise in
            hello(values.serverHostname)
            promise.succeed(.noChanges)
        }
        return try NIOSSLContext(configuration: configuration)
    }
}

/// An https server on 127.0.0.1 answering 200 "ok", that counts the
/// connections it accepted and the server names clients asked for.
final class LoopbackHTTPSServer: Sendable {
    final class Record: Sendable {
        let state = Mutex<(accepted: Int, serverNames: [String?])>((0, []))
    }

    let record = Record()
    let server: LoopbackHTTPServer

    /// Connections accepted.
    var accepted: Int { record.state.withLock { $0.accepted } }
    /// The server names (SNI) clients asked for, in order.
    var serverNames: [String?] { record.state.withLock { $0.serverNames } }

    init(pki: TestPKI, certificate: String) throws {
        let record = self.record
        let context = try pki.serverContext(certificate) { name in
            record.state.withLock { $0.serverNames.append(name) }
        }
        server = LoopbackHTTPServer(
            prepare: { channel in
                record.state.withLock { $0.accepted += 1 }
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
            },
            respond: { _, _ in .init(status: 200, body: "ok") })
    }
}

/// `openssl` exited with a failure.
struct OpenSSLFailed: Error, CustomStringConvertible {
    var arguments: [String]
    var description: String { "openssl \(arguments.joined(separator: " ")) failed" }
}

@Suite("outbound HTTPS")
struct OutboundTLSTests {
    static let host = "api.internal.test"

    /// Runs `body` with a PKI holding the CA `ca` (trusted by the tests'
    /// policy), `other-ca`, and the server certificates `server` (for
    /// ``host`` and 127.0.0.1, by `ca`), `foreign` (for ``host``, by
    /// `other-ca`) and `elsewhere` (for another name, by `ca`).
    func withPKI<T>(_ body: (TestPKI) async throws -> T) async throws -> T {
        try await withTemporaryDirectory("tranche-tls") { directory in
            let pki = TestPKI(directory: directory)
            try await pki.makeCA("ca")
            try await pki.makeCA("other-ca")
            try await pki.makeServer("server", names: "DNS:\(Self.host),IP:127.0.0.1", ca: "ca")
            try await pki.makeServer("foreign", names: "DNS:\(Self.host)", ca: "other-ca")
            try await pki.makeServer("elsewhere", names: "DNS:elsewhere.test", ca: "ca")
            return try await body(pki)
        }
    }

    /// Calls ``host`` (as 127.0.0.1) and 127.0.0.1, trusting `pki`'s `ca`.
    func policy(_ pki: TestPKI, trusting: Bool = true) throws -> OutboundPolicy {
        var policy = OutboundPolicy(
            allowing: [.init(host: Self.host), .init(host: "127.0.0.1")],
            resolver: .fixed([Self.host: [ip("127.0.0.1")]]))
        if trusting { policy.trust = try OutboundTrust(caFile: pki.path("ca.pem")) }
        return policy
    }

    func get(_ url: String, policy: OutboundPolicy) async throws -> OutboundResponse {
        try await withDeadline("GET \(url)") {
            try await OutboundHTTPClient.execute(
                OutboundRequest(url: url), policy: policy, maxRedirects: 0, maxBodyBytes: 100)
        }
    }

    /// One item of an `http` batch calling `url` under `policy`: its error, nil when it succeeded.
    func itemError(_ url: String, policy: OutboundPolicy) async throws -> ItemError? {
        let strategy = AnyBatchStrategy(HTTPStrategy(configuration: .init(outbound: policy)))
        let context = try strategy.prepare(
            context: JSONText(encoding: ["url": .string(url), "method": "GET"] as JSONValue))
        let bound = try strategy.bind(context: context)
        let input = ItemInput(
            batchID: BatchID("01234567-89ab-7def-8123-456789abcdef")!, seq: 1, payload: JSONText(unchecked: "{}"),
            attempt: 1)
        let result = try await withDeadline("the item calling \(url)") { await bound.process(input) }
        if case .failure(let error) = result { return error }
        return nil
    }

    /// The client's error for a GET of `url`; nil when it succeeded.
    func clientError(_ url: String, policy: OutboundPolicy, deadline: NIODeadline? = nil) async throws -> (any Error)? {
        try await withDeadline("GET \(url)") { () async -> (any Error)? in
            do {
                _ = try await OutboundHTTPClient.execute(
                    OutboundRequest(url: url), policy: policy, deadline: deadline, maxRedirects: 0, maxBodyBytes: 100)
                return nil
            } catch {
                return error
            }
        }
    }

    /// A certificate refused: the client's error and the item's.
    func expectTLSFailure(_ url: String, policy: OutboundPolicy) async throws {
        let error = try await clientError(url, policy: policy)
        #expect(
            (error as? OutboundTransportError) == OutboundTransportError("TLS failed"), "\(String(describing: error))")
        let itemError = try #require(try await itemError(url, policy: policy))
        #expect(itemError.category == .retryable)
        #expect(itemError.code == "connection_error")
        #expect(itemError.message == "the request failed: TLS failed")
    }

    @Test(
        "https to a name resolved to 127.0.0.1: SNI and Host are the name, a private CA is trusted, the connection kept alive"
    )
    func privateCA() async throws {
        try await withPKI { pki in
            let https = try LoopbackHTTPSServer(pki: pki, certificate: "server")
            let policy = try policy(pki)
            try await https.server.withRunning { port in
                let url = "https://\(Self.host):\(port)/hello"
                for _ in 0..<2 {
                    let response = try await get(url, policy: policy)
                    #expect(response.status == .ok)
                    #expect(String(buffer: response.body) == "ok")
                }
                #expect(
                    https.server.requests.map(\.headers["host"]) == Array(repeating: "\(Self.host):\(port)", count: 2))
                #expect(https.serverNames == [Self.host])
                // Both requests went over one connection, pooled under the CA file's trust.
                #expect(https.accepted == 1)
                let key = ConnectionPool.Key(
                    address: ip("127.0.0.1"), port: port, tls: true, serverName: Self.host, trust: policy.trust.id)
                #expect(OutboundHTTPClient.connections.state.withLock { $0.idle[key]?.count ?? 0 } == 1)
                #expect(try await itemError(url, policy: policy) == nil)
            }
        }
    }

    @Test("https to an IP literal sends no SNI and checks the certificate's IP address")
    func ipLiteral() async throws {
        try await withPKI { pki in
            let https = try LoopbackHTTPSServer(pki: pki, certificate: "server")
            try await https.server.withRunning { port in
                let response = try await get("https://127.0.0.1:\(port)/", policy: try policy(pki))
                #expect(response.status == .ok)
                #expect(https.serverNames == [nil])
                #expect(https.server.requests.first?.headers["host"] == "127.0.0.1:\(port)")
            }
        }
    }

    @Test("a certificate from a CA not trusted fails the item as a retryable TLS failure, also without the CA file")
    func untrustedCA() async throws {
        try await withPKI { pki in
            let foreign = try LoopbackHTTPSServer(pki: pki, certificate: "foreign")
            try await foreign.server.withRunning { port in
                try await expectTLSFailure("https://\(Self.host):\(port)/", policy: try policy(pki))
            }
            // The system's roots alone do not trust the private CA either.
            let trusted = try LoopbackHTTPSServer(pki: pki, certificate: "server")
            try await trusted.server.withRunning { port in
                try await expectTLSFailure("https://\(Self.host):\(port)/", policy: try policy(pki, trusting: false))
                #expect(trusted.server.requests.isEmpty)
            }
        }
    }

    @Test("a certificate for another name fails the item as a retryable TLS failure")
    func otherName() async throws {
        try await withPKI { pki in
            let https = try LoopbackHTTPSServer(pki: pki, certificate: "elsewhere")
            try await https.server.withRunning { port in
                try await expectTLSFailure("https://\(Self.host):\(port)/", policy: try policy(pki))
                #expect(https.server.requests.isEmpty)
            }
        }
    }

    @Test("a server that never answers the TLS handshake fails at the request's deadline, its connection not pooled")
    func silentHandshake() async throws {
        try await withPKI { pki in
            let server = LoopbackHTTPServer(
                prepare: { channel in try channel.pipeline.syncOperations.addHandler(Swallow()) },
                respond: { _, _ in .init(status: 200) })
            let policy = try policy(pki)
            try await server.withRunning { port in
                let error = try await clientError(
                    "https://\(Self.host):\(port)/", policy: policy, deadline: .now() + .milliseconds(300))
                #expect((error as? OutboundTransportError) == .deadline, "\(String(describing: error))")
                let key = ConnectionPool.Key(
                    address: ip("127.0.0.1"), port: port, tls: true, serverName: Self.host,
                    trust: policy.trust.id)
                #expect(OutboundHTTPClient.connections.state.withLock { $0.idle[key]?.count ?? 0 } == 0)
            }
        }
    }

    /// Reads everything and answers nothing: a server stuck before TLS.
    final class Swallow: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    }

    @Test("a CA file that cannot be read or holds no certificate is refused with its name")
    func invalidCAFile() async throws {
        try await withTemporaryDirectory("tranche-tls") { directory in
            let missing = directory.appendingPathComponent("missing.pem")
            let garbage = directory.appendingPathComponent("garbage.pem")
            try Data("not a certificate\n".utf8).write(to: garbage)
            let broken = directory.appendingPathComponent("broken.pem")
            try Data("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".utf8).write(to: broken)
            for file in [missing, garbage, broken] {
                let error = #expect(throws: OutboundTrustError.self) { try OutboundTrust(caFile: file.path) }
                #expect(error?.description.contains(file.path) == true, "\(String(describing: error))")
            }
        }
    }
}
