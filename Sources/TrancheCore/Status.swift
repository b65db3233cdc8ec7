/// Where a batch is in its lifecycle (see ``BatchLifecycle``).
public enum BatchStatus: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    case created
    case preProcessed = "pre_processed"
    case confirmed
    /// Confirmed, and its strategy's `prepare` hook runs on one node: no
    /// item runs until it completes (then `confirmed`).
    case preparing
    case processing
    case paused
    case completed
    case failed
    case canceled

    /// True for `completed`, `failed` and `canceled`: nothing runs any more.
    public var isEnded: Bool {
        switch self {
        case .completed, .failed, .canceled: return true
        default: return false
        }
    }

    /// True when chunks of the batch may be leased.
    public var isRunnable: Bool { self == .confirmed || self == .processing }

    /// The statuses whose chunks may be leased: `confirmed` and `processing`.
    public static let runnable: [BatchStatus] = allCases.filter(\.isRunnable)

    /// The statuses of batches that have not ended.
    public static let open: [BatchStatus] = allCases.filter { !$0.isEnded }

    /// The statuses of batches that have ended.
    public static let ended: [BatchStatus] = allCases.filter(\.isEnded)

    public var description: String { rawValue }
}

/// Where an item is.
public enum ItemStatus: Int, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Waiting for its first run.
    case pending = 0
    /// Leased by a worker. Derived from the chunk's lease; never stored.
    case running = 1
    /// Done.
    case succeeded = 2
    /// Its last attempt failed with a retryable error; it runs again after its backoff.
    case failed = 3
    /// A permanent error: not retried.
    case skipped = 4
    /// Out of attempts, or quarantined after killing its worker.
    case dead = 5
    /// Canceled before it ran.
    case canceled = 6

    /// The wire name.
    public var name: String {
        switch self {
        case .pending: return "pending"
        case .running: return "running"
        case .succeeded: return "succeeded"
        case .failed: return "failed"
        case .skipped: return "skipped"
        case .dead: return "dead"
        case .canceled: return "canceled"
        }
    }

    /// Parses a wire name.
    public init?(name: String) {
        guard let status = ItemStatus.allCases.first(where: { $0.name == name }) else { return nil }
        self = status
    }

    /// True when the item will not run again unless a user retries it.
    public var isTerminal: Bool {
        switch self {
        case .succeeded, .skipped, .dead, .canceled: return true
        case .pending, .running, .failed: return false
        }
    }

    /// True for items that will run (again): `pending`, or `failed` and waiting for a retry.
    public var isWaiting: Bool { self == .pending || self == .failed }

    /// The stored statuses of items that will run (again).
    public static let waiting: [ItemStatus] = [.pending, .failed]

    /// The stored statuses that carry an error: the error log's items.
    public static let withErrors: [ItemStatus] = [.failed, .skipped, .dead]

    /// The statuses a user may run again with `retry`.
    public static let retriable: [ItemStatus] = [.failed, .skipped, .dead, .canceled]

    public var description: String { name }
}

/// How an item error is treated.
public enum ErrorCategory: String, Sendable, Hashable, Codable, CaseIterable {
    /// Transient (timeouts, 5xx, 429): retried with backoff.
    case retryable
    /// The item itself is wrong (validation, most 4xx): skipped, not retried.
    case permanent
    /// The batch cannot go on (auth failure, broken configuration): the batch fails.
    case fatal
}
