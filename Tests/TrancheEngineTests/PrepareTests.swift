import Foundation
import Synchronization
import Testing
import TrancheEngine
import TrancheStrategies
import TrancheTestSupport

/// What `prepare` hooks and items did: which node started and returned the
/// hook for which batch, and which items ran while a batch's hook had not returned.
final class PrepareProbe: Sendable {
    private struct State {
        var started: [(node: String, batch: BatchID)] = []
        var returned: [(node: String, batch: BatchID)] = []
        var ran: [BatchID: Int] = [:]
        var ranEarly: [BatchID: Int] = [:]
    }
    private let state = Mutex(State())

    func start(_ node: String, _ batch: BatchID) { state.withLock { $0.started.append((node, batch)) } }
    func finish(_ node: String, _ batch: BatchID) { state.withLock { $0.returned.append((node, batch)) } }
    /// An item of `batch` ran: early when no hook for it had returned yet.
    func ran(_ batch: BatchID) {
        state.withLock { state in
            state.ran[batch, default: 0] += 1
            if !state.returned.contains(where: { $0.batch == batch }) { state.ranEarly[batch, default: 0] += 1 }
        }
    }
    func started(_ batch: BatchID) -> [String] {
        state.withLock { $0.started.filter { $0.batch == batch }.map(\.node) }
    }
    func returned(_ batch: BatchID) -> [String] {
        state.withLock { $0.returned.filter { $0.batch == batch }.map(\.node) }
    }
    func ran(count batch: BatchID) -> Int { state.withLock { $0.ran[batch] ?? 0 } }
    func ranEarly(_ batch: BatchID) -> Int { state.withLock { $0.ranEarly[batch] ?? 0 } }
}

/// Echoes each item. Its `prepare` checks the batch (`"reject": true` in the
/// context throws), previews it, and as the `generating` type appends
/// `generate` items itself; it waits for `gate` first when one is given.
struct PreparingStrategy: BatchStrategy {
    struct Context: Codable, Sendable {
        var reject: Bool?
        var generate: Int?
    }
    var type = "preparing"
    let node: String
    let probe: PrepareProbe
    var gate: OneShotEvent?
    var generates = false

    var hooks: BatchHooks { generates ? [.generate] : [.prepare] }

    func process(_ item: JSONValue, context: Context, input: ItemInput) async throws -> JSONValue {
        probe.ran(input.batchID)
        return item
    }

    func prepare(_ batch: PreparingBatch, context: Context) async throws -> JSONValue? {
        probe.start(node, batch.id)
        if let gate { await gate.wait() }
        defer { probe.finish(node, batch.id) }
        if context.reject == true { throw ItemError.permanent("bad_batch", "the batch holds no valid account") }
        var generated: Int64 = 0
        if let count = context.generate, batch.isOpen {
            // From where an earlier run got to: appends are idempotent by start seq.
            var seq = batch.total
            while seq < Int64(count) {
                let block = (seq..<min(seq + 10, Int64(count))).map { JSONValue.object(["n": .number(Double($0))]) }
                try await batch.append(block, startSeq: seq, cursor: try JSONText(encoding: ["next": seq + 10]))
                seq += Int64(block.count)
            }
            generated = seq
        }
        return [
            "node": .string(node), "dry_run": .bool(batch.dryRun), "items": .number(Double(batch.total + generated)),
        ]
    }
}

