import Foundation
import Testing
import TrancheEngine
import TrancheTestSupport

/// Limits that hold across nodes: two engines on one store share a batch's
/// rate, and a `PATCH` reaches the nodes running the batch.
@Suite("Cluster-wide limits")
struct ClusterLimitTests {
    let probe = Probe()
    var strategies: [AnyBatchStrategy] { [AnyBatchStrategy(ScriptedStrategy(probe: probe))] }

    func submission(_ options: BatchOptions) throws -> Submission {
        try Submission(type: "scripted", context: ScriptedStrategy.Context(), options: options)
    }

    /// Runs `body` with two engines (nodes "a" and "b") on two connections to one fresh store.
    func withTwoNodes<T: Sendable>(
        _ store: EngineStore, strategies: [AnyBatchStrategy]? = nil,
        _ body: @escaping @Sendable (TrancheEngine, TrancheEngine) async throws -> T
    ) async throws -> T {
        try await store.withSite { site in
            try await site.withStore { first in
                try await site.withStore { second in
                    let strategies = strategies ?? self.strategies
                    let a = makeEngine(store: first, strategies) { $0.nodeID = "a" }
                    let b = makeEngine(store: second, strategies) { $0.nodeID = "b" }
                    return try await withRunning(a) { a in
                        try await withRunning(b) { b in try await body(a, b) }
                    }
                }
            }
        }
    }

    @Test(
        "a batch's rate holds for two nodes together: starts never outrun the rate by more than a grant per node",
        arguments: EngineStore.all)
    func sharedRate(store: EngineStore) async throws {
        let rate = 20.0
        var opts = options(chunkSize: 5, concurrency: 8)
        opts.rateLimit = RateLimit(rate: rate)
        let count = 100
        let batch = try await withTwoNodes(store) { [opts] a, _ in
            let record = try await a.submit(try submission(opts), items: try items(count))
            return try await a.waitForEnd(record.id)
        }
        #expect(batch.counts.succeeded == Int64(count))
        let starts = probe.starts
        #expect(starts.count >= count)
        // The bucket refills at `rate` and holds at most a second of it (a
        // pause between chunks on a busy machine fills it); each node may
        // also hold one grant (100 ms of the rate) it has drawn but not spent.
        let burst = max(1, rate)
        let grants = 2 * max(1, rate / 10)
        if let first = starts.first {
            for (index, start) in starts.enumerated() {
                let allowed = burst + rate * (start - first) + grants
                #expect(Double(index + 1) <= allowed, "start \(index + 1) at \(start - first) s")
            }
            // Two nodes each pacing on its own (40 a second) would end in
            // about 1.5 s; together they take at least 3.8 s.
            #expect(starts[count - 1] - first >= (Double(count) - burst - grants) / rate)
        }
    }

    @Test("a rate raised by PATCH reaches the batch running on both nodes", arguments: EngineStore.all)
    func patchReachesNodes(store: EngineStore) async throws {
        var opts = options(chunkSize: 5, concurrency: 4)
        opts.rateLimit = RateLimit(rate: 0.5)
        let count = 20
        let batch = try await withTwoNodes(store) { [opts, probe] a, b in
            let record = try await a.submit(try submission(opts), items: try items(count))
            try await waitUntil("the first item to start") { probe.started >= 1 }
            let limits = try #require(a.store as? any LimitStore)
            _ = try await limits.updateSettings(
                record.id, BatchSettingsChange(rate: .set(1_000)), at: Date())
            // At 0.5/s the batch would take 38 s; at the new rate it ends in well under the deadline.
            return try await b.waitForEnd(record.id, within: 25)
        }
        #expect(batch.counts.succeeded == Int64(count))
        #expect(batch.options.rateLimit?.rate == 1_000)
    }

    @Test(
        "an adaptive batch on two nodes keeps one pace: every refusal counted once, the cut merged in the store",
        arguments: EngineStore.all)
    func sharedPace(store: EngineStore) async throws {
        let server = LimitedAPIStrategy.Server(rate: 10, burst: 2)
        let strategies = [AnyBatchStrategy(LimitedAPIStrategy(probe: probe, server: server))]
        var opts = options(chunkSize: 5, concurrency: 8, maxAttempts: 50)
        opts.pace = .adaptive
        let count = 60
        let (batch, pace) = try await withTwoNodes(store, strategies: strategies) { [opts] a, _ in
            let record = try await a.submit(
                try Submission(type: "limited", context: JSONValue.object([:]), options: opts), items: try items(count))
            let batch = try await a.waitForEnd(record.id)
            let limits = try #require(a.store as? any LimitStore)
            let key = LimitKey.batch(record.id)
            // Each node merges what it counted when its chunks end: wait for the row, not for a time.
            try await waitUntil("every refusal to reach the stored pace") {
                try await limits.pace(key: key)?.throttled == Int64(server.refused)
            }
            return (
                batch,
                try await limits.mergePace(
                    PaceChange(key: key, kind: .keep(rate: 1), reason: "start", known: nil), throttledDelta: 0,
                    now: Date())
            )
        }
        #expect(batch.counts.succeeded == Int64(count))
        #expect(server.refused >= 1)
        #expect(pace.cutAt != nil, "a cut reached the store")
        #expect(pace.rate <= 40, "the cluster's rate stays near the API's 10/s: \(pace.rate)")
        // Two nodes each hammering alone would be refused many times per item.
        #expect(server.refused < count, "\(server.refused) refusals for \(count) items")
    }

    @Test("a PATCH to an adaptive pace engages it on a running fixed batch", arguments: EngineStore.all)
    func patchPace(store: EngineStore) async throws {
        let server = LimitedAPIStrategy.Server(rate: 5, burst: 1)
        let strategies = [AnyBatchStrategy(LimitedAPIStrategy(probe: probe, server: server))]
        var opts = options(chunkSize: 5, concurrency: 4, maxAttempts: 200)
        opts.pace = .fixed
        opts.backoff = Backoff(base: 0.01, cap: 0.05)
        let count = 40
        let (batch, pace) = try await withTwoNodes(store, strategies: strategies) { [opts] a, _ in
            let record = try await a.submit(
                try Submission(type: "limited", context: JSONValue.object([:]), options: opts), items: try items(count))
            let limits = try #require(a.store as? any LimitStore)
            let key = LimitKey.batch(record.id)
            try await waitUntil("a refusal while fixed") { server.refused >= 1 }
            // Fixed: nothing learns, nothing is stored.
            #expect(try await limits.pace(key: key) == nil)
            _ = try await limits.updateSettings(record.id, BatchSettingsChange(pace: .adaptive), at: Date())
            a.signalSettingsChanged(record.id)
            let batch = try await a.waitForEnd(record.id, within: 60)
            try await waitUntil("the adaptive pace to be stored") { try await limits.pace(key: key) != nil }
            return (batch, try await limits.pace(key: key))
        }
        #expect(batch.counts.succeeded == Int64(count))
        #expect(batch.options.pace == .adaptive)
        let stored = try #require(pace)
        #expect(stored.throttled >= 1)
    }
}
