public import Foundation
import PostgresNIO
public import TrancheStore

// Schedules and finalizations on PostgreSQL, where many nodes write at once:
// a tick is fired by a conditional UPDATE (the second node's waits on the
// row lock, then matches nothing); finalizations are claimed with SKIP LOCKED.

extension PostgresBatchStore: ScheduleStore {
    public func createSchedule(_ schedule: ScheduleRecord) async throws {
        let batch = try JSONText(encoding: schedule.batch).text
        try await write { db in
            try await db.run(
                """
                INSERT INTO schedules(id, tenant, batch, cron, time_zone, every_ms, catch_up, overlap, paused,
                                      next_run_at, created_at)
                VALUES (\(schedule.id), \(schedule.tenant), \(batch), \(schedule.cron), \(schedule.timeZone),
                        \(schedule.everyMilliseconds), \(schedule.catchUp.rawValue), \(schedule.overlap),
                        \(schedule.paused), \(schedule.nextRunAt?.milliseconds), \(schedule.createdAt.milliseconds))
                """)
        }
    }

    public func schedules(tenant: String?) async throws -> [ScheduleRecord] {
        try await read { db in
            try await db.rows(
                """
                SELECT \(unescaped: ScheduleRecord.columns) FROM schedules
                WHERE \(tenant)::text IS NULL OR tenant = \(tenant) ORDER BY created_at, id
                """
            ).map { try ScheduleRecord(row: PostgresStoredRow(row: $0)) }
        }
    }

    public func schedule(id: String) async throws -> ScheduleRecord? {
        try await read { db in try await Self.fetchSchedule(db, id: id) }
    }

    static func fetchSchedule(_ db: PostgresConnection, id: String, lock: Bool = false) async throws
        -> ScheduleRecord?
    {
        let suffix = lock ? " FOR UPDATE" : ""
        return try await db.one(
            "SELECT \(unescaped: ScheduleRecord.columns) FROM schedules WHERE id = \(id)\(unescaped: suffix)"
        ).map { try ScheduleRecord(row: PostgresStoredRow(row: $0)) }
    }

    public func setSchedulePaused(id: String, tenant: String, paused: Bool, nextRunAt: Date?) async throws
        -> ScheduleRecord?
    {
        try await write { db in
            if paused {
                try await db.run("UPDATE schedules SET paused = true WHERE id = \(id) AND tenant = \(tenant)")
            } else {
                try await db.run(
                    """
                    UPDATE schedules SET paused = false, next_run_at = \(nextRunAt?.milliseconds)
                    WHERE id = \(id) AND tenant = \(tenant) AND paused
                    """)
            }
            return try await Self.fetchSchedule(db, id: id).flatMap { $0.tenant == tenant ? $0 : nil }
        }
    }

    public func deleteSchedule(id: String, tenant: String) async throws -> Bool {
        try await write { db in
            try await db.count("DELETE FROM schedules WHERE id = \(id) AND tenant = \(tenant) RETURNING 1") == 1
        }
    }

    public func dueSchedules(now: Date, limit: Int) async throws -> [ScheduleRecord] {
        try await read { db in
            try await db.rows(
                """
                SELECT \(unescaped: ScheduleRecord.columns) FROM schedules
                WHERE NOT paused AND next_run_at IS NOT NULL AND next_run_at <= \(now.milliseconds)
                ORDER BY next_run_at LIMIT \(Int64(limit.clamped(to: 0...10_000)))
                """
            ).map { try ScheduleRecord(row: PostgresStoredRow(row: $0)) }
        }
    }

