public import Foundation
import GRDB
public import TrancheStore

extension SQLiteBatchStore: ServerStore {
    public func createAPIKey(_ key: APIKeyRecord) async throws {
        try await write { db in
            try db.execute(
                sql: "INSERT INTO api_keys(id, tenant, hash, created_at, admin) VALUES (?, ?, ?, ?, ?)",
                arguments: [key.id, key.tenant, key.hash, key.createdAt.milliseconds, key.admin])
        }
    }

    public func apiKeys() async throws -> [APIKeyRecord] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT id, tenant, hash, created_at, revoked_at, admin FROM api_keys ORDER BY created_at"
            )
            .map(Self.decodeKey)
        }
    }

    public func apiKey(id: String) async throws -> APIKeyRecord? {
        try await read { db in
            try Row.fetchOne(
                db, sql: "SELECT id, tenant, hash, created_at, revoked_at, admin FROM api_keys WHERE id = ?",
                arguments: [id]
            ).map(Self.decodeKey)
        }
    }

    public func revokeAPIKey(id: String, at now: Date) async throws -> Bool {
        try await write { db in
            try db.execute(
                sql: "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                arguments: [now.milliseconds, id])
            return db.changesCount == 1
        }
    }

    public func serverSecret(named name: String, candidate: String) async throws -> String {
        try await write { db in
            try db.execute(
                sql: "INSERT INTO server_secrets(name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                arguments: [name, candidate])
            return try String.fetchOne(db, sql: "SELECT value FROM server_secrets WHERE name = ?", arguments: [name])
                ?? candidate
        }
    }

    // Rows are read through SQLiteRow: a damaged one is a storage error, not a trap.

    static func decodeKey(_ row: Row) throws -> APIKeyRecord {
        let row = SQLiteRow(row: row)
        return APIKeyRecord(
            id: try row.string(0), tenant: try row.string(1), hash: try row.string(2),
            createdAt: Date(milliseconds: try row.int64(3)), revokedAt: try row.date(at: 4), admin: try row.bool(5))
    }

    public func createBatch(_ batch: NewBatch, items: [NewItem], idempotency: IdempotencyKey) async throws
        -> IdempotentCreation
    {
        try await write { db in
            try Self.createIdempotently(db, idempotency, batchID: batch.id, createdAt: batch.createdAt) {
                try Self.insertBatch(db, batch, items: items)
            }
        }
    }

    /// Runs `create` (which stores the batch `batchID`) and, in the same
    /// transaction, the key's record naming it — unless the key names a
    /// live batch already: then that batch is answered and nothing is
    /// stored. Without a key, just `create`.
    static func createIdempotently(
        _ db: Database, _ idempotency: IdempotencyKey?, batchID: BatchID, createdAt: Date,
        create: () throws -> StoredBatch
    ) throws -> IdempotentCreation {
        guard let idempotency else { return .created(try create().record) }
        if let found = try Self.fetchIdempotency(db, tenant: idempotency.tenant, key: idempotency.key) {
            if let stored = try Self.batch(db, id: found.batchID) {
                return found.fingerprint == idempotency.fingerprint ? .existing(stored.record) : .mismatch
            }
            // The key's batch was deleted: the key is free again.
            try db.execute(
                sql: "DELETE FROM idempotency WHERE tenant = ? AND key = ?",
                arguments: [idempotency.tenant, idempotency.key])
        }
        let stored = try create()
        try db.execute(
            sql: """
                INSERT INTO idempotency(tenant, key, fingerprint, batch_id, created_at) VALUES (?, ?, ?, ?, ?)
                """,
            arguments: [
                idempotency.tenant, idempotency.key, idempotency.fingerprint, batchID.rawValue,
                createdAt.milliseconds,
            ])
        return .created(stored.record)
    }

    public func idempotencyRecord(tenant: String, key: String) async throws -> IdempotencyRecord? {
        try await read { db in try Self.fetchIdempotency(db, tenant: tenant, key: key) }
    }

    static func fetchIdempotency(_ db: Database, tenant: String, key: String) throws -> IdempotencyRecord? {
        try Row.fetchOne(
            db,
            sql: "SELECT tenant, key, fingerprint, batch_id, created_at FROM idempotency WHERE tenant = ? AND key = ?",
            arguments: [tenant, key]
        ).flatMap { row in
            let row = SQLiteRow(row: row)
            guard let id = BatchID(try row.string(3)) else { return nil }
            return IdempotencyRecord(
                tenant: try row.string(0), key: try row.string(1), fingerprint: try row.string(2), batchID: id,
                createdAt: Date(milliseconds: try row.int64(4)))
        }
    }

    public func pruneServerRecords(now: Date, deliveriesEndedBefore: Date, limit: Int) async throws -> Int {
        try await write { db in
            try db.execute(
                sql: """
                    DELETE FROM deliveries WHERE id IN (
                        SELECT id FROM deliveries WHERE status <> \(DeliveryState.pending.sql) AND last_attempt_at < ?
                        UNION ALL
                        SELECT d.id FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id)
                        LIMIT ?)
                    """,
                arguments: [deliveriesEndedBefore.milliseconds, limit])
            var pruned = db.changesCount
            try db.execute(
                sql: """
                    DELETE FROM idempotency WHERE (tenant, key) IN (
                        SELECT i.tenant, i.key FROM idempotency i LEFT JOIN batches b ON b.id = i.batch_id
                        WHERE b.id IS NULL OR b.expires_at <= ? LIMIT ?)
                    """,
                arguments: [now.milliseconds, limit])
            pruned += db.changesCount
            return pruned
        }
    }
}

extension SQLiteBatchStore {
    public func createWebhook(_ webhook: WebhookRecord) async throws {
        let events = try JSONText(encoding: webhook.events).text
        try await write { db in
            try db.execute(
                sql: "INSERT INTO webhooks(id, tenant, url, events, secret, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [
                    webhook.id, webhook.tenant, webhook.url, events, webhook.secret, webhook.createdAt.milliseconds,
                ])
        }
    }

    public func webhooks(tenant: String?) async throws -> [WebhookRecord] {
        try await read { db in
            try Self.fetchWebhooks(db, tenant: tenant)
        }
    }

    static func fetchWebhooks(_ db: Database, tenant: String?) throws -> [WebhookRecord] {
        let rows = try Row.fetchAll(
            db,
            sql:
                "SELECT id, tenant, url, events, secret, created_at FROM webhooks WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at",
            arguments: [tenant])
        return try rows.map(decodeWebhook)
    }

    static func decodeWebhook(_ row: Row) throws -> WebhookRecord {
        try decodeWebhook(SQLiteRow(row: row), from: 0)
    }

    /// A webhook in columns `id, tenant, url, events, secret, created_at` from `first` on.
    static func decodeWebhook(_ row: SQLiteRow, from first: Int) throws -> WebhookRecord {
        WebhookRecord(
            id: try row.string(first), tenant: try row.string(first + 1), url: try row.string(first + 2),
            events: try JSONText(unchecked: try row.string(first + 3)).decode([String].self),
            secret: try row.string(first + 4), createdAt: Date(milliseconds: try row.int64(first + 5)))
    }

    public func deleteWebhook(id: String, tenant: String) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "DELETE FROM webhooks WHERE id = ? AND tenant = ?", arguments: [id, tenant])
            let deleted = db.changesCount == 1
            if deleted { try db.execute(sql: "DELETE FROM deliveries WHERE webhook_id = ?", arguments: [id]) }
            return deleted
        }
    }

    public func queueDeliveries(limit: Int, now: Date) async throws -> Int {
        try await write { db in
            let cursor = try Int64.fetchOne(db, sql: "SELECT value FROM counters WHERE name = 'delivery_cursor'") ?? 0
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT e.id, e.type, b.owner FROM events e JOIN batches b ON b.key = e.batch_key
                    WHERE e.id > ? ORDER BY e.id LIMIT ?
                    """,
                arguments: [cursor, limit])
            guard let last = rows.last else { return 0 }
            let hooks = try Self.fetchWebhooks(db, tenant: nil)
            var queued = 0
            for row in rows {
                let row = SQLiteRow(row: row)
                let eventID = try row.int64(0)
                let type = try row.string(1)
                let owner = try row.string(2)
                for hook in hooks where hook.tenant == owner && (hook.events.isEmpty || hook.events.contains(type)) {
                    try db.execute(
                        sql: """
                            INSERT OR IGNORE INTO deliveries(webhook_id, event_id, next_attempt_at) VALUES (?, ?, ?)
                            """,
                        arguments: [hook.id, eventID, now.milliseconds])
                    queued += db.changesCount
                }
            }
            let lastID = try SQLiteRow(row: last).int64(0)
            try db.execute(sql: "UPDATE counters SET value = ? WHERE name = 'delivery_cursor'", arguments: [lastID])
            return queued
        }
    }

    public func claimDeliveries(_ claim: DeliveryClaim) async throws -> [(DeliveryRecord, WebhookRecord, BatchEvent)] {
        let now = claim.now.milliseconds
        let limit = claim.limit.clamped(to: 0...10_000)
        let busy = try JSONText(encoding: claim.busy).text
        return try await write { db in
            // One write transaction at a time: the oldest due deliveries of
            // webhooks below their cap, each webhook's first few, taking turns.
            let ids = try Int64.fetchAll(
                db,
                sql: """
                    SELECT id FROM (
                        SELECT due.id, due.next_attempt_at, coalesce(busy.value, 0)
                               + row_number() OVER (PARTITION BY due.webhook_id ORDER BY due.next_attempt_at, due.id) AS turn
                        FROM (
                            SELECT id, webhook_id, next_attempt_at FROM deliveries
                            WHERE status = \(DeliveryState.pending.sql) AND next_attempt_at <= ?1
                              AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)
                              AND webhook_id NOT IN (SELECT key FROM json_each(?2) WHERE value >= ?4)
                            ORDER BY next_attempt_at, id LIMIT ?3) due
                        LEFT JOIN json_each(?2) busy ON busy.key = due.webhook_id)
                    WHERE turn <= ?4 ORDER BY turn, next_attempt_at, id LIMIT ?5
                    """,
                arguments: [now, busy, limit * 8, claim.perWebhook.clamped(to: 1...10_000), limit])
            guard !ids.isEmpty else { return [] }
            let list = try JSONText(encoding: ids).text
            try db.execute(
                sql: """
                    UPDATE deliveries SET lease_owner = ?, lease_expires_at = ?
                    WHERE id IN (SELECT value FROM json_each(?))
                    """,
                arguments: [claim.owner, claim.leaseUntil.milliseconds, list])
            let rows = try Row.fetchAll(
                db,
                sql: """
                    \(dueDeliveriesSelect)
                    WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY d.next_attempt_at, d.id
                    """,
                arguments: [list])
            return try rows.compactMap { row in
                let delivery = try Self.decodeDelivery(row)
                let row = SQLiteRow(row: row)
                guard let batchID = BatchID(try row.string(19)) else { return nil }
                let hook = try Self.decodeWebhook(row, from: 10)
                let event = BatchEvent(
                    id: delivery.eventID, batchID: batchID, type: BatchEventType(rawValue: try row.string(16)),
                    at: Date(milliseconds: try row.int64(17)), data: try JSONText(unchecked: try row.string(18)).value()
                )
                return (delivery, hook, event)
            }
        }
    }

    static func decodeDelivery(_ row: Row) throws -> DeliveryRecord {
        let row = SQLiteRow(row: row)
        return DeliveryRecord(
            id: try row.int64(0), webhookID: try row.string(1), eventID: try row.int64(2), status: try row.string(3),
            attempts: try row.int(4), lastStatusCode: try row.int64(at: 5).flatMap { Int(exactly: $0) },
            lastError: try row.string(at: 6), nextAttemptAt: try row.date(at: 7), deliveredAt: try row.date(at: 8),
            lastAttemptAt: try row.date(at: 9))
    }

    @discardableResult
    public func recordDelivery(
        id: Int64, owner: String, delivered: Bool, statusCode: Int?, error: String?, nextAttemptAt: Date?, now: Date
    ) async throws -> Bool {
        try await write { db in
            let status = DeliveryState.after(delivered: delivered, retrying: nextAttemptAt != nil).rawValue
            try db.execute(
                sql: """
                    UPDATE deliveries SET status = ?, attempts = attempts + 1, last_status_code = ?, last_error = ?,
                        next_attempt_at = ?, delivered_at = ?, last_attempt_at = ?, lease_owner = NULL,
                        lease_expires_at = NULL
                    WHERE id = ? AND lease_owner = ?
                    """,
                arguments: [
                    status, statusCode, error, nextAttemptAt?.milliseconds, delivered ? now.milliseconds : nil,
                    now.milliseconds, id, owner,
                ])
            return db.changesCount == 1
        }
    }

    public func deliveries(webhookID: String, limit: Int) async throws -> [DeliveryRecord] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT id, webhook_id, event_id, status, attempts, last_status_code, last_error, next_attempt_at,
                           delivered_at, last_attempt_at
                    FROM deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT ?
                    """,
                arguments: [webhookID, limit]
            ).map(Self.decodeDelivery)
        }
    }
}
