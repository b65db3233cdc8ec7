public import Foundation

/// Runs each ended batch's `finalize` hook once across nodes: ended batches
/// are queued in event order, and a node leases one like a chunk; a lease
/// that expires (its node died) is claimed again, and only the holder of the
/// current lease records the completion. `claimStep(.finalize, …)` takes
/// a pending step, or one whose lease expired.
public protocol FinalizeStore: LeasedStepStore {
    /// Turns the stored `batch.completed`, `batch.failed` and
    /// `batch.canceled` events after the finalize cursor into pending
    /// finalizations (dry runs excepted; once per batch) and advances the
    /// cursor, in one transaction. Returns how many it queued.
    func queueFinalizations(limit: Int, now: Date) async throws -> Int
    /// Marks the finalization done, stores `result` as the batch's result
    /// (when not nil) and records `batch.finalized`, in one transaction, if
    /// `lease` is still the current one; false (nothing written) otherwise.
    func completeFinalization(_ lease: FinalizationLease, result: JSONText?, now: Date) async throws -> Bool
}

/// What both stores share about finalizations.
package enum FinalizeRules {
    /// The events that end a batch, for `IN (…)`: each queues its batch's finalize step.
    package static let endEvents = [BatchEventType.completed, .failed, .canceled]
        .map { "'\($0.rawValue)'" }.joined(separator: ", ")

    /// The `batch.finalized` event's data: which claim and node finalized, and whether it set a result.
    package static func eventData(_ lease: FinalizationLease, result: JSONText?) -> [String: JSONValue] {
        ["attempt": .number(Double(lease.attempt)), "node": .string(lease.owner), "result": .bool(result != nil)]
    }
}
