public import Foundation

/// How far a batch had got at one moment, as the cluster recorded it: the
/// leader samples every batch in progress about once a second
/// (``ProgressStore/recordProgressSamples(at:minimumInterval:retention:)``),
/// so rate and ETA are read from the store, the same on every node.
public struct ProgressSample: Sendable, Hashable {
    /// When the sample was taken (milliseconds precision).
    public var at: Date
    /// Items processed by then (succeeded, skipped and dead).
    public var done: Int64

    /// A sample of `done` items at `at`.
    public init(at: Date, done: Int64) {
        self.at = at
        self.done = done
    }
}

/// What a store knows of a batch's progress: its recent samples (oldest
/// first) and its chunks.
public struct StoredProgress: Sendable, Hashable {
    /// The samples asked for, oldest first.
    public var samples: [ProgressSample]
    /// Chunks whose items are all finished.
    public var chunksDone: Int64
    /// Every chunk the batch still has (none once its items are pruned).
    public var chunksTotal: Int64

    /// What a store read for one batch.
    public init(samples: [ProgressSample], chunksDone: Int64, chunksTotal: Int64) {
        self.samples = samples
        self.chunksDone = chunksDone
        self.chunksTotal = chunksTotal
    }
}

extension StoredProgress {
    /// What a driver read, joined per batch: `chunks` rows are (batch id,
    /// chunks done, chunks), `samples` rows (batch id, at in milliseconds,
    /// done), oldest first; batches not in `ids` are left out.
    package static func byBatch(
        _ ids: [BatchID], chunks: [some StoredRow], samples: [some StoredRow]
    ) throws -> [BatchID: StoredProgress] {
        let byText = Dictionary(ids.map { ($0.rawValue, $0) }, uniquingKeysWith: { first, _ in first })
        var result: [BatchID: StoredProgress] = [:]
        for row in chunks {
            guard let id = byText[try row.string(0)] else { continue }
            result[id] = StoredProgress(samples: [], chunksDone: try row.int64(1), chunksTotal: try row.int64(2))
        }
        for row in samples {
            guard let id = byText[try row.string(0)] else { continue }
            result[id]?.samples.append(ProgressSample(at: Date(milliseconds: try row.int64(1)), done: try row.int64(2)))
        }
        return result
    }
}

/// A store that keeps progress samples and counts chunks: both stores
/// conform. Samples cost nothing on the checkpoint path: the leader's sweep
/// writes one row per batch in progress with one statement, and prunes.
public protocol ProgressStore: Sendable {
    /// Samples every batch in progress (`processing` or `paused`) that has
    /// no sample newer than `minimumInterval` seconds before `now`, and
    /// deletes samples older than `retention` seconds; returns how many
    /// samples were written.
    func recordProgressSamples(at now: Date, minimumInterval: Double, retention: Double) async throws -> Int

    /// The samples taken at or after `since` and the chunk counts of each of
    /// `ids` that exists.
    func progress(of ids: [BatchID], since: Date) async throws -> [BatchID: StoredProgress]
}

/// Rate and ETA from progress samples: pure, so every node computes the same
/// figures from the same rows, and tests pass the time.
///
/// The rate is items a second over the last ``rateWindow`` seconds of
/// samples; when fewer than two samples in that window saw items finish (a
/// batch whose items take longer, or one that stalled), it is the last two
/// steps over the time since the step before them: a slow batch gets its
/// real rate, not 0, and a stalled one's rate falls while nothing finishes.
/// The ETA is the remaining items at that rate; its range comes from the
/// rates over the last 10 s, 1 min and 5 min, each allowing its span one
/// sampling interval more or less (a checkpoint lands just before or after
/// a sample). A steady batch gets a narrow range; one that speeds up, slows
/// down or stalls now and then a wide one. There is no ETA until the
/// samples span ``minimumSpan`` seconds.
public struct ProgressEstimate: Sendable, Hashable {
    /// Items a second over the last ``rateWindow`` seconds (or over the last
    /// two steps, when slower); 0 when unknown.
    public var rate: Double
    /// Seconds until the remaining items are done at ``rate``; nil when unknown.
    public var eta: Double?
    /// The soonest end the recent rates allow; nil when unknown.
    public var etaLow: Double?
    /// The latest end the recent rates allow; nil when unknown, also when no
    /// item finished in the last ``rateWindow`` seconds.
    public var etaHigh: Double?

    /// Seconds the rate is measured over.
    public static let rateWindow: Double = 10
    /// The windows whose rates bound the ETA; the longest is how far back samples are read.
    public static let windows: [Double] = [10, 60, 300]
    /// Samples must span this many seconds before an ETA is given.
    public static let minimumSpan: Double = 10
    /// And there must be at least this many of them.
    public static let minimumSamples = 5
    /// The sweep samples once a second; a batch gets at most one sample per
    /// this many seconds (less than a second, so timer jitter skips none).
    public static let minimumSampleInterval: Double = 0.8
    /// Samples are kept this long (seconds), then pruned.
    public static let retention: Double = 600

    /// Figures as given (for an ended batch, or a test).
    public init(rate: Double, eta: Double?, etaLow: Double?, etaHigh: Double?) {
        self.rate = rate
        self.eta = eta
        self.etaLow = etaLow
        self.etaHigh = etaHigh
    }

