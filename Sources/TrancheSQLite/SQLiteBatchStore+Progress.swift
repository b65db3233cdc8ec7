public import Foundation
import GRDB
public import TrancheStore

extension SQLiteBatchStore: ProgressStore {
    public func recordProgressSamples(at now: Date, minimumInterval: Double, retention: Double) async throws -> Int {
        try await write { db in
            try db.execute(
                sql: """
                    INSERT OR IGNORE INTO progress_samples(batch_key, at, done)
                    SELECT b.key, ?1, b.succeeded + b.skipped + b.dead FROM batches b
                    WHERE b.status IN (\(SQLList.batchesInProgress))
                      AND NOT EXISTS (SELECT 1 FROM progress_samples p WHERE p.batch_key = b.key AND p.at > ?2)
                    """,
                arguments: [now.milliseconds, now.milliseconds(after: -minimumInterval)])
            let written = db.changesCount
            try db.execute(
                sql: "DELETE FROM progress_samples WHERE at < ?", arguments: [now.milliseconds(after: -retention)])
            return written
        }
    }

    public func progress(of ids: [BatchID], since: Date) async throws -> [BatchID: StoredProgress] {
        guard !ids.isEmpty else { return [:] }
        let texts = ids.map(\.rawValue)
        return try await read { db in
            let marks = databaseQuestionMarks(count: texts.count)
            let chunks = try Row.fetchAll(
                db,
                sql: """
                    SELECT b.id, coalesce(sum(c.state = \(ChunkState.done.stored)), 0), count(c.id)
                    FROM batches b LEFT JOIN chunks c ON c.batch_key = b.key
                    WHERE b.id IN (\(marks)) GROUP BY b.id
                    """,
                arguments: StatementArguments(texts))
            let samples = try Row.fetchAll(
                db,
                sql: """
                    SELECT b.id, p.at, p.done FROM progress_samples p JOIN batches b ON b.key = p.batch_key
                    WHERE b.id IN (\(marks)) AND p.at >= ? ORDER BY p.batch_key, p.at
                    """,
                arguments: StatementArguments(texts + [since.milliseconds.databaseValue]))
            return try StoredProgress.byBatch(
                ids, chunks: chunks.map(SQLiteRow.init), samples: samples.map(SQLiteRow.init))
        }
    }
}
