import Foundation
import Logging
import ServiceLifecycle
import Testing
import TrancheStore
import TrancheTestSupport

@testable import TranchePostgres

/// What only the PostgreSQL store does: nodes starting together, telling
/// other processes about new work, and running its own background work.
@Suite("PostgreSQL store")
struct PostgresStoreTests {
    @Test("nodes starting at once migrate the schema once and all open")
    func concurrentMigrations() async throws {
        let url = try await TestPostgres.freshDatabaseURL()
        let stores = try await withThrowingTaskGroup(of: PostgresBatchStore.self) { group in
            for _ in 0..<6 { group.addTask { try await PostgresBatchStore(url: url) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(stores.count == 6)
        // Every store sees the same schema: a batch made through one is read through another.
        try await stores[0].withRunning {
            try await stores[5].withRunning {
                let batch = try await stores[0].createBatch(NewBatch(type: "t"), items: [])
                #expect(try await stores[5].batch(batch.id)?.status == .completed)
            }
        }
    }

    @Test("a batch created through one store wakes the listeners of another")
    func notifications() async throws {
        let url = try await TestPostgres.freshDatabaseURL()
        try await TestPostgres.withStore(url: url) { listener in
            try await TestPostgres.withStore(url: url) { writer in
                let wakeups = Wakeups()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    let notifications = listener.workNotifications()
                    group.addTask {
                        for await _ in notifications { await wakeups.add() }
                    }
                    // The first wake-up says the listener is in place.
                    #expect(try await wakeups.wait(for: 1), "the listener never started")
                    let items = (0..<10).map { NewItem(payload: JSONText(unchecked: "{\"n\":\($0)}")) }
                    _ = try await writer.createBatch(NewBatch(type: "t"), items: items)
                    #expect(
                        try await wakeups.wait(for: 2),
                        "no NOTIFY reached the other store within \(Int(defaultDeadline)) s")
                    group.cancelAll()
                }
            }
        }
    }

    /// Counts wake-ups.
    actor Wakeups {
        var count = 0
        func add() { count += 1 }

        /// Waits (at most ``defaultDeadline`` seconds) until `target` wake-ups arrived.
        func wait(for target: Int) async throws -> Bool {
            let deadline = ContinuousClock.now + .seconds(defaultDeadline)
            while count < target, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            return count >= target
        }
    }

    @Test("a call made before the store runs waits for run(); once it ends, calls fail at once and listeners end")
    func lifecycle() async throws {
        let store = try await PostgresBatchStore(url: try await TestPostgres.freshDatabaseURL())
        let notifications = store.workNotifications()
        try await withThrowingTaskGroup(of: Void.self) { group in
            // Queued before run() starts, as in a ServiceGroup whose services start together.
            group.addTask { _ = try await store.createBatch(NewBatch(type: "early"), items: []) }
            try await Task.sleep(for: .milliseconds(50))
            try await store.withRunning {
                try await group.next()
                let batches = try await store.batches(BatchQuery(limit: 10))
                #expect(batches.map(\.type) == ["early"])
            }
        }
        // Ended: the notifications stream finished, and calls fail without waiting for a deadline.
        try await withDeadline("the work notifications to end with the store") {
            for await _ in notifications {}
        }
        await #expect(throws: StoreError.self) { _ = try await store.batches(BatchQuery(limit: 1)) }
        await #expect(throws: StoreError.self) { try await store.run() }
    }

    @Test("in a ServiceGroup the store shuts down after the services that use it")
    func serviceGroupOrder() async throws {
        let store = try await PostgresBatchStore(url: try await TestPostgres.freshDatabaseURL())
        let user = LastWriter(store: store)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: store), .init(service: user)],
                logger: .init(label: "tranche.test", factory: { _ in SwiftLogNoOpLogHandler() })))
        try await withDeadline("the service group to start and shut down") {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                try await user.started.wait(for: "the service using the store to start")
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }
        // The write made on shutdown went through: the store was still running.
        #expect(user.wroteOnShutdown.hasFired)
    }

    /// A service that writes to the store when it is asked to shut down, as
    /// the engine does when it releases its leases.
    struct LastWriter: Service {
        let store: PostgresBatchStore
        let started = Flag()
        let wroteOnShutdown = Flag()

        func run() async throws {
            started.fire()
            try? await gracefulShutdown()
            _ = try await store.createBatch(NewBatch(type: "last"), items: [])
            wroteOnShutdown.fire()
        }
    }

    @Test("a store from TestPostgres.runningStore() runs for the length of the test", .testResources)
    func storeRunningForTheTest() async throws {
        let store = try await TestPostgres.runningStore()
        let batch = try await store.createBatch(NewBatch(type: "t"), items: [])
        #expect(try await store.batch(batch.id)?.status == .completed)
    }

    @Test("a call past its deadline fails, is left behind, and the next call runs on a fresh pool")
    func deadline() async throws {
        let url = try await TestPostgres.freshDatabaseURL()
        // The schema first, without the short deadline: on a busy machine
        // the migrations alone may take longer than it.
        try await TestPostgres.withStore(url: url) { _ in }
        // Far below the query's 60 s, far above what a busy machine needs for a call.
        let store = try await PostgresBatchStore(url: url, configuration: .init(operationTimeout: 10))
        try await store.withRunning {
            let error = await #expect(throws: StoreError.self) {
                try await store.read { try await $0.run("SELECT pg_sleep(60)") }
            }
            #expect(error?.message == "the database did not answer within 10 s")
            // The pool behind it is replaced; a retry runs (on a busy machine a
            // fresh connection may itself take longer than the deadline: retry a few times).
            var rows: Int?
            for _ in 0..<10 where rows == nil {
                rows = try? await store.read { connection in try await connection.count("SELECT 1") }
            }
            #expect(rows == 1, "no call succeeded after the deadline, in 10 tries")
        }
    }

    @Test("the store's connections run without JIT compilation")
    func noJIT() async throws {
        try await TestPostgres.withStore(url: try await TestPostgres.freshDatabaseURL()) { store in
            // Several calls at once, so that more than one pooled connection answers.
            let settings = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        try await store.read { connection in
                            try await connection.one("SELECT current_setting('jit'), pg_sleep(0.05)")?.get(0) ?? ""
                        }
                    }
                }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
            #expect(settings == ["off"])
        }
    }

    @Test("a malformed URL is refused with a clear error")
    func badURL() async throws {
        await #expect(throws: StoreError.self) { _ = try await PostgresBatchStore(url: "mysql://nope") }
        await #expect(throws: StoreError.self) {
            _ = try await PostgresBatchStore(url: "postgres://u@127.0.0.1:5432/db?sslmode=sometimes")
        }
    }
}
