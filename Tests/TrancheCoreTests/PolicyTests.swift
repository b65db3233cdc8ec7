import Foundation
import Testing
import TrancheCore

@Suite("Options, retries and outcomes")
struct PolicyTests {
    @Test("defaults are valid and documented values")
    func defaults() throws {
        let options = BatchOptions()
        try options.validate()
        #expect(options.chunkSize == nil, "chunk sizes are automatic unless given")
        #expect(options.batchTimeout == 4 * 3600)
        #expect(options.ttl == 24 * 3600)
        #expect(options.failurePolicy == .continue)
    }

    @Test("invalid options are clear errors naming the field")
    func invalid() {
        var options = BatchOptions()
        options.chunkSize = 0
        #expect(throws: OptionsError("chunk_size must be between 1 and 100000, got 0")) { try options.validate() }
        options = BatchOptions()
        options.concurrency = -1
        #expect(throws: OptionsError("concurrency must be between 1 and 10000, got -1")) { try options.validate() }
        options = BatchOptions()
        options.failurePolicy = FailurePolicy(rawValue: "sometimes")
        #expect(throws: OptionsError.self) { try options.validate() }
        options = BatchOptions()
        options.rateLimit = RateLimit(rate: 0)
        #expect(throws: OptionsError.self) { try options.validate() }
    }

    @Test("options decode from snake_case with defaults, and unknown keys are refused")
    func decoding() throws {
        let options = try JSONText(
            unchecked: #"{"chunk_size": 50, "rate_limit": {"rate": 10}, "failure_policy": "stop_on_first_error"}"#
        )
        .decode(BatchOptions.self)
        #expect(options.chunkSize == 50)
        #expect(options.concurrency == 8)
        #expect(options.rateLimit?.rate == 10)
        #expect(options.failurePolicy == .stopOnFirstError)
        #expect(throws: DecodingError.self) {
            try JSONText(unchecked: #"{"chunksize": 50}"#).decode(BatchOptions.self)
        }
        let roundTrip = try JSONText(encoding: options).decode(BatchOptions.self)
        #expect(roundTrip == options)
    }

    @Test("rates parse per second, minute and hour")
    func rates() throws {
        #expect(try RateLimit.parse("50/s").rate == 50)
        #expect(try RateLimit.parse("600/m").rate == 10)
        #expect(try RateLimit.parse("3600/h").rate == 1)
        #expect(try RateLimit.parse("7").rate == 7)
        #expect(throws: OptionsError.self) { try RateLimit.parse("fast") }
        #expect(throws: OptionsError.self) { try RateLimit.parse("5/week") }
    }

    @Test("backoff grows exponentially, is capped, jittered and honours retry-after")
    func backoff() {
        let backoff = Backoff(base: 1, cap: 30)
        #expect(backoff.ceiling(afterAttempt: 1) == 1)
        #expect(backoff.ceiling(afterAttempt: 2) == 2)
        #expect(backoff.ceiling(afterAttempt: 4) == 8)
        #expect(backoff.ceiling(afterAttempt: 10) == 30)
        #expect(backoff.ceiling(afterAttempt: 1000) == 30)
        #expect(backoff.delay(afterAttempt: 4, retryAfter: nil, random: 0.5) == 4)
        #expect(backoff.delay(afterAttempt: 4, retryAfter: nil, random: 0) == 0)
        #expect(backoff.delay(afterAttempt: 1, retryAfter: 12, random: 0.5) == 12)
        #expect(backoff.delay(afterAttempt: 5, retryAfter: 1, random: 1) == 16)
    }

    @Test("dispositions follow the error's category and the attempts left")
    func dispositions() {
        var options = BatchOptions()
        options.maxAttempts = 3
        options.backoff = Backoff(base: 2, cap: 100)
        #expect(ItemDisposition.after(attempt: 1, error: nil, options: options, random: 0.5) == .succeeded)
        #expect(
            ItemDisposition.after(attempt: 2, error: .retryable("t", "t"), options: options, random: 0.5)
                == .retry(delay: 2))
        #expect(ItemDisposition.after(attempt: 3, error: .retryable("t", "t"), options: options, random: 0.5) == .dead)
        #expect(
            ItemDisposition.after(attempt: 1, error: .permanent("p", "p"), options: options, random: 0.5) == .skipped)
        #expect(ItemDisposition.after(attempt: 1, error: .fatal("f", "f"), options: options, random: 0.5) == .fatal)
        #expect(ItemDisposition.fatal.status == .dead)
    }

    @Test("outcome rule: completed with one success or when empty, failed otherwise")
    func outcome() {
        var counts = BatchCounts()
        #expect(BatchOutcome.whenAllTerminal(counts) == .completed)
        counts.total = 3
        counts.skipped = 2
        counts.dead = 1
        #expect(BatchOutcome.whenAllTerminal(counts) == .failed)
        counts.dead = 0
        counts.succeeded = 1
        #expect(BatchOutcome.whenAllTerminal(counts) == .completed)
    }

    @Test("failure policies trip when they should and only then")
    func policies() {
        var options = BatchOptions()
        var counts = BatchCounts()
        counts.total = 100
        counts.succeeded = 10
        counts.skipped = 15
        #expect(BatchOutcome.failurePolicyTrips(counts, options: options) == nil)
        options.failurePolicy = .stopOnFirstError
        #expect(BatchOutcome.failurePolicyTrips(counts, options: options) != nil)
        options.failurePolicy = .stopAboveRatio
        options.failureRatio = 0.5
        options.failureMinimumItems = 20
        #expect(BatchOutcome.failurePolicyTrips(counts, options: options) != nil)  // 15 of 25 = 60%
        counts.succeeded = 20
        #expect(BatchOutcome.failurePolicyTrips(counts, options: options) == nil)  // 15 of 35
        counts = BatchCounts()
        counts.skipped = 10
        #expect(BatchOutcome.failurePolicyTrips(counts, options: options) == nil)  // too few processed
    }

    @Test("counters derive pending and progress")
    func counts() {
        var counts = BatchCounts()
        counts.total = 10
        counts.succeeded = 3
        counts.failed = 1
        counts.running = 2
        counts.canceled = 1
        #expect(counts.pending == 3)
        #expect(counts.processed == 3)
        #expect(counts.progress == 40)
        counts.move(from: .failed, to: .succeeded)
        #expect(counts.failed == 0 && counts.succeeded == 4)
    }

    @Test("token bucket spaces starts at its rate after the burst")
    func tokenBucket() {
        var bucket = TokenBucket(rate: 10, burst: 2)
        #expect(bucket.reserve(now: 0) == 0)
        #expect(abs(bucket.reserve(now: 0) - 0.1) < 1e-9)
        #expect(abs(bucket.reserve(now: 0) - 0.2) < 1e-9)
        #expect(bucket.reserve(now: 10) == 0)
    }

    @Test("unclassified errors become retryable and reveal nothing")
    func sanitizing() {
        struct Secret: Error { var password = "hunter2" }
        let error = ItemError.sanitizing(Secret())
        #expect(error.category == .retryable)
        #expect(!error.message.contains("hunter2"))
        #expect(
            ItemError(code: "x", message: String(repeating: "a", count: 5000), category: .permanent).message.count
                == 2000)
    }
}
