/// A batch's item counters.
///
/// The store keeps them per chunk in the same transaction as the chunk's
/// outcomes, so they catch up with the items within one checkpoint.
public struct BatchCounts: Sendable, Hashable, Codable {
    /// Items accepted so far.
    public var total: Int64 = 0
    /// Items leased and not yet finished.
    public var running: Int64 = 0
    public var succeeded: Int64 = 0
    /// Items waiting for a retry.
    public var failed: Int64 = 0
    public var skipped: Int64 = 0
    public var dead: Int64 = 0
    public var canceled: Int64 = 0
    /// Attempts after the first, over all items.
    public var retried: Int64 = 0
    /// Items that were in flight on a lease that expired, and so may have run
    /// twice: the bound on duplicates.
    public var rescued: Int64 = 0

    public init() {}

    // The counters come from stored rows and remote answers: every sum
    // saturates, so a damaged counter shows as a huge number, never a crash.

    /// Items that ran to an end: succeeded, skipped or dead.
    public var processed: Int64 { succeeded.adding(saturating: skipped).adding(saturating: dead) }

    /// Items that will not run again.
    public var terminal: Int64 { processed.adding(saturating: canceled) }

    /// Items waiting for their first run.
    public var pending: Int64 {
        let settled = [succeeded, skipped, dead, canceled, failed, running].reduce(Int64(0)) {
            $0.adding(saturating: max(0, $1))
        }
        return max(0, total.adding(saturating: -settled))
    }

    /// 0–100.
    public var progress: Double {
        total <= 0 ? 0 : (Double(max(0, terminal)) * 100 / Double(total)).bounded(to: 0...100)
    }

    /// Adds the counters of `other` (deltas may be negative).
    public mutating func add(_ other: BatchCounts) {
        total = total.adding(saturating: other.total)
        running = running.adding(saturating: other.running)
        succeeded = succeeded.adding(saturating: other.succeeded)
        failed = failed.adding(saturating: other.failed)
        skipped = skipped.adding(saturating: other.skipped)
        dead = dead.adding(saturating: other.dead)
        canceled = canceled.adding(saturating: other.canceled)
        retried = retried.adding(saturating: other.retried)
        rescued = rescued.adding(saturating: other.rescued)
    }

    /// Moves one item from `old` to `new` status.
    public mutating func move(from old: ItemStatus, to new: ItemStatus) {
        self[old] = self[old].adding(saturating: -1)
        self[new] = self[new].adding(saturating: 1)
    }

    /// The counter of items in `status` (`pending` and `running` are derived and not stored).
    public subscript(status: ItemStatus) -> Int64 {
        get {
            switch status {
            case .pending: return pending
            case .running: return running
            case .succeeded: return succeeded
            case .failed: return failed
            case .skipped: return skipped
            case .dead: return dead
            case .canceled: return canceled
            }
        }
        set {
            switch status {
            case .pending, .running: break
            case .succeeded: succeeded = newValue
            case .failed: failed = newValue
            case .skipped: skipped = newValue
            case .dead: dead = newValue
            case .canceled: canceled = newValue
            }
        }
    }

    enum CodingKeys: String, CodingKey {
        case total, running, succeeded, failed, skipped, dead, canceled, retried, rescued
        case pending, processed
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        total = try container.decode(Int64.self, forKey: .total)
        running = try container.decodeIfPresent(Int64.self, forKey: .running) ?? 0
        succeeded = try container.decode(Int64.self, forKey: .succeeded)
        failed = try container.decode(Int64.self, forKey: .failed)
        skipped = try container.decode(Int64.self, forKey: .skipped)
        dead = try container.decode(Int64.self, forKey: .dead)
        canceled = try container.decode(Int64.self, forKey: .canceled)
        retried = try container.decodeIfPresent(Int64.self, forKey: .retried) ?? 0
        rescued = try container.decodeIfPresent(Int64.self, forKey: .rescued) ?? 0
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(total, forKey: .total)
        try container.encode(pending, forKey: .pending)
        try container.encode(running, forKey: .running)
        try container.encode(processed, forKey: .processed)
        try container.encode(succeeded, forKey: .succeeded)
        try container.encode(failed, forKey: .failed)
        try container.encode(skipped, forKey: .skipped)
        try container.encode(dead, forKey: .dead)
        try container.encode(canceled, forKey: .canceled)
        try container.encode(retried, forKey: .retried)
        try container.encode(rescued, forKey: .rescued)
    }
}

/// The rules that decide how a batch ends.
public enum BatchOutcome {
    /// The status of a batch whose items are all terminal: `completed` when
    /// at least one item succeeded or the batch is empty, `failed` otherwise.
    public static func whenAllTerminal(_ counts: BatchCounts) -> BatchStatus {
        if counts.total == 0 || counts.succeeded > 0 { return .completed }
        return .failed
    }

    /// The reason the failure policy stops the batch, or nil to go on.
    public static func failurePolicyTrips(_ counts: BatchCounts, options: BatchOptions) -> String? {
        let bad = counts.skipped.adding(saturating: counts.dead)
        switch options.failurePolicy {
        case .stopOnFirstError where bad > 0:
            return "failure policy stop_on_first_error: an item was \(counts.dead > 0 ? "dead" : "skipped")"
        case .stopAboveRatio where counts.processed >= Int64(options.failureMinimumItems):
            let ratio = Double(bad) / Double(counts.processed)
            if ratio > options.failureRatio {
                return
                    "failure policy stop_above_ratio: \(bad) of \(counts.processed) processed items failed (\(Int(saturating: ratio * 100))% > \(Int(saturating: options.failureRatio * 100))%)"
            }
            return nil
        default:
            return nil
        }
    }
}

/// What becomes of an item after one attempt.
public enum ItemDisposition: Sendable, Hashable {
    case succeeded
    /// Run again after `delay` seconds.
    case retry(delay: Double)
    case skipped
    case dead
    /// The item is `dead` and the batch fails with the error.
    case fatal

    /// The item status this disposition stores.
    public var status: ItemStatus {
        switch self {
        case .succeeded: return .succeeded
        case .retry: return .failed
        case .skipped: return .skipped
        case .dead, .fatal: return .dead
        }
    }

    /// Applies the retry rules: retryable errors retry with backoff until
    /// `maxAttempts`, then the item is dead; permanent errors skip; fatal
    /// errors fail the batch.
    ///
    /// - Parameters:
    ///   - attempt: the attempt that just ended, 1-based.
    ///   - random: a number in `0..<1` for the jitter.
    public static func after(
        attempt: Int,
        error: ItemError?,
        options: BatchOptions,
        random: Double
    ) -> ItemDisposition {
        guard let error else { return .succeeded }
        switch error.category {
        case .permanent: return .skipped
        case .fatal: return .fatal
        case .retryable:
            guard attempt < options.maxAttempts else { return .dead }
            return .retry(
                delay: options.backoff.delay(afterAttempt: attempt, retryAfter: error.retryAfter, random: random))
        }
    }
}
