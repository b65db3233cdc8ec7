import Foundation
import Synchronization
import Testing
import TrancheEngine
import TrancheStrategies
import TrancheTestSupport

/// Counts what `finalize` hooks did: which node started and returned the
/// hook for which batch (the side effects a finalize would have).
final class FinalizeProbe: Sendable {
    struct Call: Hashable {
        var node: String
        var batch: BatchID
    }
    private let state = Mutex<(started: [Call], returned: [Call])>(([], []))

    func start(_ node: String, _ batch: BatchID) {
        state.withLock { $0.started.append(Call(node: node, batch: batch)) }
    }
    func finish(_ node: String, _ batch: BatchID) {
        state.withLock { $0.returned.append(Call(node: node, batch: batch)) }
    }
    /// Nodes that started the hook for `batch`, in order.
    func started(_ batch: BatchID) -> [String] {
        state.withLock { $0.started.filter { $0.batch == batch }.map(\.node) }
    }
    /// Nodes whose hook for `batch` returned, in order.
    func returned(_ batch: BatchID) -> [String] {
        state.withLock { $0.returned.filter { $0.batch == batch }.map(\.node) }
    }
}

/// Succeeds every item; its `finalize` reports the counts and which node
/// ran it, after waiting for `gate` when one is given (a node that stalls).
struct FinalizingStrategy: BatchStrategy {
    struct Context: Codable, Sendable {}
    var type = "finalizing"
    let node: String
    let probe: FinalizeProbe
    var gate: OneShotEvent?
    /// Whether this node has the hook (items run either way).
    var finalizes = true

    var hooks: BatchHooks { finalizes ? [.finalize] : [] }

    func process(_ item: JSONValue, context: Context, input: ItemInput) async throws -> JSONValue { item }

    func finalize(_ batch: EndedBatch, context: Context) async throws -> JSONValue? {
        probe.start(node, batch.id)
        if let gate { await gate.wait() }
        probe.finish(node, batch.id)
        return [
            "node": .string(node), "status": .string(batch.status.rawValue),
            "succeeded": .number(Double(batch.counts.succeeded)),
        ]
    }
}

@Suite("Finalize hooks")
struct FinalizeTests {
    @Test("an ended batch is finalized once and the hook's answer is its result", arguments: EngineStore.all)
    func finalizes(store: EngineStore) async throws {
        let probe = FinalizeProbe()
        let strategies = [AnyBatchStrategy(FinalizingStrategy(node: "a", probe: probe)), BuiltinStrategies.noop]
        try await store.withEngine(strategies) { engine in
            let batch = try await engine.submit(
                Submission(type: "finalizing", options: options()), items: try items(25))
            #expect(try await engine.waitForEnd(batch.id).status == .completed)
            try await waitUntil("the batch's result") { try await engine.store.batch(batch.id)?.result != nil }
            let result = try await engine.store.batch(batch.id)?.result?.value()
            #expect(result == ["node": "a", "status": "completed", "succeeded": 25])
            #expect(probe.returned(batch.id) == ["a"])
            var waiting = options()
            waiting.requireConfirmation = true
            let canceled = try await engine.submit(
                Submission(type: "finalizing", options: waiting), items: try items(3))
            try await engine.cancel(canceled.id)
            try await waitUntil("the canceled batch's result") {
                try await engine.store.batch(canceled.id)?.result != nil
            }
            #expect(try await engine.store.batch(canceled.id)?.result?.value()["status"] == "canceled")
            // A strategy without the hook: nothing is finalized, the result stays null.
            let plain = try await engine.submit(Submission(type: "noop", options: options()), items: try items(2))
            _ = try await engine.waitForEnd(plain.id)
            try await passSchedulerRounds(engine)
            #expect(try await engine.store.batch(plain.id)?.result == nil)
        }
    }

