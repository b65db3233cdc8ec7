public import Foundation
import GRDB
public import TrancheStore

// Preparations on SQLite: one writer at a time, so a claim and its fence
// need no locks beyond the write transaction.

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

    public func claimPreparation(owner: String, types: [String], leaseDuration: Double, now: Date) async throws
        -> PreparationLease?
    {
        guard !types.isEmpty else { return nil }
        let placeholders = types.map { _ in "?" }.joined(separator: ", ")
        return try await write { db in
            var arguments = StatementArguments(types)
            arguments += [now.milliseconds, now.milliseconds]
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT p.batch_key, b.id, p.type, p.attempts, b.dry_run FROM preparations p
                        JOIN batches b ON b.key = p.batch_key
                        WHERE p.type IN (\(placeholders)) AND \(PrepareRules.claimable(now: "?", true: "1"))
                        ORDER BY p.batch_key LIMIT 1
                        """, arguments: arguments)
            else { return nil }
            let stored = SQLiteRow(row: row)
            let attempt = try stored.int(3).adding(saturating: 1)
            guard let id = BatchID(try stored.string(1)) else {
                throw StoreError(.storage, "a stored batch id cannot be read")
            }
            try db.execute(
                sql: """
                    UPDATE preparations SET state = 'leased', attempts = ?, lease_owner = ?, lease_expires_at = ?
                    WHERE batch_key = ?
                    """,
                arguments: [attempt, owner, now.milliseconds(after: leaseDuration), try stored.int64(0)])
            return PreparationLease(
                batchID: id, type: try stored.string(2), owner: owner, attempt: attempt, dryRun: try stored.bool(4))
        }
    }

    public func renewPreparation(_ lease: PreparationLease, leaseDuration: Double, now: Date) async throws -> Bool {
        try await write { db in
            try db.execute(
                sql: """
                    UPDATE preparations SET lease_expires_at = ?
                    WHERE batch_key = (SELECT key FROM batches WHERE id = ?) AND state = 'leased'
                      AND attempts = ? AND lease_owner = ?
                    """,
                arguments: [now.milliseconds(after: leaseDuration), lease.batchID.rawValue, lease.attempt, lease.owner])
            return db.changesCount == 1
        }
    }

    public func completePreparation(_ lease: PreparationLease, _ outcome: PreparationOutcome, now: Date) async throws
        -> Bool
    {
        try await write { db in
            guard let stored = try Self.batch(db, id: lease.batchID) else { return false }
            try db.execute(
                sql: """
                    UPDATE preparations SET state = ?, lease_owner = NULL, lease_expires_at = NULL, finished_at = ?,
                        preview = coalesce(?, preview)
                    WHERE batch_key = ? AND state = 'leased' AND attempts = ? AND lease_owner = ?
                    """,
                arguments: [
                    PrepareRules.state(after: lease, outcome).rawValue, now.milliseconds,
                    PrepareRules.preview(lease, outcome)?.text, stored.key, lease.attempt, lease.owner,
                ])
            guard db.changesCount == 1 else { return false }
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

    public func preparation(of id: BatchID) async throws -> PreparationRecord? {
        try await read { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT \(PrepareRules.columns) FROM preparations
                    WHERE batch_key = (SELECT key FROM batches WHERE id = ?)
                    """,
                arguments: [id.rawValue]
            ).map { try PreparationRecord(row: SQLiteRow(row: $0), batchID: id) }
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
                                   WHERE batch_key = ? AND state != '\(PreparationState.done.rawValue)')
                    """),
            arguments: [key]) ?? false
    }
}
