public import Foundation
import PostgresNIO
public import TrancheStore

// Linked batches (resubmits, chains) and confirming a dry run. Items are
// copied from batch to batch by `INSERT … SELECT`, never read into memory.
extension PostgresBatchStore: LinkedBatchStore {
    public func resubmit(_ resubmission: Resubmission, idempotency: IdempotencyKey?) async throws
        -> IdempotentCreation
    {
        try await write { db in
            try await Self.createIdempotently(
                db, idempotency, batchID: resubmission.id, createdAt: resubmission.createdAt
            ) {
                let parent = try await Self.requireBatch(db, resubmission.parent)
                let statuses = try LinkRules.statusesToResubmit(
                    parent.record, resubmission.statuses, at: resubmission.createdAt)
                let child = try await Self.createLinked(
                    db, parent: parent, LinkRules.child(of: parent.record, resubmission), kind: .resubmit,
                    copying: "payload", statuses: statuses, now: resubmission.createdAt)
                guard child.record.counts.total > 0 else { throw LinkRules.nothingToResubmit(parent.record, statuses) }
                return child
            }
        }
    }

    public func links(of id: BatchID) async throws -> BatchLinks {
        try await links(of: [id])[id] ?? BatchLinks()
    }

    public func confirmDryRun(_ id: BatchID, at now: Date) async throws -> BatchRecord {
        try await write { db in
            let stored = try await Self.requireBatch(db, id)
            try LinkRules.checkDryRunConfirmable(stored.record)
            try await db.run("UPDATE batches SET dry_run = false, result = NULL WHERE key = \(stored.key)")
            let confirmed = try await Self.apply(
                db, try await Self.current(db, key: stored.key), .confirm, reason: nil, now: now,
                data: LinkRules.dryRunConfirmed(report: stored.record.result))
            return try await Self.finishIfDone(db, confirmed.batch, now: now).batch.record
        }
    }

    /// Stores a new batch's `then` in the transaction that creates it.
    static func storeSuccessor(_ db: PostgresConnection, _ batch: NewBatch) async throws {
        guard let then = batch.then else { return }
        let options = try JSONText(encoding: then.options).text
        try await db.run(
            """
            INSERT INTO batch_successors(batch_id, \(unescaped: successorColumns))
            VALUES (\(batch.id.rawValue), \(then.type), \(then.context.text), \(options))
            """)
    }

    /// Starts the successor of a batch that has just completed, once: in the
    /// transaction that ended it (which holds the batch row), claiming its
    /// `then` by a conditional update, so no other node can start it too.
    static func startSuccessor(_ db: PostgresConnection, _ stored: StoredBatch, now: Date) async throws {
        guard LinkRules.startsSuccessor(stored.record),
            let row = try await db.one(
                """
                SELECT \(unescaped: successorColumns) FROM batch_successors
                WHERE batch_id = \(stored.record.id.rawValue) AND successor_id IS NULL FOR UPDATE
                """),
            let successor = try Successor(row: PostgresStoredRow(row: row))
        else { return }
        let batch = LinkRules.child(of: stored.record, successor, at: now)
        let claimed = try await db.count(
            """
            UPDATE batch_successors SET successor_id = \(batch.id.rawValue)
            WHERE batch_id = \(stored.record.id.rawValue) AND successor_id IS NULL RETURNING 1
            """)
        guard claimed == 1 else { return }
        _ = try await createLinked(
            db, parent: stored, batch, kind: .chain, copying: "output", statuses: [.succeeded], now: now)
    }

    /// Creates `batch` as a child of `parent` holding, renumbered from 0 in
    /// seq order, the parent's items in `statuses` (their `column`: payload
    /// or output), with the chunks that cover them; then seals it.
    static func createLinked(
        _ db: PostgresConnection, parent: StoredBatch, _ batch: NewBatch, kind: LinkKind, copying column: String,
        statuses: [ItemStatus], now: Date
    ) async throws -> StoredBatch {
        let opened = try await insertBatch(db, batch, items: [])
        let inserted = try await db.one(
            """
            WITH copied AS (
                INSERT INTO items(batch_key, seq, status, payload, updated_at)
                SELECT \(opened.key), row_number() OVER (ORDER BY seq) - 1, \(Int16(ItemStatus.pending.rawValue)),
                       coalesce(\(unescaped: column), 'null'), \(now.milliseconds)
                FROM items WHERE batch_key = \(parent.key) AND status IN (\(unescaped: SQLList.of(statuses)))
                RETURNING 1)
            SELECT count(*) FROM copied
            """)
        let total = try inserted.map { try PostgresStoredRow(row: $0).int64(0) } ?? 0
        let size = LinkRules.chunkSize(batch.options)
        try await db.run(
            """
            INSERT INTO chunks(batch_key, first_seq, last_seq, state)
            SELECT \(opened.key), seq, least(seq + \(size) - 1, \(total) - 1), \(ChunkState.pending.rawValue)
            FROM items WHERE batch_key = \(opened.key) AND seq % \(size) = 0
            """)
        var delta = BatchCounts()
        delta.total = total
        try await addCounts(db, opened.key, delta)
        try await db.run(
            """
            INSERT INTO batch_links(child_id, parent_id, kind, created_at)
            VALUES (\(batch.id.rawValue), \(parent.record.id.rawValue), \(kind.rawValue), \(now.milliseconds))
            """)
        if total > 0 { try await db.notifyWork() }
        _ = try await recordEvent(
            db, parent, .linked, at: now, data: LinkRules.linked(child: batch.id, kind: kind, items: total))
        return try await seal(db, try await current(db, key: opened.key), now: now).batch
    }

    /// Forgets the links and the successor of a batch being deleted.
    static func deleteLinks(_ db: PostgresConnection, _ key: Int64) async throws {
        try await db.run(
            "DELETE FROM batch_successors WHERE batch_id = (SELECT id FROM batches WHERE key = \(key))")
        try await db.run(
            """
            DELETE FROM batch_links WHERE child_id = (SELECT id FROM batches WHERE key = \(key))
               OR parent_id = (SELECT id FROM batches WHERE key = \(key))
            """)
    }
}
