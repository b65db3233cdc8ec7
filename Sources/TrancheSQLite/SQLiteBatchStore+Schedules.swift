public import Foundation
import GRDB
public import TrancheStore

// Schedules and finalizations on SQLite: one writer at a time, so a
// compare-and-set inside a write transaction is enough to fire a tick once.

extension SQLiteBatchStore: ScheduleStore {
    public func createSchedule(_ schedule: ScheduleRecord) async throws {
        let batch = try JSONText(encoding: schedule.batch).text
        try await write { db in
            try db.execute(
                sql: """
                    INSERT INTO schedules(id, tenant, batch, cron, time_zone, every_ms, catch_up, overlap, paused,
                                          next_run_at, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    schedule.id, schedule.tenant, batch, schedule.cron, schedule.timeZone,
                    schedule.everyMilliseconds, schedule.catchUp.rawValue, schedule.overlap, schedule.paused,
                    schedule.nextRunAt?.milliseconds, schedule.createdAt.milliseconds,
                ])
        }
    }

    public func schedules(tenant: String?) async throws -> [ScheduleRecord] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT \(ScheduleRecord.columns) FROM schedules WHERE ? IS NULL OR tenant = ?
                    ORDER BY created_at, id
                    """,
                arguments: [tenant, tenant]
            ).map { try ScheduleRecord(row: SQLiteRow(row: $0)) }
        }
    }

    public func schedule(id: String) async throws -> ScheduleRecord? {
        try await read { db in try Self.fetchSchedule(db, id: id) }
    }

    static func fetchSchedule(_ db: Database, id: String) throws -> ScheduleRecord? {
        try Row.fetchOne(db, sql: "SELECT \(ScheduleRecord.columns) FROM schedules WHERE id = ?", arguments: [id])
            .map { try ScheduleRecord(row: SQLiteRow(row: $0)) }
    }

    public func setSchedulePaused(id: String, tenant: String, paused: Bool, nextRunAt: Date?) async throws
        -> ScheduleRecord?
    {
        try await write { db in
            if paused {
                try db.execute(
                    sql: "UPDATE schedules SET paused = 1 WHERE id = ? AND tenant = ?", arguments: [id, tenant])
            } else {
                try db.execute(
                    sql: "UPDATE schedules SET paused = 0, next_run_at = ? WHERE id = ? AND tenant = ? AND paused = 1",
                    arguments: [nextRunAt?.milliseconds, id, tenant])
            }
            return try Self.fetchSchedule(db, id: id).flatMap { $0.tenant == tenant ? $0 : nil }
        }
    }

    public func deleteSchedule(id: String, tenant: String) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "DELETE FROM schedules WHERE id = ? AND tenant = ?", arguments: [id, tenant])
            return db.changesCount == 1
        }
    }

    public func dueSchedules(now: Date, limit: Int) async throws -> [ScheduleRecord] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT \(ScheduleRecord.columns) FROM schedules
                    WHERE paused = 0 AND next_run_at IS NOT NULL AND next_run_at <= ?
                    ORDER BY next_run_at LIMIT ?
                    """,
                arguments: [now.milliseconds, limit.clamped(to: 0...10_000)]
            ).map { try ScheduleRecord(row: SQLiteRow(row: $0)) }
        }
    }

    public func fireSchedule(_ fire: ScheduleFire) async throws -> ScheduleFireResult {
        try await write { db in
            guard let schedule = try Self.fetchSchedule(db, id: fire.scheduleID), !schedule.paused,
                schedule.nextRunAt == fire.expectedNextRunAt
            else { return .lost }
            var batch = fire.batch
            if batch != nil, fire.skipIfRunning, let last = schedule.lastBatchID,
                let previous = try Self.batch(db, id: last), !previous.record.status.isEnded
            {
                batch = nil
            }
            // The compare-and-set: the tick is this caller's only if it is unchanged.
            try db.execute(
                sql: """
                    UPDATE schedules SET next_run_at = ?, last_run_at = ?,
                        last_batch_id = coalesce(?, last_batch_id), runs = runs + ?, skipped = skipped + ?
                    WHERE id = ? AND paused = 0 AND next_run_at = ?
                    """,
                arguments: [
                    fire.nextRunAt?.milliseconds, fire.now.milliseconds, batch?.id.rawValue, batch == nil ? 0 : 1,
                    batch == nil ? 1 : 0, fire.scheduleID, fire.expectedNextRunAt.milliseconds,
                ])
            guard db.changesCount == 1 else { return .lost }
            guard let batch else { return .skipped }
            let stored = try Self.insertBatch(db, batch, items: fire.items)
            try db.execute(
                sql: "INSERT INTO schedule_runs(batch_id, schedule_id) VALUES (?, ?)",
                arguments: [batch.id.rawValue, fire.scheduleID])
            return .created(stored.record)
        }
    }

    public func scheduleID(ofBatch id: BatchID) async throws -> String? {
        try await scheduleIDs(ofBatches: [id])[id]
    }
}

extension SQLiteBatchStore: FinalizeStore {
    public func queueFinalizations(limit: Int, now: Date) async throws -> Int {
        try await write { db in
            let cursor = try Int64.fetchOne(db, sql: "SELECT value FROM counters WHERE name = 'finalize_cursor'") ?? 0
            let last = try Int64.fetchOne(
                db, sql: "SELECT max(id) FROM (SELECT id FROM events WHERE id > ? ORDER BY id LIMIT ?)",
                arguments: [cursor, limit.clamped(to: 1...100_000)])
            guard let last else { return 0 }
            try db.execute(
                sql: """
                    INSERT INTO finalizations(batch_key, type, queued_at)
                    SELECT DISTINCT b.key, b.type, ? FROM events e JOIN batches b ON b.key = e.batch_key
                    WHERE e.id > ? AND e.id <= ? AND e.type IN (\(FinalizeRules.endEvents)) AND b.dry_run = 0
                    ON CONFLICT(batch_key) DO NOTHING
                    """,
                arguments: [now.milliseconds, cursor, last])
            let queued = db.changesCount
            try db.execute(sql: "UPDATE counters SET value = ? WHERE name = 'finalize_cursor'", arguments: [last])
            // Rows of batches that are gone (deleted, or forgotten after retention).
            try db.execute(
                sql: """
                    DELETE FROM finalizations WHERE batch_key IN (
                        SELECT f.batch_key FROM finalizations f LEFT JOIN batches b ON b.key = f.batch_key
                        WHERE b.key IS NULL LIMIT 1000);
                    DELETE FROM schedule_runs WHERE batch_id IN (
                        SELECT r.batch_id FROM schedule_runs r LEFT JOIN batches b ON b.id = r.batch_id
                        WHERE b.id IS NULL LIMIT 1000);
                    """)
            return queued
        }
    }

    public func completeFinalization(_ lease: FinalizationLease, result: JSONText?, now: Date) async throws -> Bool {
        try await write { db in
            guard let stored = try Self.batch(db, id: lease.batchID) else { return false }
            guard try Self.completeStep(db, lease, batchKey: stored.key, state: .done, now: now) else { return false }
            if let result {
                try db.execute(
                    sql: "UPDATE batches SET result = ? WHERE key = ?", arguments: [result.text, stored.key])
            }
            _ = try Self.recordEvent(
                db, stored, .finalized, at: now, data: FinalizeRules.eventData(lease, result: result))
            return true
        }
    }
}
