public import Foundation
public import TrancheCore

/// A change to a live batch's settings (`PATCH /v1/batches/{id}`): each
/// field given replaces the stored one, the others stay.
public struct BatchSettingsChange: Sendable, Hashable {
    /// One field of a merge patch: keep it, set it, or remove it.
    public enum Field<Value: Sendable & Hashable>: Sendable, Hashable {
        case keep
        case set(Value)
        case remove

        func applied(to value: Value?) -> Value? {
            switch self {
            case .keep: value
            case .set(let new): new
            case .remove: nil
            }
        }
    }

    /// The batch's new priority (higher runs first), or nil to keep it.
    public var priority: Int?
    /// Items of the batch running at once on one node, or nil to keep it.
    public var concurrency: Int?
    /// `rate_limit.rate`: items a second across the cluster.
    public var rate: Field<Double> = .keep
    /// `rate_limit.max_concurrent`: items running at once across the cluster.
    public var maxConcurrent: Field<Int> = .keep
    /// `pace`: `fixed` or `adaptive`, or nil to keep it.
    public var pace: PaceMode?

    public init(
        priority: Int? = nil, concurrency: Int? = nil, rate: Field<Double> = .keep, maxConcurrent: Field<Int> = .keep,
        pace: PaceMode? = nil
    ) {
        self.priority = priority
        self.concurrency = concurrency
        self.rate = rate
        self.maxConcurrent = maxConcurrent
        self.pace = pace
    }

    /// True when the change changes nothing.
    public var isEmpty: Bool {
        priority == nil && concurrency == nil && rate == .keep && maxConcurrent == .keep && pace == nil
    }

    /// `options` with this change applied, checked with the bounds a submit
    /// has; the error names the first field out of them.
    public func applied(to options: BatchOptions) throws(OptionsError) -> BatchOptions {
        if let priority, !BatchOptions.Limits.priority.contains(priority) {
            let range = BatchOptions.Limits.priority
            throw OptionsError(
                "priority must be between \(range.lowerBound) and \(range.upperBound), got \(priority)")
        }
        var options = options
        if let concurrency { options.concurrency = concurrency }
        if let pace { options.pace = pace }
        var limit = options.rateLimit ?? RateLimit()
        limit.rate = rate.applied(to: limit.rate)
        limit.maxConcurrent = maxConcurrent.applied(to: limit.maxConcurrent)
        options.rateLimit = limit.rate == nil && limit.maxConcurrent == nil ? nil : limit
        try options.validate()
        return options
    }
}

/// A draw from a shared token bucket: whole tokens taken now, and when none
/// was, the seconds until the next one.
public struct TokenGrant: Sendable, Hashable {
    public var tokens: Int
    public var wait: Double

    public init(tokens: Int, wait: Double) {
        self.tokens = tokens
        self.wait = wait
    }
}

/// The keys of the rows a ``LimitStore`` keeps (token buckets, slots and
/// paces): one spelling, used by the engine, the API and the stores.
public enum LimitKey {
    /// A batch's own rate, `max_concurrent` and pace; deleted with the batch.
    public static func batch(_ id: BatchID) -> String { batchPrefix + id.rawValue }
    /// A strategy type's limits (`--type-limit`).
    public static func type(_ name: String) -> String { "type:" + name }
    /// A host's limits and pace (`--host-limit`), shared by every batch calling it.
    public static func host(_ name: String) -> String { "host:" + name }
    /// What every batch key starts with (a SQL literal: no quote in it).
    public static let batchPrefix = "batch:"
    /// The tables holding rows under these keys.
    public static let tables = ["rate_grants", "limit_slots", "pace"]
}

/// The store's side of limits that hold across nodes: live changes to a
/// batch's settings, and token buckets shared by every node (one row per
/// key, such as `batch:ID`, `type:NAME` or `host:NAME`), drawn from in small
/// grants so that N nodes exceed a rate by at most one grant each.
public protocol LimitStore: BatchStore {
    /// Applies `change` to a batch that has not ended and returns it;
    /// `StoreError.illegalTransition` once it has ended.
    func updateSettings(_ id: BatchID, _ change: BatchSettingsChange, at now: Date) async throws -> BatchRecord

    /// Takes up to `want` tokens from the bucket `key` (`rate` a second,
    /// holding at most `burst`; made full of one token on first use).
    func drawTokens(key: String, rate: Double, burst: Double, want: Int, now: Date) async throws -> TokenGrant