@Suite("Prepare hooks")
struct PrepareTests {
    @Test("no item runs before prepare completes; its preview is stored", arguments: EngineStore.all)
    func itemsWaitForPrepare(store: EngineStore) async throws {
        let probe = PrepareProbe()
        let gate = OneShotEvent()
        let strategies = [
            AnyBatchStrategy(PreparingStrategy(node: "a", probe: probe, gate: gate)), BuiltinStrategies.noop,
        ]
        try await store.withEngine(strategies) { engine in
            let batch = try await engine.submit(Submission(type: "preparing", options: options()), items: try items(20))
            try await waitUntil("the prepare hook to start") { probe.started(batch.id) == ["a"] }
            #expect(try await engine.store.batch(batch.id)?.status == .preparing)
            try await passSchedulerRounds(engine)
            #expect(try await engine.store.batch(batch.id)?.counts.succeeded == 0)
            #expect(probe.ran(count: batch.id) == 0)
            // Pausing is not offered while the hook runs.
            await #expect(throws: IllegalTransition.self) { try await engine.pause(batch.id) }

            gate.fire()
            let ended = try await engine.waitForEnd(batch.id)
            #expect(ended.status == .completed)
            #expect(ended.counts.succeeded == 20)
            #expect(probe.ranEarly(batch.id) == 0)
            let preparation = try #require(try await engine.preparation(of: batch.id))
            #expect(preparation.state == .done)
            #expect(preparation.attempts == 1)
            #expect(try preparation.preview?.value() == ["node": "a", "dry_run": false, "items": 20])
            let events = try await engine.store.events(of: batch.id, afterID: 0, limit: 100).map(\.type)
            let order = [BatchEventType.confirmed, .preparing, .prepared, .processing].compactMap(events.firstIndex)
            #expect(order.count == 4 && order == order.sorted())

            // A type without the hook is not held.
            let plain = try await engine.submit(Submission(type: "noop", options: options()), items: try items(3))
            #expect(try await engine.waitForEnd(plain.id).status == .completed)
            #expect(try await engine.preparation(of: plain.id) == nil)
        }
    }

    @Test("a prepare that throws fails the batch with its reason; nothing runs", arguments: EngineStore.all)
    func prepareFails(store: EngineStore) async throws {
        let probe = PrepareProbe()
        let strategies = [AnyBatchStrategy(PreparingStrategy(node: "a", probe: probe)), BuiltinStrategies.noop]
        try await store.withEngine(strategies) { engine in
            let batch = try await engine.submit(
                Submission(type: "preparing", context: try JSONText(encoding: ["reject": true]), options: options()),
                items: try items(10))
            let ended = try await engine.waitForEnd(batch.id)
            #expect(ended.status == .failed)
            #expect(ended.failureReason == "prepare_failed: bad_batch: the batch holds no valid account")
            #expect(ended.counts.canceled == 10)
            #expect(probe.ran(count: batch.id) == 0)
            #expect(try await engine.preparation(of: batch.id)?.state == .failed)
        }
    }

    @Test("a generating strategy's batch runs the items its prepare appended", arguments: EngineStore.all)
    func generates(store: EngineStore) async throws {
        let probe = PrepareProbe()
        let strategies = [
            AnyBatchStrategy(PreparingStrategy(type: "generating", node: "a", probe: probe, generates: true)),
            BuiltinStrategies.noop,
        ]
        try await store.withEngine(strategies) { engine in
            let batch = try await engine.submit(
                Submission(type: "generating", context: try JSONText(encoding: ["generate": 35]), options: options()),
                items: [])
            #expect(!batch.sealed)
            let ended = try await engine.waitForEnd(batch.id)
            #expect(ended.status == .completed)
            #expect(ended.sealed)
            #expect(ended.counts.total == 35)
            #expect(ended.counts.succeeded == 35)
            #expect(probe.ran(count: batch.id) == 35)
            #expect(probe.ranEarly(batch.id) == 0)
            let outputs = try await engine.store.items(of: batch.id, status: .succeeded, afterSeq: nil, limit: 100)
            #expect(outputs.map(\.seq) == Array(0..<35))
            #expect(try await engine.preparation(of: batch.id)?.preview?.value()["items"] == 35)
        }
    }

    @Test("a dry run shows prepare's preview; confirmed, it is prepared for real", arguments: EngineStore.all)
    func dryRunPreview(store: EngineStore) async throws {
        let probe = PrepareProbe()
        let strategies = [AnyBatchStrategy(PreparingStrategy(node: "a", probe: probe)), BuiltinStrategies.noop]
        try await store.withEngine(strategies) { engine in
            let batch = try await engine.submit(
                Submission(type: "preparing", options: options(), dryRun: true), items: try items(4))
            try await waitUntil("the dry run's preview") {
                try await engine.preparation(of: batch.id)?.state == .previewed
            }
            let preview = try #require(try await engine.preparation(of: batch.id)?.preview)
            #expect(try preview.value() == ["node": "a", "dry_run": true, "items": 4])
            #expect(try await engine.store.batch(batch.id)?.status == .preProcessed)
            #expect(probe.ran(count: batch.id) == 0)

            _ = try await engine.confirm(batch.id)
            let ended = try await engine.waitForEnd(batch.id)
            #expect(ended.status == .completed)
            #expect(ended.counts.succeeded == 4)
            let real = try #require(try await engine.preparation(of: batch.id))
            #expect(real.state == .done)
            #expect(real.attempts == 2)
            #expect(try real.preview?.value()["dry_run"] == false)
        }
    }

