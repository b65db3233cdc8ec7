import Foundation

/// How a batch reacts when items end badly (`skipped` or `dead`).
///
/// A struct with static members so that new policies can be added later.
public struct FailurePolicy: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    /// Keep going whatever fails (the default).
    public static let `continue` = FailurePolicy(rawValue: "continue")
    /// The first skipped or dead item fails the batch.
    public static let stopOnFirstError = FailurePolicy(rawValue: "stop_on_first_error")
    /// The batch fails once `failureRatio` of its processed items (at least
    /// `failureMinimumItems` of them) are skipped or dead.
    public static let stopAboveRatio = FailurePolicy(rawValue: "stop_above_ratio")

    public static let all: [FailurePolicy] = [.continue, .stopOnFirstError, .stopAboveRatio]

    public var description: String { rawValue }
}

/// A limit on how fast items start: `rate` per second (a token bucket with a
/// burst of one second's worth) and at most `maxConcurrent` at once.
public struct RateLimit: Sendable, Hashable, Codable, CustomStringConvertible {
    public var rate: Double?
    public var maxConcurrent: Int?

    public init(rate: Double? = nil, maxConcurrent: Int? = nil) {
        self.rate = rate
        self.maxConcurrent = maxConcurrent
    }

    /// Parses `50/s`, `600/m`, `1000/h` or a bare number of items per second.
    public static func parse(_ text: String) throws(OptionsError) -> RateLimit {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let first = parts.first, let count = Double(first), count > 0, count.isFinite else {
            throw OptionsError("rate must look like 50/s, 600/m or 1000/h, got '\(text)'")
        }
        let unit = parts.count == 2 ? parts[1] : "s"
        let seconds: Double
        switch unit {
        case "s", "sec", "second": seconds = 1
        case "m", "min", "minute": seconds = 60
        case "h", "hour": seconds = 3600
        default: throw OptionsError("rate must look like 50/s, 600/m or 1000/h, got '\(text)'")
        }
        return RateLimit(rate: count / seconds)
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case rate
        case maxConcurrent = "max_concurrent"
    }

    /// Decodes `{rate?, max_concurrent?}`; unknown keys and numbers that are
    /// no integer where one is needed are refused, naming the field.
    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "rate_limit field")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if decoder.readsClientRequest {
            try container.refuseNull(.rate, as: Double.self)
            try container.refuseNull(.maxConcurrent, as: Int.self)
        }
        rate = try container.decodeIfPresent(Double.self, forKey: .rate)
        maxConcurrent = try container.decodeInteger(.maxConcurrent, within: BatchOptions.Limits.maxConcurrent)
    }

    public var description: String {
        [rate.map { "\($0.shortText)/s" }, maxConcurrent.map { "max \($0) at once" }]
            .compactMap { $0 }.joined(separator: ", ")
    }
}

/// Exponential backoff with full jitter: attempt `n` waits a random time in
/// `0…min(cap, base·2ⁿ⁻¹)` seconds, or the strategy's retry-after if later,
/// but never longer than `cap` (nor than ``BatchOptions/Limits/backoffCap``).
public struct Backoff: Sendable, Hashable, Codable {
    /// Seconds before the first retry's upper bound.
    public var base: Double
    /// The longest wait, in seconds.
    public var cap: Double

    public init(base: Double = 1, cap: Double = 300) {
        self.base = base
        self.cap = cap
    }

    /// The cap as the rules apply it: within `0…Limits.backoffCap`, whatever
    /// a stored row or a library caller holds.
    public var effectiveCap: Double {
        cap.isNaN ? BatchOptions.Limits.backoffCap.upperBound : cap.bounded(to: BatchOptions.Limits.backoffCap)
    }

    /// The upper bound of the wait after failed attempt number `attempt` (1-based).
    public func ceiling(afterAttempt attempt: Int) -> Double {
        let exponent = Double(attempt <= 1 ? 0 : min(attempt - 1, 62))
        let base = self.base.isNaN ? 0 : max(self.base, 0)
        return min(effectiveCap, base * pow(2, exponent))
    }

