import Foundation
import Testing
import TrancheCore

/// Every number from outside is bounded: options out of range are refused
/// naming the field and the limit, and the retry rules never yield an
/// unbounded wait, whatever a remote or a stored row says.
@Suite("Bounds on outside numbers")
struct BoundsTests {
    @Test("a Retry-After of 1e300 (or infinity) waits at most the backoff cap, and a finite time")
    func retryAfterIsCapped() {
        let backoff = Backoff(base: 1, cap: 30)
        for retryAfter in [1e300, .infinity, .greatestFiniteMagnitude, 31] {
            let delay = backoff.delay(afterAttempt: 1, retryAfter: retryAfter, random: 0.5)
            #expect(delay.isFinite)
            #expect(delay == 30, "retry-after \(retryAfter)")
        }
        // A meaningless Retry-After is ignored: the usual jittered wait.
        #expect(backoff.delay(afterAttempt: 4, retryAfter: .nan, random: 0.5) == 4)
        #expect(backoff.delay(afterAttempt: 4, retryAfter: -1e300, random: 0.5) == 4)
        #expect(backoff.delay(afterAttempt: 4, retryAfter: -.infinity, random: 0.5) == 4)
        // A jitter draw out of range or NaN cannot push the wait past the ceiling.
        #expect(backoff.delay(afterAttempt: 4, retryAfter: nil, random: 1e300) == 8)
        #expect(backoff.delay(afterAttempt: 4, retryAfter: nil, random: .nan) == 0)
    }

    @Test("ItemDisposition: a retryable error with a Retry-After of 1e300 retries within the cap")
    func dispositionIsCapped() {
        var options = BatchOptions()
        options.maxAttempts = 5
        options.backoff = Backoff(base: 2, cap: 120)
        let error = ItemError.retryable("http_503", "HTTP 503", retryAfter: 1e300)
        let disposition = ItemDisposition.after(attempt: 1, error: error, options: options, random: 0.5)
        guard case .retry(let delay) = disposition else {
            Issue.record("expected a retry, got \(disposition)")
            return
        }
        #expect(delay.isFinite)
        #expect(delay <= options.backoff.cap)
        #expect(delay == 120)
    }

    @Test("a stored backoff beyond the limits (accepted by older rules) still waits at most 24 h")
    func storedBackoffIsBounded() {
        var options = BatchOptions()
        options.backoff = Backoff(base: 1e300, cap: 1e300)
        for attempt in [Int.min, -1, 0, 1, 2, 63, 64, 1_000, Int.max] {
            let ceiling = options.backoff.ceiling(afterAttempt: attempt)
            #expect(ceiling.isFinite)
            #expect(ceiling <= BatchOptions.Limits.backoffCap.upperBound)
        }
        let error = ItemError.retryable("t", "t", retryAfter: .infinity)
        let disposition = ItemDisposition.after(attempt: 1, error: error, options: options, random: 0.99)
        #expect(disposition == .retry(delay: BatchOptions.Limits.backoffCap.upperBound))
    }

    /// An option set to a value, and the words the refusal must contain.
    struct Case: Sendable, CustomStringConvertible {
        var field: String
        var limit: String
        var set: @Sendable (inout BatchOptions) -> Void
        var description: String { field }
    }

    static let doubles: [Double] = [1e300, -1, .infinity, -.infinity, .nan, 9_223_372_036_854_775_808]
    static let integers: [Int] = [-1, 0, Int.max, Int.min, 1 << 62]

