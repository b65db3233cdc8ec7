import Foundation
import Testing
import TranchePostgres
import TrancheStore
import TrancheTestSupport

/// What only the PostgreSQL store does: nodes starting together, and
/// telling other processes about new work.
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
        let batch = try await stores[0].createBatch(NewBatch(type: "t"), items: [])
        #expect(try await stores[5].batch(batch.id)?.status == .completed)
        for store in stores { store.close() }
    }

    @Test("a batch created through one store wakes the listeners of another")
    func notifications() async throws {
        let url = try await TestPostgres.freshDatabaseURL()
        let listener = try await PostgresBatchStore(url: url)
        let writer = try await PostgresBatchStore(url: url)
        defer {
            listener.close()
            writer.close()
        }
        let wakeups = Wakeups()
        let consumer = Task {
            for await _ in listener.workNotifications() { await wakeups.add() }
        }
        defer { consumer.cancel() }
        // The first wake-up says the listener is in place.
        #expect(try await wakeups.wait(for: 1), "the listener never started")
        let items = (0..<10).map { NewItem(payload: JSONText(unchecked: "{\"n\":\($0)}")) }
        _ = try await writer.createBatch(NewBatch(type: "t"), items: items)
        #expect(try await wakeups.wait(for: 2), "no NOTIFY reached the other store within 30 s")
    }

    /// Counts wake-ups.
    actor Wakeups {
        var count = 0
        func add() { count += 1 }

        /// Waits (at most 30 s) until `target` wake-ups arrived.
        func wait(for target: Int) async throws -> Bool {
            for _ in 0..<3_000 where count < target { try await Task.sleep(for: .milliseconds(10)) }
            return count >= target
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