    /// Takes up to `want` of the `limit` slots under `key` for `node`, held
    /// until `expiresAt` (slots of other nodes that expired count as free):
    /// how many were taken. A node's slots are one row, renewed by every call.
    func acquireSlots(key: String, node: String, limit: Int, want: Int, expiresAt: Date, now: Date) async throws
        -> Int

    /// Gives back `count` of `node`'s slots under `key`.
    func releaseSlots(key: String, node: String, count: Int) async throws

    /// Extends every slot `node` holds to `expiresAt` (its items still run).
    func renewSlots(node: String, expiresAt: Date) async throws

    /// Merges what a node's pace did into the cluster's pace for
    /// `change.key` by ``PaceRules/merged(_:with:throttledDelta:now:)`` (two
    /// nodes cutting at once cut once), adds `throttledDelta` to its count of
    /// refused calls, and answers the row as stored, which the node adopts.
    func mergePace(_ change: PaceChange, throttledDelta: Int64, now: Date) async throws -> PaceRecord

    /// The pace learned for `key` by any node, or nil.
    func pace(key: String) async throws -> PaceRecord?

    /// The paces learned for `keys` in one read (a page of batches shows
    /// theirs); keys with none are absent.
    func paces(keys: [String]) async throws -> [String: PaceRecord]
}

/// The pace an adaptive batch or host has learned, as the store keeps it so
/// that every node (and a node just started) shows and starts from it.
public struct PaceRecord: Sendable, Hashable {
    /// `batch:ID` or `host:NAME`.
    public var key: String
    /// Items a second.
    public var rate: Double
    /// Why it last changed (``AdaptivePace/Reason``).
    public var reason: String
    public var changedAt: Date
    /// Refused calls (`429`, `503`, timeouts) counted so far.
    public var throttled: Int64
    /// Until when calls wait after a `Retry-After`, or nil.
    public var pausedUntil: Date?
    /// When the rate was last cut, or nil before the first cut.
    public var cutAt: Date?
    /// True while the rate is the first cut's estimate, summed from what
    /// each node saw answered (``PaceRules/shareWindow`` after that cut).
    public var estimated: Bool

    public init(
        key: String, rate: Double, reason: String, changedAt: Date, throttled: Int64 = 0, pausedUntil: Date? = nil,
        cutAt: Date? = nil, estimated: Bool = false
    ) {
        self.key = key
        self.rate = rate
        self.reason = reason
        self.changedAt = changedAt
        self.throttled = throttled
        self.pausedUntil = pausedUntil
        self.cutAt = cutAt
        self.estimated = estimated
    }
}

/// What one node's pace did since it last read the cluster's, for the store
/// to merge (``LimitStore/mergePace(_:throttledDelta:now:)``).
public struct PaceChange: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// No step: the rate this node has, stored only when there is no row yet.
        case keep(rate: Double)
        /// Cut by `factor` from `from`. `measured`: `from` is what this node
        /// alone saw answered in the last second (the first cut after a slow
        /// start), so the nodes' shares add up to the cluster's figure.
        case cut(factor: Double, from: Double, measured: Bool)
        /// Up from `from` to `to`, at most once per half `interval` seconds across the cluster.
        case grow(from: Double, to: Double, interval: Double)
    }

    /// `batch:ID` or `host:NAME`.
    public var key: String
    public var kind: Kind
    /// Why (``AdaptivePace/Reason``).
    public var reason: String
    /// The `changed_at` of the stored pace this node last adopted, or nil:
    /// a step taken on an older pace than the stored one is not applied twice.
    public var known: Date?
    /// Until when a `Retry-After` pauses the calls, or nil.
    public var pausedUntil: Date?
    /// The range the stored rate is held in (the pace's floor and ceiling).
    public var bounds: ClosedRange<Double>

    public init(
        key: String, kind: Kind, reason: String, known: Date?, pausedUntil: Date? = nil,
        bounds: ClosedRange<Double> = 0.1...1_000_000
    ) {
        self.key = key
        self.kind = kind
        self.reason = reason
        self.known = known
        self.pausedUntil = pausedUntil
        self.bounds = bounds
    }
}

