public import Foundation
import PostgresNIO
public import TrancheStore

extension PostgresBatchStore {
    public func createAPIKey(_ key: APIKeyRecord) async throws {
        try await write { db in
            try await db.run(
                """
                INSERT INTO api_keys(id, tenant, hash, created_at, admin)
                VALUES (\(key.id), \(key.tenant), \(key.hash), \(key.createdAt.milliseconds), \(key.admin))
                """)
        }
    }

    public func apiKeys() async throws -> [APIKeyRecord] {
        try await read { db in
            try await db.rows(
                "SELECT id, tenant, hash, created_at, revoked_at, admin FROM api_keys ORDER BY created_at"
            )
            .map(Self.decodeKey)
        }
    }

    public func apiKey(id: String) async throws -> APIKeyRecord? {
        try await read { db in
            try await db.one("SELECT id, tenant, hash, created_at, revoked_at, admin FROM api_keys WHERE id = \(id)")
                .map(Self.decodeKey)
        }
    }

    public func revokeAPIKey(id: String, at now: Date) async throws -> Bool {
        try await write { db in
            try await db.count(
                """
                UPDATE api_keys SET revoked_at = \(now.milliseconds) WHERE id = \(id) AND revoked_at IS NULL
                RETURNING 1
                """) == 1
        }
    }

    public func serverSecret(named name: String, candidate: String) async throws -> String {
        try await write { db in
            // A concurrent insert of the same name waits here, then does nothing.
            try await db.run(
                "INSERT INTO server_secrets(name, value) VALUES (\(name), \(candidate)) ON CONFLICT (name) DO NOTHING")
            return try await db.one("SELECT value FROM server_secrets WHERE name = \(name)").map { try $0.get(0) }
                ?? candidate
        }
    }

    static func decodeKey(_ row: PostgresRandomAccessRow) throws -> APIKeyRecord {
        APIKeyRecord(
            id: try row.get(0), tenant: try row.get(1), hash: try row.get(2),
            createdAt: Date(milliseconds: try row.get(3)),
            revokedAt: try row.get(4, as: Int64?.self).map(Date.init(milliseconds:)), admin: try row.get(5))
    }

    public func createBatch(_ batch: NewBatch, items: [NewItem], idempotency: IdempotencyKey) async throws
        -> IdempotentCreation
    {
        try await write { db in
            try await Self.createIdempotently(db, idempotency, batchID: batch.id, createdAt: batch.createdAt) {
                try await Self.insertBatch(db, batch, items: items)
            }
        }
    }

    /// Runs `create` (which stores the batch `batchID`) with, in the same
    /// transaction, the key's record naming it — unless the key names a
    /// live batch already: then that batch is answered and nothing is
    /// stored. Without a key, just `create`.
    static func createIdempotently(
        _ db: PostgresConnection, _ idempotency: IdempotencyKey?, batchID: BatchID, createdAt: Date,
        create: () async throws -> StoredBatch
    ) async throws -> IdempotentCreation {
        guard let idempotency else { return .created(try await create().record) }
        // The key's row comes first: a concurrent request with the same
        // key waits on it until this transaction ends, then sees its batch.
        let claimed = try await db.count(
            """
            INSERT INTO idempotency(tenant, key, fingerprint, batch_id, created_at)
            VALUES (\(idempotency.tenant), \(idempotency.key), \(idempotency.fingerprint), \(batchID.rawValue),
                    \(createdAt.milliseconds))
            ON CONFLICT (tenant, key) DO NOTHING RETURNING 1
            """)
        if claimed == 0 {
            guard
                let found = try await Self.fetchIdempotency(
                    db, tenant: idempotency.tenant, key: idempotency.key, lock: true)
            else {
                // Pruned between the two statements: run the transaction again.
                throw RetryableConflict(sqlState: "40001")
            }
            if let stored = try await Self.batch(db, id: found.batchID) {
                return found.fingerprint == idempotency.fingerprint ? .existing(stored.record) : .mismatch
            }
            // The key's batch was deleted: the key is free again.
            try await db.run(
                """
                UPDATE idempotency SET fingerprint = \(idempotency.fingerprint), batch_id = \(batchID.rawValue),
                    created_at = \(createdAt.milliseconds)
                WHERE tenant = \(idempotency.tenant) AND key = \(idempotency.key)
                """)
        }
        return .created(try await create().record)
    }

    public func idempotencyRecord(tenant: String, key: String) async throws -> IdempotencyRecord? {
        try await read { db in try await Self.fetchIdempotency(db, tenant: tenant, key: key, lock: false) }
    }

    static func fetchIdempotency(_ db: PostgresConnection, tenant: String, key: String, lock: Bool) async throws
        -> IdempotencyRecord?
    {
        let query: PostgresQuery =
            lock
            ? """
            SELECT tenant, key, fingerprint, batch_id, created_at FROM idempotency
            WHERE tenant = \(tenant) AND key = \(key) FOR UPDATE
            """
            : """
            SELECT tenant, key, fingerprint, batch_id, created_at FROM idempotency
            WHERE tenant = \(tenant) AND key = \(key)
            """
        guard let row = try await db.one(query), let id = BatchID(try row.get(3, as: String.self)) else { return nil }
        return IdempotencyRecord(
            tenant: try row.get(0), key: try row.get(1), fingerprint: try row.get(2), batchID: id,
            createdAt: Date(milliseconds: try row.get(4)))
    }