    /// The wait after failed attempt `attempt`, drawn with `random` in `0..<1`.
    ///
    /// A `retryAfter` (a remote's `Retry-After`) longer than the jittered
    /// wait is honoured up to the cap: a remote cannot park an item for
    /// longer than the batch allows, and a wait is always finite.
    public func delay(afterAttempt attempt: Int, retryAfter: Double?, random: Double) -> Double {
        let jittered = ceiling(afterAttempt: attempt) * random.bounded(to: 0...1)
        guard let retryAfter, !retryAfter.isNaN, retryAfter > jittered else { return jittered }
        return min(retryAfter, effectiveCap)
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case base, cap
    }

    /// Decodes `{base?, cap?}`: a missing base is the default (or the cap
    /// when that is smaller), a missing cap the default (or the base when
    /// that is larger); unknown keys are refused.
    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "backoff field")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if decoder.readsClientRequest {
            for key in CodingKeys.allCases { try container.refuseNull(key, as: Double.self) }
        }
        let defaults = Backoff()
        let base = try container.decodeIfPresent(Double.self, forKey: .base)
        let cap = try container.decodeIfPresent(Double.self, forKey: .cap)
        self.base = base ?? min(defaults.base, cap ?? defaults.base)
        self.cap = cap ?? max(defaults.cap, base ?? defaults.cap)
    }
}

/// Invalid options or context, with a message fit for a 4xx answer.
public struct OptionsError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A batch's settings. Every field has a documented default; ``validate()``
/// rejects values that make no sense with a message naming the field.
public struct BatchOptions: Sendable, Hashable, Codable {
    /// Items per chunk, the unit of leasing and of transaction. Default nil:
    /// automatic, each claim takes as many items as the claiming node asks
    /// for (it grows while items are fast and shrinks when they are slow or
    /// failing). A number fixes every chunk at that size.
    public var chunkSize: Int?
    /// Items of this batch running at once on one node. Default 8.
    public var concurrency: Int = 8
    /// Attempts before an item is `dead`. Default 5.
    public var maxAttempts: Int = 5
    /// Retry waits. Default base 1 s, cap 300 s.
    public var backoff: Backoff = Backoff()
    /// Seconds one attempt may take before it counts as a retryable timeout. Default 60.
    public var itemTimeout: Double = 60
    /// Seconds from the start of processing before the batch fails. Default 4 h.
    public var batchTimeout: Double = 4 * 3600
    /// A limit on how fast this batch's items start. Default none.
    public var rateLimit: RateLimit?
    /// Seconds after the batch ends before its items are pruned. Default 24 h.
    public var ttl: Double = 24 * 3600
    /// Wait in `pre_processed` for an explicit confirm. Default false.
    public var requireConfirmation: Bool = false
    /// What failures do to the batch. Default `continue`.
    public var failurePolicy: FailurePolicy = .continue
    /// For `stop_above_ratio`: the share of processed items that may fail. Default 0.5.
    public var failureRatio: Double = 0.5
    /// For `stop_above_ratio`: processed items needed before the ratio is judged. Default 20.
    public var failureMinimumItems: Int = 20
    /// A client's key that makes a submit safe to repeat.
    public var idempotencyKey: String?
    /// `fixed` (the rate limit as given) or `adaptive` (AIMD on the
    /// answers, under any rate limit given). Default nil: adaptive for the
    /// `http` strategy, fixed for the others.
    public var pace: PaceMode?

    public init() {}

    /// The largest chunk accepted.
    public static let maximumChunkSize = Limits.chunkSize.upperBound
    /// The highest per-batch concurrency accepted.
    public static let maximumConcurrency = Limits.concurrency.upperBound

