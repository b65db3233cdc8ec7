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

/// A tenant's subscription to events, delivered as signed POSTs.
public struct WebhookRecord: Sendable, Hashable {
    public var id: String
    public var tenant: String
    public var url: String
    /// Event types to deliver; empty means all.
    public var events: [String]
    public var secret: String
    public var createdAt: Date

    public init(id: String, tenant: String, url: String, events: [String], secret: String, createdAt: Date) {
        self.id = id
        self.tenant = tenant
        self.url = url
        self.events = events
        self.secret = secret
        self.createdAt = createdAt
    }
}

/// One event owed to one webhook, and how its delivery went.
public struct DeliveryRecord: Sendable, Hashable {
    public var id: Int64
    public var webhookID: String
    public var eventID: Int64
    /// `pending`, `delivered` or `failed` (out of attempts).
    public var status: String
    public var attempts: Int
    public var lastStatusCode: Int?
    public var lastError: String?
    public var nextAttemptAt: Date?
    public var deliveredAt: Date?

    public init(
        id: Int64, webhookID: String, eventID: Int64, status: String, attempts: Int, lastStatusCode: Int?,
        lastError: String?, nextAttemptAt: Date?, deliveredAt: Date?
    ) {
        self.id = id
        self.webhookID = webhookID
        self.eventID = eventID
        self.status = status
        self.attempts = attempts
        self.lastStatusCode = lastStatusCode
        self.lastError = lastError
        self.nextAttemptAt = nextAttemptAt
        self.deliveredAt = deliveredAt
    }
}

/// What the server needs besides batches: API keys, idempotency records and webhooks.
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

    func createWebhook(_ webhook: WebhookRecord) async throws
    func webhooks(tenant: String?) async throws -> [WebhookRecord]
    /// Returns false when the tenant has no such webhook.
    func deleteWebhook(id: String, tenant: String) async throws -> Bool
    /// Turns the stored events after the delivery cursor into pending
    /// deliveries for the matching webhooks and advances the cursor, in one
    /// transaction, so no event is skipped or queued twice. Returns how many.
    func queueDeliveries(limit: Int, now: Date) async throws -> Int
    /// Deliveries due now, oldest first, with their webhook and event.
    func dueDeliveries(now: Date, limit: Int) async throws -> [(DeliveryRecord, WebhookRecord, BatchEvent)]
    /// Records one attempt: delivered, or failed with the next attempt's time (nil: give up).
    func recordDelivery(
        id: Int64, delivered: Bool, statusCode: Int?, error: String?, nextAttemptAt: Date?, now: Date
    ) async throws
    func deliveries(webhookID: String, limit: Int) async throws -> [DeliveryRecord]
}
