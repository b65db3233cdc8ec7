import PostgresNIO
import TrancheStore

extension PostgresBatchStore {
    /// The most due items a claim of `gated` leases (``ChunkSizeRules``);
    /// nil for a fixed chunk size. An automatic batch's waiting items are
    /// read with its shards' counters.
    static func claimLimit(_ db: PostgresConnection, _ gated: StoredBatch, _ sizes: ChunkSizes) async throws -> Int? {
        guard gated.record.options.chunkSize == nil else { return nil }
        return ChunkSizeRules.claimLimit(try await current(db, key: gated.key).record, sizes)
    }
}
