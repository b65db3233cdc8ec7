import Foundation
import Synchronization
import Testing
import TrancheStrategies
import TrancheTestSupport

@testable import TrancheEngine

/// Item timeouts and aborts through one sweeper per chunk (``AttemptWatch``)
/// instead of a timer and a race of child tasks per attempt.
@Suite("Attempt deadlines")
struct AttemptWatchTests {
    /// A body that runs until its task is canceled, and says it saw the cancellation.
    static func hang(_ canceled: Flag) async -> Int {
        try? await Task.sleep(for: .seconds(3_600))
        if Task.isCancelled { canceled.fire() }
        return -1
    }

    /// Runs `body` beside the watch's sweeper, and closes the watch after it.
    func withSweeper<T: Sendable>(
        _ watch: AttemptWatch, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withDeadline("the attempts under the watch to end") {
            try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask {
                    await watch.sweep()
                    return nil
                }
                defer { watch.close() }
                return try await body()
            }
        }
    }

    @Test("an attempt past its deadline is canceled and ends timed out, not before the deadline")
    func timesOut() async throws {
        let watch = AttemptWatch()
        let canceled = Flag()
        let started = ContinuousClock.now
        let (result, ending, callerCanceled) = try await withSweeper(watch) {
            let (result, ending) = await watch.run(until: started + .milliseconds(200)) { await Self.hang(canceled) }
            return (result, ending, Task.isCancelled)
        }
        #expect(ending == .timedOut)
        #expect(result == -1)
        #expect(canceled.hasFired)
        #expect(ContinuousClock.now - started >= .milliseconds(200))
        // Only the strategy's task is canceled: the caller goes on to record and release.
        #expect(!callerCanceled)
    }

    @Test("an attempt that answers first keeps its answer and is not canceled")
    func answersFirst() async throws {
        let watch = AttemptWatch()
        let (result, ending) = try await withSweeper(watch) {
            await watch.run(until: .now + .seconds(30)) { Task.isCancelled ? -1 : 42 }
        }
        #expect(ending == nil)
        #expect(result == 42)
    }

    @Test("an attempt with an earlier deadline than the running ones wakes the sweeper")
    func earlierDeadline() async throws {
        let watch = AttemptWatch()
        let (long, short) = (Flag(), Flag())
        let (first, second) = try await withSweeper(watch) {
            async let first = watch.run(until: .now + .seconds(3_600)) { await Self.hang(long) }
            // The sweeper sleeps until the hour's deadline once the first attempt is in.
            try await Task.sleep(for: .milliseconds(100))
            let second = await watch.run(until: .now + .milliseconds(100)) { await Self.hang(short) }
            #expect(!long.hasFired)
            watch.abortAll()
            return (await first, second)
        }
        #expect(second.ending == .timedOut)
        #expect(short.hasFired)
        #expect(first.ending == .aborted)
        #expect(long.hasFired)
    }

    @Test("an abort cancels the running attempts, and a later attempt runs nothing")
    func abort() async throws {
        let watch = AttemptWatch()
        let canceled = Flag()
        let ran = Mutex(false)
        let (running, later) = try await withSweeper(watch) {
            async let running = watch.run(until: .now + .seconds(3_600)) { await Self.hang(canceled) }
            try await waitUntil("the attempt to start") { watch.runningCount == 1 }
            watch.abortAll()
            let later = await watch.run(until: .now + .seconds(3_600)) {
                ran.withLock { $0 = true }
                return 1
            }
            return (await running, later)
        }
        #expect(running.ending == .aborted)
        #expect(canceled.hasFired)
        #expect(later.ending == .aborted)
        #expect(later.result == nil)
        #expect(!ran.withLock { $0 })
    }

    @Test("items past the item timeout in one chunk each time out; the others succeed", arguments: EngineStore.all)
    func manyTimeouts(store: EngineStore) async throws {
        let probe = Probe()
        var opts = options(chunkSize: 40, concurrency: 8, maxAttempts: 1)
        opts.itemTimeout = 0.5
        let report = try await store.withEngine([AnyBatchStrategy(ScriptedStrategy(probe: probe))]) { [opts] engine in
            try await engine.execute(
                try Submission(type: "scripted", context: ScriptedStrategy.Context(), options: opts),
                items: try items(40) { ["n": .number(Double($0)), "kind": $0 % 4 == 0 ? "hang" : "ok"] })
        }
        #expect(report.batch.status == .completed)
        #expect(report.batch.counts.succeeded == 30)
        #expect(report.batch.counts.dead == 10)
        for (index, item) in report.items.enumerated() where index % 4 == 0 {
            #expect(item.status == .dead)
            #expect(item.error?.code == "timeout")
        }
    }
}