    /// Two nodes on one PostgreSQL database. Node a runs the batch to its
    /// end and takes the finalize lease, then stalls inside the hook without
    /// renewing (as a killed node would: its lease only runs out). Node b
    /// takes over once the lease expired by the shared test clock and
    /// finalizes; when a wakes up, its late completion is refused.
    @Test("a node stalled holding the finalize lease: another finalizes after expiry, once")
    func takeoverAfterExpiry() async throws {
        let clock = TestClock()
        let probe = FinalizeProbe()
        let stall = OneShotEvent()
        try await EngineStore.postgres.withSite { site in
            // Each node also finalizes a type of its own, to tell when its
            // finalizer went through a round; both run every type's items.
            let a = [
                AnyBatchStrategy(FinalizingStrategy(node: "a", probe: probe, gate: stall)),
                AnyBatchStrategy(FinalizingStrategy(type: "only-a", node: "a", probe: probe)),
                AnyBatchStrategy(FinalizingStrategy(type: "only-b", node: "a", probe: probe, finalizes: false)),
            ]
            let b = [
                AnyBatchStrategy(FinalizingStrategy(node: "b", probe: probe)),
                AnyBatchStrategy(FinalizingStrategy(type: "only-b", node: "b", probe: probe)),
                AnyBatchStrategy(FinalizingStrategy(type: "only-a", node: "b", probe: probe, finalizes: false)),
            ]
            let finalized = try await site.withEngine(a, configure: takeoverNode("a", clock: clock)) { nodeA in
                let batch = try await nodeA.submit(
                    Submission(type: "finalizing", options: options()), items: try items(40))
                #expect(try await nodeA.waitForEnd(batch.id).status == .completed)
                try await waitUntil("node a to hold the finalize lease") { probe.started(batch.id) == ["a"] }
                let finalizations = try #require(nodeA.store as? any FinalizeStore)
                #expect(try await finalizations.step(.finalize, of: batch.id)?.leaseOwner == "a")

                try await site.withEngine(b, configure: takeoverNode("b", clock: clock)) { nodeB in
                    // Before the lease expires, node b leaves it alone.
                    try await finalizeProbeBatch(nodeB, type: "only-b")
                    #expect(probe.started(batch.id) == ["a"])
                    #expect(try await finalizations.step(.finalize, of: batch.id)?.attempts == 1)
                    clock.advance(by: 3_601)
                    try await waitUntil("node b to finalize") { try await nodeB.store.batch(batch.id)?.result != nil }
                    #expect(try await nodeB.store.batch(batch.id)?.result?.value()["node"] == "b")
                    let record = try #require(try await finalizations.step(.finalize, of: batch.id))
                    #expect(record.state == .done)
                    #expect(record.attempts == 2)

                    // Node a wakes: its hook returns and its completion is
                    // refused. Its finalizer runs one batch at a time, so once
                    // it finalized another batch, that completion was tried.
                    stall.fire()
                    try await finalizeProbeBatch(nodeA, type: "only-a")
                    #expect(probe.returned(batch.id) == ["b", "a"])
                    #expect(try await nodeB.store.batch(batch.id)?.result?.value()["node"] == "b")
                    #expect(try await finalizations.step(.finalize, of: batch.id) == record)
                }
                return batch.id
            }
            // The hook started once on each node and the batch's one
            // recorded completion is node b's, on the live lease.
            #expect(probe.started(finalized) == ["a", "b"])
        }
    }
}

/// Runs a one-item batch of `type` to its end and waits for its finalize
/// step to be done: proof that a node with that type's hook went through a
/// finalize round.
func finalizeProbeBatch(_ engine: TrancheEngine, type: String) async throws {
    let probe = try await engine.submit(Submission(type: type, options: options()), items: try items(1))
    #expect(try await engine.waitForEnd(probe.id).status == .completed)
    let finalizations = try #require(engine.store as? any FinalizeStore)
    try await waitUntil("the probe batch's finalize step") {
        try await finalizations.step(.finalize, of: probe.id)?.state == .done
    }
}
