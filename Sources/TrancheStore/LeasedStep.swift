public import Foundation

// A batch's hook that runs once across nodes under a lease: `prepare`
// (the `preparations` table) and `finalize` (`finalizations`). Both are one
// row per batch, keyed by `batch_key`, claimed like a chunk: a node leases
// the row, renews the lease while its hook runs, and records the completion
// fenced on `attempts` and owner, so a node whose lease expired and was
// taken over records nothing. At-least-once hook, exactly-once completion.

/// Which hook a leased step runs: ``PrepareStep`` or ``FinalizeStep``.
/// Its value picks the table (`store.claimStep(.prepare, …)`); its type
/// keeps one step's lease from completing the other's.
public protocol LeasedStep: Sendable, Hashable {
    /// The table and claim condition of the step.
    var kind: StepKind { get }
}

/// A batch's `prepare` step (the `preparations` table).
public struct PrepareStep: LeasedStep {
    public init() {}
    public var kind: StepKind { .prepare }
}

/// A batch's `finalize` step (the `finalizations` table).
public struct FinalizeStep: LeasedStep {
    public init() {}
    public var kind: StepKind { .finalize }
}

extension LeasedStep where Self == PrepareStep {
    /// A batch's `prepare` step.
    public static var prepare: PrepareStep { PrepareStep() }
}

extension LeasedStep where Self == FinalizeStep {
    /// A batch's `finalize` step.
    public static var finalize: FinalizeStep { FinalizeStep() }
}

/// What the drivers need to know of a step: its table and which rows a node may claim.
public struct StepKind: Sendable, Hashable, CustomStringConvertible {
    private enum Name: Hashable { case prepare, finalize }
    private let name: Name

    static let prepare = StepKind(name: .prepare)
    static let finalize = StepKind(name: .finalize)

    /// `prepare` or `finalize`.
    public var description: String {
        switch name {
        case .prepare: return "prepare"
        case .finalize: return "finalize"
        }
    }

    /// The table of the step's rows, keyed by `batch_key`.
    package var table: String {
        switch name {
        case .prepare: return "preparations"
        case .finalize: return "finalizations"
        }
    }

    /// The columns ``StepRecord/init(row:batchID:)`` reads, in its order
    /// (`finalizations` keeps no preview).
    package var columns: String {
        switch name {
        case .prepare: return "state, attempts, lease_owner, lease_expires_at, finished_at, preview"
        case .finalize: return "state, attempts, lease_owner, lease_expires_at, finished_at, NULL"
        }
    }

    /// Whether a completion may store a preview.
    package var storesPreview: Bool { name == .prepare }

    /// The condition on `p` (the step's table) and `b` (its batch) of a row
    /// a node may claim; `now` is the placeholder for the time, `yes` the
    /// dialect's true. A lease that expired is claimable again.
    package func claimable(now: String, true yes: String) -> String {
        switch name {
        case .finalize:
            return Self.waiting([.pending], now: now)
        case .prepare:
            return """
                ((b.status = '\(BatchStatus.preparing.rawValue)' AND \(Self.waiting([.pending, .previewed, .failed], now: now)))
                 OR (b.dry_run = \(yes) AND b.sealed = \(yes) AND b.status = '\(BatchStatus.preProcessed.rawValue)'
                     AND \(Self.waiting([.pending], now: now))))
                """
        }
    }

    /// Rows in one of `states`, or leased with a lease that expired.
    private static func waiting(_ states: [StepState], now: String) -> String {
        "(p.state IN (\(StepState.sqlList(states))) OR (p.state = \(StepState.leased.sql) AND p.lease_expires_at <= \(now)))"
    }

    /// The fence of a completion or renewal (after `WHERE batch_key = …`):
    /// the row is still leased by this claim. `attempt` and `owner` are the
    /// dialect's placeholders or literals.
    package static func fence(attempt: String, owner: String) -> String {
        "state = \(StepState.leased.sql) AND attempts = \(attempt) AND lease_owner = \(owner)"
    }
}

