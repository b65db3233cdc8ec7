import Foundation
import Testing
import TrancheStore
import TrancheTestSupport

@testable import TranchePostgres

/// One batch claimed and checkpointed by many workers of two nodes at once
/// on PostgreSQL, where claims and checkpoints of a batch no longer take
/// turns on its row (``BatchShards``): the cap on chunks in flight, exact
/// counters, one completion, and a cancel that freezes what it saw.
@Suite("PostgreSQL one batch, many claimers")
struct PostgresShardTests {
    /// The chunks the workers hold, as they report them: a worker counts a
    /// chunk from its claim's return to just before its finishing
    /// checkpoint, so the peak seen is never above what the store let out.
    actor InFlight {
        var now = 0
        var peak = 0
        var claims = 0
        func claimed() {
            now += 1
            claims += 1
            peak = max(peak, now)
        }
        func finishing() { now -= 1 }
    }

    /// A worker's outcomes for `items`: every seventh skipped with an error,
    /// every eleventh failed for good (one attempt allowed), the rest succeeded.
    static func outcomes(_ items: ArraySlice<LeasedItem>) -> [ItemOutcome] {
        items.map { item in
            var outcome = ItemOutcome(
                seq: item.seq, previousStatus: item.status, attempt: item.attempts + 1, status: .succeeded)
            if item.seq % 7 == 0 {
                outcome.status = .skipped
                outcome.error = .permanent("bad_input", "item \(item.seq) is refused")
            } else if item.seq % 11 == 0 {
                outcome.status = .dead
                outcome.error = .retryable("exit_1", "item \(item.seq) failed")
            }
            return outcome
        }
    }

    /// Claims and runs chunks of any batch until none is left: half of a
    /// chunk's outcomes in a checkpoint that keeps the lease, the rest in
    /// the finishing one.
    static func work(_ store: PostgresBatchStore, owner: String, inFlight: InFlight) async throws {
        while let lease = try await store.claimChunk(owner: owner, leaseDuration: 60, now: Date()) {
            await inFlight.claimed()
            let half = lease.items.count / 2
            let first = lease.items.prefix(half)
            if !first.isEmpty {
                _ = try await store.checkpoint(
                    lease, outcomes: outcomes(first), finish: false, failBatch: nil, leaseDuration: 60, now: Date())
            }
            await inFlight.finishing()
            _ = try await store.checkpoint(
                lease, outcomes: outcomes(lease.items.dropFirst(half)), finish: true, failBatch: nil,
                leaseDuration: 60, now: Date())
        }
    }

    @Test("12 claimers on two nodes: never more chunks than the cap, exact counters, one start, one end")
    func capAndCounters() async throws {
        let url = try await TestPostgres.freshDatabaseURL()
        try await TestPostgres.withStore(url: url) { first in
            try await TestPostgres.withStore(url: url) { second in
                // Concurrency 50 in chunks of 10: at most 6 chunks in flight,
                // fewer than the 16 shards, so most shards may hold none.
                let batchOptions = options(chunkSize: 10, concurrency: 50, maxAttempts: 1)
                let count = 3_000
                let batch = try await first.createBatch(
                    NewBatch(type: "t", options: batchOptions), items: payloads(count))
                let inFlight = InFlight()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<12 {
                        let store = index % 2 == 0 ? first : second
                        group.addTask { try await Self.work(store, owner: "w\(index)", inFlight: inFlight) }
                    }
                    try await group.waitForAll()
                }
                #expect(await inFlight.peak <= 6, "more chunks in flight than the batch's cap of 6")
                #expect(await inFlight.claims == count / 10)
                let done = try #require(try await second.batch(batch.id))
                let skipped = (0..<count).filter { $0 % 7 == 0 }.count
                let dead = (0..<count).filter { $0 % 7 != 0 && $0 % 11 == 0 }.count
                #expect(done.status == .completed)
                #expect(done.counts.total == Int64(count))
                #expect(done.counts.skipped == Int64(skipped))
                #expect(done.counts.dead == Int64(dead))
                #expect(done.counts.succeeded == Int64(count - skipped - dead))
                #expect(done.counts.running == 0)
                #expect(done.counts.canceled == 0 && done.counts.failed == 0 && done.counts.rescued == 0)
                let events = try await first.events(of: batch.id, afterID: 0, limit: 10_000)
                #expect(events.filter { $0.type == .completed }.count == 1)
                // Started by the first claim that committed, once: the
                // claims that found it still confirmed do not start it again.
                #expect(events.filter { $0.type == .processing }.count == 1)
                // The listing sums the shards as the single read does.
                let listed = try await first.batches(BatchQuery(limit: 10)).first { $0.id == batch.id }
                #expect(listed?.counts == done.counts)
            }
        }
    }

    @Test("a cancel among 8 claimers: no outcome is counted as run after it, and nothing stays running")
    func cancelFreezes() async throws {
        let url = try await TestPostgres.freshDatabaseURL()
        try await TestPostgres.withStore(url: url) { store in
            let count = 20_000
            let batch = try await store.createBatch(
                NewBatch(type: "t", options: options(chunkSize: 10, concurrency: 1_000, maxAttempts: 1)),
                items: payloads(count))
            let inFlight = InFlight()
            let atCancel = try await withThrowingTaskGroup(of: BatchRecord?.self) { group in
                for index in 0..<8 {
                    group.addTask {
                        try await Self.work(store, owner: "w\(index)", inFlight: inFlight)
                        return nil
                    }
                }
                group.addTask {
                    // Cancel once the workers are well into the batch.
                    try await waitUntil("200 chunks claimed") { await inFlight.claims >= 200 }
                    return try await store.transition(batch.id, .cancel, reason: nil, at: Date())
                }
                var canceled: BatchRecord?
                for try await record in group { canceled = canceled ?? record }
                return canceled
            }
            let canceled = try #require(atCancel)
            let after = try #require(try await store.batch(batch.id))
            #expect(after.status == .canceled)
            // Outcomes that reached the store after the cancel are stored as canceled.
            #expect(after.counts.succeeded == canceled.counts.succeeded)
            #expect(after.counts.skipped == canceled.counts.skipped)
            #expect(after.counts.dead == canceled.counts.dead)
            #expect(after.counts.running == 0)
            #expect(
                after.counts.succeeded + after.counts.skipped + after.counts.dead + after.counts.canceled
                    == Int64(count))
        }
    }
}
