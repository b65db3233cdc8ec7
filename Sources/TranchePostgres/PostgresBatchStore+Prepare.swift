public import Foundation
import PostgresNIO
public import TrancheStore

// Preparations on PostgreSQL (their lease: PostgresBatchStore+Steps.swift):
// the completion locks the batch and checks its fence.

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

    public func completePreparation(_ lease: PreparationLease, _ outcome: PreparationOutcome, now: Date) async throws
        -> Bool
    {
        try await write { db in
            guard let stored = try await Self.batch(db, id: lease.batchID, lock: true) else { return false }
            guard
                try await Self.completeStep(
                    db, lease, batchKey: stored.key, state: PrepareRules.state(after: lease, outcome), now: now)
            else { return false }
            if let preview = PrepareRules.preview(lease, outcome) {
                try await db.run("UPDATE preparations SET preview = \(preview.text) WHERE batch_key = \(stored.key)")
            }
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
            SELECT 1 FROM preparations WHERE batch_key = \(key) AND state <> \(unescaped: StepState.done.sql)
            """) != nil
    }
}
