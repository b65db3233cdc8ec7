public import Foundation

/// The state of a batch's prepare step (`preparations` table).
public struct PreparationState: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// Waiting for a node to run the strategy's `prepare`.
    public static let pending = PreparationState(rawValue: "pending")
    /// A node holds the lease and runs `prepare`.
    public static let leased = PreparationState(rawValue: "leased")
    /// A dry run's `prepare` stored its preview; confirming the dry run prepares it for real.
    public static let previewed = PreparationState(rawValue: "previewed")
    /// `prepare` threw and failed the batch; a retry of the batch prepares it again.
    public static let failed = PreparationState(rawValue: "failed")
    /// Prepared: the batch's items may run.
    public static let done = PreparationState(rawValue: "done")
    public var description: String { rawValue }
}

/// A node's lease on one batch's prepare step, fenced on `attempt` like a
/// finalization's: a node whose lease expired and was taken over records nothing.
public struct PreparationLease: Sendable, Hashable {
    public var batchID: BatchID
    public var type: String
    public var owner: String
    /// Which claim this is (1 for the first): the fence.
    public var attempt: Int
    /// True when the batch was a dry run when claimed: the hook only previews.
    public var dryRun: Bool

    public init(batchID: BatchID, type: String, owner: String, attempt: Int, dryRun: Bool) {
        self.batchID = batchID
        self.type = type
        self.owner = owner
        self.attempt = attempt
        self.dryRun = dryRun
    }
}

/// How a `prepare` hook ended.
public enum PreparationOutcome: Sendable, Hashable {
    /// It returned; `preview` (when not nil) is stored as the batch's preview.
    case prepared(preview: JSONText?)
    /// It threw: the batch fails with `reason`.
    case failed(reason: String)
}

/// A batch's prepare step as stored.
public struct PreparationRecord: Sendable, Hashable {
    public var batchID: BatchID
    public var state: PreparationState
    /// Claims so far: more than 1 when a node died holding the lease (or a dry run was confirmed).
    public var attempts: Int
    public var leaseOwner: String?
    public var leaseExpiresAt: Date?
    public var finishedAt: Date?
    /// What the hook returned last, if anything: shown as the batch's `preview`.
    public var preview: JSONText?

    public init(
        batchID: BatchID, state: PreparationState, attempts: Int, leaseOwner: String?, leaseExpiresAt: Date?,
        finishedAt: Date?, preview: JSONText?
    ) {
        self.batchID = batchID
        self.state = state
        self.attempts = attempts
        self.leaseOwner = leaseOwner
        self.leaseExpiresAt = leaseExpiresAt
        self.finishedAt = finishedAt
        self.preview = preview
    }
}

/// Runs each batch's `prepare` hook before any of its items runs: a batch of
/// a type registered with ``registerPrepareTypes(_:without:)`` gets a
/// pending preparation when it is created (by any path: submit, upload,
/// schedule, resubmit, `then`), and the transaction that confirms it moves
/// it to `preparing`, which no chunk claim takes. A node leases the step like
/// a chunk; a lease that expires (its node died) is claimed again, and only
/// the holder of the current lease records the completion, which moves the
/// batch back to `confirmed` (or fails it). At-least-once `prepare`,
/// exactly-once completion.
public protocol PrepareStore: Sendable {
    /// Records that batches of `types` need preparing from now on, and that
    /// batches of `without` (types this node runs without a `prepare` hook) do not.
    func registerPrepareTypes(_ types: [String], without: [String]) async throws
    /// Leases the oldest preparation of a batch of one of `types` that waits
    /// for one: the batch is `preparing`, or a sealed dry run not yet
    /// previewed; pending, previewed or failed, or leased and expired.
    func claimPreparation(owner: String, types: [String], leaseDuration: Double, now: Date) async throws
        -> PreparationLease?
    /// Extends a lease still held; false when it was lost.
    func renewPreparation(_ lease: PreparationLease, leaseDuration: Double, now: Date) async throws -> Bool
    /// Records how the hook ended, if `lease` is still the current one (false,
    /// nothing written, otherwise), in one transaction: a dry run's preview
    /// is stored; a real run's success moves a `preparing` batch to
    /// `confirmed` (ending it at once when it holds nothing to run), its
    /// failure fails the batch with the reason.
    func completePreparation(_ lease: PreparationLease, _ outcome: PreparationOutcome, now: Date) async throws
        -> Bool
    /// The prepare step of a batch, if it has one.
    func preparation(of id: BatchID) async throws -> PreparationRecord?
}

/// What both stores share about preparations.
package enum PrepareRules {
    /// The columns ``PreparationRecord/init(row:batchID:)`` reads, in its order.
    package static let columns = "state, attempts, lease_owner, lease_expires_at, finished_at, preview"

    /// Whether a batch that has just become `confirmed` by `action` may wait
    /// for a prepare step: the driver then looks for one not ``PreparationState/done``
    /// and, finding it, applies ``LifecycleAction/prepare`` in the same transaction.
    package static func mayPrepare(after action: LifecycleAction, _ batch: BatchRecord) -> Bool {
        (action == .confirm || action == .retry) && batch.status == .confirmed
    }

    /// The condition on `p` (preparations) and `b` (batches) of a
    /// preparation a node may claim; `now` is the placeholder for the time.
    package static func claimable(now: String, true yes: String) -> String {
        """
        ((b.status = '\(BatchStatus.preparing.rawValue)' AND (p.state IN ('pending', 'previewed', 'failed')
              OR (p.state = 'leased' AND p.lease_expires_at <= \(now))))
         OR (b.dry_run = \(yes) AND b.sealed = \(yes) AND b.status = '\(BatchStatus.preProcessed.rawValue)'
              AND (p.state = 'pending' OR (p.state = 'leased' AND p.lease_expires_at <= \(now)))))
        """
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

extension PreparationRecord {
    package init(row: some StoredRow, batchID: BatchID) throws {
        self.init(
            batchID: batchID, state: PreparationState(rawValue: try row.string(0)), attempts: try row.int(1),
            leaseOwner: try row.string(at: 2), leaseExpiresAt: try row.date(at: 3), finishedAt: try row.date(at: 4),
            preview: try row.string(at: 5).map { JSONText(unchecked: $0) })
    }
}
