/// How a batch sets its pace: the rate it was given, or one that adapts to
/// the answers of the API it calls.
public struct PaceMode: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    /// The rate limit as given, whatever the API answers.
    public static let fixed = PaceMode(rawValue: "fixed")
    /// Additive increase while calls succeed, multiplicative decrease on
    /// `429`, `503`, `Retry-After`, timeouts and latency above its baseline;
    /// never above a rate limit given. The default for the `http` strategy.
    public static let adaptive = PaceMode(rawValue: "adaptive")

    public static let all: [PaceMode] = [.fixed, .adaptive]

    public var description: String { rawValue }
}

extension BatchOptions {
    /// The pace a batch of `type` runs at: its `pace` option, or by default
    /// adaptive for the `http` strategy and fixed for the others.
    public func paceMode(forType type: String) -> PaceMode {
        pace ?? (type == "http" ? .adaptive : .fixed)
    }
}

/// An AIMD controller for the rate at which a batch (or a host) is called,
/// the way TCP paces a connection: grow by a constant while answers come
/// back well, cut by a factor when the far side says it is overloaded.
///
/// Pure: the caller passes the time (seconds on a monotonic clock) and the
/// signals; tested without sleeping.
public struct AdaptivePace: Sendable, Hashable {
    /// The controller's settings; every field has a documented default.
    public struct Configuration: Sendable, Hashable {
        /// The rate it starts at, in items a second. Default nil: the
        /// ceiling if any, else a slow start from ``startRate``.
        public var initialRate: Double?
        /// Where a pace without a rate given starts: it doubles every
        /// ``slowStartInterval`` while calls succeed, as TCP's slow start
        /// does, until the first refusal (or latency cut), which sets it to
        /// the rate of calls answered in the second before, cut. Default 10.
        public var startRate: Double = 10
        /// Seconds between two doublings of a slow start. Default 0.1.
        public var slowStartInterval: Double = 0.1
        /// The rate it never goes above: a fixed `rate_limit.rate`, or nil. Default nil.
        public var ceiling: Double?
        /// The rate it never goes below. Default 0.1 a second.
        public var floor: Double = 0.1
        /// Items a second added per step while calls succeed, at least. Default 1.
        public var increase: Double = 1
        /// The share of the rate added per step while calls succeed, when
        /// that is more than ``increase``: a fast API is found again in
        /// seconds, not minutes (a tenth of it near the last refusal). Default 0.05.
        public var growth: Double = 0.05
        /// The factor a refusal (`429`, `503`, timeout) cuts the rate by. Default 0.7 (CUBIC's).
        public var decrease: Double = 0.7
        /// The factor latency above its baseline cuts the rate by. Default 0.9.
        public var latencyDecrease: Double = 0.9
        /// Latency above this multiple of its baseline (and 50 ms above it) counts as rising. Default 2.
        public var latencyTolerance: Double = 2
        /// Seconds between two latency cuts, at least: each must see its
        /// effect on the answers of a whole second. Default 2.
        public var latencyCutInterval: Double = 2
        /// Latency cuts only when the calls answered in the last second fell
        /// below this share of the second before. Default 0.9.
        public var latencyThroughputDrop: Double = 0.9
        /// Seconds between two steps up (and after a cut before one). Default 0.25.
        public var stepInterval: Double = 0.25
        /// Seconds after a cut before the next, at least (and at least two
        /// baseline latencies: answers to calls made before a cut say nothing new).
        /// A second: an API counting calls over a one-second window keeps
        /// refusing for up to a second after too many, whatever the new rate. Default 1.
        public var cutInterval: Double = 1
        /// The longest pause a `Retry-After` imposes, in seconds. Default 60.
        public var longestPause: Double = 60

        public init() {}
    }

    /// What one answer said about the far side.
    public enum Signal: Sendable, Hashable {
        /// A call that succeeded (or failed for its own reasons) after `latency` seconds.
        case answered(latency: Double)
        /// The far side refused for load (`429`, `503`, a timeout, a refused connection),
        /// asking for a pause of `retryAfter` seconds or not, `latency` seconds after the call.
        case refused(retryAfter: Double?, latency: Double = 0)
    }

