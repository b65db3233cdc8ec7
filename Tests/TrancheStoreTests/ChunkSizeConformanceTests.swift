import Foundation
import Testing
import TrancheStore

/// Automatic chunk sizes on every store: an automatic batch is stored in
/// large segments and a claim leases a prefix of one, as many due items as
/// the claimer asks for (``ChunkSizeRules``).
@Suite("Chunk size conformance", .testResources)
struct ChunkSizeConformanceTests {
    /// Options without a chunk size: automatic.
    static func automatic(concurrency: Int = 10_000) -> BatchOptions {
        var options = BatchOptions()
        options.concurrency = concurrency
        options.maxAttempts = 3
        return options
    }

    static func claim(_ store: any BatchStore, _ owner: String = "w", sizes: ChunkSizes, now: Date = Date())
        async throws -> ChunkLease?
    {
        var claim = ChunkClaim(owner: owner, leaseDuration: 30)
        claim.sizes = sizes
        return try await store.claimChunk(claim, now: now)
    }

    @Test(
        "a claim leases a prefix of a segment; no item is lost or leased twice; counters hold",
        arguments: StoreFactory.all)
    func prefixClaims(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: Self.automatic()), items: payloads(250))
        let sizes = ChunkSizes(initial: 40)
        var leases: [ChunkLease] = []
        while let lease = try await Self.claim(store, sizes: sizes) { leases.append(lease) }
        #expect(leases.map(\.items.count) == [40, 40, 40, 40, 40, 40, 10])
        // Contiguous, disjoint ranges whose items are exactly their seqs.
        var next: Int64 = 0
        for lease in leases {
            #expect(lease.firstSeq == next)
            #expect(lease.items.map(\.seq) == Array(lease.firstSeq...lease.lastSeq))
            next = lease.lastSeq + 1
        }
        #expect(next == 250)
        #expect(Set(leases.map(\.chunkID)).count == leases.count)
        let leased = try #require(try await store.batch(batch.id))
        #expect(leased.counts.running == 250)
        #expect(leased.counts.pending == 0)
        for lease in leases {
            _ = try await store.checkpoint(
                lease, outcomes: succeeded(lease), finish: true, failBatch: nil, leaseDuration: 30, now: Date())
        }
        let done = try #require(try await store.batch(batch.id))
        #expect(done.status == .completed)
        #expect(done.counts.succeeded == 250)
        #expect(done.counts.running == 0)
        #expect(done.counts.rescued == 0)
    }

    @Test(
        "a claim asks per batch, and leaves a share of the waiting items for every worker", arguments: StoreFactory.all)
    func sizesAndShare(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: Self.automatic()), items: payloads(200))
        // 200 waiting over 16 workers: 12 each, however many were asked.
        let first = try #require(try await Self.claim(store, sizes: ChunkSizes(initial: 100, workers: 16)))
        #expect(first.items.count == 12)
        // 188 waiting: 11.
        let second = try #require(try await Self.claim(store, sizes: ChunkSizes(initial: 100, workers: 16)))
        #expect(second.items.count == 11)
        #expect(second.firstSeq == 12)
        // The size asked of this batch wins over the initial one.
        let third = try #require(
            try await Self.claim(store, sizes: ChunkSizes(initial: 100, perBatch: [batch.id: 3], workers: 1)))
        #expect(third.items.map(\.seq) == [23, 24, 25])
    }

    @Test("an explicit chunk_size keeps its chunks whatever the claimer asks", arguments: StoreFactory.all)
    func explicitChunkSize(factory: StoreFactory) async throws {
        let store = try await factory.make()
        _ = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 30, concurrency: 1_000)), items: payloads(70))
        let sizes = ChunkSizes(initial: 5, workers: 16)
        var counts: [Int] = []
        while let lease = try await Self.claim(store, sizes: sizes) { counts.append(lease.items.count) }
        #expect(counts == [30, 30, 10])
    }

    @Test("concurrent claimers of one automatic batch run every item once", arguments: StoreFactory.all)
    func concurrentClaimers(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: Self.automatic()), items: payloads(1_000))
        let seqs = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for worker in 0..<6 {
                group.addTask {
                    var seen: [Int64] = []
                    let sizes = ChunkSizes(initial: 7 + worker * 5)
                    while let lease = try await Self.claim(store, "w\(worker)", sizes: sizes) {
                        seen += lease.items.map(\.seq)
                        _ = try await store.checkpoint(
                            lease, outcomes: succeeded(lease), finish: true, failBatch: nil, leaseDuration: 30,
                            now: Date())
                    }
                    return seen
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(seqs.count == 1_000)
        #expect(Set(seqs) == Set(0..<1_000))
        let done = try #require(try await store.batch(batch.id))
        #expect(done.status == .completed)
        #expect(done.counts.succeeded == 1_000)
        #expect(done.counts.running == 0)
    }

    @Test(
        "a chunk cut from a segment is rescued alone, then split until its poison item is dead",
        arguments: StoreFactory.all)
    func rescueOfACutChunk(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: Self.automatic()), items: payloads(100))
        let start = Date()
        let sizes = ChunkSizes(initial: 10)
        let lease = try #require(try await Self.claim(store, "a", sizes: sizes, now: start))
        #expect(lease.items.map(\.seq) == Array(0...9))
        // Three items reach the store, then the worker dies.
        _ = try await store.checkpoint(
            lease, outcomes: Array(succeeded(lease).prefix(3)), finish: false, failBatch: nil, leaseDuration: 30,
            now: start)
        let later = start.addingTimeInterval(31)
        let rescued = try await store.rescueExpiredLeases(now: later, splitAfter: 2)
        #expect(rescued.map(\.unfinished) == [7])
        #expect(rescued.map(\.firstSeq) == [0] && rescued.map(\.lastSeq) == [9])
        var record = try #require(try await store.batch(batch.id))
        #expect(record.counts.rescued == 7)
        #expect(record.counts.running == 0)
        #expect(record.counts.succeeded == 3)
        // The rescued chunk holds only its own unfinished items, whatever
        // size is asked now; the rest of the segment was never leased.
        let again = try #require(try await Self.claim(store, "b", sizes: ChunkSizes(initial: 50), now: later))
        #expect(again.items.map(\.seq) == Array(3...9))
        // Rescued a second time: split in halves of its open items.
        let split = try await store.rescueExpiredLeases(now: later.addingTimeInterval(31), splitAfter: 2)
        #expect(split.map(\.split) == [true])
        let latest = later.addingTimeInterval(62)
        var seen: [Int64] = []
        while let next = try await Self.claim(store, "c", sizes: ChunkSizes(initial: 50), now: latest) {
            seen += next.items.map(\.seq)
            _ = try await store.checkpoint(
                next, outcomes: succeeded(next), finish: true, failBatch: nil, leaseDuration: 30, now: latest)
        }
        #expect(seen.sorted() == Array(3..<100))
        #expect(Set(seen).count == seen.count)
        record = try #require(try await store.batch(batch.id))
        #expect(record.status == .completed)
        #expect(record.counts.succeeded == 100)
        #expect(record.counts.rescued == 14)
        #expect(record.counts.running == 0)
    }

    @Test("items waiting for a later retry are not counted in a prefix", arguments: StoreFactory.all)
    func retriesInASegment(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: Self.automatic()), items: payloads(30))
        let start = Date()
        let all = try #require(try await Self.claim(store, sizes: ChunkSizes(initial: 30), now: start))
        #expect(all.items.count == 30)
        // Even items fail with a retry in an hour; odd ones succeed.
        let outcomes = all.items.map { item in
            item.seq % 2 == 0
                ? ItemOutcome(
                    seq: item.seq, previousStatus: item.status, attempt: 1, status: .failed,
                    error: ItemError.retryable("busy", "later"), nextAttemptAt: start.addingTimeInterval(3_600))
                : ItemOutcome(seq: item.seq, previousStatus: item.status, attempt: 1, status: .succeeded)
        }
        _ = try await store.checkpoint(
            all, outcomes: outcomes, finish: true, failBatch: nil, leaseDuration: 30, now: start)
        #expect(try await Self.claim(store, sizes: ChunkSizes(initial: 4), now: start) == nil)
        let due = start.addingTimeInterval(3_601)
        let first = try #require(try await Self.claim(store, sizes: ChunkSizes(initial: 4), now: due))
        #expect(first.items.map(\.seq) == [0, 2, 4, 6])
        var seen = first.items.map(\.seq)
        _ = try await store.checkpoint(
            first, outcomes: succeeded(first), finish: true, failBatch: nil, leaseDuration: 30, now: due)
        while let next = try await Self.claim(store, sizes: ChunkSizes(initial: 4), now: due) {
            seen += next.items.map(\.seq)
            _ = try await store.checkpoint(
                next, outcomes: succeeded(next), finish: true, failBatch: nil, leaseDuration: 30, now: due)
        }
        #expect(seen == Array(stride(from: 0, to: 30, by: 2)))
        let done = try #require(try await store.batch(batch.id))
        #expect(done.status == .completed)
        #expect(done.counts.succeeded == 30)
        #expect(done.counts.retried == 15)
    }
}
