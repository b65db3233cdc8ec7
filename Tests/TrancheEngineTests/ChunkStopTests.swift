import Foundation
import Testing
import TrancheEngine
import TrancheTestSupport

/// A leased chunk that learns at a checkpoint that its batch was paused or
/// ended stops starting items; on an end it also stops the running ones.
@Suite("Stopping a leased chunk")
struct ChunkStopTests {
    let probe = Probe()
    let gate = OneShotEvent()
    var strategies: [AnyBatchStrategy] { [AnyBatchStrategy(GatedStrategy(probe: probe, gate: gate))] }

    /// One chunk of 50 items, 4 at a time.
    let concurrency = 4
    var submission: Submission {
        Submission(type: "gated", options: options(chunkSize: 50, concurrency: concurrency))
    }

    func configure(_ configuration: inout TrancheEngine.Configuration) {
        configuration.checkpointInterval = 0.05
        configuration.progressInterval = 0
    }

    @Test("pause stops a leased chunk at its next checkpoint; the rest waits for resume", arguments: EngineStore.all)
    func pause(store: EngineStore) async throws {
        defer { gate.fire() }
        let done = try await store.withEngine(strategies, configure: configure) { engine in
            let batch = try await engine.submit(submission, items: try items(50))
            try await waitUntil("the first \(concurrency) items to start") { self.probe.started == self.concurrency }
            let events = try await engine.events(of: batch.id)
            try await engine.pause(batch.id)
            try await waitForProgress(events, status: .paused, "the chunk's runner to see the pause at a checkpoint")
            self.gate.fire()
            try await waitUntil("the paused chunk to be released") {
                try await engine.store.batch(batch.id)?.counts.running == 0
            }
            // The running items finished; at most `concurrency` more began.
            let paused = try #require(try await engine.store.batch(batch.id))
            #expect(paused.status == .paused)
            #expect(self.probe.started <= 2 * self.concurrency)
            #expect(paused.counts.succeeded == Int64(self.probe.started))
            let pending = try await engine.store.items(of: batch.id, status: .pending, afterSeq: nil, limit: 100)
            #expect(pending.count == 50 - self.probe.started)
            try await engine.resume(batch.id)
            return try await engine.waitForEnd(batch.id)
        }
        #expect(done.status == .completed)
        #expect(done.counts.succeeded == 50)
        #expect(probe.ran(0..<50) && probe.calls.count == 50)
        #expect(Int64(probe.duplicates()) <= done.counts.rescued)
    }

    @Test("cancel stops a leased chunk's running items; nothing succeeds after it", arguments: EngineStore.all)
    func cancel(store: EngineStore) async throws {
        defer { gate.fire() }
        try await store.withEngine(strategies, configure: configure) { engine in
            let batch = try await engine.submit(submission, items: try items(50))
            try await waitUntil("the first \(concurrency) items to start") { self.probe.started == self.concurrency }
            let canceled = try await engine.cancel(batch.id)
            #expect(canceled.status == .canceled)
            // The gate stays closed: the running items end only by their tasks' cancellation.
            try await waitUntil("the running items' tasks to be canceled") {
                self.probe.canceled == self.concurrency
            }
            let ended = try await engine.waitForEnd(batch.id)
            #expect(ended.status == .canceled)
            #expect(ended.counts.succeeded == 0)
            #expect(ended.counts.canceled == 50)
            #expect(ended.counts.running == 0)
            #expect(self.probe.started == self.concurrency)
            let succeeded = try await engine.store.items(of: batch.id, status: .succeeded, afterSeq: nil, limit: 100)
            #expect(succeeded.isEmpty)
        }
    }
}