/// The state of a batch's leased step (a row of `preparations` or `finalizations`).
public struct StepState: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// Waiting for a node to run the hook.
    public static let pending = StepState(rawValue: "pending")
    /// A node holds the lease and runs the hook.
    public static let leased = StepState(rawValue: "leased")
    /// Prepare only: a dry run's `prepare` stored its preview; confirming the dry run prepares it for real.
    public static let previewed = StepState(rawValue: "previewed")
    /// Prepare only: `prepare` threw and failed the batch; a retry of the batch prepares it again.
    public static let failed = StepState(rawValue: "failed")
    /// Done: prepared (the batch's items may run), or finalized (the result, if any, is the batch's `result`).
    public static let done = StepState(rawValue: "done")
    public var description: String { rawValue }

    /// The state as an SQL literal: `'leased'`.
    package var sql: String { "'\(rawValue)'" }

    /// `'pending', 'failed'` for `IN (…)`.
    package static func sqlList(_ states: [StepState]) -> String { states.map(\.sql).joined(separator: ", ") }
}

/// The state of a batch's prepare step.
public typealias PreparationState = StepState
/// The state of a batch's finalize step.
public typealias FinalizationState = StepState

/// A node's lease on one batch's step. Its completion is fenced on
/// `attempt` and `owner`: a node whose lease expired and was taken over
/// records nothing.
public struct StepLease<Step: LeasedStep>: Sendable, Hashable {
    public var step: Step
    public var batchID: BatchID
    public var type: String
    public var owner: String
    /// Which claim this is (1 for the first): the fence.
    public var attempt: Int
    /// True when the batch was a dry run when claimed: a `prepare` hook only previews.
    public var dryRun: Bool

    public init(_ step: Step, batchID: BatchID, type: String, owner: String, attempt: Int, dryRun: Bool = false) {
        self.step = step
        self.batchID = batchID
        self.type = type
        self.owner = owner
        self.attempt = attempt
        self.dryRun = dryRun
    }
}

/// A node's lease on a batch's prepare step.
public typealias PreparationLease = StepLease<PrepareStep>
/// A node's lease on a batch's finalize step.
public typealias FinalizationLease = StepLease<FinalizeStep>

/// A batch's step as stored.
public struct StepRecord<Step: LeasedStep>: Sendable, Hashable {
    public var batchID: BatchID
    public var state: StepState
    /// Claims so far: more than 1 when a node died holding the lease (or a dry run was confirmed).
    public var attempts: Int
    public var leaseOwner: String?
    public var leaseExpiresAt: Date?
    public var finishedAt: Date?
    /// Prepare only: what the hook returned last, if anything, shown as the batch's `preview`.
    public var preview: JSONText?

    public init(
        batchID: BatchID, state: StepState, attempts: Int, leaseOwner: String?, leaseExpiresAt: Date?,
        finishedAt: Date?, preview: JSONText? = nil
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

/// A batch's prepare step as stored.
public typealias PreparationRecord = StepRecord<PrepareStep>
/// A batch's finalize step as stored.
public typealias FinalizationRecord = StepRecord<FinalizeStep>

extension StepRecord {
    /// Reads the columns of ``StepKind/columns``.
    package init(row: some StoredRow, batchID: BatchID) throws {
        self.init(
            batchID: batchID, state: StepState(rawValue: try row.string(0)), attempts: try row.int(1),
            leaseOwner: try row.string(at: 2), leaseExpiresAt: try row.date(at: 3), finishedAt: try row.date(at: 4),
            preview: try row.string(at: 5).map { JSONText(unchecked: $0) })
    }
}

/// The lease operations both steps share; ``PrepareStore`` and
/// ``FinalizeStore`` add how each step is queued and completed.
public protocol LeasedStepStore: Sendable {
    /// Leases the oldest claimable row of `step` (see each step's store) of
    /// a batch of one of `types`, until `now + leaseDuration`.
    func claimStep<Step: LeasedStep>(
        _ step: Step, owner: String, types: [String], leaseDuration: Double, now: Date
    ) async throws -> StepLease<Step>?
    /// Extends a lease still held; false when it was lost.
    func renewStep<Step: LeasedStep>(_ lease: StepLease<Step>, leaseDuration: Double, now: Date) async throws -> Bool
    /// The step of each batch of `ids` that has one (one query for a page of batches).
    func steps<Step: LeasedStep>(_ step: Step, of ids: [BatchID]) async throws -> [BatchID: StepRecord<Step>]
}

extension LeasedStepStore {
    /// The step of a batch, if it has one.
    public func step<Step: LeasedStep>(_ step: Step, of id: BatchID) async throws -> StepRecord<Step>? {
        try await steps(step, of: [id])[id]
    }
}
