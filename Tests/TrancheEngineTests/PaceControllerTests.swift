import Foundation
import Testing
import TrancheCore
import TrancheStore
import TrancheTestSupport

@testable import TrancheEngine

/// A node's adaptive pace and the stored pace it merges into.
@Suite("Pace controller")
struct PaceControllerTests {
    @Test("refusals counted while merges run all reach the stored pace, however many rounds the merges take")
    func everyRefusalMerged() async throws {
        try await EngineStore.sqlite.withSite { site in
            try await site.withStore { store in
                let limits = try #require(store as? any LimitStore)
                let key = LimitKey.batch(BatchID.generate())
                let pace = PaceController(
                    key: key, bucket: SharedBucket(rate: nil), ceiling: nil, type: "test", store: limits)
                // Refusals keep coming while merges are under way, so each
                // merge finds more to merge and goes round again.
                let count = await withTaskGroup(of: Int64.self) { group in
                    // And merges start whenever none runs, as at the end of chunks.
                    group.addTask {
                        for _ in 0..<1_000 {
                            await pace.save(to: limits, now: Date())
                            await Task.yield()
                        }
                        return 0
                    }
                    for _ in 0..<4 {
                        group.addTask {
                            for _ in 0..<3_000 {
                                await pace.observe(.refused(retryAfter: nil), at: .now, wall: Date())
                                await Task.yield()
                            }
                            return 3_000
                        }
                    }
                    return await group.reduce(0, +)
                }
                // A merge may still be under way: saving again until the row holds every refusal.
                try await waitUntil("every refusal counted on this node to reach the stored pace") {
                    await pace.save(to: limits, now: Date())
                    return try await limits.pace(key: key)?.throttled == count
                }
            }
        }
    }
}