    public func pruneServerRecords(now: Date, deliveriesEndedBefore: Date, limit: Int) async throws -> Int {
        try await write { db in
            let deliveries = try await db.count(
                """
                DELETE FROM deliveries WHERE id IN (
                    SELECT id FROM deliveries
                    WHERE status <> \(unescaped: DeliveryState.pending.sql) AND last_attempt_at < \(deliveriesEndedBefore.milliseconds)
                    UNION ALL
                    SELECT d.id FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id)
                    LIMIT \(Int64(limit)))
                RETURNING 1
                """)
            let records = try await db.count(
                """
                DELETE FROM idempotency WHERE (tenant, key) IN (
                    SELECT i.tenant, i.key FROM idempotency i LEFT JOIN batches b ON b.id = i.batch_id
                    WHERE b.id IS NULL OR b.expires_at <= \(now.milliseconds) LIMIT \(Int64(limit)))
                RETURNING 1
                """)
            return deliveries + records
        }
    }

    // MARK: - Webhooks

    public func createWebhook(_ webhook: WebhookRecord) async throws {
        let events = try JSONText(encoding: webhook.events).text
        try await write { db in
            try await db.run(
                """
                INSERT INTO webhooks(id, tenant, url, events, secret, created_at)
                VALUES (\(webhook.id), \(webhook.tenant), \(webhook.url), \(events), \(webhook.secret),
                        \(webhook.createdAt.milliseconds))
                """)
        }
    }

    public func webhooks(tenant: String?) async throws -> [WebhookRecord] {
        try await read { db in try await Self.fetchWebhooks(db, tenant: tenant) }
    }

    static func fetchWebhooks(_ db: PostgresConnection, tenant: String?) async throws -> [WebhookRecord] {
        try await db.rows(
            """
            SELECT id, tenant, url, events, secret, created_at FROM webhooks
            WHERE \(tenant)::text IS NULL OR tenant = \(tenant) ORDER BY created_at
            """
        ).map(decodeWebhook)
    }

    static func decodeWebhook(_ row: PostgresRandomAccessRow) throws -> WebhookRecord {
        WebhookRecord(
            id: try row.get(0), tenant: try row.get(1), url: try row.get(2),
            events: try JSONText(unchecked: try row.get(3)).decode([String].self), secret: try row.get(4),
            createdAt: Date(milliseconds: try row.get(5)))
    }

    public func deleteWebhook(id: String, tenant: String) async throws -> Bool {
        try await write { db in
            let deleted =
                try await db.count("DELETE FROM webhooks WHERE id = \(id) AND tenant = \(tenant) RETURNING 1") == 1
            if deleted { try await db.run("DELETE FROM deliveries WHERE webhook_id = \(id)") }
            return deleted
        }
    }

    public func queueDeliveries(limit: Int, now: Date) async throws -> Int {
        try await write { db in
            // The cursor row is locked: one node at a time turns events into deliveries.
            let cursor: Int64 =
                try await db.one("SELECT value FROM counters WHERE name = 'delivery_cursor' FOR UPDATE")?.get(0) ?? 0
            let rows = try await db.rows(
                """
                SELECT e.id, e.type, b.owner FROM events e JOIN batches b ON b.key = e.batch_key
                WHERE e.id > \(cursor) ORDER BY e.id LIMIT \(Int64(limit))
                """)
            guard let last = rows.last else { return 0 }
            let hooks = try await Self.fetchWebhooks(db, tenant: nil)
            var queued = 0
            for row in rows {
                let eventID: Int64 = try row.get(0)
                let type: String = try row.get(1)
                let owner: String = try row.get(2)
                for hook in hooks where hook.tenant == owner && (hook.events.isEmpty || hook.events.contains(type)) {
                    queued += try await db.count(
                        """
                        INSERT INTO deliveries(webhook_id, event_id, next_attempt_at)
                        VALUES (\(hook.id), \(eventID), \(now.milliseconds))
                        ON CONFLICT (webhook_id, event_id) DO NOTHING RETURNING 1
                        """)
                }
            }
            let lastID: Int64 = try last.get(0)
            try await db.run("UPDATE counters SET value = \(lastID) WHERE name = 'delivery_cursor'")
            return queued
        }
    }

