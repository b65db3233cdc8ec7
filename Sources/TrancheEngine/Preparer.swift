import Foundation
import Logging
import TrancheStore

// Strategy `prepare` hooks: a batch of a type with the hook gets a pending
// prepare step when it is created, and the transaction that confirms it
// makes it `preparing`, which no chunk claim takes. A node runs the step as
// a leased step (LeasedSteps.swift); its completion makes the batch
// `confirmed` (or fails it).

extension TrancheEngine {
    /// The types whose strategy has a `prepare` hook on this node.
    var preparingTypes: [String] {
        strategies.values.filter { $0.prepareBatch != nil }.map(\.type).sorted()
    }

    /// Tells the store, once per engine, which types need preparing (and
    /// which of this node's types do not). Every create path of the engine
    /// calls it first; a caller that stores a batch from
    /// ``prepareBatch(_:items:)`` itself calls it before.
    public func registerPrepareTypes() async throws {
        guard let preparations = store as? any PrepareStore, !prepareTypesRegistered.withLock({ $0 }) else { return }
        let without = strategies.values.filter { $0.prepareBatch == nil }.map(\.type).sorted()
        try await preparations.registerPrepareTypes(preparingTypes, without: without)
        prepareTypesRegistered.withLock { $0 = true }
    }

    /// Until the drain: prepares batches of this node's hooked types as
    /// they are confirmed (woken by new work, and every `sweepInterval`).
    func prepareBatches() async {
        guard let preparations = store as? any PrepareStore else { return }
        await repeatUntilDrained(
            "preparing failed",
            round: {
                try await registerPrepareTypes()
                guard !preparingTypes.isEmpty else { return false }
                try await prepareRound(preparations)
                return true
            },
            wait: { await prepareWakeup.wait(timeout: configuration.sweepInterval) })
    }

    /// Prepares batches until none is left to claim (or the node drains):
    /// runs the hook, renewing the lease meanwhile, and records how it ended
    /// (fenced on the lease). A generating strategy's batch is sealed once
    /// the hook returns, before the completion.
    func prepareRound(_ preparations: any PrepareStore) async throws {
        try await runLeasedSteps(
            .prepare, in: preparations, types: preparingTypes,
            hook: { lease in try await prepareHook(lease) },
            failure: { error in
                let reason = ItemError.sanitizing(error)
                return PreparationOutcome.failed(reason: "\(reason.code): \(reason.message)")
            },
            complete: { lease, outcome in
                guard try await preparations.completePreparation(lease, outcome, now: now) else { return false }
                signalWork()
                return true
            })
    }

    /// The hook of a leased batch, ready to run: it appends what a
    /// generating strategy yields, then seals the batch.
    private func prepareHook(_ lease: PreparationLease) async throws
        -> @Sendable () async throws -> PreparationOutcome
    {
        guard let hook = strategies[lease.type]?.prepareBatch, let record = try await store.batch(lease.batchID) else {
            return { .prepared(preview: nil) }
        }
        let open = !record.sealed && !lease.dryRun
        let batch = PreparingBatch(
            id: record.id, type: record.type, owner: record.owner, dryRun: lease.dryRun, isOpen: open,
            total: record.counts.total, cursor: record.cursor, attempt: lease.attempt
        ) { [self] startSeq, items, cursor in
            guard open else {
                throw StoreError(
                    .invalidAppend, "batch \(record.id) takes no items from prepare: it is sealed or a dry run")
            }
            return try await append(to: record.id, startSeq: startSeq, items: items, cursor: cursor).total
        }
        return { [self] in
            let preview = try await hook(batch, record.context)
            if open { _ = try await store.seal(record.id, at: now) }
            return .prepared(preview: try preview.map { try JSONText(encoding: $0) })
        }
    }

    /// The batch's prepare step (its state and `preview`), nil when its
    /// strategy has no `prepare` hook or the store keeps none.
    public func preparation(of id: BatchID) async throws -> PreparationRecord? {
        guard let preparations = store as? any PrepareStore else { return nil }
        return try await preparations.step(.prepare, of: id)
    }

    /// Refuses to confirm the dry run of a generating strategy: its items
    /// come from `prepare` on a real run, so it is submitted again instead.
    func checkConfirmable(dryRun record: BatchRecord) throws {
        guard strategies[record.type]?.generatesItems == true else { return }
        throw StoreError(
            .conflict,
            "batch \(record.id) is a dry run of '\(record.type)', whose items come from its prepare hook; "
                + "submit it again without dry_run")
    }
}
