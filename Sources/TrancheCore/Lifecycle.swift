/// Something that changes a batch's status.
public enum LifecycleAction: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// Context and items validated; `total` is known.
    case preProcess = "pre_process"
    /// A person or the submitter confirmed the batch: queue it.
    case confirm
    /// The first chunk was leased.
    case start
    /// Stop leasing chunks; chunks in flight finish.
    case pause
    /// Lease chunks again.
    case resume
    /// Every item is terminal and the outcome rule said completed.
    case complete
    /// The outcome rule, a fatal error, the failure policy or the batch timeout said failed.
    case fail
    /// A user canceled the batch.
    case cancel
    /// A user asked for failed, skipped or dead items to run again.
    case retry
    /// A confirmed batch whose strategy has a `prepare` hook waits for it
    /// (in the transaction that confirmed it).
    case prepare
    /// The `prepare` hook completed: the batch's items may run.
    case prepared

    public var description: String { rawValue }

    /// The event recorded when this action succeeds.
    public var eventType: BatchEventType {
        switch self {
        case .preProcess: return .preProcessed
        case .confirm: return .confirmed
        case .start: return .processing
        case .pause: return .paused
        case .resume: return .resumed
        case .complete: return .completed
        case .fail: return .failed
        case .cancel: return .canceled
        case .retry: return .retried
        case .prepare: return .preparing
        case .prepared: return .prepared
        }
    }
}

/// An action that is not allowed from the batch's current status.
public struct IllegalTransition: Error, Sendable, Hashable, CustomStringConvertible {
    public var from: BatchStatus
    public var action: LifecycleAction

    public init(from: BatchStatus, action: LifecycleAction) {
        self.from = from
        self.action = action
    }

    public var description: String { "cannot \(action) a batch that is \(from)" }
}

/// The batch lifecycle of DESIGN.md as one table: every legal transition is
/// listed once; anything else is an ``IllegalTransition``.
///
/// ```
/// created ─▶ pre_processed ─(confirm)─▶ confirmed ─▶ processing ─▶ completed
///    │             │                        │          │  ▲  │   ├─▶ failed
///    │             │                        │          ▼  │  │   └─▶ canceled
///    └─────────────┴────────────────────────┴──────▶ paused ─┘
/// ```
///
/// A batch whose strategy has a `prepare` hook goes from `confirmed` to
/// `preparing` in the transaction that confirmed it, and back to `confirmed`
/// when the hook completes; while `preparing` it may fail or be canceled, not
/// paused (no item runs yet, and the hook is not interrupted).
public enum BatchLifecycle {
    /// `(from, action) → to`, the whole machine. `resume` returns to the status
    /// the batch was paused from, so it is resolved by ``resumeTarget(pausedFrom:)``.
    public static let transitions: [Transition] = [
        Transition(.created, .preProcess, .preProcessed),
        Transition(.preProcessed, .confirm, .confirmed),
        Transition(.confirmed, .start, .processing),
        Transition(.confirmed, .prepare, .preparing),
        Transition(.preparing, .prepared, .confirmed),
        Transition(.preparing, .fail, .failed),
        Transition(.preparing, .cancel, .canceled),
        Transition(.created, .pause, .paused),
        Transition(.preProcessed, .pause, .paused),
        Transition(.confirmed, .pause, .paused),
        Transition(.processing, .pause, .paused),
        Transition(.paused, .resume, .processing),
        Transition(.confirmed, .complete, .completed),
        Transition(.processing, .complete, .completed),
        Transition(.created, .fail, .failed),
        Transition(.preProcessed, .fail, .failed),
        Transition(.confirmed, .fail, .failed),
        Transition(.processing, .fail, .failed),
        Transition(.paused, .fail, .failed),
        Transition(.created, .cancel, .canceled),
        Transition(.preProcessed, .cancel, .canceled),
        Transition(.confirmed, .cancel, .canceled),
        Transition(.processing, .cancel, .canceled),
        Transition(.paused, .cancel, .canceled),
        Transition(.processing, .retry, .processing),
        Transition(.paused, .retry, .paused),
        Transition(.completed, .retry, .confirmed),
        Transition(.failed, .retry, .confirmed),
        Transition(.canceled, .retry, .confirmed),
    ]

    /// One legal edge of the machine.
    public struct Transition: Sendable, Hashable {
        public var from: BatchStatus
        public var action: LifecycleAction
        public var to: BatchStatus

        init(_ from: BatchStatus, _ action: LifecycleAction, _ to: BatchStatus) {
            self.from = from
            self.action = action
            self.to = to
        }
    }

    private static let table: [Key: BatchStatus] = Dictionary(
        uniqueKeysWithValues: transitions.map { (Key(from: $0.from, action: $0.action), $0.to) }
    )

    private struct Key: Hashable {
        var from: BatchStatus
        var action: LifecycleAction
    }

    /// The status after `action`, or an ``IllegalTransition``.
    ///
    /// - Parameter pausedFrom: for `resume`, the status the batch had when it was paused.
    public static func next(
        from status: BatchStatus,
        _ action: LifecycleAction,
        pausedFrom: BatchStatus? = nil
    ) throws(IllegalTransition) -> BatchStatus {
        guard let target = table[Key(from: status, action: action)] else {
            throw IllegalTransition(from: status, action: action)
        }
        if action == .resume { return resumeTarget(pausedFrom: pausedFrom) }
        return target
    }

    /// Where `resume` goes: back to where the batch was paused, so resuming a
    /// batch paused before confirmation does not skip the confirmation.
    public static func resumeTarget(pausedFrom: BatchStatus?) -> BatchStatus {
        switch pausedFrom {
        case .created, .preProcessed, .confirmed: return pausedFrom ?? .processing
        default: return .processing
        }
    }
}