    /// Why the rate last changed.
    public struct Reason: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        /// Not changed yet.
        public static let start = Reason(rawValue: "start")
        /// A slow start: doubled while calls succeed, no refusal yet.
        public static let starting = Reason(rawValue: "starting")
        /// Calls succeeded: one step up.
        public static let succeeding = Reason(rawValue: "succeeding")
        /// A refusal (`429`, `503`, timeout): cut.
        public static let refused = Reason(rawValue: "refused")
        /// A `Retry-After`: cut and paused.
        public static let retryAfter = Reason(rawValue: "retry_after")
        /// Latency rose above its baseline: a gentle cut.
        public static let latency = Reason(rawValue: "latency")
        public var description: String { rawValue }
    }

    public let configuration: Configuration
    /// Items a second now (nil only in controllers made before slow start; kept for callers).
    public private(set) var rate: Double?
    /// Why the rate last changed.
    public private(set) var reason: Reason = .start
    /// Refusals seen, all together.
    public private(set) var throttled: Int64 = 0
    /// Until when calls wait (a `Retry-After`), or nil.
    public private(set) var pausedUntil: Double?
    /// The latency of an unloaded call, learned from answers.
    public private(set) var baseline: Double?
    private var lastChange: Double?
    private var lastCut: Double?
    /// The rate the last refusal came at: growth slows near it, as CUBIC's does.
    private var refusedRate: Double?
    /// True until the first cut when no rate was given: the rate doubles.
    public private(set) var slowStart: Bool
    /// The last change of the rate, for the store to merge with other nodes' (nil before any).
    public private(set) var lastStep: Step?

    /// A change of the rate: what the store needs to merge it once for the cluster.
    public enum Step: Sendable, Hashable {
        /// Cut by `factor` from `from`; `measured` when `from` is what this
        /// controller saw answered (the first cut of a slow start).
        case cut(factor: Double, from: Double, measured: Bool)
        /// Up from `from` to `to`; the next step may follow `interval` seconds later.
        case grew(from: Double, to: Double, interval: Double)
    }
    /// Calls answered per tenth of a second, over the last two seconds.
    private var answers: [AnswerCount] = []
    /// Latency of the last answers, smoothed: a rise must last to count.
    private var recent: Double?
    /// The smoothed latency when latency last cut the rate, until the next check.
    private var latencyAtCut: Double?

    private struct AnswerCount: Sendable, Hashable {
        var tenth: Int
        var count: Int
    }

    public init(_ configuration: Configuration = Configuration()) {
        self.configuration = configuration
        let given = configuration.initialRate ?? configuration.ceiling
        self.rate = Self.held(given ?? configuration.startRate, configuration)
        self.slowStart = given == nil
    }

    /// Takes one answer at `now`; true when the rate or the pause changed.
    public mutating func record(_ signal: Signal, at now: Double) -> Bool {
        switch signal {
        case .refused(let retryAfter, let latency):
            throttled += 1
            var changed = false
            if let retryAfter, retryAfter.isFinite, retryAfter > 0 {
                let until = now + min(retryAfter, configuration.longestPause)
                if until > (pausedUntil ?? -.infinity) {
                    pausedUntil = until
                    changed = true
                }
            }
            // A call that started before the last cut was refused at the rate before it.
            guard startedAfterLastCut(now: now, latency: latency), mayCut(now) else { return changed }
            cut(by: configuration.decrease, reason: retryAfter == nil ? .refused : .retryAfter, at: now)
            return true
        case .answered(let latency):
            guard latency.isFinite, latency >= 0 else { return false }
            countAnswer(at: now)
            let baseline = learn(latency)
            let recent = self.recent.map { $0 + (latency - $0) * 0.2 } ?? latency
            self.recent = recent
            if isSlow(latency, baseline: baseline) {
                guard latencyCutDue(now: now, latency: latency, recent: recent, baseline: baseline) else {
                    return false
                }
                cut(by: configuration.latencyDecrease, reason: .latency, at: now)
                latencyAtCut = recent
                return true
            }
            guard let rate, mayGrow(now), rate < Self.held(.infinity, configuration) else { return false }
            if slowStart {
                self.rate = Self.held(rate * 2, configuration)
                reason = .starting
                lastChange = now
                lastStep = .grew(from: rate, to: rate * 2, interval: configuration.slowStartInterval)
                return true
            }
            // Slow near the last refusal, as CUBIC's plateau; past it, probing as before.
            let nearRefusal = refusedRate.map { rate >= 0.9 * $0 && rate <= 1.1 * $0 } ?? false
            let growth = configuration.growth.isFinite ? max(0, configuration.growth) : 0
            let step =
                nearRefusal
                ? max(configuration.increase * 0.5, rate * growth * 0.1) : max(configuration.increase, rate * growth)
            self.rate = Self.held(rate + step, configuration)
            reason = .succeeding
            lastChange = now
            lastStep = .grew(from: rate, to: rate + step, interval: configuration.stepInterval)
            return true
        }
    }

    /// The range the rate is held in: the floor and the ceiling (or a million a second).
    public var bounds: ClosedRange<Double> {
        Self.held(0, configuration)...Self.held(.infinity, configuration)
    }

    /// Seconds to wait at `now` before the next call (a `Retry-After`), 0 for none.
    public func pause(at now: Double) -> Double {
        guard let pausedUntil, pausedUntil > now else { return 0 }
        return pausedUntil - now
    }

    /// Starts from a rate learned elsewhere (another node, a restart), held
    /// within the limits; a slow start goes on only if that one was still in it.
    public mutating func resume(from rate: Double, reason: Reason? = nil) {
        guard rate.isFinite, rate > 0 else { return }
        self.rate = Self.held(rate, configuration)
        if reason != .starting && reason != .start { slowStart = false }
    }

    /// Takes the cluster's pace as the store merged it: its rate, how many
    /// seconds ago it was last cut (answers to calls made before then say
    /// nothing new) and how long a `Retry-After` still pauses it.
    public mutating func adopt(rate: Double, reason: Reason, cutAgo: Double?, pause: Double, at now: Double) {
        guard rate.isFinite, rate > 0 else { return }
        self.rate = Self.held(rate, configuration)
        self.reason = reason
        if let cutAgo, cutAgo.isFinite {
            let cutAt = now - max(0, cutAgo)
            if lastCut.map({ cutAt > $0 }) ?? true {
                lastCut = cutAt
                lastChange = max(lastChange ?? cutAt, cutAt)
                if reason != .latency {
                    let factor = configuration.decrease > 0 ? configuration.decrease : 1
                    refusedRate = rate / factor
                }
            }
            slowStart = false
        } else if reason != .start && reason != .starting {
            slowStart = false
        }
        if pause.isFinite, pause > 0 {
            let until = now + min(pause, configuration.longestPause)
            if until > (pausedUntil ?? -.infinity) { pausedUntil = until }
        }
    }

    /// Calls answered in the second before `now`, as a rate.
    public func answeredRate(at now: Double) -> Double {
        answered(from: now - 1, to: now)
    }

    /// Calls answered in `(from, to]`, counted by tenths of a second.
    private func answered(from: Double, to: Double) -> Double {
        let low = Self.tenth(from)
        let high = Self.tenth(to)
        return Double(answers.reduce(0) { $0 + ($1.tenth > low && $1.tenth <= high ? $1.count : 0) })
    }

    private mutating func countAnswer(at now: Double) {
        let tenth = Self.tenth(now)
        if let last = answers.last, last.tenth == tenth {
            answers[answers.count - 1].count += 1
        } else {
            answers.append(AnswerCount(tenth: tenth, count: 1))
            // Two seconds are kept: the last one and the one before, to see throughput fall.
            answers.removeAll { $0.tenth <= tenth - 20 || $0.tenth > tenth }
        }
    }

    private static func tenth(_ time: Double) -> Int {
        Int(saturating: (time * 10).rounded(.down))
    }

    /// An answer slower than its baseline allows.
    private func isSlow(_ latency: Double, baseline: Double) -> Bool {
        latency > baseline * configuration.latencyTolerance && latency > baseline + 0.05
    }

    /// Whether slow answers call for a latency cut now: the call started
    /// after the last cut, answers have been slow for a while (not one late
    /// answer), and fewer calls were answered in the last second than in the
    /// second before. Latency that rises while answers keep coming as fast
    /// (a client whose own CPU queues the calls, or load still building up)
    /// is no reason to slow down: cutting would not make the far side faster.
    ///
    /// A latency cut that did not bring latency down (by a tenth, by the
    /// time the next may come) says the calls wait for something else than
    /// the far side's load from this pace: that latency becomes the baseline.
    private mutating func latencyCutDue(now: Double, latency: Double, recent: Double, baseline: Double) -> Bool {
        guard startedAfterLastCut(now: now, latency: latency), mayCut(now), isSlow(recent, baseline: baseline)
        else { return false }
        if let lastCut, now - lastCut < configuration.latencyCutInterval, now >= lastCut { return false }
        if let before = latencyAtCut {
            latencyAtCut = nil
            if recent >= 0.9 * before {
                self.baseline = recent
                return false
            }
        }
        let before = answered(from: now - 2, to: now - 1)
        return before > 0 && answered(from: now - 1, to: now) < configuration.latencyThroughputDrop * before
    }

    private func startedAfterLastCut(now: Double, latency: Double) -> Bool {
        guard let lastCut, latency.isFinite, latency >= 0 else { return true }
        return now - latency >= lastCut
    }

    /// A new ceiling (a changed `rate_limit.rate`); the rate is held under it.
    public func withCeiling(_ ceiling: Double?) -> AdaptivePace {
        var configuration = self.configuration
        configuration.ceiling = ceiling
        var copy = AdaptivePace(configuration)
        copy.rate = rate.map { Self.held($0, configuration) } ?? copy.rate
        copy.reason = reason
        copy.throttled = throttled
        copy.pausedUntil = pausedUntil
        copy.baseline = baseline
        copy.lastChange = lastChange
        copy.lastCut = lastCut
        copy.refusedRate = refusedRate
        copy.slowStart = slowStart
        copy.answers = answers
        copy.recent = recent
        copy.latencyAtCut = latencyAtCut
        return copy
    }

    private func mayGrow(_ now: Double) -> Bool {
        guard let lastChange else { return true }
        let interval = max(
            slowStart ? configuration.slowStartInterval : configuration.stepInterval, 2 * (baseline ?? 0))
        return now - lastChange >= interval || now < lastChange
    }

    private func mayCut(_ now: Double) -> Bool {
        guard let lastCut else { return true }
        let interval = max(configuration.cutInterval, 2 * (baseline ?? 0))
        return now - lastCut >= interval || now < lastCut
    }

    private mutating func cut(by factor: Double, reason: Reason, at now: Double) {
        // The first cut of a slow start starts from what the far side
        // answered in the last second, if less: the rate doubled past it.
        let answered = max(1, answeredRate(at: now))
        let from = slowStart ? min(rate ?? answered, answered) : rate ?? answered
        lastStep = .cut(factor: factor, from: from, measured: slowStart && from == answered)
        slowStart = false
        if reason != .latency { refusedRate = from }
        rate = Self.held(from * factor, configuration)
        self.reason = reason
        lastChange = now
        lastCut = now
    }

    /// Follows a falling latency at once and a rising one slowly, so the
    /// baseline stays near the unloaded latency while load builds up.
    private mutating func learn(_ latency: Double) -> Double {
        guard let baseline else {
            self.baseline = latency
            return latency
        }
        let weight = latency < baseline ? 0.3 : 0.01
        let learned = baseline + (latency - baseline) * weight
        self.baseline = learned
        return learned
    }

    private static func held(_ rate: Double, _ configuration: Configuration) -> Double {
        let floor = configuration.floor.isFinite && configuration.floor > 0 ? configuration.floor : 0.1
        var ceiling = configuration.ceiling ?? 1_000_000
        if !ceiling.isFinite || ceiling < floor { ceiling = max(floor, 1_000_000) }
        guard !rate.isNaN else { return floor }
        return min(ceiling, max(floor, rate))
    }
}