    public func fireSchedule(_ fire: ScheduleFire) async throws -> ScheduleFireResult {
        try await write { db in
            // The schedule's row first: a concurrent fire of the same tick
            // waits here, then reads the moved `next_run_at` and loses.
            guard let schedule = try await Self.fetchSchedule(db, id: fire.scheduleID, lock: true), !schedule.paused,
                schedule.nextRunAt == fire.expectedNextRunAt
            else { return .lost }
            var batch = fire.batch
            if batch != nil, fire.skipIfRunning, let last = schedule.lastBatchID,
                let previous = try await Self.batch(db, id: last), !previous.record.status.isEnded
            {
                batch = nil
            }
            let ran: Int64 = batch == nil ? 0 : 1
            let changed = try await db.count(
                """
                UPDATE schedules SET next_run_at = \(fire.nextRunAt?.milliseconds),
                    last_run_at = \(fire.now.milliseconds),
                    last_batch_id = coalesce(\(batch?.id.rawValue), last_batch_id),
                    runs = runs + \(ran), skipped = skipped + \(1 - ran)
                WHERE id = \(fire.scheduleID) AND NOT paused AND next_run_at = \(fire.expectedNextRunAt.milliseconds)
                RETURNING 1
                """)
            guard changed == 1 else { return .lost }
            guard let batch else { return .skipped }
            let stored = try await Self.insertBatch(db, batch, items: fire.items)
            try await db.run(
                "INSERT INTO schedule_runs(batch_id, schedule_id) VALUES (\(batch.id.rawValue), \(fire.scheduleID))")
            return .created(stored.record)
        }
    }

    public func scheduleID(ofBatch id: BatchID) async throws -> String? {
        try await scheduleIDs(ofBatches: [id])[id]
    }
}

extension PostgresBatchStore: FinalizeStore {
    public func queueFinalizations(limit: Int, now: Date) async throws -> Int {
        try await write { db in
            // The cursor row is locked: one node at a time queues. Event ids
            // are issued in commit order, so none is passed over.
            let cursor: Int64 =
                try await db.one("SELECT value FROM counters WHERE name = 'finalize_cursor' FOR UPDATE")?.get(0) ?? 0
            let bound = Int64(limit.clamped(to: 1...100_000))
            guard
                let last = try await db.one(
                    "SELECT max(id) FROM (SELECT id FROM events WHERE id > \(cursor) ORDER BY id LIMIT \(bound)) e"
                ).flatMap({ try PostgresStoredRow(row: $0).int64(at: 0) })
            else { return 0 }
            let queued = try await db.count(
                """
                INSERT INTO finalizations(batch_key, type, queued_at)
                SELECT DISTINCT b.key, b.type, \(now.milliseconds)::bigint FROM events e
                JOIN batches b ON b.key = e.batch_key
                WHERE e.id > \(cursor) AND e.id <= \(last) AND e.type IN (\(unescaped: FinalizeRules.endEvents))
                  AND NOT b.dry_run
                ON CONFLICT (batch_key) DO NOTHING RETURNING 1
                """)
            try await db.run("UPDATE counters SET value = \(last) WHERE name = 'finalize_cursor'")
            // Rows of batches that are gone (deleted, or forgotten after retention).
            try await db.run(
                """
                DELETE FROM finalizations WHERE batch_key IN (
                    SELECT f.batch_key FROM finalizations f LEFT JOIN batches b ON b.key = f.batch_key
                    WHERE b.key IS NULL LIMIT 1000)
                """)
            try await db.run(
                """
                DELETE FROM schedule_runs WHERE batch_id IN (
                    SELECT r.batch_id FROM schedule_runs r LEFT JOIN batches b ON b.id = r.batch_id
                    WHERE b.id IS NULL LIMIT 1000)
                """)
            return queued
        }
    }

    public func completeFinalization(_ lease: FinalizationLease, result: JSONText?, now: Date) async throws -> Bool {
        try await write { db in
            guard let stored = try await Self.batch(db, id: lease.batchID, lock: true) else { return false }
            guard try await Self.completeStep(db, lease, batchKey: stored.key, state: .done, now: now) else {
                return false
            }
            if let result {
                try await db.run("UPDATE batches SET result = \(result.text) WHERE key = \(stored.key)")
            }
            _ = try await Self.recordEvent(
                db, stored, .finalized, at: now, data: FinalizeRules.eventData(lease, result: result))
            return true
        }
    }
}
