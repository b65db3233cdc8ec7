public import Foundation
import PostgresNIO
public import TrancheStore

// Preparations on PostgreSQL: a claim takes the row with FOR UPDATE SKIP
// LOCKED, so nodes claiming at once take different batches, and the
// completion locks the batch and checks its fence.

extension PostgresBatchStore: PrepareStore {
    public func registerPrepareTypes(_ types: [String], without: [String]) async throws {
        try await write { db in
            for type in types {
                try await db.run("INSERT INTO prepare_types(type) VALUES (\(type)) ON CONFLICT (type) DO NOTHING")
            }
            let others = without.filter { !types.contains($0) }
            if !others.isEmpty {
                try await db.run("DELETE FROM prepare_types WHERE type = ANY(\(others))")
            }
            // Rows of batches that are gone (deleted, or forgotten after retention).
            try await db.run(
                """
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
        let claimable = PrepareRules.claimable(now: "\(now.milliseconds)", true: "true")
        return try await write { db in
            guard
                let row = try await db.one(
                    """
                    UPDATE preparations q SET state = 'leased', attempts = q.attempts + 1, lease_owner = \(owner),
                        lease_expires_at = \(now.milliseconds(after: leaseDuration))
                    FROM batches b
                    WHERE b.key = q.batch_key AND q.batch_key = (
                        SELECT p.batch_key FROM preparations p JOIN batches b ON b.key = p.batch_key
                        WHERE p.type = ANY(\(types)) AND \(unescaped: claimable)
                        ORDER BY p.batch_key LIMIT 1 FOR UPDATE OF p SKIP LOCKED)
                    RETURNING b.id, q.type, q.attempts, b.dry_run
                    """)
            else { return nil }
            let stored = PostgresStoredRow(row: row)
            guard let id = BatchID(try stored.string(0)) else {
                throw StoreError(.storage, "a stored batch id cannot be read")
            }
            return PreparationLease(
                batchID: id, type: try stored.string(1), owner: owner, attempt: try stored.int(2),
                dryRun: try stored.bool(3))
        }
    }

    public func renewPreparation(_ lease: PreparationLease, leaseDuration: Double, now: Date) async throws -> Bool {
        try await write { db in
            try await db.count(
                """
                UPDATE preparations SET lease_expires_at = \(now.milliseconds(after: leaseDuration))
                WHERE batch_key = (SELECT key FROM batches WHERE id = \(lease.batchID.rawValue))
                  AND state = 'leased' AND attempts = \(lease.attempt) AND lease_owner = \(lease.owner)
                RETURNING 1
                """) == 1
        }
    }

    public func completePreparation(_ lease: PreparationLease, _ outcome: PreparationOutcome, now: Date) async throws
        -> Bool
    {
        try await write { db in
            guard let stored = try await Self.batch(db, id: lease.batchID, lock: true) else { return false }
            let fenced = try await db.count(
                """
                UPDATE preparations SET state = \(PrepareRules.state(after: lease, outcome).rawValue),
                    lease_owner = NULL, lease_expires_at = NULL, finished_at = \(now.milliseconds),
                    preview = coalesce(\(PrepareRules.preview(lease, outcome)?.text), preview)
                WHERE batch_key = \(stored.key) AND state = 'leased' AND attempts = \(lease.attempt)
                  AND lease_owner = \(lease.owner)
                RETURNING 1
                """)
            guard fenced == 1 else { return false }
            guard stored.record.status == .preparing, let (action, reason) = PrepareRules.action(after: lease, outcome)
            else {
                _ = try await Self.recordEvent(
                    db, stored, .prepared, at: now,
                    data: PrepareRules.eventData(lease).merging(["status": .string(stored.record.status.rawValue)]) {
                        $1
                    })
                return true
            }
            let applied = try await Self.apply(
                db, stored, action, reason: reason, now: now, data: PrepareRules.eventData(lease))
            _ = try await Self.finishIfDone(db, applied.batch, now: now)
            return true
        }
    }

    public func preparation(of id: BatchID) async throws -> PreparationRecord? {
        try await read { db in
            try await db.one(
                """
                SELECT \(unescaped: PrepareRules.columns) FROM preparations
                WHERE batch_key = (SELECT key FROM batches WHERE id = \(id.rawValue))
                """
            ).map { try PreparationRecord(row: PostgresStoredRow(row: $0), batchID: id) }
        }
    }

    /// Gives a new batch a pending prepare step when its type has a `prepare`
    /// hook, in the transaction that creates it.
    static func storePreparation(_ db: PostgresConnection, _ key: Int64, _ batch: NewBatch) async throws {
        try await db.run(
            """
            INSERT INTO preparations(batch_key, type, queued_at)
            SELECT \(key), type, \(batch.createdAt.milliseconds)::bigint FROM prepare_types WHERE type = \(batch.type)
            """)
    }

    /// Whether the batch has a prepare step still to do.
    static func preparationWaits(_ db: PostgresConnection, _ key: Int64) async throws -> Bool {
        try await db.one(
            """
            SELECT 1 FROM preparations WHERE batch_key = \(key) AND state <> \(PreparationState.done.rawValue)
            """) != nil
    }
}