    static let cases: [Case] =
        doubles.flatMap { value -> [Case] in
            [
                Case(field: "item_timeout", limit: "at most 86400 seconds") { $0.itemTimeout = value },
                Case(field: "batch_timeout", limit: "at most 31536000 seconds") { $0.batchTimeout = value },
                Case(field: "ttl", limit: "between 0 and 31536000 seconds") { $0.ttl = value },
                Case(field: "backoff.base", limit: "between 0 and 86400 seconds") { $0.backoff.base = value },
                Case(field: "backoff.cap", limit: "between 0 and 86400 seconds") {
                    $0.backoff = Backoff(base: 0, cap: value)
                },
                Case(field: "rate_limit.rate", limit: "between 0.0001 and 1000000 per second") {
                    $0.rateLimit = RateLimit(rate: value)
                },
                Case(field: "failure_ratio", limit: "(0, 1]") { $0.failureRatio = value },
            ]
        }
        + integers.flatMap { value -> [Case] in
            [
                Case(field: "chunk_size", limit: "between 1 and 100000") { $0.chunkSize = value },
                Case(field: "concurrency", limit: "between 1 and 10000") { $0.concurrency = value },
                Case(field: "max_attempts", limit: "between 1 and 1000") { $0.maxAttempts = value },
                Case(field: "rate_limit.max_concurrent", limit: "between 1 and 10000") {
                    $0.rateLimit = RateLimit(maxConcurrent: value)
                },
                Case(field: "failure_min_items", limit: "between 1 and 1000000000") {
                    $0.failureMinimumItems = value
                },
            ]
        }

    @Test("every option out of range is refused, naming the field and its limit", arguments: cases)
    func outOfRange(_ option: Case) {
        var options = BatchOptions()
        option.set(&options)
        do {
            try options.validate()
            Issue.record("\(option.field) was accepted")
        } catch {
            #expect(error.message.hasPrefix(option.field + " must be"), "\(error.message)")
            #expect(error.message.contains(option.limit), "\(error.message)")
        }
    }

    @Test("the limits themselves are accepted")
    func limitsAccepted() throws {
        var options = BatchOptions()
        options.chunkSize = BatchOptions.Limits.chunkSize.upperBound
        options.concurrency = BatchOptions.Limits.concurrency.upperBound
        options.maxAttempts = BatchOptions.Limits.maxAttempts.upperBound
        options.itemTimeout = BatchOptions.Limits.itemTimeout.upperBound
        options.batchTimeout = BatchOptions.Limits.batchTimeout.upperBound
        options.ttl = BatchOptions.Limits.ttl.upperBound
        options.backoff = Backoff(base: 86_400, cap: 86_400)
        options.rateLimit = RateLimit(rate: BatchOptions.Limits.rate.lowerBound, maxConcurrent: 10_000)
        try options.validate()
        options.itemTimeout = 0.001
        options.batchTimeout = 0.001
        options.ttl = 0
        options.backoff = Backoff(base: 0, cap: 0)
        options.rateLimit = RateLimit(rate: BatchOptions.Limits.rate.upperBound)
        try options.validate()
    }

