import Foundation
import Logging
import TrancheStore

// Strategy `finalize` hooks: each ended batch is finalized once across
// nodes. The store queues ended batches in event order; a node runs each
// as a leased step (LeasedSteps.swift).

extension TrancheEngine {
    /// The types whose strategy has a `finalize` hook on this node.
    var finalizingTypes: [String] {
        strategies.values.filter { $0.finalize != nil }.map(\.type).sorted()
    }

    /// Every `sweepInterval` until the drain: queues ended batches and
    /// finalizes those of this node's hooked types. Runs on every node.
    func finalizeEndedBatches() async {
        guard let finalizations = store as? any FinalizeStore, !finalizingTypes.isEmpty else { return }
        await repeatUntilDrained(
            "finalizing failed",
            round: {
                try await finalizeRound(finalizations)
                return true
            },
            wait: { await sleep(configuration.sweepInterval, orUntil: draining) })
    }

    /// Queues what ended since the last round, then finalizes batches until
    /// none is left to claim (or the node drains): runs the hook, renewing
    /// the lease meanwhile, and records its result (fenced on the lease). A
    /// hook that throws is recorded too, as `{"finalize_error": message}`:
    /// it is not run again.
    func finalizeRound(_ finalizations: any FinalizeStore) async throws {
        _ = try await finalizations.queueFinalizations(limit: 1_000, now: now)
        try await runLeasedSteps(
            .finalize, in: finalizations, types: finalizingTypes,
            hook: { lease in try await finalizeHook(lease) },
            failure: { error in ["finalize_error": .string(ItemError.sanitizing(error).message)] },
            complete: { lease, result in
                let text = try result.map { try JSONText(encoding: $0) }
                return try await finalizations.completeFinalization(lease, result: text, now: now)
            })
    }

    /// The hook of a leased batch, ready to run.
    private func finalizeHook(_ lease: FinalizationLease) async throws -> @Sendable () async throws -> JSONValue? {
        guard let hook = strategies[lease.type]?.finalize, let record = try await store.batch(lease.batchID) else {
            return { nil }
        }
        let batch = EndedBatch(
            id: record.id, type: record.type, owner: record.owner, status: record.status, counts: record.counts,
            failureReason: record.failureReason, summary: (try? record.summary?.value()) ?? .null)
        return { try await hook(batch, record.context) }
    }
}
