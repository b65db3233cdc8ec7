import Foundation
import Synchronization
import Testing
import TrancheCore
import TrancheEngine
import TrancheTestSupport

/// A tenant's batch waits about one item of another tenant's, not one chunk,
/// even when that tenant's chunks fill every chunk slot on the node.
@Suite("Fair share on one node")
struct TenantShareEngineTests {
    /// Items that each wait for one turn the test hands out.
    struct TurnStrategy: BatchStrategy {
        struct Item: Codable, Sendable {
            var n: Int
        }

        let probe: Probe
        let turns: AsyncSemaphore
        var type: String { "turn" }

        func process(_ item: Item, context: JSONValue, input: ItemInput) async throws -> Int {
            _ = probe.enter(input.seq)
            defer { probe.leave() }
            guard await turns.acquire() else { throw CancellationError() }
            return item.n
        }
    }

    @Test(
        "a tenant's one-item batch runs after one item of another tenant's, whose chunks fill the node",
        arguments: EngineStore.all)
    func smallBatchWaitsOneItem(store: EngineStore) async throws {
        let busy = Probe()
        let small = Probe()
        let turns = AsyncSemaphore(permits: 0)
        let workers = 4
        let strategies = [
            AnyBatchStrategy(TurnStrategy(probe: busy, turns: turns)), AnyBatchStrategy(ScriptedStrategy(probe: small)),
        ]
        // Enough turns for every item once the test is done with them.
        defer { for _ in 0..<400 { turns.release() } }
        try await store.withEngine(strategies, workers: workers) { engine in
            // Tenant a: two batches of two items at a time, in chunks of 10.
            // Each may hold two chunks (one more than its concurrency needs),
            // so together they fill the node's 4 chunk slots and 4 workers.
            var held: [BatchID] = []
            for _ in 0..<2 {
                let batch = try await engine.submit(
                    Submission(type: "turn", options: options(chunkSize: 10, concurrency: 2), owner: "a"),
                    items: try items(40))
                held.append(batch.id)
            }
            try await waitUntil("tenant a's items to take all \(workers) workers") { busy.inFlight == workers }
            let waiting = try await engine.submit(
                try Submission(
                    type: "scripted", context: ScriptedStrategy.Context(delayMS: 0), options: options(), owner: "b"),
                items: try items(1))
            // b's chunk is claimed although a's chunks fill the node, and its
            // item queues for the next free worker (a's runners wait on their
            // batches' own concurrency, not on workers).
            try await waitUntil("tenant b's item to queue for a worker") { engine.itemsWaitingForWorkers == 1 }
            #expect(small.started == 0)
            // One of a's items ends (one turn, no more): its worker goes to
            // b's item, which starts without waiting for any chunk of a's.
            turns.release()
            try await waitUntil("tenant b's item to start after one of tenant a's items ended") {
                small.started == 1
            }
            let done = try await engine.waitForEnd(waiting.id)
            #expect(done.status == .completed)
            for _ in 0..<80 { turns.release() }
            for id in held {
                let ended = try await engine.waitForEnd(id)
                #expect(ended.status == .completed && ended.counts.succeeded == 40)
            }
        }
    }
}