    public func claimDeliveries(_ claim: DeliveryClaim) async throws -> [(DeliveryRecord, WebhookRecord, BatchEvent)] {
        let now = claim.now.milliseconds
        let limit = Int64(claim.limit.clamped(to: 0...10_000))
        let perWebhook = Int64(claim.perWebhook.clamped(to: 1...10_000))
        let busy = try JSONText(encoding: claim.busy).text
        return try await write { db in
            // The oldest due deliveries of webhooks below their cap are locked
            // without waiting (another node's claim skips them); of those, each
            // webhook's first few are leased, taking turns between webhooks.
            let ids: [Int64] = try await db.rows(
                """
                WITH busy AS (SELECT key AS webhook_id, value::bigint AS n FROM jsonb_each_text(\(busy)::jsonb)),
                due AS (
                    SELECT id, webhook_id, next_attempt_at FROM deliveries
                    WHERE status = \(unescaped: DeliveryState.pending.sql) AND next_attempt_at <= \(now)
                      AND (lease_expires_at IS NULL OR lease_expires_at <= \(now))
                      AND webhook_id NOT IN (SELECT webhook_id FROM busy WHERE n >= \(perWebhook))
                    ORDER BY next_attempt_at, id LIMIT \(limit * 8) FOR UPDATE SKIP LOCKED),
                picked AS (
                    SELECT id FROM (
                        SELECT due.id, due.next_attempt_at, coalesce(busy.n, 0)
                               + row_number() OVER (PARTITION BY due.webhook_id ORDER BY due.next_attempt_at, due.id) AS turn
                        FROM due LEFT JOIN busy ON busy.webhook_id = due.webhook_id) ranked
                    WHERE turn <= \(perWebhook) ORDER BY turn, next_attempt_at, id LIMIT \(limit))
                UPDATE deliveries SET lease_owner = \(claim.owner), lease_expires_at = \(claim.leaseUntil.milliseconds)
                WHERE id IN (SELECT id FROM picked)
                RETURNING id
                """
            ).map { try $0.get(0) }
            guard !ids.isEmpty else { return [] }
            return try await db.rows(
                """
                \(unescaped: dueDeliveriesSelect)
                WHERE d.id = ANY(\(ids)) ORDER BY d.next_attempt_at, d.id
                """
            ).compactMap(Self.decodeDue)
        }
    }

    /// A delivery with its webhook and event, in ``dueDeliveriesSelect``'s
    /// columns; nil when its batch's id is damaged.
    static func decodeDue(_ row: PostgresRandomAccessRow) throws -> (DeliveryRecord, WebhookRecord, BatchEvent)? {
        let delivery = try decodeDelivery(row)
        let hook = WebhookRecord(
            id: try row.get(10), tenant: try row.get(11), url: try row.get(12),
            events: try JSONText(unchecked: try row.get(13)).decode([String].self), secret: try row.get(14),
            createdAt: Date(milliseconds: try row.get(15)))
        guard let batchID = BatchID(try row.get(19, as: String.self)) else { return nil }
        let event = BatchEvent(
            id: delivery.eventID, batchID: batchID, type: BatchEventType(rawValue: try row.get(16)),
            at: Date(milliseconds: try row.get(17)), data: try JSONText(unchecked: try row.get(18)).value())
        return (delivery, hook, event)
    }

    static func decodeDelivery(_ row: PostgresRandomAccessRow) throws -> DeliveryRecord {
        DeliveryRecord(
            id: try row.get(0), webhookID: try row.get(1), eventID: try row.get(2), status: try row.get(3),
            attempts: try row.get(4), lastStatusCode: try row.get(5), lastError: try row.get(6),
            nextAttemptAt: try row.get(7, as: Int64?.self).map(Date.init(milliseconds:)),
            deliveredAt: try row.get(8, as: Int64?.self).map(Date.init(milliseconds:)),
            lastAttemptAt: try row.get(9, as: Int64?.self).map(Date.init(milliseconds:)))
    }

    @discardableResult
    public func recordDelivery(
        id: Int64, owner: String, delivered: Bool, statusCode: Int?, error: String?, nextAttemptAt: Date?, now: Date
    ) async throws -> Bool {
        try await write { db in
            let status = DeliveryState.after(delivered: delivered, retrying: nextAttemptAt != nil).rawValue
            let deliveredAt: Int64? = delivered ? now.milliseconds : nil
            return try await db.count(
                """
                UPDATE deliveries SET status = \(status), attempts = attempts + 1, last_status_code = \(statusCode),
                    last_error = \(error), next_attempt_at = \(nextAttemptAt?.milliseconds), delivered_at = \(deliveredAt),
                    last_attempt_at = \(now.milliseconds), lease_owner = NULL, lease_expires_at = NULL
                WHERE id = \(id) AND lease_owner = \(owner)
                RETURNING 1
                """) == 1
        }
    }

    public func deliveries(webhookID: String, limit: Int) async throws -> [DeliveryRecord] {
        try await read { db in
            try await db.rows(
                """
                SELECT id, webhook_id, event_id, status, attempts, last_status_code, last_error, next_attempt_at,
                       delivered_at, last_attempt_at
                FROM deliveries WHERE webhook_id = \(webhookID) ORDER BY id DESC LIMIT \(Int64(limit))
                """
            ).map(Self.decodeDelivery)
        }
    }
}