    /// The estimate at `now` from `samples` (any order) with `remaining`
    /// items left. Samples older than the longest window are ignored, and so
    /// is everything before a fall in `done` (a retry reset the counts).
    /// When the newest sample is older than ``rateWindow`` (the batch is no
    /// longer sampled: it ended, or no leader runs), nothing is known.
    public init(samples: [ProgressSample], remaining: Int64, now: Date) {
        self.init(rate: 0, eta: nil, etaLow: nil, etaHigh: nil)
        let oldest = now.addingTimeInterval(-(Self.windows.last ?? Self.rateWindow))
        var recent = samples.filter { $0.at >= oldest }.sorted { $0.at < $1.at }
        if let fall = recent.indices.dropFirst().last(where: { recent[$0].done < recent[$0 - 1].done }) {
            recent.removeFirst(fall)
        }
        guard let newest = recent.last, newest.at >= now.addingTimeInterval(-Self.rateWindow) else { return }
        func window(_ seconds: Double) -> ArraySlice<ProgressSample> {
            let start = newest.at.addingTimeInterval(-seconds)
            return recent[(recent.firstIndex { $0.at >= start } ?? recent.endIndex)...]
        }
        rate = Self.rate(Self.steps(window(Self.rateWindow), in: recent)) ?? 0
        guard remaining > 0 else {
            (eta, etaLow, etaHigh) = (0, 0, 0)
            return
        }
        guard rate > 0, recent.count >= Self.minimumSamples,
            let first = recent.first, newest.at.timeIntervalSince(first.at) >= Self.minimumSpan
        else { return }
        let bounds = Self.windows.compactMap { Self.rateBounds(window($0)) }
        guard let fastest = bounds.map(\.high).max(), let slowest = bounds.map(\.low).min() else { return }
        let left = Double(remaining)
        eta = left / rate
        etaLow = left / max(fastest, rate)
        etaHigh = slowest > 0 ? left / min(slowest, rate) : nil
    }

    /// `window` (the end of `samples`) when at least two of its samples saw
    /// `done` increase; otherwise `samples` from the one at the third-last
    /// increase (so the span runs from a step to the newest sample and
    /// counts the two steps after it), or all of them.
    static func steps(_ window: ArraySlice<ProgressSample>, in samples: [ProgressSample]) -> ArraySlice<ProgressSample>
    {
        guard zip(window, window.dropFirst()).filter({ $1.done > $0.done }).count < 2 else { return window }
        var found = 0
        for index in samples.indices.dropFirst().reversed() where samples[index].done > samples[index - 1].done {
            found += 1
            if found == 3 { return samples[index...] }
        }
        return samples[...]
    }

    /// Items a second between the first and the last sample; nil when they span no time.
    static func rate(_ samples: ArraySlice<ProgressSample>) -> Double? {
        guard let first = samples.first, let last = samples.last else { return nil }
        let span = last.at.timeIntervalSince(first.at)
        guard span > 0 else { return nil }
        return (Double(last.done) - Double(first.done)) / span
    }

    /// The slowest and fastest rate `samples` allow when each end may be off
    /// by one sampling interval; nil for fewer than three samples.
    static func rateBounds(_ samples: ArraySlice<ProgressSample>) -> (low: Double, high: Double)? {
        guard samples.count >= 3, let first = samples.first, let last = samples.last else { return nil }
        let span = last.at.timeIntervalSince(first.at)
        guard span > 0 else { return nil }
        let interval = span / Double(samples.count - 1)
        let done = Double(last.done) - Double(first.done)
        return (done / (span + interval), done / (span - interval))
    }
}

/// A batch's progress as the API and the command line show it.
public struct BatchProgress: Sendable, Hashable {
    /// Rate and ETA.
    public var estimate: ProgressEstimate
    /// Chunks finished; nil when unknown (the store keeps no chunks, or the
    /// batch's items were pruned).
    public var chunksDone: Int64?
    /// The batch's chunks; nil when unknown, as ``chunksDone``.
    public var chunksTotal: Int64?

    /// Progress as given.
    public init(estimate: ProgressEstimate, chunksDone: Int64?, chunksTotal: Int64?) {
        self.estimate = estimate
        self.chunksDone = chunksDone
        self.chunksTotal = chunksTotal
    }

    /// Nothing known: rate 0, no ETA, no chunks.
    public static let unknown = BatchProgress(
        estimate: ProgressEstimate(rate: 0, eta: nil, etaLow: nil, etaHigh: nil), chunksDone: nil, chunksTotal: nil)

    /// The progress of `record` at `now` from what its store holds. An ended
    /// batch has rate 0 and ETA 0; an unsealed one no ETA (its total is not
    /// known yet).
    public init(record: BatchRecord, stored: StoredProgress?, now: Date) {
        let counts = record.counts
        // Stored counters may hold anything: the difference must not trap.
        let (left, overflow) = counts.total.subtractingReportingOverflow(counts.terminal)
        var estimate = ProgressEstimate(samples: stored?.samples ?? [], remaining: overflow ? 0 : left, now: now)
        if record.status.isEnded {
            estimate = ProgressEstimate(rate: 0, eta: 0, etaLow: 0, etaHigh: 0)
        } else if !record.sealed {
            (estimate.eta, estimate.etaLow, estimate.etaHigh) = (nil, nil, nil)
        }
        let chunksKnown = (stored?.chunksTotal ?? 0) > 0
        self.init(
            estimate: estimate, chunksDone: chunksKnown ? stored?.chunksDone : nil,
            chunksTotal: chunksKnown ? stored?.chunksTotal : nil)
    }
}

extension SQLList {
    /// Batches the leader samples: those in progress, paused ones too (so
    /// their rate falls to 0 while they wait).
    package static let batchesInProgress = of([.processing, .paused])
}
