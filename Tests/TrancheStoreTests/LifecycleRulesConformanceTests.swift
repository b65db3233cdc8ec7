import Foundation
import Testing
import TrancheStore

/// The lifecycle rules decided above the drivers, carried out by every store:
/// the batch-timeout clock, retries of pruned batches, outcomes that arrive
/// after a batch ended, summaries and retention.
@Suite("Lifecycle rules on every store", .testResources)
struct LifecycleRulesConformanceTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    func at(_ seconds: Double) -> Date { Self.start.addingTimeInterval(seconds) }

    func timed(_ timeout: Double, confirm: Bool = false) -> BatchOptions {
        var opts = options(chunkSize: 5)
        opts.batchTimeout = timeout
        opts.requireConfirmation = confirm
        return opts
    }

    @Test("time paused does not count toward the batch timeout", arguments: StoreFactory.all)
    func pausedTimeDoesNotCount(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: timed(60), createdAt: at(0)), items: payloads(10))
        _ = try #require(try await store.claimChunk(owner: "w", leaseDuration: 3_600, now: at(0)))
        _ = try await store.transition(batch.id, .pause, reason: nil, at: at(30))
        // Paused for far longer than the timeout: nothing happens.
        #expect(try await store.enforceDeadlines(now: at(1_000)).isEmpty)
        _ = try await store.transition(batch.id, .resume, reason: nil, at: at(1_000))
        // 30 s before the pause + 20 s since the resume = 50 s: still within 60 s.
        #expect(try await store.enforceDeadlines(now: at(1_020)).isEmpty)
        let events = try await store.enforceDeadlines(now: at(1_040))
        #expect(events.map(\.type) == [.failed])
        let record = try #require(try await store.batch(batch.id))
        #expect(record.status == .failed)
        #expect(record.failureReason?.hasPrefix("batch_timeout") == true)
        #expect(abs(record.processingTime - 70) < 0.01)
    }

    @Test("time waiting for confirmation does not count toward the batch timeout", arguments: StoreFactory.all)
    func confirmationWaitDoesNotCount(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: timed(60, confirm: true), createdAt: at(0)), items: payloads(10))
        #expect(try await store.enforceDeadlines(now: at(10_000)).isEmpty)
        _ = try await store.transition(batch.id, .confirm, reason: nil, at: at(10_000))
        // Queued, not yet processing: still nothing.
        #expect(try await store.enforceDeadlines(now: at(10_100)).isEmpty)
        _ = try #require(try await store.claimChunk(owner: "w", leaseDuration: 3_600, now: at(10_100)))
        #expect(try await store.enforceDeadlines(now: at(10_150)).isEmpty)
        #expect(try await store.enforceDeadlines(now: at(10_161)).map(\.type) == [.failed])
    }

    @Test("a retry of a timed-out batch starts a fresh clock", arguments: StoreFactory.all)
    func retryStartsFreshClock(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: timed(60), createdAt: at(0)), items: payloads(10))
        _ = try #require(try await store.claimChunk(owner: "w", leaseDuration: 1, now: at(0)))
        #expect(try await store.enforceDeadlines(now: at(120)).map(\.type) == [.failed])
        _ = try await store.rescueExpiredLeases(now: at(121), splitAfter: 10)
        let (retried, count) = try await store.retry(batch.id, statuses: [.canceled], at: at(130))
        #expect(count == 10)
        #expect(retried.status == .confirmed)
        #expect(retried.processingTime == 0 && retried.runningSince == nil)
        #expect(try await store.enforceDeadlines(now: at(140)).isEmpty)
        _ = try #require(try await store.claimChunk(owner: "w", leaseDuration: 3_600, now: at(150)))
        #expect(try await store.enforceDeadlines(now: at(200)).isEmpty)
        #expect(try await store.batch(batch.id)?.status == .processing)
    }

    @Test("a pruned batch refuses a retry and keeps its counters", arguments: StoreFactory.all)
    func retryOfPrunedBatch(factory: StoreFactory) async throws {
        let store = try await factory.make()
        var opts = options(chunkSize: 5)
        opts.ttl = 60
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: opts, createdAt: at(0)), items: payloads(10))
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: at(1)))
        var outcomes = succeeded(lease)
        outcomes[0].status = .skipped
        outcomes[0].error = .permanent("bad", "bad item")
        _ = try await store.checkpoint(
            lease, outcomes: outcomes, finish: true, failBatch: nil, leaseDuration: 30, now: at(1))
        _ = try await store.drainAll(now: at(2))
        while try await store.prune(now: at(1_000), retention: 86_400, limit: 1_000) > 0 {}
        let pruned = try #require(try await store.batch(batch.id))
        #expect(pruned.pruned)
        await #expect {
            try await store.retry(batch.id, statuses: [.skipped], at: at(1_001))
        } throws: { error in
            (error as? StoreError)?.code == .conflict && "\(error)".contains("10 items")
        }
        let after = try #require(try await store.batch(batch.id))
        #expect(after.counts == pruned.counts)
        #expect(after.counts.succeeded == 9 && after.counts.skipped == 1)
        #expect(after.status == .completed)
    }

    @Test("outcomes that arrive after a cancel are not counted as succeeded", arguments: StoreFactory.all)
    func lateOutcomesAfterCancel(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 5)), items: payloads(20))
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        let canceled = try await store.transition(batch.id, .cancel, reason: nil, at: Date())
        let first = try await store.checkpoint(
            lease, outcomes: Array(succeeded(lease).prefix(3)), finish: false, failBatch: nil, leaseDuration: 30,
            now: Date())
        #expect(first.batchStatus == .canceled)
        _ = try await store.checkpoint(
            lease, outcomes: Array(succeeded(lease).suffix(2)), finish: true, failBatch: nil, leaseDuration: 30,
            now: Date())
        let record = try #require(try await store.batch(batch.id))
        #expect(record.counts.succeeded == 0)
        #expect(record.counts.canceled == 20)
        #expect(record.counts.running == 0)
        #expect(record.completedAt == canceled.completedAt)
        let items = try await store.items(of: batch.id, status: .succeeded, afterSeq: nil, limit: 100)
        #expect(items.isEmpty)
    }

    @Test("an ended batch keeps its summary and error log after its items are pruned", arguments: StoreFactory.all)
    func summarySurvivesPruning(factory: StoreFactory) async throws {
        let store = try await factory.make()
        var opts = options(chunkSize: 10)
        opts.ttl = 60
        var items = payloads(6)
        for index in [1, 3] { items[index].rejection = .permanent("invalid_json", "line \(index + 1): bad") }
        let batch = try await store.createBatch(NewBatch(type: "t", options: opts, createdAt: at(0)), items: items)
        _ = try await store.drainAll(now: at(5))
        let ended = try #require(try await store.batch(batch.id))
        #expect(ended.status == .completed)
        let summary = try #require(ended.decodedSummary)
        #expect(summary.counts.succeeded == 4 && summary.counts.skipped == 2)
        #expect(summary.errors.map(\.code) == ["invalid_json"])
        #expect(summary.completedAt == ended.completedAt)
        while try await store.prune(now: at(1_000), retention: 86_400, limit: 1_000) > 0 {}
        #expect(try await store.items(of: batch.id, status: nil, afterSeq: nil, limit: 10).isEmpty)
        let groups = try await store.errorGroups(of: batch.id, samples: 5)
        #expect(groups.map(\.code) == ["invalid_json"])
        #expect(groups.first?.count == 2)
        #expect(groups.first?.samples.map(\.seq) == [1, 3])
    }

    @Test("after the retention period an ended batch and its events are forgotten", arguments: StoreFactory.all)
    func retentionForgetsBatches(factory: StoreFactory) async throws {
        let store = try await factory.make()
        var opts = options()
        opts.ttl = 60
        let old = try await store.createBatch(NewBatch(type: "t", options: opts, createdAt: at(0)), items: payloads(3))
        _ = try await store.drainAll(now: at(1))
        let running = try await store.createBatch(
            NewBatch(type: "t", options: opts, createdAt: at(2)), items: payloads(3))
        // Items pruned after the ttl; the batch stays for the retention period.
        while try await store.prune(now: at(100), retention: 3_600, limit: 1_000) > 0 {}
        #expect(try await store.batch(old.id)?.pruned == true)
        #expect(!(try await store.events(of: old.id, afterID: 0, limit: 10)).isEmpty)
        while try await store.prune(now: at(4_000), retention: 3_600, limit: 1_000) > 0 {}
        #expect(try await store.batch(old.id) == nil)
        await #expect(throws: StoreError.self) { try await store.events(of: old.id, afterID: 0, limit: 10) }
        // A batch that has not ended is never forgotten.
        #expect(try await store.batch(running.id)?.status == .confirmed)
    }
}
