public import Foundation
import GRDB
import TrancheCore
public import TrancheStore

extension SQLiteBatchStore: LimitStore {
    public func updateSettings(_ id: BatchID, _ change: BatchSettingsChange, at now: Date) async throws
        -> BatchRecord
    {
        try await write { db in
            let stored = try Self.requireBatch(db, id)
            let options = try BatchRules.settingsChanged(stored, change)
            try db.execute(
                sql: "UPDATE batches SET options = ?, priority = ?, max_chunks = ? WHERE key = ?",
                arguments: [
                    try JSONText(encoding: options).text, change.priority ?? stored.record.priority,
                    options.maxChunksInFlight, stored.key,
                ])
            return try Self.current(db, key: stored.key).record
        }
    }

    public func drawTokens(key: String, rate: Double, burst: Double, want: Int, now: Date) async throws
        -> TokenGrant
    {
        try await write { db in
            let row = try Row.fetchOne(
                db, sql: "SELECT tokens, updated_at FROM rate_grants WHERE key = ?", arguments: [key])
            let stored = try row.map { row -> (Double, Int64) in
                guard let tokens = Double.fromDatabaseValue(row[0]), let updatedAt = Int64.fromDatabaseValue(row[1])
                else { throw StoreError(.storage, "a stored token bucket is damaged") }
                return (tokens, updatedAt)
            }
            let draw = TokenBucket.draw(rate: rate, burst: burst, stored: stored, want: want, now: now)
            try db.execute(
                sql: """
                    INSERT INTO rate_grants(key, tokens, updated_at) VALUES (?, ?, ?)
                    ON CONFLICT(key) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at
                    """,
                arguments: [key, draw.tokens, draw.updatedAt])
            return draw.grant
        }
    }

    public func acquireSlots(key: String, node: String, limit: Int, want: Int, expiresAt: Date, now: Date)
        async throws -> Int
    {
        try await write { db in
            let held =
                try Int64.fetchOne(
                    db,
                    sql: """
                        SELECT coalesce(sum(held), 0) FROM limit_slots
                        WHERE key = ? AND (node = ? OR expires_at > ?)
                        """,
                    arguments: [key, node, now.milliseconds]) ?? 0
            let granted = SlotRules.granted(limit: limit, held: held, want: want)
            try db.execute(
                sql: """
                    INSERT INTO limit_slots(key, node, held, expires_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT(key, node) DO UPDATE SET held = held + excluded.held, expires_at = excluded.expires_at
                    """,
                arguments: [key, node, granted, expiresAt.milliseconds])
            return granted
        }
    }

    public func releaseSlots(key: String, node: String, count: Int) async throws {
        try await write { db in
            try db.execute(
                sql: "UPDATE limit_slots SET held = max(0, held - ?) WHERE key = ? AND node = ?",
                arguments: [count, key, node])
            try db.execute(
                sql: "DELETE FROM limit_slots WHERE key = ? AND node = ? AND held = 0", arguments: [key, node])
        }
    }

    public func renewSlots(node: String, expiresAt: Date) async throws {
        try await write { db in
            try db.execute(
                sql: "UPDATE limit_slots SET expires_at = ? WHERE node = ?", arguments: [expiresAt.milliseconds, node])
        }
    }

    public func mergePace(_ change: PaceChange, throttledDelta: Int64, now: Date) async throws -> PaceRecord {
        try await write { db in
            let stored = try Self.fetchFullPace(db, key: change.key)
            let row = PaceRules.merged(stored, with: change, throttledDelta: throttledDelta, now: now)
            try db.execute(
                sql: """
                    INSERT INTO pace(key, rate, reason, changed_at, throttled, paused_until, cut_at, estimated)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(key) DO UPDATE SET rate = excluded.rate, reason = excluded.reason,
                        changed_at = excluded.changed_at, throttled = excluded.throttled,
                        paused_until = excluded.paused_until, cut_at = excluded.cut_at, estimated = excluded.estimated
                    """,
                arguments: [
                    row.key, row.rate, row.reason, row.changedAt.milliseconds, row.throttled,
                    row.pausedUntil?.milliseconds, row.cutAt?.milliseconds, row.estimated ? 1 : 0,
                ])
            return row
        }
    }

    public func pace(key: String) async throws -> PaceRecord? {
        try await read { db in try Self.fetchPace(db, key: key) }
    }

    public func paces(keys: [String]) async throws -> [String: PaceRecord] {
        guard !keys.isEmpty else { return [:] }
        return try await read { db in
            var paces: [String: PaceRecord] = [:]
            for key in Set(keys) { paces[key] = try Self.fetchPace(db, key: key) }
            return paces
        }
    }

    private static func fetchPace(_ db: Database, key: String) throws -> PaceRecord? {
        guard
            let row = try Row.fetchOne(
                db, sql: "SELECT rate, reason, changed_at, throttled, paused_until FROM pace WHERE key = ?",
                arguments: [key])
        else { return nil }
        guard let rate = Double.fromDatabaseValue(row[0]) else {
            throw StoreError(.storage, "a stored pace is damaged")
        }
        let read = SQLiteRow(row: row)
        let pausedUntil = try read.int64(at: 4).flatMap { $0 > 0 ? Date(milliseconds: $0) : nil }
        return PaceRecord(
            key: key, rate: rate, reason: try read.string(1), changedAt: Date(milliseconds: try read.int64(2)),
            throttled: try read.int64(3), pausedUntil: pausedUntil)
    }

    /// A pace row with the columns merging needs (``PaceRules``).
    private static func fetchFullPace(_ db: Database, key: String) throws -> PaceRecord? {
        guard
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT rate, reason, changed_at, throttled, paused_until, cut_at, estimated FROM pace WHERE key = ?
                    """,
                arguments: [key])
        else { return nil }
        guard let rate = Double.fromDatabaseValue(row[0]) else {
            throw StoreError(.storage, "a stored pace is damaged")
        }
        let read = SQLiteRow(row: row)
        let date = { (value: Int64?) in value.flatMap { $0 > 0 ? Date(milliseconds: $0) : nil } }
        return PaceRecord(
            key: key, rate: rate, reason: try read.string(1), changedAt: Date(milliseconds: try read.int64(2)),
            throttled: try read.int64(3), pausedUntil: date(try read.int64(at: 4)), cutAt: date(try read.int64(at: 5)),
            estimated: (try read.int64(at: 6) ?? 0) != 0)
    }
}