    /// The accepted range of every number in the options (and of a batch's
    /// priority), published in the API documentation and enforced by
    /// ``BatchOptions/validate()``: whatever a client sends, every wait the
    /// engine derives from them is finite and fits the clocks it is put on.
    public enum Limits {
        /// Items per chunk.
        public static let chunkSize = 1...100_000
        /// Items of one batch running at once on one node.
        public static let concurrency = 1...10_000
        /// Attempts per item.
        public static let maxAttempts = 1...1_000
        /// Seconds one attempt may take: more than 0, at most 24 h.
        public static let itemTimeout = 0.0...86_400.0
        /// Seconds of processing before the batch fails: more than 0, at most 365 days.
        public static let batchTimeout = 0.0...31_536_000.0
        /// Seconds a batch's items are kept after it ends: up to 365 days.
        public static let ttl = 0.0...31_536_000.0
        /// Seconds of the first retry's upper bound: up to 24 h.
        public static let backoffBase = 0.0...86_400.0
        /// Seconds of the longest retry wait, and of a remote's `Retry-After`: up to 24 h.
        public static let backoffCap = 0.0...86_400.0
        /// Items per second of a rate limit: more than 0 (at least one every
        /// 10,000 s), at most a million a second.
        public static let rate = 0.0001...1_000_000.0
        /// Items of one batch running at once under its rate limit.
        public static let maxConcurrent = 1...10_000
        /// For `stop_above_ratio`: processed items needed before the ratio is judged.
        public static let failureMinimumItems = 1...1_000_000_000
        /// A batch's priority (higher runs first).
        public static let priority = -1_000_000...1_000_000
    }

    /// Checks every field; the error names the first bad one and its limits.
    public func validate() throws(OptionsError) {
        func require(_ condition: Bool, _ message: @autoclosure () -> String) throws(OptionsError) {
            if !condition { throw OptionsError(message()) }
        }
        func require(_ value: Int, in range: ClosedRange<Int>, _ name: String) throws(OptionsError) {
            try require(
                range.contains(value),
                "\(name) must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
        }
        func require(
            _ value: Double, in range: ClosedRange<Double>, _ name: String, _ unit: String, aboveLower: Bool = false
        ) throws(OptionsError) {
            let lower = range.lowerBound.shortText
            let upper = range.upperBound.shortText
            try require(
                range.contains(value) && (!aboveLower || value > range.lowerBound),
                aboveLower
                    ? "\(name) must be more than \(lower) and at most \(upper)\(unit), got \(value.shortText)"
                    : "\(name) must be between \(lower) and \(upper)\(unit), got \(value.shortText)")
        }
        if let chunkSize { try require(chunkSize, in: Limits.chunkSize, "chunk_size") }
        try require(concurrency, in: Limits.concurrency, "concurrency")
        try require(maxAttempts, in: Limits.maxAttempts, "max_attempts")
        try require(backoff.base, in: Limits.backoffBase, "backoff.base", " seconds")
        try require(backoff.cap, in: Limits.backoffCap, "backoff.cap", " seconds")
        try require(backoff.cap >= backoff.base, "backoff.cap must be at least backoff.base, got \(backoff.cap)")
        try require(itemTimeout, in: Limits.itemTimeout, "item_timeout", " seconds", aboveLower: true)
        try require(batchTimeout, in: Limits.batchTimeout, "batch_timeout", " seconds", aboveLower: true)
        try require(ttl, in: Limits.ttl, "ttl", " seconds")
        if let rateLimit {
            if let rate = rateLimit.rate {
                try require(rate, in: Limits.rate, "rate_limit.rate", " per second")
            }
            if let maxConcurrent = rateLimit.maxConcurrent {
                try require(maxConcurrent, in: Limits.maxConcurrent, "rate_limit.max_concurrent")
            }
        }
        try require(
            FailurePolicy.all.contains(failurePolicy),
            "failure_policy must be one of \(FailurePolicy.all.map(\.rawValue).joined(separator: ", ")), got '\(failurePolicy)'"
        )
        try require(
            failureRatio > 0 && failureRatio <= 1, "failure_ratio must be in (0, 1], got \(failureRatio)")
        try require(failureMinimumItems, in: Limits.failureMinimumItems, "failure_min_items")
        if let pace {
            try require(
                PaceMode.all.contains(pace),
                "pace must be one of \(PaceMode.all.map(\.rawValue).joined(separator: ", ")), got '\(pace)'")
        }
        if let idempotencyKey {
            try require(
                !idempotencyKey.isEmpty && idempotencyKey.utf8.count <= 255,
                "idempotency_key must be 1 to 255 bytes")
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case chunkSize = "chunk_size"
        case concurrency
        case maxAttempts = "max_attempts"
        case backoff
        case itemTimeout = "item_timeout"
        case batchTimeout = "batch_timeout"
        case rateLimit = "rate_limit"
        case ttl
        case requireConfirmation = "require_confirmation"
        case failurePolicy = "failure_policy"
        case failureRatio = "failure_ratio"
        case failureMinimumItems = "failure_min_items"
        case idempotencyKey = "idempotency_key"
        case pace

        /// What the field holds, for an error that names it.
        var valueType: Any.Type {
            switch self {
            case .chunkSize, .concurrency, .maxAttempts, .failureMinimumItems: Int.self
            case .itemTimeout, .batchTimeout, .ttl, .failureRatio: Double.self
            case .backoff, .rateLimit: [String: Double].self
            case .requireConfirmation: Bool.self
            case .failurePolicy, .idempotencyKey, .pace: String.self
            }
        }
    }

    /// Decodes with defaults for missing fields and an error for unknown ones.
    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "option")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if decoder.readsClientRequest {
            // A request's null is refused where the API does not declare the
            // field nullable (rate_limit and idempotency_key are); stored rows
            // are read as they always were.
            for key in CodingKeys.allCases where key != .rateLimit && key != .idempotencyKey {
                try container.refuseNull(key, as: key.valueType)
            }
        }
        let defaults = BatchOptions()
        chunkSize = try container.decodeInteger(.chunkSize, within: Limits.chunkSize)
        concurrency = try container.decodeInteger(.concurrency, within: Limits.concurrency) ?? defaults.concurrency
        maxAttempts = try container.decodeInteger(.maxAttempts, within: Limits.maxAttempts) ?? defaults.maxAttempts
        backoff = try container.decodeIfPresent(Backoff.self, forKey: .backoff) ?? defaults.backoff
        itemTimeout = try container.decodeIfPresent(Double.self, forKey: .itemTimeout) ?? defaults.itemTimeout
        batchTimeout = try container.decodeIfPresent(Double.self, forKey: .batchTimeout) ?? defaults.batchTimeout
        rateLimit = try container.decodeIfPresent(RateLimit.self, forKey: .rateLimit)
        ttl = try container.decodeIfPresent(Double.self, forKey: .ttl) ?? defaults.ttl
        requireConfirmation =
            try container.decodeIfPresent(Bool.self, forKey: .requireConfirmation) ?? defaults.requireConfirmation
        failurePolicy = try container.decodeIfPresent(FailurePolicy.self, forKey: .failurePolicy) ?? .continue
        failureRatio = try container.decodeIfPresent(Double.self, forKey: .failureRatio) ?? defaults.failureRatio
        failureMinimumItems =
            try container.decodeInteger(.failureMinimumItems, within: Limits.failureMinimumItems)
            ?? defaults.failureMinimumItems
        idempotencyKey = try container.decodeIfPresent(String.self, forKey: .idempotencyKey)
        pace = try container.decodeIfPresent(PaceMode.self, forKey: .pace)
    }
}

