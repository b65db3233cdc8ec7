import Foundation
import Testing
import TranchePostgres
import TrancheStore
import TrancheTestSupport

/// Chains on PostgreSQL with two nodes: whichever node finishes a batch's
/// last chunk, and however their checkpoints interleave, the successor
/// starts exactly once.
@Suite("PostgreSQL linked batches", .testResources)
struct PostgresLinkTests {
    @Test("two nodes finishing a batch's last chunks at once start one successor")
    func successorOnceAcrossNodes() async throws {
        let url = try await TestPostgres.freshDatabaseURL()
        try await TestPostgres.withStore(url: url) { first in
            try await TestPostgres.withStore(url: url) { second in
                for _ in 0..<8 {
                    var batch = NewBatch(type: "t", options: options(chunkSize: 2))
                    batch.then = Successor(type: "next", context: JSONText(unchecked: "{}"))
                    let parent = try await first.createBatch(batch, items: payloads(4)).id
                    // Its two chunks, one leased by each node, finished together.
                    let leases = [
                        try #require(try await first.claimChunk(owner: "one", leaseDuration: 30, now: Date())),
                        try #require(try await second.claimChunk(owner: "two", leaseDuration: 30, now: Date())),
                    ]
                    #expect(Set(leases.map(\.batchID)) == [parent])
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for (store, lease) in zip([first, second], leases) {
                            group.addTask {
                                _ = try await store.checkpoint(
                                    lease, outcomes: succeeded(lease), finish: true, failBatch: nil,
                                    leaseDuration: 30, now: Date())
                            }
                        }
                        try await group.waitForAll()
                    }
                    #expect(try await first.batch(parent)?.status == .completed)
                    let children = try await second.links(of: parent).children
                    #expect(children.count == 1, "batch \(parent) has \(children.count) successors")
                    // Its successor runs now, so that the next parent's chunks are the only ones due.
                    #expect(try await first.drainAll() == 1)
                }
            }
        }
    }
}
