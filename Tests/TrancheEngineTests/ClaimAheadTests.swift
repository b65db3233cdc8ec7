import Testing
import TrancheCore
import TrancheEngine
import TrancheTestSupport

/// A node leases its next chunk while the chunks in flight run down, not
/// after their last item: it keeps a reserve of items waiting to start.
@Suite("Claiming ahead on one node")
struct ClaimAheadTests {
    /// Items that each wait for a turn the test hands out, on 2 workers.
    let probe = Probe()
    let turns = AsyncSemaphore(permits: 0)
    let workers = 2
    var strategies: [AnyBatchStrategy] {
        [AnyBatchStrategy(TenantShareEngineTests.TurnStrategy(probe: probe, turns: turns))]
    }

    /// Seals `batch`, gives every item its turn, and checks that all
    /// `count` items succeeded, none run twice beyond a rescue.
    func finish(_ batch: BatchRecord, of count: Int, on engine: TrancheEngine) async throws {
        _ = try await engine.seal(batch.id)
        for _ in 0..<count { turns.release() }
        let ended = try await engine.waitForEnd(batch.id)
        #expect(ended.status == .completed && ended.counts.succeeded == Int64(count))
        #expect(probe.duplicates() <= Int(ended.counts.rescued))
    }

    @Test(
        "with every worker busy and no item waiting, the next chunk is leased and queues for a worker",
        arguments: EngineStore.all)
    func nextChunkQueues(store: EngineStore) async throws {
        defer { for _ in 0..<20 { turns.release() } }
        try await store.withEngine(strategies, workers: workers) { engine in
            // Chunks of 2 on 2 workers: the first chunk's items take both
            // workers and none of its items waits to start.
            let batch = try await engine.open(
                Submission(type: "turn", options: options(chunkSize: 2, concurrency: 8)))
            _ = try await engine.append(to: batch.id, startSeq: 0, items: try items(2))
            try await waitUntil("the first chunk's items to take both workers") { probe.inFlight == workers }
            // More items arrive before any of those ends: the next chunk is
            // leased although no worker is free, and its first item waits
            // for one (its runner admits one at a time).
            _ = try await engine.append(to: batch.id, startSeq: 2, items: try items(4))
            try await waitUntil("the next chunk's first item to queue for a worker while the first chunk's run") {
                engine.itemsWaitingForWorkers == 1
            }
            #expect(probe.started == workers)
            try await finish(batch, of: 6, on: engine)
        }
    }

    @Test(
        "items starting take the waiting ones below the reserve: the next chunk is leased with no new work arriving",
        arguments: EngineStore.all)
    func reserveRunsLow(store: EngineStore) async throws {
        defer { for _ in 0..<20 { turns.release() } }
        // No timed look for work: only wake-ups lease chunks here (the
        // reserve running low, and the stores' own wake-ups on writes).
        let configure: (inout TrancheEngine.Configuration) -> Void = {
            $0.sweepInterval = 600
            $0.notifiedIdlePoll = 600
        }
        try await store.withEngine(strategies, workers: workers, configure: configure) { engine in
            let batch = try await engine.open(
                Submission(type: "turn", options: options(chunkSize: 4, concurrency: 8)))
            // A first chunk of 4: two items take both workers, two wait to
            // start, as many as the reserve.
            _ = try await engine.append(to: batch.id, startSeq: 0, items: try items(4))
            try await waitUntil("the first chunk's items to take both workers, one more queued") {
                probe.inFlight == workers && engine.itemsWaitingForWorkers == 1
            }
            // A second chunk arrives while the reserve is full: not leased.
            _ = try await engine.append(to: batch.id, startSeq: 4, items: try items(4))
            // One item ends and the first chunk's third item starts: one
            // waits to start, below the reserve, while the first chunk still
            // runs. The second chunk is leased and its first item queues.
            turns.release()
            try await waitUntil("the second chunk's first item to queue once the reserve ran low") {
                engine.itemsWaitingForWorkers == 2
            }
            #expect(probe.started == 3)
            try await finish(batch, of: 8, on: engine)
        }
    }
}
