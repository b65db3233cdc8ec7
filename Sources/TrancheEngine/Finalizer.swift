import Foundation
import Logging
import TrancheStore

// Strategy `finalize` hooks: each ended batch is finalized once across
// nodes. The store queues ended batches in event order; a node leases one
// (like a chunk), runs the hook while renewing the lease, and records the
// result only if its lease is still the current one. A node that dies
// holding the lease leaves it to expire; another node then runs the hook.

extension TrancheEngine {
    /// The types whose strategy has a `finalize` hook on this node.
    var finalizingTypes: [String] {
        strategies.values.filter { $0.finalize != nil }.map(\.type).sorted()
    }

    /// Every `sweepInterval` until the drain: queues ended batches and
    /// finalizes those of this node's hooked types. Runs on every node.
    func finalizeEndedBatches() async {
        guard let finalizations = store as? any FinalizeStore, !finalizingTypes.isEmpty else { return }
        while !draining.hasFired && !Task.isCancelled {
            do {
                try await finalizeRound(finalizations)
            } catch let error where !Task.isCancelled {
                logger.warning("finalizing failed", metadata: ["error": "\(error)"])
            } catch {
                return
            }
            await sleep(configuration.sweepInterval, orUntil: draining)
        }
    }

    /// Queues what ended since the last round, then finalizes batches until
    /// none is left to claim (or the node drains).
    func finalizeRound(_ finalizations: any FinalizeStore) async throws {
        _ = try await finalizations.queueFinalizations(limit: 1_000, now: now)
        while !draining.hasFired,
            let lease = try await finalizations.claimFinalization(
                owner: configuration.nodeID, types: finalizingTypes, leaseDuration: configuration.leaseDuration,
                now: now)
        {
            try await finalize(lease, in: finalizations)
        }
    }

    /// Runs the hook for one leased batch, renewing the lease meanwhile, and
    /// records its result (fenced on the lease). A hook that throws is
    /// recorded too, as `{"finalize_error": message}`: it is not run again.
    func finalize(_ lease: FinalizationLease, in finalizations: any FinalizeStore) async throws {
        guard let hook = strategies[lease.type]?.finalize, let record = try await store.batch(lease.batchID) else {
            _ = try await finalizations.completeFinalization(lease, result: nil, now: now)
            return
        }
        let batch = EndedBatch(
            id: record.id, type: record.type, owner: record.owner, status: record.status, counts: record.counts,
            failureReason: record.failureReason, summary: (try? record.summary?.value()) ?? .null)
        let result: JSONValue?
        do {
            result = try await whileRenewing(lease, in: finalizations) {
                try await hook(batch, record.context)
            }
        } catch is CancellationError {
            return  // The node stops: the lease expires and another node finalizes.
        } catch {
            result = ["finalize_error": .string(ItemError.sanitizing(error).message)]
        }
        let text = try result.map { try JSONText(encoding: $0) }
        if try await finalizations.completeFinalization(lease, result: text, now: now) {
            logger.debug(
                "finalized a batch", metadata: ["batch_id": "\(lease.batchID)", "attempt": "\(lease.attempt)"])
        } else {
            logger.debug("lost a finalize lease", metadata: ["batch_id": "\(lease.batchID)"])
        }
    }

    /// Runs `body`, renewing `lease` every third of its duration until it returns.
    private func whileRenewing<T: Sendable>(
        _ lease: FinalizationLease, in finalizations: any FinalizeStore,
        _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await whileRenewingLease(
            {
                _ = try? await finalizations.renewFinalization(
                    lease, leaseDuration: self.configuration.leaseDuration, now: self.now)
            }, body)
    }
}
