import Foundation
import Testing
import TrancheEngine
import TrancheStrategies
import TrancheTestSupport

@Suite("Engine")
struct EngineTests {
    let probe = Probe()
    let gate = OneShotEvent()
    var strategies: [AnyBatchStrategy] {
        [
            AnyBatchStrategy(ScriptedStrategy(probe: probe)), AnyBatchStrategy(GatedStrategy(probe: probe, gate: gate)),
            BuiltinStrategies.noop,
        ]
    }

    func submission(_ options: BatchOptions = options(), delayMS: Int = 0, dryRun: Bool = false) throws -> Submission {
        try Submission(
            type: "scripted", context: ScriptedStrategy.Context(delayMS: delayMS), options: options, dryRun: dryRun)
    }

    @Test("a typed strategy runs every item once and stores its output", arguments: EngineStore.all)
    func typedRun(store: EngineStore) async throws {
        let report = try await store.withEngine(strategies) { engine in
            try await engine.execute(try submission(options(chunkSize: 7)), items: try items(50))
        }
        #expect(report.batch.status == .completed)
        #expect(report.batch.counts.succeeded == 50)
        #expect(report.items.count == 50)
        #expect(report.items[21].output?.text == #"{"doubled":42}"#)
        // Once each; at-least-once allows more only for items on a lease that expired.
        #expect(probe.ran(0..<50) && probe.calls.count == 50)
        #expect(Int64(probe.duplicates()) <= report.batch.counts.rescued)
        #expect(report.batch.counts.rescued > 0 || report.items.allSatisfy { $0.attempts == 1 })
    }

    @Test("retryable errors retry with backoff until they succeed", arguments: EngineStore.all)
    func retries(store: EngineStore) async throws {
        let (report, events) = try await store.withEngine(strategies) { engine in
            let report = try await engine.execute(
                try submission(options(maxAttempts: 4)),
                items: try items(10) { ["n": .number(Double($0)), "kind": $0 % 3 == 0 ? "flaky:2" : "ok"] })
            return (report, try await engine.store.events(of: report.batch.id, afterID: 0, limit: 100))
        }
        #expect(report.batch.status == .completed)
        #expect(report.batch.counts.succeeded == 10)
        #expect(report.batch.counts.retried == 8)  // 4 flaky items × 2 retries
        #expect(report.items[3].attempts == 3)
        #expect(report.items[3].error == nil)
        #expect(events.last?.type == .completed)
    }

    @Test("items out of attempts are dead; all failing fails the batch", arguments: EngineStore.all)
    func dead(store: EngineStore) async throws {
        let report = try await store.withEngine(strategies) { engine in
            try await engine.execute(
                try submission(options(maxAttempts: 2)),
                items: try items(3) { ["n": .number(Double($0)), "kind": "retry"] })
        }
        #expect(report.batch.status == .failed)
        #expect(report.batch.counts.dead == 3)
        #expect(report.items.allSatisfy { $0.attempts == 2 && $0.status == .dead })
        #expect(report.errors.first?.code == "unavailable")
        #expect(report.errors.first?.count == 3)
        #expect(probe.ran(0..<3, atLeast: 2) && probe.calls.count == 3)
        #expect(Int64(probe.duplicates { _ in 2 }) <= report.batch.counts.rescued)
    }

    @Test("permanent errors skip the item without retrying", arguments: EngineStore.all)
    func permanent(store: EngineStore) async throws {
        let report = try await store.withEngine(strategies) { engine in
            try await engine.execute(
                try submission(),
                items: try items(4) { ["n": .number(Double($0)), "kind": $0 == 1 ? "permanent" : "ok"] })
        }
        #expect(report.batch.status == .completed)
        #expect(report.items[1].status == .skipped)
        #expect(report.items[1].error?.code == "bad_item")
        #expect(probe.ran([1]))
        #expect(Int64(probe.duplicates()) <= report.batch.counts.rescued, "a skipped item is not retried")
    }

