public import Foundation

/// How a `prepare` hook ended.
public enum PreparationOutcome: Sendable, Hashable {
    /// It returned; `preview` (when not nil) is stored as the batch's preview.
    case prepared(preview: JSONText?)
    /// It threw: the batch fails with `reason`.
    case failed(reason: String)
}

/// Runs each batch's `prepare` hook before any of its items runs: a batch of
/// a type registered with ``registerPrepareTypes(_:without:)`` gets a
/// pending preparation when it is created (by any path: submit, upload,
/// schedule, resubmit, `then`), and the transaction that confirms it moves
/// it to `preparing`, which no chunk claim takes. A node leases the step like
/// a chunk; a lease that expires (its node died) is claimed again, and only
/// the holder of the current lease records the completion, which moves the
/// batch back to `confirmed` (or fails it). At-least-once `prepare`,
/// exactly-once completion. `claimStep(.prepare, …)` takes the step of a
/// batch that is `preparing` (pending, previewed or failed), or of a sealed
/// dry run not yet previewed (pending), or one whose lease expired.
public protocol PrepareStore: LeasedStepStore {
    /// Records that batches of `types` need preparing from now on, and that
    /// batches of `without` (types this node runs without a `prepare` hook) do not.
    func registerPrepareTypes(_ types: [String], without: [String]) async throws
    /// Records how the hook ended, if `lease` is still the current one (false,
    /// nothing written, otherwise), in one transaction: a dry run's preview
    /// is stored; a real run's success moves a `preparing` batch to
    /// `confirmed` (ending it at once when it holds nothing to run), its
    /// failure fails the batch with the reason.
    func completePreparation(_ lease: PreparationLease, _ outcome: PreparationOutcome, now: Date) async throws
        -> Bool
}

/// What both stores share about preparations.
package enum PrepareRules {
    /// Whether a batch that has just become `confirmed` by `action` may wait
    /// for a prepare step: the driver then looks for one not ``PreparationState/done``
    /// and, finding it, applies ``LifecycleAction/prepare`` in the same transaction.
    package static func mayPrepare(after action: LifecycleAction, _ batch: BatchRecord) -> Bool {
        (action == .confirm || action == .retry) && batch.status == .confirmed
    }

    /// The state a completion writes.
    package static func state(after lease: PreparationLease, _ outcome: PreparationOutcome) -> PreparationState {
        switch outcome {
        case .failed: return lease.dryRun ? .previewed : .failed
        case .prepared: return lease.dryRun ? .previewed : .done
        }
    }

    /// The preview a completion stores (a dry run's failure is its preview, as `{"prepare_error": …}`).
    package static func preview(_ lease: PreparationLease, _ outcome: PreparationOutcome) -> JSONText? {
        switch outcome {
        case .prepared(let preview): return preview
        case .failed(let reason):
            guard lease.dryRun else { return nil }
            return try? JSONText(encoding: ["prepare_error": reason])
        }
    }

    /// The lifecycle action a completion applies to a `preparing` batch, with its reason.
    package static func action(after lease: PreparationLease, _ outcome: PreparationOutcome) -> (
        LifecycleAction, String?
    )? {
        guard !lease.dryRun else { return nil }
        switch outcome {
        case .prepared: return (.prepared, nil)
        case .failed(let reason): return (.fail, "prepare_failed: \(reason)")
        }
    }

    /// The `batch.prepared` event's data (and the failure's extra data).
    package static func eventData(_ lease: PreparationLease) -> [String: JSONValue] {
        ["attempt": .number(Double(lease.attempt)), "node": .string(lease.owner), "dry_run": .bool(lease.dryRun)]
    }
}
