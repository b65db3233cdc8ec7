import GRDB
import TrancheStore

extension SQLiteBatchStore {
    /// Cuts a just-claimed chunk after seq `after` (``ChunkSizeRules/cut(_:limit:)``):
    /// the rest becomes a pending chunk with the same `ready_at` and
    /// `rescues`. Returns the leased chunk's last seq.
    static func cutClaimed(_ db: Database, chunkID: Int64, after cut: Int64?, lastSeq: Int64) throws -> Int64 {
        guard let cut, cut < lastSeq else { return lastSeq }
        try db.cachedStatement(
            sql: """
                INSERT INTO chunks(batch_key, first_seq, last_seq, state, ready_at, rescues)
                SELECT batch_key, ?, last_seq, \(ChunkState.pending.stored), ready_at, rescues FROM chunks WHERE id = ?
                """
        ).execute(arguments: [cut + 1, chunkID])
        try db.cachedStatement(sql: "UPDATE chunks SET last_seq = ? WHERE id = ?").execute(arguments: [cut, chunkID])
        return cut
    }
}