    @Test("a fatal error fails the batch and cancels what has not run", arguments: EngineStore.all)
    func fatal(store: EngineStore) async throws {
        let report = try await store.withEngine(strategies) { engine in
            try await engine.execute(
                try submission(options(chunkSize: 30, concurrency: 1)),
                items: try items(30) { ["n": .number(Double($0)), "kind": $0 == 2 ? "fatal" : "ok"] })
        }
        #expect(report.batch.status == .failed)
        #expect(report.batch.failureReason?.contains("auth") == true)
        // One item at a time: the fatal one stops its chunk before the next
        // starts. Only a rescued lease (a busy machine) could run more.
        #expect(probe.ran(0...2))
        #expect(report.batch.counts.rescued > 0 || Set(probe.calls.keys) == [0, 1, 2])
        #expect(Int64(probe.duplicates()) <= report.batch.counts.rescued)
        #expect(report.batch.counts.succeeded == 2)
        #expect(report.batch.counts.canceled == 27)
    }

    @Test("stop_above_ratio fails the batch once too many items failed", arguments: EngineStore.all)
    func ratioPolicy(store: EngineStore) async throws {
        var opts = options(chunkSize: 10, concurrency: 2)
        opts.failurePolicy = .stopAboveRatio
        opts.failureRatio = 0.3
        opts.failureMinimumItems = 10
        let report = try await store.withEngine(strategies) { [opts] engine in
            try await engine.execute(
                try submission(opts),
                items: try items(200) { ["n": .number(Double($0)), "kind": $0 % 2 == 0 ? "permanent" : "ok"] })
        }
        #expect(report.batch.status == .failed)
        #expect(report.batch.failureReason?.contains("stop_above_ratio") == true)
        #expect(report.batch.counts.canceled > 0)
    }

    @Test("concurrency and the node's worker limit cap items in flight", arguments: EngineStore.all)
    func concurrencyCap(store: EngineStore) async throws {
        defer { gate.fire() }
        let done = try await store.withEngine(strategies, workers: 3) { engine in
            let batch = try await engine.submit(
                Submission(type: "gated", options: options(chunkSize: 5, concurrency: 8)), items: try items(40))
            try await waitUntil("three items in flight") { self.probe.inFlight == 3 }
            self.gate.fire()
            return try await engine.waitForEnd(batch.id)
        }
        #expect(done.counts.succeeded == 40)
        #expect(probe.maxInFlight == 3)
    }

    @Test("a rate limit spaces the starts of items", arguments: EngineStore.all)
    func rateLimit(store: EngineStore) async throws {
        var opts = options(chunkSize: 10, concurrency: 8)
        opts.rateLimit = RateLimit(rate: 20)
        let report = try await store.withEngine(strategies) { [opts] engine in
            try await engine.execute(try submission(opts), items: try items(30))
        }
        #expect(report.batch.counts.succeeded == 30)
        let starts = probe.starts
        // A bucket of 20/s with a burst of 20 cannot start 30 items in under 0.5 s.
        #expect(starts.last! - starts.first! >= 0.45)
    }

    @Test("an item that runs past its timeout is retried, then dead", arguments: EngineStore.all)
    func itemTimeout(store: EngineStore) async throws {
        var opts = options(maxAttempts: 2)
        // Long enough that an "ok" item never times out on a busy machine.
        opts.itemTimeout = 1
        let report = try await store.withEngine(strategies) { [opts] engine in
            try await engine.execute(
                try submission(opts),
                items: try items(2) { ["n": .number(Double($0)), "kind": $0 == 0 ? "hang" : "ok"] })
        }
        #expect(report.items[0].status == .dead)
        #expect(report.items[0].error?.code == "timeout")
        #expect(report.items[1].status == .succeeded)
        #expect(report.batch.status == .completed)
    }

    @Test("pause holds new chunks back, resume finishes the batch", arguments: EngineStore.all)
    func pauseResume(store: EngineStore) async throws {
        defer { gate.fire() }
        let done = try await store.withEngine(strategies) { engine in
            let batch = try await engine.submit(
                Submission(type: "gated", options: options(chunkSize: 2, concurrency: 2)), items: try items(40))
            try await waitUntil("two items to start") { self.probe.started == 2 }
            try await engine.pause(batch.id)
            self.gate.fire()
            try await waitUntil("the paused batch's chunks to be released") {
                try await engine.store.batch(batch.id)?.counts.running == 0
            }
            let paused = try #require(try await engine.store.batch(batch.id))
            #expect(paused.status == .paused)
            #expect(paused.counts.succeeded == Int64(self.probe.started))
            #expect(paused.counts.succeeded < 40)
            try await engine.resume(batch.id)
            return try await engine.waitForEnd(batch.id)
        }
        #expect(done.status == .completed)
        #expect(done.counts.succeeded == 40)
        #expect(probe.ran(0..<40) && probe.calls.count == 40)
        #expect(Int64(probe.duplicates()) <= done.counts.rescued)
    }

