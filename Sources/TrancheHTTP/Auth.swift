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
    /// Whether the caller may read server-wide figures (`/v1/nodes`): an
    /// admin key, or anyone in open mode.
    public var admin: Bool = false
    /// The id of the key presented; empty in open mode and for a stream token.
    var keyID: String = ""

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }

    /// Bodies are read in bounded pieces by the handlers; this caps the rest.
    public var maxUploadSize: Int { 32 << 20 }
}

/// API keys: `tr_<id>_<secret>`. The store keeps the id, the tenant and the
/// SHA-256 of the whole key; the key itself is shown once.
public enum APIKeys {
    /// Makes a new key for `tenant` (an `admin` one may also read `/metrics`
    /// and `/v1/nodes`): the record to store and the key to show once.
    public static func make(tenant: String, admin: Bool = false, at now: Date = Date()) -> (
        record: APIKeyRecord, key: String
    ) {
        let id = randomHex(bytes: 4)
        let key = "tr_\(id)_\(randomHex(bytes: 24))"
        return (
            APIKeyRecord(id: id, tenant: tenant, hash: hash(key), createdAt: now, revokedAt: nil, admin: admin), key
        )
    }

    static func randomHex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    static func hash(_ key: String) -> String {
        SHA256.hash(data: Data(key.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The stored record of a presented key, or nil when it is unknown or
    /// revoked. The hash comparison takes the same time whatever the key.
    static func record(for key: String, store: any ServerStore) async throws -> APIKeyRecord? {
        let parts = key.split(separator: "_")
        guard parts.count == 3, parts[0] == "tr", let record = try await store.apiKey(id: String(parts[1])),
            record.revokedAt == nil
        else { return nil }
        let presented = Array(hash(key).utf8)
        let stored = Array(record.hash.utf8)
        guard presented.count == stored.count else { return nil }
        var difference: UInt8 = 0
        for index in presented.indices { difference |= presented[index] ^ stored[index] }
        return difference == 0 ? record : nil
    }
}

/// Whether the server is open (no API keys): decided at start, and ended
/// for good once a key exists. The key store is read at most once a second,
/// and at once when a request presents a key, so a key created by another
/// process (the CLI, another node) takes effect without a restart.
final class OpenMode: Sendable {
    let store: any ServerStore
    private let state: Mutex<(open: Bool, checked: ContinuousClock.Instant)>

    init(store: any ServerStore, open: Bool) {
        self.store = store
        self.state = Mutex((open, .now))
    }

    /// True while no API key exists; `presentedKey` forces a fresh look.
    func isOpen(presentedKey: Bool = false) async throws -> Bool {
        let (open, checked) = state.withLock { ($0.open, $0.checked) }
        guard open else { return false }
        guard presentedKey || checked.duration(to: .now) >= .seconds(1) else { return true }
        let keys = try await store.apiKeys().contains { $0.revokedAt == nil }
        state.withLock { state in
            state.checked = .now
            if keys { state.open = false }
        }
        return !keys
    }
}

/// Checks `Authorization: Bearer KEY` and sets the tenant. In open mode (no
/// keys exist, loopback only) every caller is the `local` tenant. Keys are
/// never read from a query string: a browser's `EventSource` presents a
/// stream token (`?stream_token=`, from `POST /v1/stream-tokens`), which
/// only the event-stream routes accept.
struct APIKeyMiddleware: RouterMiddleware {
    typealias Context = TrancheRequestContext
    let store: any ServerStore
    let openMode: OpenMode
    let streamTokens: StreamTokens

    /// Query parameters that would carry a key: refused, whatever their value.
    static let keyParameters: Set<String> = ["access_token", "api_key", "apikey", "key", "token"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var context = context
        (context.tenant, context.admin, context.keyID) = try await authenticate(request)
        return try await next(request, context)
    }

    /// The caller's tenant, whether it is an admin and the key's id; 400 or 401 otherwise.
    func authenticate(_ request: Request) async throws -> (tenant: String, admin: Bool, keyID: String) {
        let query = request.uri.queryParameters
        if let name = query.map({ $0.key.lowercased() }).first(where: Self.keyParameters.contains) {
            throw Problem(
                .badRequest,
                "API keys are never accepted in a query string (got '\(name)'); send 'Authorization: Bearer KEY', "
                    + "or for an event stream a token from POST /v1/stream-tokens as '?stream_token='")
        }
        if try await openMode.isOpen(presentedKey: request.headers[.authorization] != nil) {
            return ("local", true, "")
        }
        if let header = request.headers[.authorization] {
            guard header.lowercased().hasPrefix("bearer ") else {
                throw Problem(.unauthorized, "send an API key as 'Authorization: Bearer KEY'")
            }
            let key = String(header.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
            guard let record = try await APIKeys.record(for: key, store: store) else {
                throw Problem(.unauthorized, "the API key is not valid")
            }
            return (record.tenant, record.admin, record.id)
        }
        if let token = query.get("stream_token") {
            guard request.method == .get, request.uri.path.hasSuffix("/events/stream") else {
                throw Problem(
                    .unauthorized, "a stream token opens event streams only; send 'Authorization: Bearer KEY'")
            }
            guard let tenant = try await streamTokens.tenant(for: String(token)) else {
                throw Problem(.unauthorized, "the stream token is not valid or has expired; get a new one")
            }
            return (tenant, false, "")
        }
        throw Problem(.unauthorized, "send an API key as 'Authorization: Bearer KEY'")
    }

    /// Answers 401 without a key and 403 for a key that is not an admin's.
    func requireAdmin(_ request: Request) async throws {
        guard try await authenticate(request).admin else {
            throw Problem(.forbidden, "this needs an admin key (`tranche keys create --admin`)")
        }
    }
}

/// Short-lived tokens that open one tenant's event streams, for browsers
/// (`EventSource` cannot send headers): `st.PAYLOAD.MAC`, where the payload
/// names the key that asked, its tenant and the expiry, and the MAC is an
/// HMAC-SHA256 under a secret kept in the store, so every node on one
/// database accepts every other's tokens. A token dies with its key.
final class StreamTokens: Sendable {
    /// How long a token is good for: 5 minutes.
    static let lifetime: TimeInterval = 300
    static let secretName = "stream-tokens"
    let store: any ServerStore
    private let secret = Mutex<SymmetricKey?>(nil)

    init(store: any ServerStore) { self.store = store }

    /// A new token for `tenant`, made for the key `keyID` (empty in open mode).
    func make(tenant: String, keyID: String, now: Date = Date()) async throws -> (token: String, expiresAt: Date) {
        let expiresAt = now.addingTimeInterval(Self.lifetime)
        let payload = Data("\(keyID)\n\(tenant)\n\(expiresAt.milliseconds)".utf8).base64URLEncoded
        let mac = HMAC<SHA256>.authenticationCode(for: Data(payload.utf8), using: try await key())
        return ("st.\(payload).\(Data(mac).base64URLEncoded)", expiresAt)
    }

    /// The tenant of a valid, unexpired token whose key is still active; nil otherwise.
    func tenant(for token: String, now: Date = Date()) async throws -> String? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard token.utf8.count <= 2_048, parts.count == 3, parts[0] == "st",
            let mac = Data(base64URLEncoded: String(parts[2])),
            HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Data(parts[1].utf8), using: try await key()),
            let payload = Data(base64URLEncoded: String(parts[1])).map({ String(decoding: $0, as: UTF8.self) })
        else { return nil }
        let fields = payload.split(separator: "\n", omittingEmptySubsequences: false)
        guard fields.count == 3, let expiry = Int64(fields[2]), now.milliseconds < expiry else { return nil }
        let (keyID, tenant) = (String(fields[0]), String(fields[1]))
        // Open mode signs with no key; such a token is void once keys exist.
        guard !keyID.isEmpty, let record = try await store.apiKey(id: keyID), record.revokedAt == nil,
            record.tenant == tenant
        else { return nil }
        return tenant
    }

    private func key() async throws -> SymmetricKey {
        if let key = secret.withLock({ $0 }) { return key }
        let stored = try await store.serverSecret(named: Self.secretName, candidate: APIKeys.randomHex(bytes: 32))
        let key = SymmetricKey(data: Data(stored.utf8))
        secret.withLock { $0 = key }
        return key
    }
}

extension Data {
    /// Base64 with the URL-safe alphabet and no padding (RFC 4648 §5).
    var base64URLEncoded: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Reads unpadded URL-safe base64; nil when it is not.
    init?(base64URLEncoded text: String) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        self.init(base64Encoded: base64)
    }
}

/// Refuses what a web page on another site could make a browser send. In
/// every mode a POST, PUT or PATCH body typed other than JSON or NDJSON is a
/// 415 (a form or `text/plain` needs no CORS preflight). In open mode
/// also, against DNS rebinding and cross-site requests, `Host` must be a
/// loopback name or address (or a trusted host), and `Origin`, when sent,
/// must be the server itself or a loopback origin (403 otherwise).
struct SameSiteMiddleware<Context: RequestContext>: RouterMiddleware {
    let openMode: OpenMode
    let trustedHosts: Set<String>

