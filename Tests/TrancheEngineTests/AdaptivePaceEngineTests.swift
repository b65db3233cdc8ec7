import Foundation
import Synchronization
import Testing
import TrancheEngine
import TrancheTestSupport

/// A strategy standing for an API that allows `rate` calls a second (a
/// token bucket with a small burst) and answers `429` above it; the first
/// call can be told to carry a `Retry-After`.
struct LimitedAPIStrategy: BatchStrategy {
    struct Item: Codable, Sendable {
        var n: Int
    }

    final class Server: Sendable {
        private struct State {
            var bucket: TokenBucket
            var refused = 0
            var answered = 0
            var retryAfterSent = false
        }

        private let state: Mutex<State>
        let retryAfter: Double?

        init(rate: Double, burst: Double, retryAfter: Double? = nil) {
            state = Mutex(State(bucket: TokenBucket(rate: rate, burst: burst)))
            self.retryAfter = retryAfter
        }

        /// Answers one call at `now`: nil when allowed, the Retry-After (or 0) when refused.
        func call(now: Double) -> Double?? {
            state.withLock { state in
                if let retryAfter, !state.retryAfterSent {
                    state.retryAfterSent = true
                    state.refused += 1
                    return .some(retryAfter)
                }
                var trial = state.bucket
                if trial.reserve(now: now) > 0 {
                    state.refused += 1
                    return .some(nil)
                }
                state.bucket = trial
                state.answered += 1
                return .none
            }
        }

        var refused: Int { state.withLock { $0.refused } }
    }

    let probe: Probe
    let server: Server
    var type: String { "limited" }

    func process(_ item: Item, context: JSONValue, input: ItemInput) async throws -> Int {
        _ = probe.enter(input.seq)
        defer { probe.leave() }
        if case .some(let retryAfter) = server.call(now: probe.origin.duration(to: .now).seconds) {
            throw ItemError.retryable("http_429", "HTTP 429", retryAfter: retryAfter)
        }
        return item.n
    }
}

@Suite("Adaptive pace (engine)")
struct AdaptivePaceEngineTests {
    let probe = Probe()

    func submission(_ options: BatchOptions) throws -> Submission {
        try Submission(type: "limited", context: JSONValue.object([:]), options: options)
    }

    @Test(
        "an adaptive batch slows down on 429s and stores its pace and refusals for every node",
        arguments: EngineStore.all)
    func slowsDown(store: EngineStore) async throws {
        // Below the pace's slow start (10/s), so that it meets refusals.
        let server = LimitedAPIStrategy.Server(rate: 5, burst: 1)
        var opts = options(chunkSize: 10, concurrency: 8, maxAttempts: 50)
        opts.pace = .adaptive
        let count = 40
        let strategies = [AnyBatchStrategy(LimitedAPIStrategy(probe: probe, server: server))]
        let (batch, pace) = try await store.withEngine(strategies) { [opts, probe] engine in
            let record = try await engine.submit(try submission(opts), items: try items(count))
            let batch = try await engine.waitForEnd(record.id)
            let limits = try #require(engine.store as? any LimitStore)
            // Merged into the store as the pace steps (its slow start first,
            // refusals after): wait for a refusal in the row, not for a time.
            try await waitUntil("the batch's pace to be stored with its refusals") {
                try await limits.pace(key: "batch:\(record.id)")?.throttled ?? 0 >= 1
            }
            _ = probe
            return (batch, try await limits.pace(key: "batch:\(record.id)"))
        }
        #expect(batch.counts.succeeded == Int64(count))
        let stored = try #require(pace)
        #expect(server.refused >= 1)
        #expect(stored.throttled >= 1 && stored.throttled <= Int64(server.refused))
        #expect(stored.reason != "start")
        // Without a pace, 8 items at once with retries 10 to 50 ms apart meet
        // a 5/s API with many times more refusals than items.
        #expect(server.refused < count, "\(server.refused) refusals for \(count) items")
    }

    @Test("a Retry-After pauses the batch's next items, not only the refused one", arguments: EngineStore.all)
    func retryAfterPauses(store: EngineStore) async throws {
        let server = LimitedAPIStrategy.Server(rate: 1_000, burst: 1_000, retryAfter: 1)
        var opts = options(chunkSize: 10, concurrency: 1, maxAttempts: 5)
        opts.pace = .adaptive
        // A pause lasts at most the backoff cap, like every wait between attempts.
        opts.backoff = Backoff(base: 0.01, cap: 2)
        let strategies = [AnyBatchStrategy(LimitedAPIStrategy(probe: probe, server: server))]
        let batch = try await store.withEngine(strategies) { [opts] engine in
            let record = try await engine.submit(try submission(opts), items: try items(3))
            return try await engine.waitForEnd(record.id)
        }
        #expect(batch.counts.succeeded == 3)
        let starts = probe.starts
        try #require(starts.count >= 2)
        // The first call was refused with Retry-After: 1; nothing started for the next second.
        #expect(starts[1] - starts[0] >= 0.95, "\(starts)")
    }
}