    @Test(
        "an integer option that is no Int (1e300, 2^63, 2.5) is a decoding error naming the field and the limit",
        arguments: ["1e300", "9223372036854775808", "-9223372036854775809", "2.5"])
    func integersThatDoNotFit(_ number: String) {
        for (field, limit) in [
            ("chunk_size", "between 1 and 100000"), ("concurrency", "between 1 and 10000"),
            ("max_attempts", "between 1 and 1000"), ("failure_min_items", "between 1 and 1000000000"),
        ] {
            do {
                _ = try JSONText(unchecked: #"{"\#(field)": \#(number)}"#).decode(BatchOptions.self)
                Issue.record("\(field): \(number) was decoded")
            } catch {
                let message = describeDecodingError(error)
                #expect(message.contains("'\(field)'"), "\(message)")
                #expect(message.contains(limit), "\(message)")
            }
        }
        do {
            _ = try JSONText(unchecked: #"{"rate_limit": {"max_concurrent": \#(number)}}"#).decode(BatchOptions.self)
            Issue.record("max_concurrent: \(number) was decoded")
        } catch {
            #expect(describeDecodingError(error).contains("'rate_limit.max_concurrent'"))
        }
    }

    @Test("backoff and rate_limit take defaults for missing fields and refuse unknown ones")
    func nestedObjects() throws {
        #expect(try JSONText(unchecked: #"{"backoff": {}}"#).decode(BatchOptions.self).backoff == Backoff())
        #expect(
            try JSONText(unchecked: #"{"backoff": {"cap": 0.5}}"#).decode(BatchOptions.self).backoff
                == Backoff(base: 0.5, cap: 0.5))
        #expect(
            try JSONText(unchecked: #"{"backoff": {"base": 900}}"#).decode(BatchOptions.self).backoff
                == Backoff(base: 900, cap: 900))
        #expect(throws: DecodingError.self) {
            try JSONText(unchecked: #"{"backoff": {"max": 5}}"#).decode(BatchOptions.self)
        }
        #expect(throws: DecodingError.self) {
            try JSONText(unchecked: #"{"rate_limit": {"rate": 5, "burst": 9}}"#).decode(BatchOptions.self)
        }
        let options = try JSONText(unchecked: #"{"backoff": {}}"#).decode(BatchOptions.self)
        try options.validate()
    }

    @Test("conversions of outside numbers saturate instead of trapping")
    func conversions() {
        #expect(Int(saturating: 1e300) == .max)
        #expect(Int(saturating: -1e300) == .min)
        #expect(Int(saturating: .infinity) == .max)
        #expect(Int(saturating: .nan) == 0)
        #expect(Int(saturating: 2.9) == 2)
        #expect(Int(saturating: -2.9) == -2)
        #expect(Int(saturating: 9_223_372_036_854_775_808) == .max)
        #expect(Int(saturating: 9.1e18) == 9_100_000_000_000_000_000)
        #expect(Duration.seconds(bounded: 1e300) == .seconds(Int64(Duration.longestBoundedWait)))
        #expect(Duration.seconds(bounded: .infinity) == .seconds(Int64(Duration.longestBoundedWait)))
        #expect(Duration.seconds(bounded: .nan) == .zero)
        #expect(Duration.seconds(bounded: -5) == .zero)
        #expect(Duration.seconds(bounded: 1.5) == .milliseconds(1_500))
        #expect((1e300).bounded(to: 0...10) == 10)
        #expect(Double.nan.bounded(to: 2...10) == 2)
        #expect(Double.nan.bounded(to: 2...10, nan: 5) == 5)
        #expect((-1.0).bounded(to: 2...10, nan: 5) == 2)
    }

    @Test("integer sums from stored rows saturate, and clamping holds any integer in its range")
    func integerArithmetic() {
        #expect(Int64.max.adding(saturating: 1) == .max)
        #expect(Int64.min.adding(saturating: -1) == .min)
        #expect(Int.max.adding(saturating: Int.max) == .max)
        #expect(Int64(5).adding(saturating: -7) == -2)
        #expect(Int.min.clamped(to: 1...100) == 1)
        #expect(Int.max.clamped(to: 1...100) == 100)
        #expect(42.clamped(to: 1...100) == 42)
    }

    @Test("counters read from a damaged row (Int64.max, Int64.min) add up without trapping")
    func hostileCounters() {
        var counts = BatchCounts()
        counts.total = -5
        counts.succeeded = .max
        counts.skipped = .max
        counts.dead = .max
        counts.canceled = .max
        counts.running = .min
        counts.failed = .min
        #expect(counts.processed == .max)
        #expect(counts.terminal == .max)
        #expect(counts.pending == 0)
        #expect(counts.progress == 0, "a total below zero shows no progress")
        counts.add(counts)
        #expect(counts.succeeded == .max)
        #expect(counts.failed == .min)
        counts.move(from: .failed, to: .succeeded)
        #expect(counts.failed == .min)
        #expect(counts.succeeded == .max)
        var options = BatchOptions()
        options.failurePolicy = .stopAboveRatio
        #expect(BatchOutcome.failurePolicyTrips(counts, options: options) != nil)
    }

    @Test("a rate with nothing before its slash (or nothing at all) is refused, not a crash")
    func emptyRate() {
        for text in ["", "/", "/s", "//"] {
            #expect(throws: OptionsError.self, "'\(text)'") { try RateLimit.parse(text) }
        }
    }
}
