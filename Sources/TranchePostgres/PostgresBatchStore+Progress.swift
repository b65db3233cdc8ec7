public import Foundation
import PostgresNIO
public import TrancheStore

extension PostgresBatchStore: ProgressStore {
    public func recordProgressSamples(at now: Date, minimumInterval: Double, retention: Double) async throws -> Int {
        try await write { db in
            let written = try await db.count(
                """
                INSERT INTO progress_samples(batch_key, at, done)
                SELECT b.key, \(now.milliseconds), b.succeeded + b.skipped + b.dead FROM batches b
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
        let byText = Dictionary(ids.map { ($0.rawValue, $0) }, uniquingKeysWith: { first, _ in first })
        let texts = Array(byText.keys)
        return try await read { db in
            var result: [BatchID: StoredProgress] = [:]
            for row in try await db.rows(
                """
                SELECT b.id, count(c.id) FILTER (WHERE c.state = \(ChunkState.done.rawValue)), count(c.id)
                FROM batches b LEFT JOIN chunks c ON c.batch_key = b.key
                WHERE b.id = ANY(\(texts)) GROUP BY b.id
                """)
            {
                let stored = PostgresStoredRow(row: row)
                guard let id = byText[try stored.string(0)] else { continue }
                result[id] = StoredProgress(
                    samples: [], chunksDone: try stored.int64(1), chunksTotal: try stored.int64(2))
            }
            for row in try await db.rows(
                """
                SELECT b.id, p.at, p.done FROM progress_samples p JOIN batches b ON b.key = p.batch_key
                WHERE b.id = ANY(\(texts)) AND p.at >= \(since.milliseconds) ORDER BY p.batch_key, p.at
                """)
            {
                let stored = PostgresStoredRow(row: row)
                guard let id = byText[try stored.string(0)] else { continue }
                result[id]?.samples.append(
                    ProgressSample(at: Date(milliseconds: try stored.int64(1)), done: try stored.int64(2)))
            }
            return result
        }
    }
}
