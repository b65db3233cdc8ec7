public import Foundation
import PostgresNIO
public import TrancheStore

// Leased steps (prepare, finalize) on PostgreSQL: a claim takes the row
// with FOR UPDATE SKIP LOCKED, so nodes claiming at once take different
// batches, and a completion checks its fence in the caller's transaction.

extension PostgresBatchStore: LeasedStepStore {
    public func claimStep<Step: LeasedStep>(
        _ step: Step, owner: String, types: [String], leaseDuration: Double, now: Date
    ) async throws -> StepLease<Step>? {
        guard !types.isEmpty else { return nil }
        let kind = step.kind
        let claimable = kind.claimable(now: "\(now.milliseconds)", true: "true")
        return try await write { db in
            guard
                let row = try await db.one(
                    """
                    UPDATE \(unescaped: kind.table) q SET state = \(unescaped: StepState.leased.sql),
                        attempts = q.attempts + 1, lease_owner = \(owner),
                        lease_expires_at = \(now.milliseconds(after: leaseDuration))
                    FROM batches b
                    WHERE b.key = q.batch_key AND q.batch_key = (
                        SELECT p.batch_key FROM \(unescaped: kind.table) p JOIN batches b ON b.key = p.batch_key
                        WHERE p.type = ANY(\(types)) AND \(unescaped: claimable)
                        ORDER BY p.batch_key LIMIT 1 FOR UPDATE OF p SKIP LOCKED)
                    RETURNING b.id, q.type, q.attempts, b.dry_run
                    """)
            else { return nil }
            let stored = PostgresStoredRow(row: row)
            guard let id = BatchID(try stored.string(0)) else {
                throw StoreError(.storage, "a stored batch id cannot be read")
            }
            return StepLease(
                step, batchID: id, type: try stored.string(1), owner: owner, attempt: try stored.int(2),
                dryRun: try stored.bool(3))
        }
    }

    public func renewStep<Step: LeasedStep>(_ lease: StepLease<Step>, leaseDuration: Double, now: Date) async throws
        -> Bool
    {
        try await write { db in
            try await db.count(
                """
                UPDATE \(unescaped: lease.step.kind.table)
                SET lease_expires_at = \(now.milliseconds(after: leaseDuration))
                WHERE batch_key = (SELECT key FROM batches WHERE id = \(lease.batchID.rawValue))
                  AND state = \(unescaped: StepState.leased.sql) AND attempts = \(lease.attempt)
                  AND lease_owner = \(lease.owner)
                RETURNING 1
                """) == 1
        }
    }

    public func steps<Step: LeasedStep>(_ step: Step, of ids: [BatchID]) async throws -> [BatchID: StepRecord<Step>] {
        guard !ids.isEmpty else { return [:] }
        return try await read { db in
            var records: [BatchID: StepRecord<Step>] = [:]
            let rows = try await db.rows(
                """
                SELECT \(unescaped: step.kind.columns), (SELECT id FROM batches WHERE key = batch_key)
                FROM \(unescaped: step.kind.table)
                WHERE batch_key IN (SELECT key FROM batches WHERE id = ANY(\(ids.map(\.rawValue))))
                """)
            for row in rows {
                let stored = PostgresStoredRow(row: row)
                guard let id = BatchID(try stored.string(6)) else { continue }
                records[id] = try StepRecord(row: stored, batchID: id)
            }
            return records
        }
    }

    /// Ends the lease of the batch's step in `state`, if `lease` is still
    /// the current one: false, nothing written, otherwise. The caller's
    /// transaction then records the rest.
    static func completeStep<Step: LeasedStep>(
        _ db: PostgresConnection, _ lease: StepLease<Step>, batchKey: Int64, state: StepState, now: Date
    ) async throws -> Bool {
        try await db.count(
            """
            UPDATE \(unescaped: lease.step.kind.table) SET state = \(state.rawValue), lease_owner = NULL,
                lease_expires_at = NULL, finished_at = \(now.milliseconds)
            WHERE batch_key = \(batchKey) AND state = \(unescaped: StepState.leased.sql)
              AND attempts = \(lease.attempt) AND lease_owner = \(lease.owner)
            RETURNING 1
            """) == 1
    }
}
