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
        guard let count = Double(parts[0]), count > 0, count.isFinite else {
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

    enum CodingKeys: String, CodingKey {
        case rate
        case maxConcurrent = "max_concurrent"
    }

    public var description: String {
        [rate.map { "\($0.formatted2)/s" }, maxConcurrent.map { "max \($0) at once" }]
            .compactMap { $0 }.joined(separator: ", ")
    }
}

/// Exponential backoff with full jitter: attempt `n` waits a random time in
/// `0…min(cap, base·2ⁿ⁻¹)` seconds, or the strategy's retry-after if later.
public struct Backoff: Sendable, Hashable, Codable {
    /// Seconds before the first retry's upper bound.
    public var base: Double
    /// The longest wait, in seconds.
    public var cap: Double

    public init(base: Double = 1, cap: Double = 300) {
        self.base = base
        self.cap = cap
    }

    /// The upper bound of the wait after failed attempt number `attempt` (1-based).
    public func ceiling(afterAttempt attempt: Int) -> Double {
        let exponent = Double(min(max(attempt - 1, 0), 62))
        return min(cap, base * pow(2, exponent))
    }

    /// The wait after failed attempt `attempt`, drawn with `random` in `0..<1`.
    public func delay(afterAttempt attempt: Int, retryAfter: Double?, random: Double) -> Double {
        let jittered = ceiling(afterAttempt: attempt) * min(max(random, 0), 1)
        guard let retryAfter, retryAfter > jittered else { return jittered }
        return min(retryAfter, max(cap, retryAfter))
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
    /// Items per chunk, the unit of leasing and of transaction. Default 100.
    public var chunkSize: Int = 100
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

    public init() {}

    /// The largest chunk accepted.
    public static let maximumChunkSize = 100_000
    /// The highest per-batch concurrency accepted.
    public static let maximumConcurrency = 10_000

    /// Checks every field; the error names the first bad one.
    public func validate() throws(OptionsError) {
        func require(_ condition: Bool, _ message: @autoclosure () -> String) throws(OptionsError) {
            if !condition { throw OptionsError(message()) }
        }
        try require(
            (1...Self.maximumChunkSize).contains(chunkSize),
            "chunk_size must be between 1 and \(Self.maximumChunkSize), got \(chunkSize)")
        try require(
            (1...Self.maximumConcurrency).contains(concurrency),
            "concurrency must be between 1 and \(Self.maximumConcurrency), got \(concurrency)")
        try require((1...1000).contains(maxAttempts), "max_attempts must be between 1 and 1000, got \(maxAttempts)")
        try require(
            backoff.base.isFinite && backoff.base >= 0, "backoff.base must be 0 or more seconds, got \(backoff.base)")
        try require(
            backoff.cap.isFinite && backoff.cap >= backoff.base,
            "backoff.cap must be at least backoff.base, got \(backoff.cap)")
        try require(
            itemTimeout.isFinite && itemTimeout > 0, "item_timeout must be more than 0 seconds, got \(itemTimeout)")
        try require(
            batchTimeout.isFinite && batchTimeout > 0, "batch_timeout must be more than 0 seconds, got \(batchTimeout)")
        try require(ttl.isFinite && ttl >= 0, "ttl must be 0 or more seconds, got \(ttl)")
        if let rateLimit {
            if let rate = rateLimit.rate {
                try require(rate.isFinite && rate > 0, "rate_limit.rate must be more than 0 per second, got \(rate)")
            }
            if let maxConcurrent = rateLimit.maxConcurrent {
                try require(maxConcurrent >= 1, "rate_limit.max_concurrent must be at least 1, got \(maxConcurrent)")
            }
        }
        try require(
            FailurePolicy.all.contains(failurePolicy),
            "failure_policy must be one of \(FailurePolicy.all.map(\.rawValue).joined(separator: ", ")), got '\(failurePolicy)'"
        )
        try require(
            failureRatio > 0 && failureRatio <= 1, "failure_ratio must be in (0, 1], got \(failureRatio)")
        try require(failureMinimumItems >= 1, "failure_min_items must be at least 1, got \(failureMinimumItems)")
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
    }

    /// Decodes with defaults for missing fields and an error for unknown ones.
    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "option")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = BatchOptions()
        chunkSize = try container.decodeIfPresent(Int.self, forKey: .chunkSize) ?? defaults.chunkSize
        concurrency = try container.decodeIfPresent(Int.self, forKey: .concurrency) ?? defaults.concurrency
        maxAttempts = try container.decodeIfPresent(Int.self, forKey: .maxAttempts) ?? defaults.maxAttempts
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
            try container.decodeIfPresent(Int.self, forKey: .failureMinimumItems) ?? defaults.failureMinimumItems
        idempotencyKey = try container.decodeIfPresent(String.self, forKey: .idempotencyKey)
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
