public import Foundation
import GRDB
public import TrancheStore

// Preparations on SQLite (their lease: SQLiteBatchStore+Steps.swift).

extension SQLiteBatchStore: PrepareStore {
    public func registerPrepareTypes(_ types: [String], without: [String]) async throws {
        try await write { db in
            for type in types {
                try db.execute(
                    sql: "INSERT INTO prepare_types(type) VALUES (?) ON CONFLICT(type) DO NOTHING", arguments: [type])
            }
            for type in without where !types.contains(type) {
                try db.execute(sql: "DELETE FROM prepare_types WHERE type = ?", arguments: [type])
            }
            // Rows of batches that are gone (deleted, or forgotten after retention).
            try db.execute(
                sql: """
                    DELETE FROM preparations WHERE batch_key IN (
                        SELECT p.batch_key FROM preparations p LEFT JOIN batches b ON b.key = p.batch_key
                        WHERE b.key IS NULL)
                    """)
        }
    }

    public func completePreparation(_ lease: PreparationLease, _ outcome: PreparationOutcome, now: Date) async throws
        -> Bool
    {
        try await write { db in
            guard let stored = try Self.batch(db, id: lease.batchID) else { return false }
            guard
                try Self.completeStep(
                    db, lease, batchKey: stored.key, state: PrepareRules.state(after: lease, outcome), now: now)
            else { return false }
            if let preview = PrepareRules.preview(lease, outcome) {
                try db.execute(
                    sql: "UPDATE preparations SET preview = ? WHERE batch_key = ?",
                    arguments: [preview.text, stored.key])
            }
            guard stored.record.status == .preparing, let (action, reason) = PrepareRules.action(after: lease, outcome)
            else {
                _ = try Self.recordEvent(
                    db, stored, .prepared, at: now,
                    data: PrepareRules.eventData(lease).merging(["status": .string(stored.record.status.rawValue)]) {
                        $1
                    })
                return true
            }
            let applied = try Self.apply(
                db, stored, action, reason: reason, now: now, data: PrepareRules.eventData(lease))
            _ = try Self.finishIfDone(db, applied.batch, now: now)
            return true
        }
    }

    /// Gives a new batch a pending prepare step when its type has a `prepare`
    /// hook, in the transaction that creates it (a row left by a batch that
    /// had the same key goes first).
    static func storePreparation(_ db: Database, _ key: Int64, _ batch: NewBatch) throws {
        try db.execute(sql: "DELETE FROM preparations WHERE batch_key = ?", arguments: [key])
        try db.execute(
            sql: """
                INSERT INTO preparations(batch_key, type, queued_at)
                SELECT ?, type, ? FROM prepare_types WHERE type = ?
                """,
            arguments: [key, batch.createdAt.milliseconds, batch.type])
    }

    /// Whether the batch has a prepare step still to do.
    static func preparationWaits(_ db: Database, _ key: Int64) throws -> Bool {
        try Bool.fetchOne(
            db.cachedStatement(
                sql: """
                    SELECT EXISTS (SELECT 1 FROM preparations
                                   WHERE batch_key = ? AND state != \(StepState.done.sql))
                    """),
            arguments: [key]) ?? false
    }
}