    /// The body types the API reads.
    static var bodyTypes: [String] { ["application/json", "application/x-ndjson", "application/jsonl"] }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        if [.post, .put, .patch].contains(request.method), Self.hasBody(request) {
            // No Content-Type reads as JSON; a browser sends one with every
            // cross-site body, and in open mode its Origin is refused anyway.
            let type = request.headers[.contentType].map(Self.mediaType) ?? "application/json"
            guard Self.bodyTypes.contains(type) else {
                throw Problem(
                    .unsupportedMediaType,
                    "send the body as application/json or application/x-ndjson, not \(type.prefix(100))")
            }
        }
        if try await openMode.isOpen() {
            let host = request.head.authority ?? ""
            guard let name = Self.hostName(host), Self.isLoopback(name) || trustedHosts.contains(name) else {
                throw Problem(
                    .forbidden,
                    "this server has no API keys and answers only to loopback names (Host: \(host.prefix(100)))")
            }
            if let origin = request.headers[.origin] {
                guard Self.sameSite(origin: origin, host: host) else {
                    throw Problem(
                        .forbidden,
                        "this server has no API keys and refuses requests from other sites (Origin: \(origin.prefix(100)))"
                    )
                }
            }
        }
        return try await next(request, context)
    }

    static func hasBody(_ request: Request) -> Bool {
        request.headers[.transferEncoding] != nil || (request.headers[.contentLength].flatMap { Int($0) } ?? 0) > 0
    }