    @Test("cancel stops the batch; retry runs the canceled and failed items again", arguments: EngineStore.all)
    func cancelAndRetry(store: EngineStore) async throws {
        defer { gate.fire() }
        try await store.withEngine(strategies) { engine in
            let batch = try await engine.submit(
                Submission(type: "gated", options: options(chunkSize: 2, concurrency: 2)), items: try items(40))
            try await waitUntil("two items to start") { self.probe.started == 2 }
            try await engine.cancel(batch.id)
            let canceled = try await engine.waitForEnd(batch.id)
            #expect(canceled.status == .canceled)
            #expect(canceled.counts.canceled == 40)
            #expect(canceled.counts.succeeded == 0)
            self.gate.fire()
            let (_, reset) = try await engine.retry(batch.id, statuses: [.canceled])
            #expect(reset == 40)
            let done = try await engine.waitForEnd(batch.id)
            #expect(done.status == .completed)
            #expect(done.counts.succeeded == 40)
        }
    }

    @Test("require_confirmation waits for confirm", arguments: EngineStore.all)
    func confirmation(store: EngineStore) async throws {
        var opts = options()
        opts.requireConfirmation = true
        try await store.withEngine(strategies) { [opts] engine in
            let batch = try await engine.submit(try self.submission(opts), items: try items(5))
            #expect(batch.status == .preProcessed)
            try await passSchedulerRounds(engine)
            #expect(self.probe.calls.isEmpty)
            try await engine.confirm(batch.id)
            #expect(try await engine.waitForEnd(batch.id).counts.succeeded == 5)
        }
    }

