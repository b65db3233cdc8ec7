public import Foundation

/// The state of a batch's finalize step (`finalizations` table).
public struct FinalizationState: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// The batch ended; no node finalizes it yet.
    public static let pending = FinalizationState(rawValue: "pending")
    /// A node holds the lease and runs the strategy's `finalize`.
    public static let leased = FinalizationState(rawValue: "leased")
    /// Finalized: the result (if any) is the batch's `result`.
    public static let done = FinalizationState(rawValue: "done")
    public var description: String { rawValue }
}

/// A node's lease on one batch's finalize step. Its completion is fenced on
/// `attempt`: a node whose lease expired and was taken over records nothing.
public struct FinalizationLease: Sendable, Hashable {
    public var batchID: BatchID
    public var type: String
    public var owner: String
    /// Which claim this is (1 for the first): the fence.
    public var attempt: Int

    public init(batchID: BatchID, type: String, owner: String, attempt: Int) {
        self.batchID = batchID
        self.type = type
        self.owner = owner
        self.attempt = attempt
    }
}

/// A batch's finalize step as stored.
public struct FinalizationRecord: Sendable, Hashable {
    public var batchID: BatchID
    public var state: FinalizationState
    /// Claims so far: more than 1 when a node died holding the lease.
    public var attempts: Int
    public var leaseOwner: String?
    public var leaseExpiresAt: Date?
    public var finishedAt: Date?

    public init(
        batchID: BatchID, state: FinalizationState, attempts: Int, leaseOwner: String?, leaseExpiresAt: Date?,
        finishedAt: Date?
    ) {
        self.batchID = batchID
        self.state = state
        self.attempts = attempts
        self.leaseOwner = leaseOwner
        self.leaseExpiresAt = leaseExpiresAt
        self.finishedAt = finishedAt
    }
}

/// Runs each ended batch's `finalize` hook once across nodes: ended batches
/// are queued in event order, and a node leases one like a chunk; a lease
/// that expires (its node died) is claimed again, and only the holder of the
/// current lease records the completion.
public protocol FinalizeStore: Sendable {
    /// Turns the stored `batch.completed`, `batch.failed` and
    /// `batch.canceled` events after the finalize cursor into pending
    /// finalizations (dry runs excepted; once per batch) and advances the
    /// cursor, in one transaction. Returns how many it queued.
    func queueFinalizations(limit: Int, now: Date) async throws -> Int
    /// Leases the oldest finalization of a batch of one of `types` that is
    /// pending or whose lease expired, until `now + leaseDuration`.
    func claimFinalization(owner: String, types: [String], leaseDuration: Double, now: Date) async throws
        -> FinalizationLease?
    /// Extends a lease still held; false when it was lost.
    func renewFinalization(_ lease: FinalizationLease, leaseDuration: Double, now: Date) async throws -> Bool
    /// Marks the finalization done, stores `result` as the batch's result
    /// (when not nil) and records `batch.finalized`, in one transaction, if
    /// `lease` is still the current one; false (nothing written) otherwise.
    func completeFinalization(_ lease: FinalizationLease, result: JSONText?, now: Date) async throws -> Bool
    /// The finalize step of a batch, if it was queued.
    func finalization(of id: BatchID) async throws -> FinalizationRecord?
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
