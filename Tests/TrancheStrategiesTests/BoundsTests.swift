import Foundation
import Testing
import TrancheEngine
import TrancheSQLite
import TrancheStrategies
import TrancheTestSupport

/// Numbers from items and from remote answers reach the strategies; none
/// of them can trap a conversion or park an item forever.
@Suite("Bounds in the strategies")
struct StrategyBoundsTests {
    func input(_ payload: String, attempt: Int = 1) -> ItemInput {
        ItemInput(
            batchID: BatchID("01234567-89ab-7def-8123-456789abcdef")!, seq: 0, payload: JSONText(unchecked: payload),
            attempt: attempt)
    }

    @Test("a 503 with Retry-After 1e300, inf or 10^30 is a retryable error whose wait is bounded")
    func hugeRetryAfter() async throws {
        let server = LoopbackHTTPServer { request, _ in
            .init(status: 503, headers: ["Retry-After": String(request.uri.dropFirst())], body: "busy")
        }
        try await server.withRunning { port in
            let strategy = AnyBatchStrategy(HTTPStrategy(configuration: .init(outbound: .loopback)))
            let context = try strategy.prepare(
                context: JSONText(
                    encoding: ["url": .string("http://127.0.0.1:\(port)/{{after}}"), "method": "GET"] as JSONValue))
            let bound = try strategy.bind(context: context)
            var options = BatchOptions()
            options.backoff = Backoff(base: 1, cap: 60)
            for after in ["1e300", "inf", "1000000000000000000000000000000"] {
                let result = await bound.process(input(#"{"after": "\#(after)"}"#))
                guard case .failure(let error) = result else {
                    Issue.record("Retry-After \(after): the item succeeded")
                    continue
                }
                #expect(error.category == .retryable)
                #expect(error.code == "http_503")
                let retryAfter = try #require(error.retryAfter, "Retry-After \(after)")
                #expect(retryAfter.isFinite)
                #expect(retryAfter <= BatchOptions.Limits.backoffCap.upperBound)
                let disposition = ItemDisposition.after(attempt: 1, error: error, options: options, random: 0.5)
                #expect(disposition == .retry(delay: 60), "Retry-After \(after)")
            }
            // Not a number, not a date: ignored, the usual backoff applies.
            let result = await bound.process(input(#"{"after": "nan"}"#))
            guard case .failure(let error) = result else {
                Issue.record("Retry-After nan: the item succeeded")
                return
            }
            #expect(error.category == .retryable)
            #expect(error.retryAfter == nil)
        }
    }

    @Test("through the engine, a remote that always answers 503 with Retry-After 1e300 does not stop it")
    func hugeRetryAfterThroughTheEngine() async throws {
        let server = LoopbackHTTPServer { _, _ in .init(status: 503, headers: ["Retry-After": "1e300"]) }
        try await server.withRunning { port in
            try await withTemporaryDirectory("tranche-bounds") { directory in
                let store = try SQLiteBatchStore(path: directory.appendingPathComponent("b.db").path)
                var configuration = TrancheEngine.Configuration()
                configuration.sweepInterval = 0.05
                let engine = TrancheEngine(
                    store: store, strategies: BuiltinStrategies.all(), configuration: configuration)
                var options = BatchOptions()
                options.maxAttempts = 2
                options.backoff = Backoff(base: 0.01, cap: 0.02)
                let submission = Submission(
                    type: "http",
                    context: try JSONText(encoding: ["url": JSONValue.string("http://127.0.0.1:\(port)/{{seq}}")]),
                    options: options)
                let report = try await withDeadline(seconds: 60, "the batch to end") {
                    try await withRunning(engine) { engine in
                        try await engine.execute(submission, items: (0..<3).map { JSONText(unchecked: "\($0)") })
                    }
                }
                // Each item waited at most the cap (0.02 s) before its second attempt.
                #expect(report.batch.status == .failed)
                #expect(report.batch.counts.dead == 3)
                #expect(report.batch.counts.retried == 3)
                #expect(server.requests.count == 6)
            }
        }
    }

    @Test(
        "sleep: an item's ms out of range (1e300, -1, 2^63, 2.5, a string) is skipped, naming the field and the limit",
        arguments: ["1e300", "-1", "9223372036854775808", "2.5", "3600001", #""x""#])
    func sleepItemOutOfRange(_ ms: String) throws {
        let strategy = AnyBatchStrategy(SleepStrategy())
        let bound = try strategy.bind(context: try strategy.prepare(context: JSONText(unchecked: "{}")))
        let error = try #require(bound.validate(input(#"{"ms": \#(ms)}"#)))
        #expect(error.category == .permanent)
        #expect(error.code == "invalid_item")
        #expect(error.message.contains("'ms' must be an integer between 0 and 3600000"), "\(error.message)")
        #expect(bound.validate(input(#"{"ms": 3600000}"#)) == nil)
        #expect(bound.validate(input(#"{"ms": 0}"#)) == nil)
        #expect(bound.validate(input(#"{"other": 1e300}"#)) == nil)
    }

    @Test(
        "sleep: a context's ms out of range is refused at submission, naming the field and the limit",
        arguments: ["1e300", "-1", "9223372036854775808", "2.5", "3600001"])
    func sleepContextOutOfRange(_ ms: String) {
        let strategy = AnyBatchStrategy(SleepStrategy())
        do {
            _ = try strategy.prepare(context: JSONText(unchecked: #"{"ms": \#(ms)}"#))
            Issue.record("context ms \(ms) was accepted")
        } catch {
            let message = (error as? OptionsError)?.message ?? ""
            #expect(message.contains("ms"), "\(message)")
            #expect(message.contains("between 0 and 3600000"), "\(message)")
        }
        #expect(throws: OptionsError.self) { try strategy.prepare(context: JSONText(unchecked: #"{"msec": 5}"#)) }
    }

    @Test("sleep: an item stored before the limit held is clamped when it runs, never a trap")
    func sleepClampsStoredItems() async throws {
        let strategy = AnyBatchStrategy(SleepStrategy())
        let bound = try strategy.bind(context: try strategy.prepare(context: JSONText(unchecked: "{}")))
        let negative = try await bound.process(input(#"{"ms": -1e300}"#)).get().value()
        #expect(negative["slept_ms"] == 0)
        // 1e300 ms is clamped to an hour: start it and cancel it.
        let task = Task { await bound.process(input(#"{"ms": 1e300}"#)) }
        task.cancel()
        let result = try await withDeadline(seconds: 30, "the canceled sleep") { await task.value }
        guard case .failure(let error) = result else {
            Issue.record("a canceled hour-long sleep succeeded")
            return
        }
        #expect(error.code == "canceled")
    }
}