    @Test("a dry run validates every item, reports, and runs nothing", arguments: EngineStore.all)
    func dryRun(store: EngineStore) async throws {
        try await store.withEngine(strategies) { engine in
            var opts = options()
            opts.rateLimit = RateLimit(rate: 10)
            let batch = try await engine.submit(
                try self.submission(opts, dryRun: true),
                items: try items(20) { ["n": .number(Double($0)), "kind": $0 % 5 == 0 ? "invalid" : "ok"] }
                    + [JSONText(unchecked: #"{"wrong": true}"#)])
            #expect(batch.status == .preProcessed)
            let report = try #require(try batch.result?.value())
            #expect(report["total"] == 21)
            #expect(report["invalid"] == 5)
            #expect(report["valid"] == 16)
            #expect(report["estimated_seconds"] == 1.6)
            #expect(report["estimate_basis"] == "rate_limit")
            let codes = report["errors"].flatMap { value -> [String]? in
                guard case .array(let groups) = value else { return nil }
                return groups.compactMap { $0["code"]?.stringValue }
            }
            #expect(Set(codes ?? []) == ["invalid_item"])
            try await passSchedulerRounds(engine)
            #expect(self.probe.calls.isEmpty)
            // Confirmed, the dry run becomes a real run of the items it holds.
            #expect(!(try await engine.confirm(batch.id)).dryRun)
            #expect(try await engine.waitForEnd(batch.id).counts.succeeded == 16)
        }
    }

    @Test("unknown strategies and invalid options are refused before anything is stored", arguments: EngineStore.all)
    func badSubmissions(store: EngineStore) async throws {
        try await store.withSite { site in
            try await site.withStore { store in
                try await refuseBadSubmissions(makeEngine(store: store, strategies))
            }
        }
    }

    func refuseBadSubmissions(_ engine: TrancheEngine) async throws {
        do {
            _ = try await engine.submit(Submission(type: "nope"), items: [])
            Issue.record("accepted an unknown strategy")
        } catch let error as EngineError {
            #expect(error.code == .unknownStrategy)
            #expect(error.message.contains("known: gated, noop, scripted"))
        }
        var bad = options()
        bad.chunkSize = 0
        do {
            _ = try await engine.submit(try submission(bad), items: [])
            Issue.record("accepted chunk_size 0")
        } catch let error as EngineError {
            #expect(error.code == .invalidSubmission)
            #expect(error.message == "chunk_size must be between 1 and 100000, got 0")
        }
        do {
            _ = try await engine.submit(
                Submission(type: "scripted", context: JSONText(unchecked: #"{"delayMS": "soon"}"#)), items: [])
            Issue.record("accepted a bad context")
        } catch let error as EngineError {
            #expect(error.message.contains("'delayMS' should be a number"))
        }
        #expect(try await engine.store.batches(BatchQuery()).isEmpty)
    }

    @Test("subscribers see status events and throttled progress, in order", arguments: EngineStore.all)
    func events(store: EngineStore) async throws {
        try await store.withEngine(strategies) { engine in
            let stream = try await engine.events()
            let started = ContinuousClock.now
            let batch = try await engine.submit(
                try self.submission(options(chunkSize: 5, concurrency: 4), delayMS: 5), items: try items(60))
            let (types, progress) = try await withDeadline("batch \(batch.id) to complete") {
                var types: [BatchEventType] = []
                var progress = 0
                for await event in stream where event.batchID == batch.id {
                    if event.type == .progress {
                        progress += 1
                        continue
                    }
                    types.append(event.type)
                    if event.type == .completed { break }
                }
                return (types, progress)
            }
            #expect(types == [.created, .sealed, .preProcessed, .confirmed, .processing, .completed])
            #expect(progress >= 1)
            // At most one every `progressInterval` (0.5 s), and one from each
            // of the (at most 4) chunks that see the batch end.
            let seconds = Double(started.duration(to: .now).components.seconds) + 1
            #expect(progress <= Int(seconds / 0.5) + 4)
        }
    }

    @Test(
        "a graceful drain lets running items finish and leaves the rest for the next start",
        arguments: EngineStore.all)
    func drain(store: EngineStore) async throws {
        try await store.withSite { site in
            let (batchID, stopped) = try await site.withStore { store in
                // withRunning drains the engine once the body returns, and waits for it.
                let batchID = try await withRunning(makeEngine(store: store, strategies)) { engine in
                    let batch = try await engine.submit(
                        try self.submission(options(chunkSize: 4, concurrency: 2), delayMS: 200), items: try items(30))
                    try await waitUntil("four items to succeed") {
                        try await engine.store.batch(batch.id)?.counts.succeeded ?? 0 >= 4
                    }
                    return batch.id
                }
                return (batchID, try #require(try await store.batch(batchID)))
            }
            #expect(stopped.counts.running == 0)
            #expect(stopped.counts.succeeded > 0 && stopped.counts.succeeded < 30)
            #expect(stopped.counts.rescued == 0)
            let done = try await site.withEngine(strategies) { engine in
                try await engine.waitForEnd(batchID)
            }
            #expect(done.status == .completed)
            #expect(done.counts.succeeded == 30)
            #expect(self.probe.ran(0..<30) && self.probe.calls.count == 30)
            #expect(Int64(self.probe.duplicates()) <= done.counts.rescued)
        }
    }

    @Test("a chunk strategy (noop) runs a large batch", arguments: EngineStore.all)
    func noop(store: EngineStore) async throws {
        let record = try await store.withEngine(strategies) { engine in
            let batch = try await engine.submit(
                Submission(type: "noop", options: options(chunkSize: 500)), items: try items(5_000))
            return try await engine.waitForEnd(batch.id)
        }
        #expect(record.counts.succeeded == 5_000)
    }

    @Test("the typed submit streams a long sequence in blocks", arguments: EngineStore.all)
    func streamingSubmit(store: EngineStore) async throws {
        let record = try await store.withEngine(strategies) { engine in
            let batch = try await engine.submit(
                try self.submission(options(chunkSize: 50)), items: (0..<2_500).map { ScriptedStrategy.Item(n: $0) },
                inlineLimit: 1_000)
            return try await engine.waitForEnd(batch.id)
        }
        #expect(record.counts.total == 2_500)
        #expect(record.counts.succeeded == 2_500)
    }
}
