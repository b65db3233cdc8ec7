import Foundation
import Testing
import TrancheCore
import TrancheStore

/// Large checkpoints on every store: thousands of outcomes of every kind in
/// one call, written once however often the call is repeated.
@Suite("Checkpoints of many mixed outcomes", .testResources)
struct CheckpointConformanceTests {
    /// 1,000 plain successes (one range), then a repeating mix: plain,
    /// output, skipped, dead (a NUL in its message) and failed with a retry.
    static func outcomes(_ lease: ChunkLease, retryAt: Date) -> [ItemOutcome] {
        lease.items.map { item in
            var outcome = ItemOutcome(
                seq: item.seq, previousStatus: item.status, attempt: item.attempts + 1, status: .succeeded)
            guard item.seq >= 1_000 else { return outcome }
            switch item.seq % 5 {
            case 1: outcome.output = JSONText(unchecked: "{\"id\":\(item.seq)}")
            case 2:
                outcome.status = .skipped
                outcome.error = .permanent("bad", "item \(item.seq) is bad")
            case 3:
                outcome.status = .dead
                outcome.error = ItemError(code: "exit_1", message: "died\u{0}\(item.seq)", category: .retryable)
            case 4:
                outcome.status = .failed
                outcome.error = .retryable("http_503", "busy")
                outcome.nextAttemptAt = retryAt
            default: break
            }
            return outcome
        }
    }

    @Test(
        "5,000 mixed outcomes checkpointed twice (a retry after a lost commit) move the counters once",
        arguments: StoreFactory.all)
    func repeatedCheckpoint(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let count = 5_000
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: count, concurrency: 1)), items: payloads(count))
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        #expect(lease.items.count == count)
        let retryAt = Date().addingTimeInterval(3_600)
        let outcomes = Self.outcomes(lease, retryAt: retryAt)
        let perKind = Int64((count - 1_000) / 5)
        let first = try await store.checkpoint(
            lease, outcomes: outcomes.shuffled(), finish: false, failBatch: nil, leaseDuration: 30, now: Date())
        #expect(first.counts.succeeded == 1_000 + 2 * perKind)
        #expect(first.counts.skipped == perKind && first.counts.dead == perKind && first.counts.failed == perKind)
        #expect(first.counts.pending == 0 && first.counts.running == 0)
        let dead = first.events.filter { $0.type == .itemDead }
        #expect(dead.count == Int(perKind))
        let ordered = dead.map(\.id) == dead.map(\.id).sorted() && Set(dead.map(\.id)).count == dead.count
        #expect(ordered, "item.dead events have distinct ids, in the order returned")

        let second = try await store.checkpoint(
            lease, outcomes: outcomes.shuffled(), finish: false, failBatch: nil, leaseDuration: 30, now: Date())
        #expect(second.counts == first.counts)
        #expect(second.events.filter { $0.type == .itemDead }.count == 0)
        let stored = try await store.events(of: batch.id, afterID: 0, limit: 10_000).filter { $0.type == .itemDead }
        let same = stored.map(\.id) == dead.map(\.id)
        #expect(same, "the stored item.dead events are the first checkpoint's, \(stored.count) of \(dead.count)")

        let items = try await store.items(of: batch.id, status: nil, afterSeq: 999, limit: 5)
        #expect(items.map(\.seq) == [1_000, 1_001, 1_002, 1_003, 1_004])
        #expect(items.map(\.status) == [.succeeded, .succeeded, .skipped, .dead, .failed])
        #expect(items.allSatisfy { $0.attempts == 1 })
        #expect(items[0].output == nil && items[0].error == nil)
        #expect(items[1].output?.text == "{\"id\":1001}" && items[1].error == nil)
        #expect(items[2].error == .permanent("bad", "item 1002 is bad") && items[2].nextAttemptAt == nil)
        #expect(items[3].error?.message == "died\u{FFFD}1003" && items[3].output == nil)
        #expect(items[4].error?.code == "http_503")
        let due = try #require(items[4].nextAttemptAt)
        #expect(abs(due.timeIntervalSince(retryAt)) < 0.01)
        let plain = try await store.items(of: batch.id, status: nil, afterSeq: 499, limit: 1)
        #expect(plain.first?.status == .succeeded && plain.first?.output == nil)
    }
}
