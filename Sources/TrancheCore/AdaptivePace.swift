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
        /// ceiling if any, else no rate until the first refusal, which sets
        /// it to the rate of calls answered in the second before, cut.
        public var initialRate: Double?
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
        /// Seconds between two steps up (and after a cut before one). Default 0.25.
        public var stepInterval: Double = 0.25
        /// Seconds after a cut before the next, at least (and at least two
        /// baseline latencies: answers to calls made before a cut say nothing new). Default 0.1.
        public var cutInterval: Double = 0.1
        /// The longest pause a `Retry-After` imposes, in seconds. Default 60.
        public var longestPause: Double = 60

        public init() {}
    }

    /// What one answer said about the far side.
    public enum Signal: Sendable, Hashable {
        /// A call that succeeded (or failed for its own reasons) after `latency` seconds.
        case answered(latency: Double)
        /// The far side refused for load (`429`, `503`, a timeout, a refused connection),
        /// asking for a pause of `retryAfter` seconds or not.
        case refused(retryAfter: Double?)
    }

    /// Why the rate last changed.
    public struct Reason: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        /// Not changed yet.
        public static let start = Reason(rawValue: "start")
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
    /// Items a second now, or nil before the first refusal when no rate was given.
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
    /// When calls were answered in the last second (at most a few thousand kept).
    private var answeredAt: [Double] = []

    public init(_ configuration: Configuration = Configuration()) {
        self.configuration = configuration
        self.rate = (configuration.initialRate ?? configuration.ceiling).map { Self.held($0, configuration) }
    }

    /// Takes one answer at `now`; true when the rate or the pause changed.
    public mutating func record(_ signal: Signal, at now: Double) -> Bool {
        switch signal {
        case .refused(let retryAfter):
            throttled += 1
            var changed = false
            if let retryAfter, retryAfter.isFinite, retryAfter > 0 {
                let until = now + min(retryAfter, configuration.longestPause)
                if until > (pausedUntil ?? -.infinity) {
                    pausedUntil = until
                    changed = true
                }
            }
            guard mayCut(now) else { return changed }
            cut(by: configuration.decrease, reason: retryAfter == nil ? .refused : .retryAfter, at: now)
            return true
        case .answered(let latency):
            guard latency.isFinite, latency >= 0 else { return false }
            answeredAt.append(now)
            if answeredAt.count > 4096 || (answeredAt.first.map { now - $0 > 1 } ?? false) {
                answeredAt.removeAll { now - $0 > 1 || $0 > now }
                if answeredAt.count > 4096 { answeredAt.removeFirst(answeredAt.count - 4096) }
            }
            let baseline = learn(latency)
            if latency > baseline * configuration.latencyTolerance, latency > baseline + 0.05 {
                // A call that started before the last cut answers for the rate before it.
                guard lastCut.map({ now - latency >= $0 }) ?? true, mayCut(now) else { return false }
                cut(by: configuration.latencyDecrease, reason: .latency, at: now)
                return true
            }
            guard let rate, mayGrow(now), rate < Self.held(.infinity, configuration) else { return false }
            let nearRefusal = refusedRate.map { rate >= 0.9 * $0 } ?? false
            let growth = configuration.growth.isFinite ? max(0, configuration.growth) : 0
            let step =
                nearRefusal
                ? max(configuration.increase * 0.5, rate * growth * 0.1) : max(configuration.increase, rate * growth)
            self.rate = Self.held(rate + step, configuration)
            reason = .succeeding
            lastChange = now
            return true
        }
    }

    /// Seconds to wait at `now` before the next call (a `Retry-After`), 0 for none.
    public func pause(at now: Double) -> Double {
        guard let pausedUntil, pausedUntil > now else { return 0 }
        return pausedUntil - now
    }

    /// Starts from a rate learned elsewhere (another node, a restart), held within the limits.
    public mutating func resume(from rate: Double) {
        guard rate.isFinite, rate > 0 else { return }
        self.rate = Self.held(rate, configuration)
    }

    /// Calls answered in the second before `now`, as a rate.
    public func answeredRate(at now: Double) -> Double {
        Double(answeredAt.reduce(0) { $0 + (now - $1 <= 1 && $1 <= now ? 1 : 0) })
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
        copy.answeredAt = answeredAt
        return copy
    }

    private func mayGrow(_ now: Double) -> Bool {
        guard let lastChange else { return true }
        let interval = max(configuration.stepInterval, 2 * (baseline ?? 0))
        return now - lastChange >= interval || now < lastChange
    }

    private func mayCut(_ now: Double) -> Bool {
        guard let lastCut else { return true }
        let interval = max(configuration.cutInterval, 2 * (baseline ?? 0))
        return now - lastCut >= interval || now < lastCut
    }

    private mutating func cut(by factor: Double, reason: Reason, at now: Double) {
        // The first cut without a rate starts from what the far side answered in the last second.
        let from = rate ?? max(1, answeredRate(at: now))
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
