import Foundation
import Testing
import TrancheStore

/// The pure rules of automatic chunk sizes, without a database.
@Suite("Chunk size rules")
struct ChunkSizeRulesTests {
    static func record(chunkSize: Int?, total: Int64, running: Int64 = 0, failed: Int64 = 0) throws -> BatchRecord {
        var options = BatchOptions()
        options.chunkSize = chunkSize
        var counts = BatchCounts()
        counts.total = total
        counts.running = running
        counts.failed = failed
        return BatchRecord(
            id: try #require(BatchID("01234567-89ab-7def-8123-456789abcdef")), type: "t", owner: "o",
            status: .processing,
            pausedFrom: nil, context: JSONText(unchecked: "{}"), options: options, dryRun: false, priority: 0,
            sealed: true, counts: counts, failureReason: nil, result: nil, cursor: nil, createdAt: Date(),
            confirmedAt: nil, startedAt: nil, completedAt: nil, expiresAt: nil)
    }

    @Test("a fixed chunk size leases whole chunks; an automatic one what is asked, within the share")
    func claimLimit() throws {
        let fixed = try Self.record(chunkSize: 100, total: 1_000)
        #expect(ChunkSizeRules.claimLimit(fixed, ChunkSizes(initial: 5)) == nil)
        let automatic = try Self.record(chunkSize: nil, total: 1_000, running: 200, failed: 100)
        // 800 waiting (failed items wait for their retry too).
        #expect(ChunkSizeRules.claimLimit(automatic, ChunkSizes(initial: 100, workers: 1)) == 100)
        #expect(ChunkSizeRules.claimLimit(automatic, ChunkSizes(initial: 100, workers: 16)) == 50)
        #expect(ChunkSizeRules.claimLimit(automatic, ChunkSizes(initial: 100, workers: 10_000)) == 1)
        #expect(
            ChunkSizeRules.claimLimit(automatic, ChunkSizes(initial: 100, perBatch: [automatic.id: 7], workers: 1))
                == 7)
        // Whatever a caller asks, at least one and at most a claim's maximum.
        let huge = try Self.record(chunkSize: nil, total: 10_000_000)
        #expect(ChunkSizeRules.claimLimit(huge, ChunkSizes(initial: .max, workers: .min)) == 2_000)
        #expect(ChunkSizeRules.claimLimit(huge, ChunkSizes(initial: -5)) == 1)
        var damaged = huge
        damaged.counts.failed = .max
        #expect(ChunkSizeRules.claimLimit(damaged, ChunkSizes(initial: 100)) == 100)
    }

    @Test("segments: a fixed size, or the largest segment")
    func segments() {
        var options = BatchOptions()
        #expect(ChunkSizeRules.segmentSize(options) == 10_000)
        options.chunkSize = 250
        #expect(ChunkSizeRules.segmentSize(options) == 250)
    }

    @Test("options without chunk_size are automatic; a stored chunk_size (every batch stored before) is kept")
    func optionsDecoding() throws {
        let automatic: BatchOptions = try JSONText(unchecked: "{\"concurrency\":4}").decode()
        #expect(automatic.chunkSize == nil)
        let stored: BatchOptions = try JSONText(unchecked: "{\"chunk_size\":100,\"concurrency\":8}").decode()
        #expect(stored.chunkSize == 100)
        #expect(stored.maxChunksInFlight == 2)
        // Automatic chunks may hold one item: the cap counts them so.
        #expect(automatic.maxChunksInFlight == 5)
        #expect(!(try JSONText(encoding: BatchOptions()).text.contains("chunk_size")))
        #expect(throws: OptionsError.self) {
            var options = BatchOptions()
            options.chunkSize = 0
            try options.validate()
        }
    }
}
