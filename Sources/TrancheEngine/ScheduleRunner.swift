import Foundation
import Logging
import TrancheStore

// Schedules: the maintenance leader fires due ticks. Each tick is claimed by
// a compare-and-set on the schedule's `next_run_at` in the transaction that
// creates its batch, so a tick makes one batch even if two nodes believe
// they lead for a moment.

extension TrancheEngine {
    /// Fires every due schedule's tick at `now` (at most 100 per call):
    /// creates its batch, or skips the tick (the last run is still going and
    /// overlap is off, or it was missed and `catch_up` is `skip`). Returns
    /// the batches created.
    @discardableResult
    public func fireDueSchedules() async throws -> [BatchRecord] {
        guard let schedules = store as? any ScheduleStore else { return [] }
        let now = self.now
        var created: [BatchRecord] = []
        try await registerPrepareTypes()
        for schedule in try await schedules.dueSchedules(now: now, limit: 100) {
            guard let timing = schedule.timing, let due = schedule.nextRunAt,
                let decision = ScheduleRules.decide(schedule, timing: timing, now: now)
            else { continue }
            var prepared: (batch: NewBatch, items: [NewItem])?
            if decision.run {
                do {
                    prepared = try prepareBatch(
                        schedule.submission, items: try schedule.batch.items.map { try JSONText(encoding: $0) })
                } catch {
                    // Checked at creation; a strategy this node lacks, or one
                    // that now refuses the context, skips the tick.
                    logger.warning(
                        "a schedule's batch was refused",
                        metadata: ["schedule_id": "\(schedule.id)", "error": "\(error)"])
                }
            }
            let fire = ScheduleFire(
                scheduleID: schedule.id, expectedNextRunAt: due, nextRunAt: decision.nextRunAt, batch: prepared?.batch,
                items: prepared?.items ?? [], skipIfRunning: !schedule.overlap, now: now)
            if case .created(let record) = try await schedules.fireSchedule(fire) {
                created.append(try await accept(record))
            }
        }
        return created
    }
}

extension ScheduleRecord {
    /// What each run submits, as the schedule's tenant.
    public var submission: Submission {
        Submission(
            type: batch.type, context: (try? JSONText(encoding: batch.context)) ?? JSONText(unchecked: "{}"),
            options: batch.options, dryRun: batch.dryRun, priority: batch.priority, owner: tenant)
    }
}

extension TrancheEngine {
    /// A context of `type` as it may be shown: its strategy's secret fields
    /// as `"***"` (every field when this node does not know the strategy).
    public func publicContext(type: String, context: JSONText) -> JSONValue {
        guard let strategy = strategies[type] else {
            return AnyBatchStrategy.publicContext(context, secretFields: nil)
        }
        return strategy.publicContext(context)
    }
}
