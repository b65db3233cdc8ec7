public import Foundation
import GRDB
public import TrancheStore

// Leased steps (prepare, finalize) on SQLite: one writer at a time, so a
// claim and its fence need no locks beyond the write transaction.

extension SQLiteBatchStore: LeasedStepStore {
    public func claimStep<Step: LeasedStep>(
        _ step: Step, owner: String, types: [String], leaseDuration: Double, now: Date
    ) async throws -> StepLease<Step>? {
        guard !types.isEmpty else { return nil }
        let kind = step.kind
        let placeholders = types.map { _ in "?" }.joined(separator: ", ")
        return try await write { db in
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT p.batch_key, b.id, p.type, p.attempts, b.dry_run FROM \(kind.table) p
                        JOIN batches b ON b.key = p.batch_key
                        WHERE p.type IN (\(placeholders)) AND \(kind.claimable(now: "\(now.milliseconds)", true: "1"))
                        ORDER BY p.batch_key LIMIT 1
                        """, arguments: StatementArguments(types))
            else { return nil }
            let stored = SQLiteRow(row: row)
            let attempt = try stored.int(3).adding(saturating: 1)
            guard let id = BatchID(try stored.string(1)) else {
                throw StoreError(.storage, "a stored batch id cannot be read")
            }
            try db.execute(
                sql: """
                    UPDATE \(kind.table) SET state = \(StepState.leased.sql), attempts = ?, lease_owner = ?,
                        lease_expires_at = ?
                    WHERE batch_key = ?
                    """,
                arguments: [attempt, owner, now.milliseconds(after: leaseDuration), try stored.int64(0)])
            return StepLease(
                step, batchID: id, type: try stored.string(2), owner: owner, attempt: attempt,
                dryRun: try stored.bool(4))
        }
    }

    public func renewStep<Step: LeasedStep>(_ lease: StepLease<Step>, leaseDuration: Double, now: Date) async throws
        -> Bool
    {
        try await write { db in
            try db.execute(
                sql: """
                    UPDATE \(lease.step.kind.table) SET lease_expires_at = ?
                    WHERE batch_key = (SELECT key FROM batches WHERE id = ?) AND \(StepKind.fence(attempt: "?", owner: "?"))
                    """,
                arguments: [now.milliseconds(after: leaseDuration), lease.batchID.rawValue, lease.attempt, lease.owner])
            return db.changesCount == 1
        }
    }

    public func steps<Step: LeasedStep>(_ step: Step, of ids: [BatchID]) async throws -> [BatchID: StepRecord<Step>] {
        guard !ids.isEmpty else { return [:] }
        return try await read { db in
            var records: [BatchID: StepRecord<Step>] = [:]
            let (list, arguments) = Self.inList(ids.map(\.rawValue))
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT \(step.kind.columns), (SELECT id FROM batches WHERE key = batch_key)
                    FROM \(step.kind.table) WHERE batch_key IN (SELECT key FROM batches WHERE id \(list))
                    """,
                arguments: arguments)
            for row in rows {
                let stored = SQLiteRow(row: row)
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
        _ db: Database, _ lease: StepLease<Step>, batchKey: Int64, state: StepState, now: Date
    ) throws -> Bool {
        try db.execute(
            sql: """
                UPDATE \(lease.step.kind.table) SET state = ?, lease_owner = NULL, lease_expires_at = NULL,
                    finished_at = ?
                WHERE batch_key = ? AND \(StepKind.fence(attempt: "?", owner: "?"))
                """,
            arguments: [state.rawValue, now.milliseconds, batchKey, lease.attempt, lease.owner])
        return db.changesCount == 1
    }
}
