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
            // Tenant a: as many one-at-a-time batches as the node has chunk
            // slots, each in chunks of 10 items.
            var held: [BatchID] = []
            for _ in 0..<workers {
                let batch = try await engine.submit(
                    Submission(type: "turn", options: options(chunkSize: 10, concurrency: 1), owner: "a"),
                    items: try items(40))
                held.append(batch.id)
            }
            try await waitUntil("one item of each of tenant a's \(workers) batches to start") {
                busy.inFlight == workers
            }
            let waiting = try await engine.submit(
                try Submission(
                    type: "scripted", context: ScriptedStrategy.Context(delayMS: 0), options: options(), owner: "b"),
                items: try items(1))
            // Hand a's items their turns one at a time; after each, wait for
            // either b's item or a's next item to start.
            var turnsGiven = 0
            while small.started == 0 && turnsGiven < 6 {
                let startedBefore = busy.started
                turns.release()
                turnsGiven += 1
                try await waitUntil("tenant b's item, or tenant a's next item, to start") {
                    small.started > 0 || busy.started > startedBefore
                }
            }
            // b's chunk queued for the next free worker: it ran after the
            // first item of a's that ended (the second, if its runner had
            // not queued yet), not after one of a's chunks of 10 ended.
            #expect(small.started == 1)
            #expect(turnsGiven <= 2)
            let done = try await engine.waitForEnd(waiting.id)
            #expect(done.status == .completed)
            for _ in 0..<(workers * 40) { turns.release() }
            for id in held {
                let ended = try await engine.waitForEnd(id)
                #expect(ended.status == .completed && ended.counts.succeeded == 40)
            }
        }
    }
}