    @Test("canceling a batch while it prepares: it stays canceled, nothing runs", arguments: EngineStore.all)
    func cancelWhilePreparing(store: EngineStore) async throws {
        let probe = PrepareProbe()
        let gate = OneShotEvent()
        let strategies = [
            AnyBatchStrategy(PreparingStrategy(node: "a", probe: probe, gate: gate)), BuiltinStrategies.noop,
        ]
        try await store.withEngine(strategies) { engine in
            let batch = try await engine.submit(Submission(type: "preparing", options: options()), items: try items(6))
            try await waitUntil("the prepare hook to start") { probe.started(batch.id) == ["a"] }
            #expect(try await engine.cancel(batch.id).status == .canceled)
            gate.fire()
            try await waitUntil("the preparation to be recorded") {
                try await engine.preparation(of: batch.id)?.state == .done
            }
            try await passSchedulerRounds(engine)
            let record = try #require(try await engine.store.batch(batch.id))
            #expect(record.status == .canceled)
            #expect(record.counts.canceled == 6)
            #expect(probe.ran(count: batch.id) == 0)
        }
    }

    /// Two nodes on one PostgreSQL database. Node a takes the prepare lease
    /// and stalls inside the hook without renewing (as a killed node would).
    /// Node b takes over once the lease expired by the shared test clock and
    /// prepares the batch, which then runs; a's late completion is refused.
    @Test("a node stalled holding the prepare lease: another prepares after expiry, once")
    func takeoverAfterExpiry() async throws {
        let clock = TestClock()
        let probe = PrepareProbe()
        let stall = OneShotEvent()
        try await EngineStore.postgres.withSite { site in
            // Node a also prepares a type node b does not know, to tell when
            // its preparer (one batch at a time) went through a round.
            let a = [
                AnyBatchStrategy(PreparingStrategy(node: "a", probe: probe, gate: stall)),
                AnyBatchStrategy(PreparingStrategy(type: "only-a", node: "a", probe: probe)), BuiltinStrategies.noop,
            ]
            let b = [AnyBatchStrategy(PreparingStrategy(node: "b", probe: probe)), BuiltinStrategies.noop]
            let prepared = try await site.withEngine(a, configure: takeoverNode("a", clock: clock)) { nodeA in
                let batch = try await nodeA.submit(
                    Submission(type: "preparing", options: options()), items: try items(30))
                try await waitUntil("node a to hold the prepare lease") { probe.started(batch.id) == ["a"] }
                #expect(try await nodeA.preparation(of: batch.id)?.leaseOwner == "a")

                try await site.withEngine(b, configure: takeoverNode("b", clock: clock)) { nodeB in
                    // Before the lease expires, node b leaves it alone.
                    try await passSchedulerRounds(nodeB)
                    #expect(probe.started(batch.id) == ["a"])
                    #expect(try await nodeB.store.batch(batch.id)?.status == .preparing)
                    clock.advance(by: 3_601)
                    #expect(try await nodeB.waitForEnd(batch.id).status == .completed)
                    #expect(probe.returned(batch.id) == ["b"])
                    #expect(probe.ranEarly(batch.id) == 0)
                    let record = try #require(try await nodeB.preparation(of: batch.id))
                    #expect(record.state == .done)
                    #expect(record.attempts == 2)
                    #expect(try record.preview?.value()["node"] == "b")

                    // Node a wakes: its hook returns and its completion is
                    // refused. Once it prepared a batch of its own type (no
                    // items: nothing for node b to run), that completion was tried.
                    stall.fire()
                    let own = try await nodeA.submit(Submission(type: "only-a", options: options()), items: [])
                    #expect(try await nodeA.waitForEnd(own.id).status == .completed)
                    #expect(probe.returned(batch.id) == ["b", "a"])
                    #expect(try await nodeB.preparation(of: batch.id) == record)
                    let prepared = try await nodeB.store.events(of: batch.id, afterID: 0, limit: 200)
                        .filter { $0.type == .prepared }
                    #expect(prepared.count == 1)
                    #expect(try await nodeB.preparation(of: batch.id)?.preview?.value()["node"] == "b")
                }
                return batch.id
            }
            #expect(probe.started(prepared) == ["a", "b"])
        }
    }
}
