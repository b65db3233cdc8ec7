import Foundation
import Testing
import TrancheStore

/// Schedules and finalizations on every store, and the schedule rules.
@Suite("Schedules and finalizations", .testResources)
struct ScheduleStoreTests {
    let start = Date(milliseconds: 1_900_000_000_000)

    func withStore(
        _ factory: StoreFactory, _ body: (any BatchStore & ScheduleStore & FinalizeStore) async throws -> Void
    ) async throws {
        let store = try await factory.make()
        try await body(try #require(store as? any BatchStore & ScheduleStore & FinalizeStore))
    }

    func schedule(_ id: String, tenant: String = "t1", overlap: Bool = false, catchUp: CatchUp = .one)
        -> ScheduleRecord
    {
        ScheduleRecord(
            id: id, tenant: tenant,
            batch: ScheduledBatch(
                type: "noop", context: [:], options: options(), dryRun: false, priority: 0, items: [1, 2]),
            cron: nil, timeZone: "UTC", every: 60, catchUp: catchUp, overlap: overlap, nextRunAt: start,
            createdAt: start)
    }

    func newBatch(owner: String = "t1", at now: Date) -> NewBatch {
        NewBatch(
            type: "noop", owner: owner, context: JSONText(unchecked: "{}"), options: options(), dryRun: false,
            priority: 0, sealed: true, createdAt: now)
    }

    func fire(_ id: String, due: Date, batch: NewBatch?, skipIfRunning: Bool = true) -> ScheduleFire {
        ScheduleFire(
            scheduleID: id, expectedNextRunAt: due, nextRunAt: due.addingTimeInterval(60), batch: batch,
            items: payloads(2), skipIfRunning: skipIfRunning, now: due)
    }

    @Test("a tick is fired once by concurrent callers, with its batch", arguments: StoreFactory.all)
    func fireOnce(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            try await store.createSchedule(schedule("s1"))
            let results = try await withThrowingTaskGroup(of: ScheduleFireResult.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        try await store.fireSchedule(fire("s1", due: start, batch: newBatch(at: start)))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let created = results.compactMap { result -> BatchRecord? in
                if case .created(let record) = result { return record }
                return nil
            }
            #expect(created.count == 1)
            #expect(results.filter { $0 == .lost }.count == 3)
            let batch = try #require(created.first)
            #expect(batch.counts.total == 2)
            #expect(try await store.scheduleID(ofBatch: batch.id) == "s1")
            #expect(try await store.batches(BatchQuery(owner: "t1", limit: 10)).count == 1)
            let stored = try #require(try await store.schedule(id: "s1"))
            #expect(stored.runs == 1)
            #expect(stored.lastBatchID == batch.id)
            #expect(stored.nextRunAt == start.addingTimeInterval(60))
            // The same tick again: already fired.
            #expect(try await store.fireSchedule(fire("s1", due: start, batch: newBatch(at: start))) == .lost)
        }
    }

    @Test("a run still going skips the next tick unless overlap is on", arguments: StoreFactory.all)
    func overlap(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            try await store.createSchedule(schedule("s1"))
            let firstFire = try await store.fireSchedule(fire("s1", due: start, batch: newBatch(at: start)))
            guard case .created(let first) = firstFire else {
                Issue.record("the first tick should create a batch")
                return
            }
            let second = start.addingTimeInterval(60)
            #expect(try await store.fireSchedule(fire("s1", due: second, batch: newBatch(at: second))) == .skipped)
            var stored = try #require(try await store.schedule(id: "s1"))
            #expect(stored.runs == 1)
            #expect(stored.skipped == 1)
            #expect(stored.lastBatchID == first.id)
            // With overlap the third tick runs beside the first run.
            let third = start.addingTimeInterval(120)
            let overlapping = try await store.fireSchedule(
                fire("s1", due: third, batch: newBatch(at: third), skipIfRunning: false))
            guard case .created = overlapping else {
                Issue.record("overlap should run")
                return
            }
            // Once the last run ended, the next tick runs again.
            stored = try #require(try await store.schedule(id: "s1"))
            let last = try #require(stored.lastBatchID)
            _ = try await store.transition(last, .cancel, reason: nil, at: third)
            let fourth = start.addingTimeInterval(180)
            let fourthFire = try await store.fireSchedule(fire("s1", due: fourth, batch: newBatch(at: fourth)))
            guard case .created = fourthFire else {
                Issue.record("the tick after the run ended should run")
                return
            }
            #expect(try await store.schedule(id: "s1")?.runs == 3)
        }
    }

