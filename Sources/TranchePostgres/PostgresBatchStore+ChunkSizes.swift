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

    /// Cuts a just-claimed chunk after seq `after` (``ChunkSizeRules/cut(_:limit:)``):
    /// the rest becomes a pending chunk with the same `ready_at` and
    /// `rescues`. Returns the leased chunk's last seq.
    static func cutClaimed(_ db: PostgresConnection, chunkID: Int64, after cut: Int64?, lastSeq: Int64) async throws
        -> Int64
    {
        guard let cut, cut < lastSeq else { return lastSeq }
        try await db.run(
            """
            WITH cut AS (UPDATE chunks SET last_seq = \(cut) WHERE id = \(chunkID) RETURNING batch_key, ready_at, rescues)
            INSERT INTO chunks(batch_key, first_seq, last_seq, state, ready_at, rescues)
            SELECT batch_key, \(cut + 1), \(lastSeq), \(ChunkState.pending.rawValue), ready_at, rescues FROM cut
            """)
        return cut
    }
}
