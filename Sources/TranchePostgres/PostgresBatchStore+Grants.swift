public import Foundation
import PostgresNIO
import TrancheCore
public import TrancheStore

extension PostgresBatchStore: LimitStore {
    public func updateSettings(_ id: BatchID, _ change: BatchSettingsChange, at now: Date) async throws
        -> BatchRecord
    {
        try await write { db in
            let stored = try await Self.lockedBatch(db, id)
            let options = try BatchRules.settingsChanged(stored, change)
            let optionsText = try JSONText(encoding: options).text
            try await db.run(
                """
                UPDATE batches SET options = \(optionsText), priority = \(change.priority ?? stored.record.priority),
                    max_chunks = \(options.maxChunksInFlight)
                WHERE key = \(stored.key)
                """)
            try await db.notifyWork()
            return try await Self.current(db, key: stored.key).record
        }
    }

    public func drawTokens(key: String, rate: Double, burst: Double, want: Int, now: Date) async throws
        -> TokenGrant
    {
        try await write { db in
            // One row per key, locked for the draw: nodes drawing together take turns.
            let row = try await db.one("SELECT tokens, updated_at FROM rate_grants WHERE key = \(key) FOR UPDATE")
            let stored = try row.map { row -> (tokens: Double, updatedAt: Int64) in
                (try row.get(0, as: Double.self), try row.get(1, as: Int64.self))
            }
            let draw = TokenBucket.draw(rate: rate, burst: burst, stored: stored, want: want, now: now)
            try await db.run(
                """
                INSERT INTO rate_grants(key, tokens, updated_at) VALUES (\(key), \(draw.tokens), \(draw.updatedAt))
                ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at
                """)
            return draw.grant
        }
    }

    public func acquireSlots(key: String, node: String, limit: Int, want: Int, expiresAt: Date, now: Date)
        async throws -> Int
    {
        try await write { db in
            // Counting and taking must not interleave with another node's: one lock per key.
            try await db.run("SELECT pg_advisory_xact_lock(hashtext(\("limit_slots:" + key)))")
            let held =
                try await db.one(
                    """
                    SELECT coalesce(sum(held), 0)::BIGINT FROM limit_slots
                    WHERE key = \(key) AND (node = \(node) OR expires_at > \(now.milliseconds))
                    """
                ).map { try $0.get(0, as: Int64.self) } ?? 0
            let granted = SlotRules.granted(limit: limit, held: held, want: want)
            try await db.run(
                """
                INSERT INTO limit_slots(key, node, held, expires_at)
                VALUES (\(key), \(node), \(granted), \(expiresAt.milliseconds))
                ON CONFLICT (key, node) DO UPDATE
                SET held = limit_slots.held + excluded.held, expires_at = excluded.expires_at
                """)
            return granted
        }
    }

    public func releaseSlots(key: String, node: String, count: Int) async throws {
        try await write { db in
            try await db.run(
                "UPDATE limit_slots SET held = greatest(0, held - \(count)) WHERE key = \(key) AND node = \(node)")
            try await db.run("DELETE FROM limit_slots WHERE key = \(key) AND node = \(node) AND held = 0")
        }
    }

    public func renewSlots(node: String, expiresAt: Date) async throws {
        try await write { db in
            try await db.run("UPDATE limit_slots SET expires_at = \(expiresAt.milliseconds) WHERE node = \(node)")
        }
    }

    public func mergePace(_ change: PaceChange, throttledDelta: Int64, now: Date) async throws -> PaceRecord {
        try await write { db in
            // The row may not exist yet: one lock per key, so two first cuts merge too.
            try await db.run("SELECT pg_advisory_xact_lock(hashtext(\("pace:" + change.key)))")
            let stored = try await Self.fetchFullPace(db, key: change.key)
            let row = PaceRules.merged(stored, with: change, throttledDelta: throttledDelta, now: now)
            try await db.run(
                """
                INSERT INTO pace(key, rate, reason, changed_at, throttled, paused_until, cut_at, estimated)
                VALUES (\(row.key), \(row.rate), \(row.reason), \(row.changedAt.milliseconds), \(row.throttled),
                        \(row.pausedUntil?.milliseconds), \(row.cutAt?.milliseconds), \(row.estimated))
                ON CONFLICT (key) DO UPDATE SET rate = excluded.rate, reason = excluded.reason,
                    changed_at = excluded.changed_at, throttled = excluded.throttled,
                    paused_until = excluded.paused_until, cut_at = excluded.cut_at, estimated = excluded.estimated
                """)
            return row
        }
    }

    public func pace(key: String) async throws -> PaceRecord? {
        try await paces(keys: [key])[key]
    }

    public func paces(keys: [String]) async throws -> [String: PaceRecord] {
        guard !keys.isEmpty else { return [:] }
        let rows = try await read { db in
            try await db.rows(
                """
                SELECT key, rate, reason, changed_at, throttled, paused_until FROM pace
                WHERE key = ANY(\(Array(Set(keys))))
                """)
        }
        var paces: [String: PaceRecord] = [:]
        for row in rows {
            let pausedUntil = try row.get(5, as: Int64?.self).flatMap { $0 > 0 ? Date(milliseconds: $0) : nil }
            let key: String = try row.get(0)
            paces[key] = PaceRecord(
                key: key, rate: try row.get(1, as: Double.self), reason: try row.get(2),
                changedAt: Date(milliseconds: try row.get(3)), throttled: try row.get(4), pausedUntil: pausedUntil)
        }
        return paces
    }

    private static func lockedBatch(_ db: PostgresConnection, _ id: BatchID) async throws -> StoredBatch {
        guard let stored = try await batch(db, id: id, lock: true) else {
            throw StoreError(.batchNotFound, "no batch \(id)")
        }
        return stored
    }

    /// A pace row with the columns merging needs (``PaceRules``).
    private static func fetchFullPace(_ db: PostgresConnection, key: String) async throws -> PaceRecord? {
        guard
            let row = try await db.one(
                """
                SELECT rate, reason, changed_at, throttled, paused_until, cut_at, estimated FROM pace WHERE key = \(key)
                """)
        else { return nil }
        let date = { (value: Int64?) in value.flatMap { $0 > 0 ? Date(milliseconds: $0) : nil } }
        return PaceRecord(
            key: key, rate: try row.get(0, as: Double.self), reason: try row.get(1),
            changedAt: Date(milliseconds: try row.get(2)), throttled: try row.get(3),
            pausedUntil: date(try row.get(4, as: Int64?.self)), cutAt: date(try row.get(5, as: Int64?.self)),
            estimated: try row.get(6, as: Bool.self))
    }
}