/// How the store merges the paces of several nodes into one, the way TCP
/// flows share one bottleneck but with one controller: a cut applies once
/// however many nodes saw the refusals, growth at most once per step interval.
package enum PaceRules {
    /// Seconds after a first (estimated) cut in which other nodes' measured
    /// shares are added to it.
    package static let shareWindow = 2.0

    /// The row to store after `change` (with `stored` as read under lock).
    package static func merged(_ stored: PaceRecord?, with change: PaceChange, throttledDelta: Int64, now: Date)
        -> PaceRecord
    {
        let bounds = change.bounds
        func held(_ rate: Double) -> Double { rate.bounded(to: bounds, nan: bounds.lowerBound) }
        var row =
            stored
            ?? PaceRecord(key: change.key, rate: held(change.kind.rate), reason: change.reason, changedAt: now)
        row.throttled = row.throttled.adding(saturating: max(0, throttledDelta))
        if let until = change.pausedUntil, until > (row.pausedUntil ?? .distantPast) { row.pausedUntil = until }
        // Changed by another node since this one last read it.
        let moved = stored.map { stored in change.known.map { stored.changedAt > $0 } ?? true } ?? false
        switch change.kind {
        case .keep:
            break
        case .cut(let factor, let from, let measured):
            let factor = factor.bounded(to: 0...1, nan: 1)
            if measured, row.estimated, let cutAt = row.cutAt, now.timeIntervalSince(cutAt) <= shareWindow {
                // This node's share of what the cluster answered before its first cut.
                row.rate = held(row.rate + from * factor)
                row.changedAt = max(now, row.changedAt)
                return row
            }
            if let cutAt = stored?.cutAt, cutAt > (change.known ?? .distantPast) {
                // Another node cut since this one read the pace: the same refusals, cut once.
                return row
            }
            let first = stored?.cutAt == nil && measured
            row.rate = held((first || stored == nil ? from : row.rate) * factor)
            row.estimated = first
            row.cutAt = now
            row.reason = change.reason
            row.changedAt = max(now, row.changedAt)
        case .grow(let from, let to, let interval):
            guard stored != nil else { break }
            // Half the interval: one node's steps, timed by its own clock, are never refused.
            guard !moved, now.timeIntervalSince(row.changedAt) >= min(interval, 60) / 2 else { return row }
            row.rate = held(row.rate + max(0, to - from))
            row.reason = change.reason
            row.changedAt = max(now, row.changedAt)
        }
        return row
    }
}

extension PaceChange.Kind {
    /// The rate a new row starts at.
    var rate: Double {
        switch self {
        case .keep(let rate): rate
        case .cut(let factor, let from, _): from * factor
        case .grow(_, let to, _): to
        }
    }
}

extension TokenBucket {
    /// The bucket a store row holds (`tokens` left at `updatedAt`, in
    /// milliseconds), or a new one, drawn from: the grant and the row to write back.
    package static func draw(
        rate: Double, burst: Double, stored: (tokens: Double, updatedAt: Int64)?, want: Int, now: Date
    ) -> (grant: TokenGrant, tokens: Double, updatedAt: Int64) {
        let nowMS = now.milliseconds
        var bucket =
            stored.map {
                TokenBucket(
                    rate: rate, burst: burst, tokens: $0.tokens, updatedAt: Double($0.updatedAt) / 1000)
            } ?? TokenBucket(rate: rate, burst: burst, tokens: 1, updatedAt: Double(nowMS) / 1000)
        let (granted, wait) = bucket.grant(want: want, now: Double(nowMS) / 1000)
        let updatedAt = Int64.saturating((bucket.storedUpdatedAt ?? Double(nowMS) / 1000) * 1000)
        return (TokenGrant(tokens: granted, wait: wait), bucket.storedTokens, max(updatedAt, stored?.updatedAt ?? 0))
    }
}

/// The rules both stores share for slots and settings.
package enum SlotRules {
    /// Slots to grant: up to `want`, never past `limit` with `held` already taken.
    package static func granted(limit: Int, held: Int64, want: Int) -> Int {
        let free = Int64(max(0, limit)) - max(0, held)
        return Int(clamping: max(0, min(Int64(max(0, want)), free)))
    }
}

extension BatchRules {
    /// The options of `stored` after `change`, or why it cannot change: an
    /// ended batch is a conflict, a value out of bounds an options error.
    package static func settingsChanged(_ stored: StoredBatch, _ change: BatchSettingsChange) throws -> BatchOptions {
        guard !stored.record.status.isEnded else {
            throw StoreError(
                .illegalTransition,
                "batch \(stored.record.id) has ended (\(stored.record.status)); its settings no longer change")
        }
        return try change.applied(to: stored.record.options)
    }
}