/// Refuses objects with keys a type does not know, so a typo in a field
/// name is an error rather than a silently ignored setting.
public enum UnknownKeys {
    /// Throws `DecodingError.dataCorrupted` naming the first unknown key.
    public static func reject(in decoder: any Decoder, known: [String], what: String) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        let known = Set(known)
        if let unknown = container.allKeys.first(where: { !known.contains($0.stringValue) }) {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath + [unknown],
                    debugDescription: "unknown \(what) '\(unknown.stringValue)'"))
        }
    }
}

/// A coding key for any string, to find unknown keys.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}

extension KeyedDecodingContainer {
    /// Decodes an optional integer. A number that is no integer of Int's
    /// range (`1e300`, `2.5`, `9223372036854775808`) is refused with an
    /// error naming the field and the accepted `range`, rather than the
    /// decoder's bare "does not fit".
    public func decodeInteger(_ key: Key, within range: ClosedRange<Int>) throws -> Int? {
        do {
            return try decodeIfPresent(Int.self, forKey: key)
        } catch {
            guard let number = try? decodeIfPresent(Double.self, forKey: key) else { throw error }
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: codingPath + [key],
                    debugDescription:
                        "must be an integer between \(range.lowerBound) and \(range.upperBound), got \(number.shortText)"
                ))
        }
    }
}
