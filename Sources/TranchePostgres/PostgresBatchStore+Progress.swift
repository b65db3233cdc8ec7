public import Foundation
import PostgresNIO
public import TrancheStore

extension PostgresBatchStore: ProgressStore {
    public func recordProgressSamples(at now: Date, minimumInterval: Double, retention: Double) async throws -> Int {
        try await write { db in
            let written = try await db.count(
                """
                INSERT INTO progress_samples(batch_key, at, done)
                SELECT b.key, \(now.milliseconds), b.succeeded + b.skipped + b.dead FROM batch_load b
                WHERE b.status IN (\(unescaped: SQLList.batchesInProgress))
                  AND NOT EXISTS (
                      SELECT 1 FROM progress_samples p
                      WHERE p.batch_key = b.key AND p.at > \(now.milliseconds(after: -minimumInterval)))
                ON CONFLICT DO NOTHING
                RETURNING 1
                """)
            try await db.run("DELETE FROM progress_samples WHERE at < \(now.milliseconds(after: -retention))")
            return written
        }
    }

    public func progress(of ids: [BatchID], since: Date) async throws -> [BatchID: StoredProgress] {
        guard !ids.isEmpty else { return [:] }
        let texts = ids.map(\.rawValue)
        return try await read { db in
            let chunks = try await db.rows(
                """
                SELECT b.id, count(c.id) FILTER (WHERE c.state = \(ChunkState.done.rawValue)), count(c.id)
                FROM batches b LEFT JOIN chunks c ON c.batch_key = b.key
                WHERE b.id = ANY(\(texts)) GROUP BY b.id
                """)
            let samples = try await db.rows(
                """
                SELECT b.id, p.at, p.done FROM progress_samples p JOIN batches b ON b.key = p.batch_key
                WHERE b.id = ANY(\(texts)) AND p.at >= \(since.milliseconds) ORDER BY p.batch_key, p.at
                """)
            return try StoredProgress.byBatch(
                ids, chunks: chunks.map(PostgresStoredRow.init), samples: samples.map(PostgresStoredRow.init))
        }
    }
}
