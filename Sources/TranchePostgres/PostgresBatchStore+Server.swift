public import Foundation
import PostgresNIO
public import TrancheStore

extension PostgresBatchStore {
    public func createAPIKey(_ key: APIKeyRecord) async throws {
        try await write { db in
            try await db.run(
                """
                INSERT INTO api_keys(id, tenant, hash, created_at)
                VALUES (\(key.id), \(key.tenant), \(key.hash), \(key.createdAt.milliseconds))
                """)
        }
    }

    public func apiKeys() async throws -> [APIKeyRecord] {
        try await read { db in
            try await db.rows("SELECT id, tenant, hash, created_at, revoked_at FROM api_keys ORDER BY created_at")
                .map(Self.decodeKey)
        }
    }

    public func apiKey(id: String) async throws -> APIKeyRecord? {
        try await read { db in
            try await db.one("SELECT id, tenant, hash, created_at, revoked_at FROM api_keys WHERE id = \(id)")
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

    static func decodeKey(_ row: PostgresRandomAccessRow) throws -> APIKeyRecord {
        APIKeyRecord(
            id: try row.get(0), tenant: try row.get(1), hash: try row.get(2),
            createdAt: Date(milliseconds: try row.get(3)),
            revokedAt: try row.get(4, as: Int64?.self).map(Date.init(milliseconds:)))
    }

    public func beginIdempotent(tenant: String, key: String, fingerprint: String, at now: Date) async throws
        -> IdempotencyState
    {
        try await write { db in
            let inserted = try await db.count(
                """
                INSERT INTO idempotency(tenant, key, fingerprint, created_at)
                VALUES (\(tenant), \(key), \(fingerprint), \(now.milliseconds))
                ON CONFLICT (tenant, key) DO NOTHING RETURNING 1
                """)
            if inserted == 1 { return .started }
            guard
                let row = try await db.one(
                    "SELECT fingerprint, status, body FROM idempotency WHERE tenant = \(tenant) AND key = \(key)")
            else { return .inFlight }
            guard try row.get(0, as: String.self) == fingerprint else { return .mismatch }
            guard let status = try row.get(1, as: Int?.self), let body = try row.get(2, as: String?.self) else {
                return .inFlight
            }
            return .completed(status: status, body: body)
        }
    }

    public func completeIdempotent(tenant: String, key: String, status: Int, body: String) async throws {
        try await write { db in
            try await db.run(
                """
                UPDATE idempotency SET status = \(status), body = \(body) WHERE tenant = \(tenant) AND key = \(key)
                """)
        }
    }

    public func abandonIdempotent(tenant: String, key: String) async throws {
        try await write { db in
            try await db.run(
                "DELETE FROM idempotency WHERE tenant = \(tenant) AND key = \(key) AND status IS NULL")
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

    public func dueDeliveries(now: Date, limit: Int) async throws -> [(DeliveryRecord, WebhookRecord, BatchEvent)] {
        try await read { db in
            try await db.rows(
                """
                SELECT d.id, d.webhook_id, d.event_id, d.status, d.attempts, d.last_status_code, d.last_error,
                       d.next_attempt_at, d.delivered_at,
                       w.id, w.tenant, w.url, w.events, w.secret, w.created_at,
                       e.type, e.at, e.data, b.id
                FROM deliveries d
                JOIN webhooks w ON w.id = d.webhook_id
                JOIN events e ON e.id = d.event_id
                JOIN batches b ON b.key = e.batch_key
                WHERE d.status = 'pending' AND d.next_attempt_at <= \(now.milliseconds)
                ORDER BY d.next_attempt_at, d.id LIMIT \(Int64(limit))
                """
            ).compactMap { row in
                let delivery = try Self.decodeDelivery(row)
                let hook = WebhookRecord(
                    id: try row.get(9), tenant: try row.get(10), url: try row.get(11),
                    events: try JSONText(unchecked: try row.get(12)).decode([String].self), secret: try row.get(13),
                    createdAt: Date(milliseconds: try row.get(14)))
                guard let batchID = BatchID(try row.get(18, as: String.self)) else { return nil }
                let event = BatchEvent(
                    id: delivery.eventID, batchID: batchID, type: BatchEventType(rawValue: try row.get(15)),
                    at: Date(milliseconds: try row.get(16)), data: try JSONText(unchecked: try row.get(17)).value())
                return (delivery, hook, event)
            }
        }
    }

    static func decodeDelivery(_ row: PostgresRandomAccessRow) throws -> DeliveryRecord {
        DeliveryRecord(
            id: try row.get(0), webhookID: try row.get(1), eventID: try row.get(2), status: try row.get(3),
            attempts: try row.get(4), lastStatusCode: try row.get(5), lastError: try row.get(6),
            nextAttemptAt: try row.get(7, as: Int64?.self).map(Date.init(milliseconds:)),
            deliveredAt: try row.get(8, as: Int64?.self).map(Date.init(milliseconds:)))
    }

    public func recordDelivery(
        id: Int64, delivered: Bool, statusCode: Int?, error: String?, nextAttemptAt: Date?, now: Date
    ) async throws {
        try await write { db in
            let status = delivered ? "delivered" : (nextAttemptAt == nil ? "failed" : "pending")
            let deliveredAt: Int64? = delivered ? now.milliseconds : nil
            try await db.run(
                """
                UPDATE deliveries SET status = \(status), attempts = attempts + 1, last_status_code = \(statusCode),
                    last_error = \(error), next_attempt_at = \(nextAttemptAt?.milliseconds), delivered_at = \(deliveredAt)
                WHERE id = \(id)
                """)
        }
    }

    public func deliveries(webhookID: String, limit: Int) async throws -> [DeliveryRecord] {
        try await read { db in
            try await db.rows(
                """
                SELECT id, webhook_id, event_id, status, attempts, last_status_code, last_error, next_attempt_at,
                       delivered_at
                FROM deliveries WHERE webhook_id = \(webhookID) ORDER BY id DESC LIMIT \(Int64(limit))
                """
            ).map(Self.decodeDelivery)
        }
    }
}
