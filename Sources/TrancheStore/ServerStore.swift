public import Foundation

/// An API key as stored: never the key itself, only its hash.
public struct APIKeyRecord: Sendable, Hashable {
    /// The public part of the key, shown in listings.
    public var id: String
    public var tenant: String
    /// Hex SHA-256 of the whole key.
    public var hash: String
    public var createdAt: Date
    public var revokedAt: Date?

    public init(id: String, tenant: String, hash: String, createdAt: Date, revokedAt: Date?) {
        self.id = id
        self.tenant = tenant
        self.hash = hash
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }
}

/// Where an idempotent submit stands.
public enum IdempotencyState: Sendable, Hashable {
    /// The key is new: the caller owns it now and must finish or abandon it.
    case started
    /// The first request with this key is still being accepted.
    case inFlight
    /// The first request finished: replay its answer.
    case completed(status: Int, body: String)
    /// The key was used with a different payload.
    case mismatch
}

/// What the server needs besides batches: API keys and idempotency records.
/// Stored in the same database as the batches.
public protocol ServerStore: BatchStore {
    func createAPIKey(_ key: APIKeyRecord) async throws
    func apiKeys() async throws -> [APIKeyRecord]
    /// The key with this id, revoked or not.
    func apiKey(id: String) async throws -> APIKeyRecord?
    /// Returns false when there is no such key or it was already revoked.
    func revokeAPIKey(id: String, at now: Date) async throws -> Bool

    /// Claims `key` for `tenant` with the request's fingerprint, or reports
    /// the state of the request that claimed it first.
    func beginIdempotent(tenant: String, key: String, fingerprint: String, at now: Date) async throws
        -> IdempotencyState
    /// Stores the answer to replay.
    func completeIdempotent(tenant: String, key: String, status: Int, body: String) async throws
    /// Releases a key whose request failed before it was accepted, so a retry can run.
    func abandonIdempotent(tenant: String, key: String) async throws
}
