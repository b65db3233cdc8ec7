import Crypto
public import Foundation
public import Hummingbird
import Synchronization
public import TrancheStore

/// The request context: who is calling.
public struct TrancheRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The caller's tenant, set by the key check.
    public var tenant: String = ""

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }

    /// Bodies are read in bounded pieces by the handlers; this caps the rest.
    public var maxUploadSize: Int { 32 << 20 }
}

/// API keys: `tr_<id>_<secret>`. The store keeps the id, the tenant and the
/// SHA-256 of the whole key; the key itself is shown once.
public enum APIKeys {
    /// Makes a new key for `tenant`: the record to store and the key to show once.
    public static func make(tenant: String, at now: Date = Date()) -> (record: APIKeyRecord, key: String) {
        let id = randomHex(bytes: 4)
        let key = "tr_\(id)_\(randomHex(bytes: 24))"
        return (APIKeyRecord(id: id, tenant: tenant, hash: hash(key), createdAt: now, revokedAt: nil), key)
    }

    static func randomHex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    static func hash(_ key: String) -> String {
        SHA256.hash(data: Data(key.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The tenant of a presented key, or nil. The hash comparison takes the
    /// same time whatever the key.
    static func tenant(for key: String, store: any ServerStore) async throws -> String? {
        let parts = key.split(separator: "_")
        guard parts.count == 3, parts[0] == "tr", let record = try await store.apiKey(id: String(parts[1])),
            record.revokedAt == nil
        else { return nil }
        let presented = Array(hash(key).utf8)
        let stored = Array(record.hash.utf8)
        guard presented.count == stored.count else { return nil }
        var difference: UInt8 = 0
        for index in presented.indices { difference |= presented[index] ^ stored[index] }
        return difference == 0 ? record.tenant : nil
    }
}

/// Checks `Authorization: Bearer KEY` and sets the tenant. With `open` (no
/// keys exist, loopback only) every caller is the `local` tenant.
struct APIKeyMiddleware: RouterMiddleware {
    typealias Context = TrancheRequestContext
    let store: any ServerStore
    let open: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var context = context
        if open {
            context.tenant = "local"
            return try await next(request, context)
        }
        let key: String
        if let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") {
            key = String(header.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
        } else if request.method == .get, let token = request.uri.queryParameters.get("access_token") {
            // Browsers cannot set headers on EventSource or download links.
            key = String(token)
        } else {
            throw Problem(.unauthorized, "send an API key as 'Authorization: Bearer KEY'")
        }
        guard let tenant = try await APIKeys.tenant(for: key, store: store) else {
            throw Problem(.unauthorized, "the API key is not valid")
        }
        context.tenant = tenant
        return try await next(request, context)
    }
}

/// Answers 503 at once, instead of queueing, when too many requests are in flight.
struct BackpressureMiddleware<Context: RequestContext>: RouterMiddleware {
    let gate: RequestGate

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard gate.enter() else {
            throw Problem(.serviceUnavailable, "the server is saturated; retry shortly", retryAfter: 1)
        }
        defer { gate.leave() }
        return try await next(request, context)
    }
}

/// Counts requests in flight, for backpressure.
final class RequestGate: Sendable {
    let limit: Int
    private let count = Mutex(0)

    init(limit: Int) { self.limit = limit }

    func enter() -> Bool {
        count.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func leave() { count.withLock { $0 -= 1 } }
}
