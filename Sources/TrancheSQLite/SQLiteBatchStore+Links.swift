public import Foundation
import GRDB
public import TrancheStore

// Linked batches (resubmits, chains) and confirming a dry run. Items are
// copied from batch to batch by `INSERT … SELECT`, never read into memory.
extension SQLiteBatchStore: LinkedBatchStore {
    public func resubmit(_ resubmission: Resubmission, idempotency: IdempotencyKey?) async throws
        -> IdempotentCreation
    {
        try await write { db in
            try Self.createIdempotently(
                db, idempotency, batchID: resubmission.id, createdAt: resubmission.createdAt
            ) {
                let parent = try Self.requireBatch(db, resubmission.parent)
                let statuses = try LinkRules.statusesToResubmit(
                    parent.record, resubmission.statuses, at: resubmission.createdAt)
                let child = try Self.createLinked(
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
            let stored = try Self.requireBatch(db, id)
            try LinkRules.checkDryRunConfirmable(stored.record)
            try db.execute(sql: "UPDATE batches SET dry_run = 0, result = NULL WHERE key = ?", arguments: [stored.key])
            let confirmed = try Self.apply(
                db, try Self.current(db, key: stored.key), .confirm, reason: nil, now: now,
                data: LinkRules.dryRunConfirmed(report: stored.record.result))
            return try Self.finishIfDone(db, confirmed.batch, now: now).batch.record
        }
    }

    /// Stores a new batch's `then` in the transaction that creates it.
    static func storeSuccessor(_ db: Database, _ batch: NewBatch) throws {
        guard let then = batch.then else { return }
        try db.execute(
            sql: "INSERT INTO batch_successors(batch_id, \(successorColumns)) VALUES (?, ?, ?, ?)",
            arguments: [batch.id.rawValue, then.type, then.context.text, try JSONText(encoding: then.options).text])
    }

    /// Starts the successor of a batch that has just completed, once: in the
    /// transaction that ended it, marking its `then` as started.
    static func startSuccessor(_ db: Database, _ stored: StoredBatch, now: Date) throws {
        guard LinkRules.startsSuccessor(stored.record),
            let row = try Row.fetchOne(
                db,
                sql: "SELECT \(successorColumns) FROM batch_successors WHERE batch_id = ? AND successor_id IS NULL",
                arguments: [stored.record.id.rawValue]),
            let successor = try Successor(row: SQLiteRow(row: row))
        else { return }
        let batch = LinkRules.child(of: stored.record, successor, at: now)
        try db.execute(
            sql: "UPDATE batch_successors SET successor_id = ? WHERE batch_id = ?",
            arguments: [batch.id.rawValue, stored.record.id.rawValue])
        _ = try createLinked(
            db, parent: stored, batch, kind: .chain, copying: "output", statuses: [.succeeded], now: now)
    }

    /// Creates `batch` as a child of `parent` holding, renumbered from 0 in
    /// seq order, the parent's items in `statuses` (their `column`: payload
    /// or output), with the chunks that cover them; then seals it.
    static func createLinked(
        _ db: Database, parent: StoredBatch, _ batch: NewBatch, kind: LinkKind, copying column: String,
        statuses: [ItemStatus], now: Date
    ) throws -> StoredBatch {
        let opened = try insertBatch(db, batch, items: [])
        try db.execute(
            sql: """
                INSERT INTO items(batch_key, seq, status, payload, updated_at)
                SELECT ?, row_number() OVER (ORDER BY seq) - 1, \(ItemStatus.pending.rawValue),
                       coalesce(\(column), 'null'), ?
                FROM items WHERE batch_key = ? AND status IN (\(SQLList.of(statuses)))
                """,
            arguments: [opened.key, now.milliseconds, parent.key])
        let total = Int64(db.changesCount)
        let size = LinkRules.chunkSize(batch.options)
        try db.execute(
            sql: """
                INSERT INTO chunks(batch_key, first_seq, last_seq, state)
                SELECT ?, seq, min(seq + ? - 1, ? - 1), \(ChunkState.pending.stored) FROM items
                WHERE batch_key = ? AND seq % ? = 0
                """,
            arguments: [opened.key, size, total, opened.key, size])
        var delta = BatchCounts()
        delta.total = total
        try addCounts(db, opened.key, delta)
        try db.execute(
            sql: "INSERT INTO batch_links(child_id, parent_id, kind, created_at) VALUES (?, ?, ?, ?)",
            arguments: [batch.id.rawValue, parent.record.id.rawValue, kind.rawValue, now.milliseconds])
        _ = try recordEvent(
            db, parent, .linked, at: now, data: LinkRules.linked(child: batch.id, kind: kind, items: total))
        return try seal(db, try current(db, key: opened.key), now: now).batch
    }

    /// Forgets the links and the successor of a batch being deleted.
    static func deleteLinks(_ db: Database, _ key: Int64) throws {
        guard let id = try String.fetchOne(db, sql: "SELECT id FROM batches WHERE key = ?", arguments: [key]) else {
            return
        }
        try db.execute(sql: "DELETE FROM batch_successors WHERE batch_id = ?", arguments: [id])
        try db.execute(sql: "DELETE FROM batch_links WHERE child_id = ? OR parent_id = ?", arguments: [id, id])
    }
}
