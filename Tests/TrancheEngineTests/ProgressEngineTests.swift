import Foundation
import Testing
import TrancheEngine
import TrancheTestSupport

/// The engine samples progress on its sweep, at the times of its configured
/// clock, and reports what the store holds: a store opened afresh (another
/// node, or this one restarted) reports the same.
@Suite("Progress samples from the engine")
struct ProgressEngineTests {
    let probe = Probe()
    let gate = OneShotEvent()
    let clock = TestClock()

    @Test(
        "the sweep samples batches in progress by the engine's clock; a fresh store reports the same",
        arguments: EngineStore.all)
    func sampledBySweep(store: EngineStore) async throws {
        defer { gate.fire() }
        let start = clock.now
        try await store.withSite { site in
            let strategies = [AnyBatchStrategy(GatedStrategy(probe: probe, gate: gate))]
            try await site.withEngine(
                strategies,
                configure: {
                    $0.clock = clock.wallClock
                    $0.leaseDuration = 7_200
                }
            ) {
                engine in
                let batch = try await engine.submit(
                    Submission(type: "gated", options: options(chunkSize: 2, concurrency: 2)), items: try items(4))
                let samples = try #require(engine.store as? any ProgressStore)
                @Sendable func sampled(at time: Date) async throws -> Bool {
                    let stored = try await samples.progress(of: [batch.id], since: .distantPast)[batch.id]
                    return stored?.samples.contains { $0.at == time } == true
                }
                try await waitUntil("a sample at the clock's time") { try await sampled(at: start) }
                // The clock stands still: no second sample until it moves.
                self.clock.advance(by: 1)
                try await waitUntil("a sample a second later") { try await sampled(at: start.addingTimeInterval(1)) }
                let record = try #require(try await engine.store.batch(batch.id))
                let here = try await engine.progress(of: record)
                #expect(here.chunksTotal == 2)
                #expect(here.estimate.eta == nil, "one second of samples is not enough for an ETA")
                let fresh = try await site.withStore { other in
                    let stored = try await #require(other as? any ProgressStore).progress(
                        of: [batch.id], since: .distantPast)
                    return BatchProgress(record: record, stored: stored[batch.id], now: self.clock.now)
                }
                #expect(fresh == here)
                self.gate.fire()
                let ended = try await engine.waitForEnd(batch.id)
                let done = try await engine.progress(of: ended)
                #expect(done.estimate == ProgressEstimate(rate: 0, eta: 0, etaLow: 0, etaHigh: 0))
                #expect(done.chunksDone == 2)
            }
        }
    }
}
