import Foundation
import Testing
import TrancheEngine
import TrancheTestSupport

/// The engine reads the time from `Configuration.clock`: a test clock that
/// stands still makes due times and deadlines exact.
@Suite("The engine's clock")
struct ClockTests {
    let probe = Probe()
    let gate = OneShotEvent()
    let clock = TestClock()
    var strategies: [AnyBatchStrategy] {
        [AnyBatchStrategy(ScriptedStrategy(probe: probe)), AnyBatchStrategy(GatedStrategy(probe: probe, gate: gate))]
    }

    func configure(_ configuration: inout TrancheEngine.Configuration) {
        configuration.clock = clock.wallClock
        // Longer than any move of the clock here: no lease expires because
        // the test moved the clock.
        configuration.leaseDuration = 7_200
    }

    @Test("batch times, events and node heartbeats come from the configured clock", arguments: EngineStore.all)
    func storedTimes(store: EngineStore) async throws {
        let start = clock.now
        try await store.withEngine(strategies, configure: configure) { engine in
            let batch = try await engine.submit(
                try Submission(type: "scripted", context: ScriptedStrategy.Context(), options: options()),
                items: try items(5))
            let done = try await engine.waitForEnd(batch.id)
            #expect(done.status == .completed)
            #expect(done.createdAt == start)
            #expect(done.confirmedAt == start)
            #expect(done.startedAt == start)
            #expect(done.completedAt == start)
            let events = try await engine.store.events(of: batch.id, afterID: 0, limit: 100)
            #expect(!events.isEmpty)
            #expect(events.allSatisfy { $0.at == start })
            try await waitUntil("this node's first heartbeat") { try await !engine.liveNodes().isEmpty }
            let node = try #require(try await engine.liveNodes().first)
            #expect(node.startedAt == start)
            #expect(node.heartbeatAt == start)
        }
    }

    @Test("a retry is due by the configured clock", arguments: EngineStore.all)
    func retryDue(store: EngineStore) async throws {
        let start = clock.now
        // The item asks to be retried after 60 s, as long as the backoff's cap allows.
        var opts = options()
        opts.backoff = Backoff(base: 0.01, cap: 60)
        try await store.withEngine(strategies, configure: configure) { [opts] engine in
            let batch = try await engine.submit(
                try Submission(type: "scripted", context: ScriptedStrategy.Context(), options: opts),
                items: try items(1) { ["n": .number(Double($0)), "kind": "later:1"] })
            try await waitUntil("the first attempt to fail") {
                try await engine.store.items(of: batch.id, status: .failed, afterSeq: nil, limit: 1).count == 1
            }
            let failed = try #require(
                try await engine.store.items(of: batch.id, status: .failed, afterSeq: nil, limit: 1).first)
            #expect(failed.nextAttemptAt == start.addingTimeInterval(60))
            #expect(self.probe.calls[0] == 1)
            self.clock.advance(by: 60)
            let done = try await engine.waitForEnd(batch.id)
            #expect(done.status == .completed)
            #expect(done.completedAt == start.addingTimeInterval(60))
        }
        #expect(probe.calls[0] == 2)
    }

    @Test("a batch times out by the configured clock; its running items stop", arguments: EngineStore.all)
    func batchTimeout(store: EngineStore) async throws {
        defer { gate.fire() }
        var opts = options(chunkSize: 10, concurrency: 2)
        opts.batchTimeout = 3_600
        try await store.withEngine(strategies, configure: configure) { [opts] engine in
            let batch = try await engine.submit(Submission(type: "gated", options: opts), items: try items(10))
            try await waitUntil("two items to start") { self.probe.started == 2 }
            self.clock.advance(by: 3_601)
            let ended = try await engine.waitForEnd(batch.id)
            #expect(ended.status == .failed)
            #expect(ended.failureReason?.contains("batch_timeout") == true)
            #expect(ended.completedAt == self.clock.now)
            #expect(ended.counts.succeeded == 0)
            #expect(ended.counts.canceled == 10)
            #expect(self.probe.canceled == 2)
        }
    }
}
