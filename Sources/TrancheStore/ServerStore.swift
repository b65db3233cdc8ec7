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
    /// An admin key may also read `/metrics` and `/v1/nodes`.
    public var admin: Bool

    public init(id: String, tenant: String, hash: String, createdAt: Date, revokedAt: Date?, admin: Bool = false) {
        self.id = id
        self.tenant = tenant
        self.hash = hash
        self.createdAt = createdAt
        self.revokedAt = revokedAt
        self.admin = admin
    }
}

/// An idempotency key as a request brings it: scoped to its tenant, with
/// the fingerprint of the request's content.
public struct IdempotencyKey: Sendable, Hashable {
    public var tenant: String
    /// The client's key (`Idempotency-Key`), 1 to 255 bytes.
    public var key: String
    /// What identifies the request (the SHA-256 of its body): the same key
    /// with another fingerprint is a different request.
    public var fingerprint: String

    public init(tenant: String, key: String, fingerprint: String) {
        self.tenant = tenant
        self.key = key
        self.fingerprint = fingerprint
    }
}

/// A stored idempotency key: the batch its first request created. It lives
/// as long as that batch: it goes when the batch is deleted or expires.
public struct IdempotencyRecord: Sendable, Hashable {
    public var tenant: String
    public var key: String
    public var fingerprint: String
    public var batchID: BatchID
    public var createdAt: Date

    public init(tenant: String, key: String, fingerprint: String, batchID: BatchID, createdAt: Date) {
        self.tenant = tenant
        self.key = key
        self.fingerprint = fingerprint
        self.batchID = batchID
        self.createdAt = createdAt
    }
}

/// What an idempotent create did.
public enum IdempotentCreation: Sendable, Hashable {
    /// The key was free: the batch and the key's record were stored together.
    case created(BatchRecord)
    /// The key already names a live batch created by the same request: a repeat.
    case existing(BatchRecord)
    /// The key already names a live batch created by a different request.
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
    /// When the last attempt was recorded; nil before the first.
    public var lastAttemptAt: Date?

    public init(
        id: Int64, webhookID: String, eventID: Int64, status: String, attempts: Int, lastStatusCode: Int?,
        lastError: String?, nextAttemptAt: Date?, deliveredAt: Date?, lastAttemptAt: Date? = nil
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
        self.lastAttemptAt = lastAttemptAt
    }
}

/// One claim of due webhook deliveries (see ``ServerStore/claimDeliveries(_:)``).
public struct DeliveryClaim: Sendable, Hashable {
    /// Who claims: one dispatcher, unique across nodes and restarts.
    public var owner: String
    public var now: Date
    /// When the lease ends unless the attempt is recorded first.
    public var leaseUntil: Date
    /// Deliveries to claim at most.
    public var limit: Int
    /// Deliveries of one webhook the claimer holds at most, so one tenant's
    /// backlog or slow receiver cannot take every slot.
    public var perWebhook: Int
    /// Deliveries the claimer already has in flight, by webhook id: they
    /// count against `perWebhook`.
    public var busy: [String: Int]

    public init(
        owner: String, now: Date, leaseUntil: Date, limit: Int, perWebhook: Int, busy: [String: Int] = [:]
    ) {
        self.owner = owner
        self.now = now
        self.leaseUntil = leaseUntil
        self.limit = limit
        self.perWebhook = perWebhook
        self.busy = busy
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
    /// The server secret called `name`, shared by every node on the
    /// database: the stored one, or `candidate`, stored now when there was
    /// none (concurrent callers all get the one stored first).
    func serverSecret(named name: String, candidate: String) async throws -> String

    /// Stores a batch exactly as ``BatchStore/createBatch(_:items:)`` does
    /// and, in the same transaction, the idempotency key's record naming it
    /// — unless the key already names a live batch: then nothing is stored
    /// and that batch is answered (`existing`, or `mismatch` when it was
    /// created by a different request). A key whose batch was deleted is
    /// free again, and so is one whose record was pruned after its batch
    /// expired. Concurrent calls with one key store one batch.
    func createBatch(_ batch: NewBatch, items: [NewItem], idempotency: IdempotencyKey) async throws
        -> IdempotentCreation
    /// The record of `key` for `tenant`, if it is stored (live or not yet pruned).
    func idempotencyRecord(tenant: String, key: String) async throws -> IdempotencyRecord?

    func createWebhook(_ webhook: WebhookRecord) async throws
    func webhooks(tenant: String?) async throws -> [WebhookRecord]
    /// Returns false when the tenant has no such webhook.
    func deleteWebhook(id: String, tenant: String) async throws -> Bool
    /// Turns the stored events after the delivery cursor into pending
    /// deliveries for the matching webhooks and advances the cursor, in one
    /// transaction, so no event is skipped or queued twice. Returns how many.
    func queueDeliveries(limit: Int, now: Date) async throws -> Int
    /// Leases deliveries due at `claim.now` to `claim.owner` until
    /// `claim.leaseUntil`, with their webhook and event, oldest first but at
    /// most `claim.perWebhook` of one webhook, less what the claimer already
    /// has in flight for it (`claim.busy`), taking turns between webhooks.
    /// A delivery is due when it is pending, its next attempt's time has come
    /// and it has no live lease: concurrent claims (on any node) get disjoint
    /// deliveries, and one whose lease expired (its node died mid-POST) is
    /// due again, so a delivery goes out at least once.
    func claimDeliveries(_ claim: DeliveryClaim) async throws -> [(DeliveryRecord, WebhookRecord, BatchEvent)]
    /// Records one attempt of a delivery `owner` holds the lease of, and
    /// ends the lease: delivered, or failed with the next attempt's time
    /// (nil: give up). Returns false, recording nothing, when `owner` no
    /// longer holds it (its lease expired and another claim took it), so a
    /// stale node never overwrites a newer attempt's result.
    @discardableResult
    func recordDelivery(
        id: Int64, owner: String, delivered: Bool, statusCode: Int?, error: String?, nextAttemptAt: Date?, now: Date
    ) async throws -> Bool
    func deliveries(webhookID: String, limit: Int) async throws -> [DeliveryRecord]

    /// Deletes, in one short transaction, at most `limit` deliveries that
    /// ended (delivered or failed) before `deliveriesEndedBefore` or whose
    /// event is gone (they can never go out), and at most
    /// `limit` idempotency records whose batch expired (its `expiresAt`
    /// passed `now`) or is gone. Returns how many rows went; call again
    /// while it returns `limit` or more.
    func pruneServerRecords(now: Date, deliveriesEndedBefore: Date, limit: Int) async throws -> Int
}

/// The due deliveries' columns and joins, which both stores select before
/// their own `WHERE` (the order their decoders read).
package let dueDeliveriesSelect = """
    SELECT d.id, d.webhook_id, d.event_id, d.status, d.attempts, d.last_status_code, d.last_error,
           d.next_attempt_at, d.delivered_at, d.last_attempt_at,
           w.id, w.tenant, w.url, w.events, w.secret, w.created_at,
           e.type, e.at, e.data, b.id
    FROM deliveries d
    JOIN webhooks w ON w.id = d.webhook_id
    JOIN events e ON e.id = d.event_id
    JOIN batches b ON b.key = e.batch_key
    """