    @Test("list, pause, resume and delete are tenant-scoped", arguments: StoreFactory.all)
    func lifecycle(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            try await store.createSchedule(schedule("s1"))
            try await store.createSchedule(schedule("s2", tenant: "t2"))
            #expect(try await store.schedules(tenant: "t1").map(\.id) == ["s1"])
            #expect(try await store.schedules(tenant: nil).map(\.id).sorted() == ["s1", "s2"])
            #expect(try await store.setSchedulePaused(id: "s1", tenant: "t2", paused: true, nextRunAt: nil) == nil)
            let paused = try await store.setSchedulePaused(id: "s1", tenant: "t1", paused: true, nextRunAt: nil)
            #expect(paused?.paused == true)
            #expect(try await store.dueSchedules(now: start.addingTimeInterval(3_600), limit: 10).map(\.id) == ["s2"])
            #expect(try await store.fireSchedule(fire("s1", due: start, batch: newBatch(at: start))) == .lost)
            let later = start.addingTimeInterval(7_200)
            let resumed = try await store.setSchedulePaused(id: "s1", tenant: "t1", paused: false, nextRunAt: later)
            #expect(resumed?.paused == false)
            #expect(resumed?.nextRunAt == later)
            #expect(try await store.deleteSchedule(id: "s1", tenant: "t2") == false)
            #expect(try await store.deleteSchedule(id: "s1", tenant: "t1"))
            #expect(try await store.schedule(id: "s1") == nil)
            #expect(try await store.deleteSchedule(id: "s1", tenant: "t1") == false)
        }
    }

    @Test("an ended batch is finalized once: leased, taken over after expiry, fenced", arguments: StoreFactory.all)
    func finalization(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            let batch = try await store.createBatch(newBatch(at: start), items: payloads(3))
            let dry = try await store.createBatch(
                NewBatch(
                    type: "noop", owner: "t1", context: JSONText(unchecked: "{}"), options: options(), dryRun: true,
                    priority: 0, sealed: true, createdAt: start), items: payloads(1))
            let other = try await store.createBatch(
                NewBatch(
                    type: "other", owner: "t1", context: JSONText(unchecked: "{}"), options: options(), dryRun: false,
                    priority: 0, sealed: true, createdAt: start), items: payloads(1))
            #expect(try await store.queueFinalizations(limit: 100, now: start) == 0)
            _ = try await store.drainAll(now: start)
            _ = try await store.enforceDeadlines(now: start)
            _ = try await store.transition(dry.id, .cancel, reason: nil, at: start)
            #expect(try await store.batch(batch.id)?.status == .completed)
            #expect(try await store.batch(other.id)?.status.isEnded == true)
            // The finished batch and the other type's; never a dry run.
            #expect(try await store.queueFinalizations(limit: 100, now: start) == 2)
            #expect(try await store.step(.finalize, of: dry.id) == nil)
            #expect(try await store.queueFinalizations(limit: 100, now: start) == 0)

            let first = try #require(
                try await store.claimStep(.finalize, owner: "a", types: ["noop"], leaseDuration: 30, now: start))
            #expect(first.batchID == batch.id)
            #expect(first.attempt == 1)
            // Leased: nobody else gets it, and no other noop batch waits.
            #expect(
                try await store.claimStep(.finalize, owner: "b", types: ["noop"], leaseDuration: 30, now: start) == nil)
            #expect(try await store.renewStep(first, leaseDuration: 30, now: start.addingTimeInterval(20)))
            let beforeExpiry = start.addingTimeInterval(49)
            #expect(
                try await store.claimStep(.finalize, owner: "b", types: ["noop"], leaseDuration: 30, now: beforeExpiry)
                    == nil)
            // Node a died: after its lease expires, b takes over.
            let afterExpiry = start.addingTimeInterval(51)
            let second = try #require(
                try await store.claimStep(.finalize, owner: "b", types: ["noop"], leaseDuration: 30, now: afterExpiry))
            #expect(second.attempt == 2)
            #expect(try await store.renewStep(first, leaseDuration: 30, now: afterExpiry) == false)
            #expect(
                try await store.completeFinalization(
                    first, result: JSONText(unchecked: "{\"by\":\"a\"}"), now: afterExpiry) == false)
            #expect(
                try await store.completeFinalization(
                    second, result: JSONText(unchecked: "{\"by\":\"b\"}"), now: afterExpiry))
            #expect(
                try await store.completeFinalization(
                    second, result: JSONText(unchecked: "{\"by\":\"c\"}"), now: afterExpiry) == false)
            #expect(try await store.batch(batch.id)?.result?.value() == ["by": "b"])
            let record = try #require(try await store.step(.finalize, of: batch.id))
            #expect(record.state == .done)
            #expect(record.attempts == 2)
            #expect(record.finishedAt == afterExpiry)
            let finalized = try await store.events(of: batch.id, afterID: 0, limit: 100).filter {
                $0.type == .finalized
            }
            #expect(finalized.map(\.data) == [["attempt": 2, "node": "b", "result": true]])
            // Done: never claimed again, even long after.
            #expect(
                try await store.claimStep(
                    .finalize,
                    owner: "c", types: ["noop"], leaseDuration: 30, now: start.addingTimeInterval(3_600)) == nil)
            #expect(try await store.claimStep(.finalize, owner: "c", types: [], leaseDuration: 30, now: start) == nil)
            #expect(
                try await store.claimStep(.finalize, owner: "c", types: ["other"], leaseDuration: 30, now: start)?
                    .batchID
                    == other.id)
        }
    }

    // MARK: - Rules

    func record(every: Double, next: Date, catchUp: CatchUp) -> ScheduleRecord {
        var record = schedule("s", catchUp: catchUp)
        record.every = every
        record.nextRunAt = next
        return record
    }

    @Test("a due tick runs; a missed one runs once or is skipped as catch_up says")
    func rules() throws {
        let timing = ScheduleTiming(every: 3_600)
        let onTime = record(every: 3_600, next: start, catchUp: .skip)
        #expect(ScheduleRules.decide(onTime, timing: timing, now: start.addingTimeInterval(-1)) == nil)
        let due = try #require(ScheduleRules.decide(onTime, timing: timing, now: start.addingTimeInterval(5)))
        #expect(due.run)
        #expect(due.nextRunAt == start.addingTimeInterval(3_600))
        // Three hours and a bit with no node: the last tick passed 10 minutes ago.
        let late = start.addingTimeInterval(3 * 3_600 + 600)
        let skipped = try #require(ScheduleRules.decide(onTime, timing: timing, now: late))
        #expect(!skipped.run)
        #expect(skipped.nextRunAt == start.addingTimeInterval(4 * 3_600))
        let caughtUp = try #require(
            ScheduleRules.decide(record(every: 3_600, next: start, catchUp: .one), timing: timing, now: late))
        #expect(caughtUp.run)
        #expect(caughtUp.nextRunAt == start.addingTimeInterval(4 * 3_600))
        // Paused: never due.
        var paused = onTime
        paused.paused = true
        #expect(ScheduleRules.decide(paused, timing: timing, now: late) == nil)
        // Cron: 03:00 daily, two days missed.
        let cron = ScheduleTiming(cron: try CronExpression("0 3 * * *"), timeZone: TimeZone(identifier: "UTC")!)
        var daily = onTime
        daily.every = nil
        daily.cron = "0 3 * * *"
        // 03:00 UTC on the day of `start`.
        daily.nextRunAt = Date(timeIntervalSince1970: Double(1_900_000_000 / 86_400 * 86_400 + 3 * 3_600))
        let dayLater = daily.nextRunAt!.addingTimeInterval(2 * 86_400 + 3_600)
        let missed = try #require(ScheduleRules.decide(daily, timing: cron, now: dayLater))
        #expect(!missed.run)
        #expect(missed.nextRunAt == daily.nextRunAt!.addingTimeInterval(3 * 86_400))
        // Hourly, 30 days without a node: decided from two evaluations, not 720.
        let hourlyCron = ScheduleTiming(cron: try CronExpression("0 * * * *"), timeZone: TimeZone(identifier: "UTC")!)
        let hour = Date(timeIntervalSince1970: Double(1_900_000_000 / 3_600 * 3_600))
        var often = daily
        often.cron = "0 * * * *"
        often.nextRunAt = hour
        let month = hour.addingTimeInterval(30 * 86_400 + 600)
        let skippedMonth = try #require(ScheduleRules.decide(often, timing: hourlyCron, now: month))
        #expect(skippedMonth.run == false)
        #expect(skippedMonth.nextRunAt == hour.addingTimeInterval(30 * 86_400 + 3_600))
        often.catchUp = .one
        #expect(ScheduleRules.decide(often, timing: hourlyCron, now: month)?.run == true)
        // The last tick 30 s ago: on time, whatever catch_up says.
        often.catchUp = .skip
        let onTheHour = hour.addingTimeInterval(30 * 86_400 + 30)
        #expect(ScheduleRules.decide(often, timing: hourlyCron, now: onTheHour)?.run == true)
    }
}
