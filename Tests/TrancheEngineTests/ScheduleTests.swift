import Foundation
import Testing
import TrancheEngine
import TrancheStrategies
import TrancheTestSupport

/// The leader's schedule ticks, by a test clock; the engines here are not
/// running (no sweep of their own), so each tick fires when the test says.
@Suite("Schedules fire by the engine's clock")
struct ScheduleTests {
    let clock = TestClock()

    func engine(_ store: any BatchStore, node: String = "n1") -> TrancheEngine {
        makeEngine(store: store, [BuiltinStrategies.noop]) { configuration in
            configuration.clock = clock.wallClock
            configuration.nodeID = node
        }
    }

    func hourly(_ id: String, catchUp: CatchUp = .one, overlap: Bool = false) -> ScheduleRecord {
        ScheduleRecord(
            id: id, tenant: "t1",
            batch: ScheduledBatch(
                type: "noop", context: [:], options: options(), dryRun: false, priority: 0, items: [1, 2, 3]),
            cron: nil, timeZone: "UTC", every: 3_600, catchUp: catchUp, overlap: overlap, nextRunAt: clock.now,
            createdAt: clock.now)
    }

    func schedules(_ store: any BatchStore) throws -> any ScheduleStore {
        try #require(store as? any ScheduleStore)
    }

    @Test("a due tick creates one batch carrying its schedule; the next waits for its time", arguments: EngineStore.all)
    func dueTick(store: EngineStore) async throws {
        let start = clock.now
        try await store.withSite { site in
            try await site.withStore { store in
                let node = engine(store)
                try await schedules(store).createSchedule(hourly("s1"))
                #expect(try await node.fireDueSchedules().isEmpty == false)
                let batches = try await store.batches(BatchQuery(owner: "t1", limit: 10))
                #expect(batches.count == 1)
                let batch = try #require(batches.first)
                #expect(batch.counts.total == 3)
                #expect(batch.createdAt == start)
                #expect(try await schedules(store).scheduleID(ofBatch: batch.id) == "s1")
                #expect(try await node.fireDueSchedules().isEmpty)
                // An hour later the run has not ended (no node runs it) and overlap is off: skipped.
                clock.advance(by: 3_600)
                #expect(try await node.fireDueSchedules().isEmpty)
                let skipped = try #require(try await schedules(store).schedule(id: "s1"))
                #expect(skipped.skipped == 1)
                #expect(skipped.nextRunAt == start.addingTimeInterval(7_200))
                // Once the run ended, the next tick runs.
                _ = try await store.transition(batch.id, .cancel, reason: nil, at: clock.now)
                clock.advance(by: 3_600)
                let next = try await node.fireDueSchedules()
                #expect(next.count == 1)
                #expect(try await schedules(store).schedule(id: "s1")?.runs == 2)
            }
        }
    }

    @Test("ticks missed while no node ran: one run with catch_up one, none with skip", arguments: EngineStore.all)
    func catchUp(store: EngineStore) async throws {
        let start = clock.now
        try await store.withSite { site in
            try await site.withStore { store in
                let node = engine(store)
                try await schedules(store).createSchedule(hourly("one", catchUp: .one))
                try await schedules(store).createSchedule(hourly("skip", catchUp: .skip))
                // Three hours and ten minutes with no node: four ticks passed.
                clock.advance(by: 3 * 3_600 + 600)
                let created = try await node.fireDueSchedules()
                #expect(created.count == 1)
                #expect(try await schedules(store).scheduleID(ofBatch: try #require(created.first).id) == "one")
                let one = try #require(try await schedules(store).schedule(id: "one"))
                let skip = try #require(try await schedules(store).schedule(id: "skip"))
                #expect(one.runs == 1)
                #expect(skip.runs == 0)
                #expect(skip.skipped == 1)
                // Both keep their phase: the next tick is on the hour after now.
                #expect(one.nextRunAt == start.addingTimeInterval(4 * 3_600))
                #expect(skip.nextRunAt == start.addingTimeInterval(4 * 3_600))
                #expect(try await node.fireDueSchedules().isEmpty)
            }
        }
    }

    @Test("overlap on: a tick runs while the last run is still going", arguments: EngineStore.all)
    func overlap(store: EngineStore) async throws {
        try await store.withSite { site in
            try await site.withStore { store in
                let node = engine(store)
                try await schedules(store).createSchedule(hourly("s1", overlap: true))
                #expect(try await node.fireDueSchedules().count == 1)
                clock.advance(by: 3_600)
                #expect(try await node.fireDueSchedules().count == 1)
                #expect(try await store.batches(BatchQuery(owner: "t1", limit: 10)).count == 2)
            }
        }
    }

    @Test("two nodes firing the same due ticks at once create each run once", arguments: EngineStore.all)
    func concurrentNodes(store: EngineStore) async throws {
        try await store.withSite { site in
            try await site.withStore { first in
                try await site.withStore { second in
                    for index in 0..<5 {
                        try await schedules(first).createSchedule(hourly("s\(index)", overlap: true))
                    }
                    let nodes = [engine(first, node: "a"), engine(second, node: "b")]
                    for round in 0..<3 {
                        let created = try await withThrowingTaskGroup(of: Int.self) { group in
                            for node in nodes + nodes {
                                group.addTask { try await node.fireDueSchedules().count }
                            }
                            return try await group.reduce(0, +)
                        }
                        #expect(created == 5, "round \(round)")
                        clock.advance(by: 3_600)
                    }
                    let batches = try await first.batches(BatchQuery(owner: "t1", limit: 100))
                    #expect(batches.count == 15)
                    for index in 0..<5 {
                        #expect(try await schedules(first).schedule(id: "s\(index)")?.runs == 3)
                    }
                }
            }
        }
    }

    @Test("a cron schedule in a time zone fires at its local time", arguments: EngineStore.all)
    func cronInZone(store: EngineStore) async throws {
        // 2030-03-16 (a Saturday) at 23:00 UTC; 03:00 in Paris (CET) is 02:00 UTC the next day.
        let clock = TestClock(try #require(ISO8601DateFormatter().date(from: "2030-03-16T23:00:00Z")))
        try await store.withSite { site in
            try await site.withStore { store in
                let node = makeEngine(store: store, [BuiltinStrategies.noop]) { $0.clock = clock.wallClock }
                let expression = try CronExpression("0 3 * * *")
                let paris = try #require(TimeZone(identifier: "Europe/Paris"))
                let first = try #require(expression.nextDate(after: clock.now, in: paris))
                #expect(ISO8601DateFormatter().string(from: first) == "2030-03-17T02:00:00Z")
                var record = hourly("daily")
                record.every = nil
                record.cron = "0 3 * * *"
                record.timeZone = "Europe/Paris"
                record.nextRunAt = first
                try await schedules(store).createSchedule(record)
                clock.advance(by: 2 * 3_600)
                #expect(try await node.fireDueSchedules().isEmpty)
                clock.advance(by: 3_600 + 30)
                #expect(try await node.fireDueSchedules().count == 1)
                let next = try #require(try await schedules(store).schedule(id: "daily")?.nextRunAt)
                #expect(ISO8601DateFormatter().string(from: next) == "2030-03-18T02:00:00Z")
            }
        }
    }
}
