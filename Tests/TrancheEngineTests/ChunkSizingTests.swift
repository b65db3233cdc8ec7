import Foundation
import Synchronization
import Testing
import TrancheEngine
import TrancheTestSupport

/// A chunk strategy (one call per chunk, one worker per call, like `noop`)
/// that records each call's items and holds it until the test opens the gate.
final class ChunkCalls: Sendable {
    private struct State {
        var sizes: [Int] = []
        var seqs: [Int64] = []
        var running = 0
    }

    private let state = Mutex(State())
    let gate = OneShotEvent()

    /// Items per call, in the order the calls began.
    var sizes: [Int] { state.withLock { $0.sizes } }
    /// Every seq run, all calls together.
    var seqs: [Int64] { state.withLock { $0.seqs } }
    /// Calls running now.
    var running: Int { state.withLock { $0.running } }

    /// The strategy `chunked`: waits for `gate` when `blocking`.
    func strategy(blocking: Bool) -> AnyBatchStrategy {
        AnyBatchStrategy(
            type: "chunked", prepare: { $0 },
            bind: { _ in
                BoundStrategy(
                    process: { _ in .success(.null) },
                    processChunk: { inputs in
                        self.state.withLock { state in
                            state.sizes.append(inputs.count)
                            state.seqs += inputs.map(\.seq)
                            state.running += 1
                        }
                        defer { self.state.withLock { $0.running -= 1 } }
                        if blocking { await self.gate.wait() }
                        return Array(repeating: .success(.null), count: inputs.count)
                    })
            })
    }
}

@Suite("Automatic chunk sizes", .testResources)
struct ChunkSizingTests {
    static func automatic(concurrency: Int) -> BatchOptions {
        var options = BatchOptions()
        options.concurrency = concurrency
        return options
    }

    @Test("sizes grow at most fourfold while chunks are quick, drop to the target when slow, halve when failing")
    func rule() {
        typealias Observation = ChunkSizing.Observation
        // 100 items in 0.01 s would fit 10,000 in 1 s: grows fourfold, up to 2,000.
        #expect(ChunkSizing.next(after: 100, Observation(items: 100, failures: 0, seconds: 0.01), target: 1) == 400)
        #expect(
            ChunkSizing.next(after: 1_000, Observation(items: 1_000, failures: 0, seconds: 0.01), target: 1) == 2_000)
        // 300 items in 0.5 s: 600 fit in a second.
        #expect(ChunkSizing.next(after: 300, Observation(items: 300, failures: 0, seconds: 0.5), target: 1) == 600)
        // 100 slow items in 50 s: 2 fit in a second.
        #expect(ChunkSizing.next(after: 100, Observation(items: 100, failures: 0, seconds: 50), target: 1) == 2)
        #expect(ChunkSizing.next(after: 12, Observation(items: 12, failures: 0, seconds: 12), target: 1) == 1)
        #expect(ChunkSizing.next(after: 1, Observation(items: 1, failures: 0, seconds: 600), target: 1) == 1)
        // A fifth failing halves, however quick.
        #expect(ChunkSizing.next(after: 400, Observation(items: 100, failures: 20, seconds: 0.01), target: 1) == 200)
        #expect(ChunkSizing.next(after: 1, Observation(items: 1, failures: 1, seconds: 0.01), target: 1) == 1)
        #expect(ChunkSizing.next(after: 400, Observation(items: 100, failures: 19, seconds: 0.01), target: 1) == 1_600)
        // Nothing ran (a paused batch, a drain): no change.
        #expect(ChunkSizing.next(after: 300, Observation(items: 0, failures: 0, seconds: 9), target: 1) == 300)
        // Whatever the numbers, a size within 1…2,000.
        #expect(
            ChunkSizing.next(after: .max, Observation(items: .max, failures: 0, seconds: 0), target: .infinity)
                == 2_000)
        #expect(ChunkSizing.next(after: .min, Observation(items: 5, failures: -3, seconds: .nan), target: .nan) >= 1)
    }

    @Test("a node learns sizes per batch and forgets a batch")
    func learning() throws {
        let id = try #require(BatchID("01234567-89ab-7def-8123-456789abcdef"))
        var sizing = ChunkSizing()
        #expect(sizing.size(of: id) == ChunkSizing.initial)
        sizing.observe(id, ChunkSizing.Observation(items: 100, failures: 0, seconds: 0.001), target: 1)
        #expect(sizing.size(of: id) == 400)
        sizing.forget(id)
        #expect(sizing.size(of: id) == ChunkSizing.initial)
    }

    @Test("a slow automatic batch of 200 items is spread over all 16 workers", arguments: EngineStore.all)
    func slowBatchSpreads(store: EngineStore) async throws {
        let calls = ChunkCalls()
        try await store.withEngine([calls.strategy(blocking: true)], workers: 16) { engine in
            let batch = try await engine.submit(
                Submission(type: "chunked", options: Self.automatic(concurrency: 16)), items: try items(200))
            // One chunk of 200 would hold one worker and leave 15 idle.
            try await waitUntil("16 chunks running at once") { calls.running == 16 }
            // Each took an even share of what was left for the 16 workers.
            #expect(calls.sizes.allSatisfy { $0 <= 200 / 16 })
            calls.gate.fire()
            let ended = try await engine.waitForEnd(batch.id)
            #expect(ended.status == .completed)
            #expect(ended.counts.succeeded == 200)
            #expect(calls.seqs.sorted() == Array(0..<200))
        }
    }

    @Test("an explicit chunk_size is honoured: a batch of 200 in chunks of 200 is one call", arguments: EngineStore.all)
    func explicitChunkSize(store: EngineStore) async throws {
        let calls = ChunkCalls()
        try await store.withEngine([calls.strategy(blocking: true)], workers: 16) { engine in
            var options = Self.automatic(concurrency: 16)
            options.chunkSize = 200
            let batch = try await engine.submit(Submission(type: "chunked", options: options), items: try items(200))
            try await waitUntil("the chunk to run") { calls.running == 1 }
            #expect(calls.sizes == [200])
            calls.gate.fire()
            let ended = try await engine.waitForEnd(batch.id)
            #expect(ended.status == .completed)
            #expect(calls.sizes == [200])
        }
    }

    @Test("quick chunks grow past the first size, and every item runs once", arguments: EngineStore.all)
    func quickChunksGrow(store: EngineStore) async throws {
        let calls = ChunkCalls()
        // A 30 s target: any chunk quicker than 7.5 s grows fourfold, however busy the machine.
        let target: (inout TrancheEngine.Configuration) -> Void = { $0.checkpointInterval = 30 }
        try await store.withEngine([calls.strategy(blocking: false)], workers: 2, configure: target) { engine in
            let batch = try await engine.submit(
                Submission(type: "chunked", options: Self.automatic(concurrency: 2)), items: try items(20_000))
            let ended = try await engine.waitForEnd(batch.id)
            #expect(ended.status == .completed)
            #expect(ended.counts.succeeded == 20_000)
            #expect(calls.seqs.sorted() == Array(0..<20_000))
            #expect(calls.sizes.first == ChunkSizing.initial)
            #expect(calls.sizes.contains { $0 > ChunkSizing.initial * 4 })
        }
    }
}