    /// `application/json; charset=utf-8` → `application/json`.
    static func mediaType(_ header: String) -> String {
        String(header.prefix { $0 != ";" }).trimmingCharacters(in: .whitespaces).lowercased()
    }

    /// The name in `Host` or an origin's authority, without port or brackets; nil if malformed.
    static func hostName(_ authority: String) -> String? {
        var text = Substring(authority.lowercased())
        if text.hasPrefix("[") {
            guard let end = text.firstIndex(of: "]") else { return nil }
            return String(text[text.index(after: text.startIndex)..<end])
        }
        if let colon = text.lastIndex(of: ":") { text = text[..<colon] }
        return text.isEmpty ? nil : String(text)
    }

    /// `localhost`, a name under `.localhost`, `127.0.0.0/8` or `::1`.
    static func isLoopback(_ name: String) -> Bool {
        if name == "localhost" || name.hasSuffix(".localhost") || name == "::1" { return true }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// The origin is this server (same authority as `Host`) or a loopback one.
    static func sameSite(origin: String, host: String) -> Bool {
        guard let scheme = origin.range(of: "://") else { return false }
        let authority = String(origin[scheme.upperBound...].prefix { $0 != "/" })
        if authority.lowercased() == host.lowercased() { return true }
        return hostName(authority).map(isLoopback) ?? false
    }
}

/// Answers 503 at once, instead of queueing, when too many requests are in
/// flight; a streamed answer is in flight until its last byte is written.
struct BackpressureMiddleware<Context: RequestContext>: RouterMiddleware {
    let gate: RequestGate

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard gate.enter() else {
            throw Problem(.serviceUnavailable, "the server is saturated; retry shortly", retryAfter: 1)
        }
        let slot = Slot { [gate] in gate.leave() }
        var response = try await next(request, context)
        response.holding(slot)
        return response
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
