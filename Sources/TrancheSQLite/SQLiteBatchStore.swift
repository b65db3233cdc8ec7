public import Foundation
import GRDB
public import TrancheStore

/// The embedded store: one SQLite file in WAL mode, a single writer
/// serialising every write, and a pool of readers for queries.
///
/// Durable by default (`synchronous=FULL`): an acknowledged write survives
/// power loss. ``Durability/normal`` trades the last commits on power loss
/// (never on a process crash) for fewer fsyncs.
public final class SQLiteBatchStore: BatchStore {
    /// How hard a commit tries to reach the disk.
    public struct Durability: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        /// `synchronous=FULL`: every commit is fsynced (the default).
        public static let full = Durability(rawValue: "full")
        /// `synchronous=NORMAL`: WAL is fsynced at checkpoints only; a power
        /// loss may lose the last commits, a process crash loses nothing.
        public static let normal = Durability(rawValue: "normal")
        public var description: String { rawValue }
    }

    /// Settings for opening a store.
    public struct Configuration: Sendable {
        /// Default `.full`.
        public var durability: Durability = .full
        /// Concurrent readers for queries. Default 4.
        public var readers: Int = 4
        /// The size in bytes above which maintenance checkpoints the WAL and
        /// truncates it, so it stays bounded under a steady load. Default 64 MiB.
        public var walLimit: Int = 64 << 20

        public init(durability: Durability = .full, readers: Int = 4, walLimit: Int = 64 << 20) {
            self.durability = durability
            self.readers = readers
            self.walLimit = walLimit
        }
    }

    let pool: DatabasePool
    /// The file's path.
    public let path: String
    let walLimit: Int

    /// Opens (creating if needed) the store at `path` and runs its migrations.
    public init(path: String, configuration: Configuration = Configuration()) throws {
        var config = GRDB.Configuration()
        config.busyMode = .timeout(10)
        config.maximumReaderCount = max(1, configuration.readers)
        config.foreignKeysEnabled = false
        let synchronous = configuration.durability == .normal ? "NORMAL" : "FULL"
        let walLimit = max(1 << 20, configuration.walLimit)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
            try db.execute(sql: "PRAGMA cache_size = -16000")
            try db.execute(sql: "PRAGMA journal_size_limit = \(walLimit)")
        }
        self.path = path
        self.walLimit = walLimit
        self.pool = try DatabasePool(path: path, configuration: config)
        try Schema.migrator.migrate(pool)
    }

    // MARK: - Submission

    public func createBatch(_ batch: NewBatch, items: [NewItem]) async throws -> BatchRecord {
        try await write { db in try Self.insertBatch(db, batch, items: items).record }
    }

    /// Stores a batch, its first items and its first events inside the
    /// caller's transaction (the idempotent submit adds its record to the same one).
    static func insertBatch(_ db: Database, _ batch: NewBatch, items: [NewItem]) throws -> StoredBatch {
        let optionsText = try JSONText(encoding: batch.options).text
        let now = batch.createdAt
        try db.execute(
            sql: """
                INSERT INTO batches(id, type, owner, status, context, options, dry_run, priority, sealed,
                                    max_chunks, created_at)
                VALUES (?, ?, ?, '\(BatchStatus.created.rawValue)', ?, ?, ?, ?, 0, ?, ?)
                """,
            arguments: [
                batch.id.rawValue, batch.type, batch.owner, batch.context.text, optionsText, batch.dryRun,
                batch.priority, batch.options.maxChunksInFlight, now.milliseconds,
            ])
        let key = db.lastInsertedRowID
        _ = try Self.recordEvent(
            db, try Self.current(db, key: key), .created, at: now,
            data: ["status": .string(BatchStatus.created.rawValue)])
        try Self.insertItems(db, try Self.current(db, key: key), startSeq: 0, items: items, now: now)
        try Self.storeSuccessor(db, batch)
        try Self.storePreparation(db, key, batch)
        let stored = try Self.current(db, key: key)
        if batch.sealed { return try Self.seal(db, stored, now: now).batch }
        return try Self.apply(db, stored, BatchRules.actionsForStreamingBatch(stored.record), now: now).batch
    }

    public func appendItems(
        to id: BatchID, startSeq: Int64, items: [NewItem], cursor: JSONText?, at now: Date
    ) async throws -> AppendResult {
        try await write { db in
            let stored = try Self.requireBatch(db, id)
            let total = stored.record.counts.total
            let fresh = items.dropFirst(
                try stored.record.itemsAlreadyStored(appendingAt: startSeq, count: items.count))
            try Self.insertItems(db, stored, startSeq: total, items: fresh, now: now)
            if let cursor {
                try db.execute(
                    sql: "UPDATE batches SET cursor = ? WHERE key = ?", arguments: [cursor.text, stored.key])
            }
            return AppendResult(inserted: fresh.count, total: total + Int64(fresh.count))
        }
    }

    public func seal(_ id: BatchID, at now: Date) async throws -> BatchRecord {
        try await write { db in
            let stored = try Self.requireBatch(db, id)
            return try Self.seal(db, stored, now: now).batch.record
        }
    }

    public func transition(_ id: BatchID, _ action: LifecycleAction, reason: String?, at now: Date) async throws
        -> BatchRecord
    {
        try await write { db in
            let stored = try Self.requireBatch(db, id)
            return try Self.apply(db, stored, action, reason: reason, now: now).batch.record
        }
    }

    public func retry(_ id: BatchID, statuses: Set<ItemStatus>, at now: Date) async throws -> (BatchRecord, Int64) {
        try await write { db in
            let stored = try Self.requireBatch(db, id)
            let reset = try BatchRules.statusesToRetry(stored.record, statuses, at: now)
            guard !reset.isEmpty else { return (stored.record, 0) }
            try db.execute(
                sql: """
                    UPDATE items SET status = \(ItemStatus.pending.rawValue), attempts = 0, next_attempt_at = NULL,
                        error_code = NULL, error_message = NULL, error_category = NULL, updated_at = ?
                    WHERE batch_key = ? AND status IN (\(SQLList.of(reset)))
                      AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.batch_key = items.batch_key
                                      AND c.state = \(ChunkState.leased.stored)
                                      AND items.seq BETWEEN c.first_seq AND c.last_seq)
                    """,
                arguments: [now.milliseconds, stored.key])
            let count = Int64(db.changesCount)
            try db.execute(
                sql: """
                    UPDATE chunks SET state = \(ChunkState.pending.stored), ready_at = 0, rescues = 0
                    WHERE batch_key = ? AND state = \(ChunkState.done.stored) AND EXISTS (
                        SELECT 1 FROM items i WHERE i.batch_key = chunks.batch_key
                          AND i.status = \(ItemStatus.pending.rawValue)
                          AND i.seq BETWEEN chunks.first_seq AND chunks.last_seq)
                    """,
                arguments: [stored.key])
            try Self.recountItems(db, stored.key)
            let retried = try Self.apply(
                db, try Self.current(db, key: stored.key), .retry, reason: nil, now: now,
                data: EventData.retried(items: count))
            return (retried.batch.record, count)
        }
    }

    public func setResult(_ id: BatchID, result: JSONText) async throws {
        try await write { db in
            let stored = try Self.requireBatch(db, id)
            try db.execute(sql: "UPDATE batches SET result = ? WHERE key = ?", arguments: [result.text, stored.key])
        }
    }

    // MARK: - Leasing

    public func claimChunk(_ claim: ChunkClaim, now: Date) async throws -> ChunkLease? {
        let owner = claim.owner
        let excluded = try JSONText(encoding: claim.excludingTenants.sorted()).text
        return try await write { db in
            let nowMS = now.milliseconds
            let expires = now.milliseconds(after: claim.leaseDuration)
            for _ in 0..<16 {
                guard let token = try Int64.fetchOne(db.cachedStatement(sql: Self.nextTokenSQL)) else {
                    throw StoreError(.storage, "the lease token counter is missing")
                }
                guard
                    let claimed = try Row.fetchOne(
                        db.cachedStatement(sql: Self.claimSQL), arguments: [owner, token, expires, nowMS, excluded])
                else { return nil }
                let chunk = SQLiteRow(row: claimed)
                let chunkID = try chunk.int64(0)
                let batchKey = try chunk.int64(1)
                let firstSeq = try chunk.int64(2)
                let lastSeq = try chunk.int64(3)
                var stored = try Self.current(db, key: batchKey)
                if let damage = stored.damage {
                    // Settled first, so that failing the batch cancels this chunk's items too.
                    try Self.settleChunk(db, chunkID: chunkID, batch: stored, now: nowMS)
                    _ = try Self.apply(db, stored, .fail, reason: damage, now: now)
                    continue
                }
                let limit = ChunkSizeRules.claimLimit(stored.record, claim.sizes)
                let due = try Self.dueItems(
                    db, batchKey, firstSeq: firstSeq, lastSeq: lastSeq, now: nowMS,
                    limit: ChunkSizeRules.readLimit(limit))
                if due.isEmpty {
                    // Nothing due after all: settle the chunk and look again.
                    try Self.settleChunk(db, chunkID: chunkID, batch: stored, now: nowMS)
                    continue
                }
                let (items, cut) = ChunkSizeRules.cut(due, limit: limit)
                let leasedLast = try Self.cutClaimed(db, chunkID: chunkID, after: cut, lastSeq: lastSeq)
                try db.cachedStatement(sql: "UPDATE chunks SET claimed_items = ? WHERE id = ?")
                    .execute(arguments: [items.count, chunkID])
                try db.cachedStatement(
                    sql: """
                        UPDATE batches SET leased_chunks = leased_chunks + 1, last_claim_at = ?,
                            running = running + ? WHERE key = ?
                        """
                ).execute(arguments: [nowMS, items.count, batchKey])
                if stored.record.status == .confirmed {
                    stored = try Self.apply(db, try Self.current(db, key: batchKey), .start, reason: nil, now: now)
                        .batch
                }
                return ChunkLease(
                    chunkID: chunkID, batchID: stored.record.id, type: stored.record.type, token: token,
                    owner: owner, tenant: stored.record.owner, firstSeq: firstSeq, lastSeq: leasedLast, items: items)
            }
            return nil
        }
    }

    static let nextTokenSQL = "UPDATE counters SET value = value + 1 WHERE name = 'lease_token' RETURNING value"

    /// Leases the next due chunk. The tenant first: of those with due work
    /// and under their `max_running`, the one with the fewest chunks in
    /// flight per unit of weight, then the least recently served
    /// (``TenantShareSQL``). Within it, the highest priority first, then the
    /// batch with the fewest chunks in flight, least recently served, oldest.
    /// The last argument is a JSON array of tenants to pass over.
    static let claimSQL = """
        UPDATE chunks SET state = \(ChunkState.leased.stored), lease_owner = ?, lease_token = ?, lease_expires_at = ?
        WHERE id = (
            SELECT (SELECT c.id FROM chunks c
                    WHERE c.batch_key = b.key AND c.state = \(ChunkState.pending.stored) AND c.ready_at <= ?
                    ORDER BY c.ready_at, c.first_seq LIMIT 1) AS chunk
            FROM batches b \(TenantShareSQL.join)
            WHERE b.status IN (\(SQLList.runnableBatches)) AND b.leased_chunks < b.max_chunks
              AND \(TenantShareSQL.admits) AND chunk IS NOT NULL
              AND b.owner NOT IN (SELECT value FROM json_each(?))
            ORDER BY \(TenantShareSQL.order), b.priority DESC, b.leased_chunks, b.last_claim_at, b.key
            LIMIT 1)
        RETURNING id, batch_key, first_seq, last_seq
        """

    /// The items of a chunk that are due now: pending, or failed with their
    /// retry due; the first `limit` of them when given.
    static func dueItems(
        _ db: Database, _ batchKey: Int64, firstSeq: Int64, lastSeq: Int64, now: Int64, limit: Int? = nil
    ) throws -> [LeasedItem] {
        var items: [LeasedItem] = []
        // A hint only: a stored range may hold anything.
        items.reserveCapacity(Int(clamping: (lastSeq &- firstSeq &+ 1).clamped(to: 0...100_000)))
        let rows = try Row.fetchCursor(
            db.cachedStatement(
                sql: """
                    SELECT seq, payload, attempts, status FROM items
                    WHERE batch_key = ? AND seq BETWEEN ? AND ? AND status IN (\(SQLList.waitingItems))
                      AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
                    ORDER BY seq LIMIT ?
                    """),
            arguments: [batchKey, firstSeq, lastSeq, now, limit ?? -1])
        while let row = try rows.next() {
            let item = SQLiteRow(row: row)
            items.append(
                LeasedItem(
                    seq: try item.int64(0), payload: JSONText(unchecked: try item.string(at: 1) ?? "null"),
                    attempts: try item.int(2), status: ItemStatus(rawValue: try item.int(3)) ?? .pending))
        }
        return items
    }

    public func checkpoint(
        _ lease: ChunkLease, outcomes: [ItemOutcome], finish: Bool, failBatch: String?, leaseDuration: Double,
        now: Date
    ) async throws -> CheckpointResult {
        try await write { db in
            let nowMS = now.milliseconds
            try db.cachedStatement(
                sql: """
                    UPDATE chunks SET lease_expires_at = ?
                    WHERE id = ? AND lease_token = ? AND state = \(ChunkState.leased.stored)
                    """
            ).execute(arguments: [now.milliseconds(after: leaseDuration), lease.chunkID, lease.token])
            guard db.changesCount == 1 else {
                throw StoreError(.leaseLost, "the lease on chunk \(lease.chunkID) was taken over")
            }
            var stored = try Self.requireBatch(db, lease.batchID)
            let ended = stored.record.status.isEnded
            var (delta, events, applied) = try Self.writeOutcomes(db, stored, outcomes, batchEnded: ended, now: now)
            delta.running = -applied
            if finish {
                let claimed =
                    try Int64.fetchOne(
                        db.cachedStatement(sql: "SELECT claimed_items FROM chunks WHERE id = ?"),
                        arguments: [lease.chunkID]) ?? 0
                delta.running = -claimed
                try db.cachedStatement(
                    sql: "UPDATE batches SET leased_chunks = max(0, leased_chunks - 1) WHERE key = ?"
                ).execute(arguments: [stored.key])
                if ended {
                    delta.add(try Self.cancelItems(db, stored.key, first: lease.firstSeq, last: lease.lastSeq))
                    try Self.closeChunk(db, chunkID: lease.chunkID)
                } else {
                    try Self.settleChunk(db, chunkID: lease.chunkID, batch: stored, now: nowMS)
                }
            } else {
                try db.cachedStatement(sql: "UPDATE chunks SET claimed_items = claimed_items - ? WHERE id = ?")
                    .execute(arguments: [applied, lease.chunkID])
            }
            try Self.addCounts(db, stored.key, delta)
            stored = try Self.current(db, key: stored.key)
            if let reason = BatchRules.failureAfterCheckpoint(stored.record, fatal: failBatch) {
                let applied = try Self.apply(db, stored, .fail, reason: reason, now: now)
                stored = applied.batch
                events += applied.events
            } else if finish {
                let finished = try Self.finishIfDone(db, stored, now: now)
                stored = finished.batch
                events += finished.events
            }
            return CheckpointResult(batchStatus: stored.record.status, counts: stored.record.counts, events: events)
        }
    }

    /// Writes a checkpoint's outcomes as ``OutcomeRules`` groups them; returns
    /// the counter change, the `item.dead` events and how many applied. As on
    /// PostgreSQL, an outcome applies only where the item's stored attempts
    /// are below its attempt, so a checkpoint repeated changes nothing twice.
    static func writeOutcomes(
        _ db: Database, _ stored: StoredBatch, _ outcomes: [ItemOutcome], batchEnded: Bool, now: Date
    ) throws -> (BatchCounts, [BatchEvent], applied: Int64) {
        let nowMS = now.milliseconds
        let update = RawStatement(
            try db.cachedStatement(
                sql: """
                    UPDATE items SET status = ?, attempts = ?, output = ?, error_code = ?, error_message = ?,
                        error_category = ?, next_attempt_at = ?, updated_at = ?
                    WHERE batch_key = ? AND seq = ? AND attempts < ?
                    """))
        // The seqs a range changed: those its outcomes apply to.
        let updateRange = try db.cachedStatement(
            sql: """
                UPDATE items SET status = ?, attempts = ?, output = NULL, error_code = NULL,
                    error_message = NULL, error_category = NULL, next_attempt_at = NULL, updated_at = ?
                WHERE batch_key = ? AND seq BETWEEN ? AND ? AND attempts < ?
                RETURNING seq
                """)
        var delta = BatchCounts()
        var events: [BatchEvent] = []
        var applied: Int64 = 0
        for run in OutcomeRules.runs(outcomes, batchEnded: batchEnded) {
            switch run {
            case .plain(let first, let last, let status, let attempt, let items):
                let changed = Set(
                    try Int64.fetchAll(
                        updateRange,
                        arguments: [Int64(status.rawValue), Int64(attempt), nowMS, stored.key, first, last, attempt]))
                applied += Int64(changed.count)
                for item in items where changed.contains(item.seq) {
                    delta.add(OutcomeRules.counts(moving: 1, from: item.previousStatus, to: status, attempt: attempt))
                    if status == .dead {
                        events.append(
                            try Self.recordEvent(
                                db, stored, .itemDead, at: now, data: EventData.itemDead(seq: item.seq, error: nil)))
                    }
                }
            case .detailed(let outcome, let status):
                update.bind(1, Int64(status.rawValue))
                update.bind(2, Int64(outcome.attempt))
                update.bind(3, outcome.output?.text.storable)
                update.bind(4, outcome.error?.code.storable)
                update.bind(5, outcome.error?.message.storable)
                update.bind(6, outcome.error?.category.rawValue)
                update.bind(7, OutcomeRules.nextAttempt(outcome, status: status)?.milliseconds)
                update.bind(8, nowMS)
                update.bind(9, stored.key)
                update.bind(10, outcome.seq)
                update.bind(11, Int64(outcome.attempt))
                try update.execute()
                guard db.changesCount == 1 else { continue }
                applied += 1
                delta.add(
                    OutcomeRules.counts(
                        moving: 1, from: outcome.previousStatus, to: status, attempt: outcome.attempt))
                if status == .dead {
                    events.append(
                        try Self.recordEvent(
                            db, stored, .itemDead, at: now,
                            data: EventData.itemDead(seq: outcome.seq, error: outcome.error)))
                }
            }
        }
        return (delta, events, applied)
    }

    public func rescueExpiredLeases(now: Date, splitAfter: Int) async throws -> [RescuedChunk] {
        let (rescued, firstFailure) = try await write { db in
            try Self.rescue(
                db, condition: "state = \(ChunkState.leased.stored) AND lease_expires_at < ?",
                arguments: [now.milliseconds], now: now, splitAfter: splitAfter)
        }
        if let firstFailure { throw firstFailure }
        return rescued
    }

    public func releaseAllLeases(now: Date) async throws -> [RescuedChunk] {
        let (rescued, firstFailure) = try await write { db in
            // The caller owns the file alone: whoever led before is gone too.
            try db.execute(sql: "DELETE FROM leader")
            return try Self.rescue(
                db, condition: "state = \(ChunkState.leased.stored)", arguments: [], now: now, splitAfter: Int.max)
        }
        if let firstFailure { throw firstFailure }
        return rescued
    }

    // MARK: - Maintenance

    public func enforceDeadlines(now: Date) async throws -> [BatchEvent] {
        let (events, firstFailure) = try await write { db -> ([BatchEvent], (any Error)?) in
            var events: [BatchEvent] = []
            let rows = try Row.fetchAll(
                db, sql: "SELECT key FROM batches WHERE status IN (\(SQLList.openBatches))")
            // A batch whose row cannot be read or written (damaged) does not hold
            // up the others: its savepoint is undone, the others' work commits,
            // and its error is thrown after.
            var firstFailure: (any Error)?
            for row in rows {
                do {
                    try db.inSavepoint {
                        guard let stored = try Self.batch(db, key: try SQLiteRow(row: row).int64(0)) else {
                            return .commit
                        }
                        if let reason = BatchRules.timeoutReason(stored.record, at: now) {
                            events += try Self.apply(db, stored, .fail, reason: reason, now: now).events
                        } else {
                            events += try Self.finishIfDone(db, stored, now: now).events
                        }
                        return .commit
                    }
                } catch let error as StoreError where error.code == .storage {
                    firstFailure = firstFailure ?? error
                }
            }
            return (events, firstFailure)
        }
        if let firstFailure { throw firstFailure }
        return events
    }

    public func prune(now: Date, retention: Double, limit: Int) async throws -> Int {
        let pruned = try await write { db -> Int in
            if let key = try Int64.fetchOne(
                db,
                sql: """
                    SELECT key FROM batches WHERE pruned = 0 AND expires_at < ? ORDER BY expires_at LIMIT 1
                    """,
                arguments: [now.milliseconds])
            {
                return try Self.pruneItems(db, key, limit: limit)
            }
            let forgetBefore = now.addingTimeInterval(-min(max(0, retention), BatchRules.maximumRetention))
            return try Self.forgetBatches(db, endedBefore: forgetBefore, limit: limit)
        }
        try await compactWAL(now: now)
        return pruned
    }

    /// Deletes up to `limit` items of an expired batch; once none are left,
    /// its chunks go and it is marked pruned (its summary stays).
    static func pruneItems(_ db: Database, _ key: Int64, limit: Int) throws -> Int {
        try db.execute(
            sql: """
                DELETE FROM items WHERE batch_key = ? AND seq < coalesce(
                    (SELECT seq FROM items WHERE batch_key = ? ORDER BY seq LIMIT 1 OFFSET ?), 9223372036854775807)
                """,
            arguments: [key, key, limit])
        let deleted = db.changesCount
        if deleted < limit {
            try db.execute(sql: "DELETE FROM chunks WHERE batch_key = ?", arguments: [key])
            try db.execute(sql: "UPDATE batches SET pruned = 1 WHERE key = ?", arguments: [key])
        }
        return max(deleted, 1)
    }

    /// Deletes pruned batches that ended before `endedBefore`, with their
    /// events, a few at a time.
    static func forgetBatches(_ db: Database, endedBefore: Date, limit: Int) throws -> Int {
        let keys = try Int64.fetchAll(
            db,
            sql: """
                SELECT key FROM batches WHERE pruned = 1 AND completed_at < ? AND status IN (\(SQLList.endedBatches))
                ORDER BY completed_at LIMIT ?
                """,
            arguments: [endedBefore.milliseconds, max(1, min(limit, 100))])
        var deleted = 0
        for key in keys {
            try deleteRows(db, key)
            deleted += 1
        }
        return deleted
    }

    /// Deletes a batch and everything it holds.
    static func deleteRows(_ db: Database, _ key: Int64) throws {
        try deleteLinks(db, key)
        for table in LimitKey.tables {
            try db.execute(
                sql:
                    "DELETE FROM \(table) WHERE key = '\(LimitKey.batchPrefix)' || (SELECT id FROM batches WHERE key = ?)",
                arguments: [key])
        }
        for table in ["items", "chunks", "events", "progress_samples"] {
            try db.execute(sql: "DELETE FROM \(table) WHERE batch_key = ?", arguments: [key])
        }
        try db.execute(sql: "DELETE FROM batches WHERE key = ?", arguments: [key])
    }

    public func nextDueTime() async throws -> Date? {
        try await read { db in
            let ms = try Int64.fetchOne(
                db,
                sql: """
                    SELECT min(c.ready_at) FROM chunks c JOIN batches b ON b.key = c.batch_key
                    WHERE c.state = \(ChunkState.pending.stored) AND b.status IN (\(SQLList.runnableBatches))
                    """)
            return ms.map(Date.init(milliseconds:))
        }
    }

    public func deleteBatch(_ id: BatchID) async throws {
        try await write { db in
            let stored = try Self.requireBatch(db, id)
            try BatchRules.checkDeletable(stored.record)
            try Self.deleteRows(db, stored.key)
        }
    }

    // MARK: - Queries

    public func batch(_ id: BatchID) async throws -> BatchRecord? {
        try await read { db in try Self.batch(db, id: id)?.record }
    }

    public func batches(_ query: BatchQuery) async throws -> [BatchRecord] {
        try await read { db in
            var conditions: [String] = []
            var arguments: [(any DatabaseValueConvertible)?] = []
            if let owner = query.owner {
                conditions.append("owner = ?")
                arguments.append(owner)
            }
            if let type = query.type {
                conditions.append("type = ?")
                arguments.append(type)
            }
            if let status = query.status {
                conditions.append("status = ?")
                arguments.append(status.rawValue)
            }
            if let before = query.before {
                conditions.append("id < ?")
                arguments.append(before.rawValue)
            }
            let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            arguments.append(max(1, min(query.limit, 1000)))
            let rows = try Row.fetchAll(
                db, sql: "SELECT \(StoredBatch.columns) FROM batches \(filter) ORDER BY id DESC LIMIT ?",
                arguments: StatementArguments(arguments))
            return try rows.map { try Self.decodeBatch($0).record }
        }
    }

    public func items(of id: BatchID, status: ItemStatus?, afterSeq: Int64?, limit: Int) async throws
        -> [ItemRecord]
    {
        try await read { db in
            guard let stored = try Self.batch(db, id: id) else {
                throw StoreError(.batchNotFound, "no batch \(id)")
            }
            var sql = """
                SELECT seq, status, attempts, payload, output, error_code, error_message, error_category,
                       next_attempt_at, updated_at
                FROM items WHERE batch_key = ? AND seq > ?
                """
            var arguments: [(any DatabaseValueConvertible)?] = [stored.key, afterSeq ?? -1]
            if let status {
                if status == .running {
                    sql += """
                         AND status IN (\(SQLList.waitingItems)) AND EXISTS (SELECT 1 FROM chunks c
                         WHERE c.batch_key = items.batch_key AND c.state = \(ChunkState.leased.stored)
                         AND items.seq BETWEEN c.first_seq AND c.last_seq)
                        """
                } else {
                    sql += " AND status = ?"
                    arguments.append(status.rawValue)
                }
            }
            sql += " ORDER BY seq LIMIT ?"
            arguments.append(max(1, min(limit, 10_000)))
            let rows = try Row.fetchAll(db, sql: sql, arguments: StatementArguments(arguments))
            return try rows.map { row in
                // Read through SQLiteRow: a damaged row is a storage error, not a trap.
                let row = SQLiteRow(row: row)
                let category = try row.string(at: 7)
                let message = try row.string(at: 6) ?? ""
                return ItemRecord(
                    seq: try row.int64(0), status: ItemStatus(rawValue: try row.int(1)) ?? .pending,
                    attempts: try row.int(2), payload: try row.string(at: 3).map(JSONText.init(unchecked:)),
                    output: try row.string(at: 4).map(JSONText.init(unchecked:)),
                    error: try row.string(at: 5).map {
                        ItemError(
                            code: $0, message: message,
                            category: category.flatMap(ErrorCategory.init(rawValue:)) ?? .retryable)
                    },
                    nextAttemptAt: try row.date(at: 8), updatedAt: try row.date(at: 9))
            }
        }
    }

    public func events(of id: BatchID, afterID: Int64, limit: Int) async throws -> [BatchEvent] {
        try await read { db in
            guard let stored = try Self.batch(db, id: id) else {
                throw StoreError(.batchNotFound, "no batch \(id)")
            }
            let rows = try Row.fetchAll(
                db,
                sql: "SELECT id, type, at, data FROM events WHERE batch_key = ? AND id > ? ORDER BY id LIMIT ?",
                arguments: [stored.key, afterID, max(1, min(limit, 10_000))])
            return try rows.map { row in
                let read = SQLiteRow(row: row)
                return BatchEvent(
                    id: try read.int64(0), batchID: id, type: BatchEventType(rawValue: try read.string(1)),
                    at: Date(milliseconds: try read.int64(2)), data: try JSONText(unchecked: try read.string(3)).value()
                )
            }
        }
    }

    public func errorGroups(of id: BatchID, samples: Int) async throws -> [ErrorGroup] {
        try await read { db in
            guard let stored = try Self.batch(db, id: id) else {
                throw StoreError(.batchNotFound, "no batch \(id)")
            }
            if stored.record.pruned, let summary = stored.record.decodedSummary { return summary.errorGroups }
            return try Self.errorGroups(db, stored.key, samples: max(0, min(samples, 100)))
        }
    }

    public func allEvents(afterID: Int64, limit: Int) async throws -> [BatchEvent] {
        try await read { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT e.id, b.id, e.type, e.at, e.data FROM events e JOIN batches b ON b.key = e.batch_key
                    WHERE e.id > ? ORDER BY e.id LIMIT ?
                    """,
                arguments: [afterID, max(1, min(limit, 10_000))])
            return try rows.map { row in
                let read = SQLiteRow(row: row)
                guard let batchID = BatchID(try read.string(1)) else {
                    throw StoreError(.storage, "a stored batch id is malformed")
                }
                return BatchEvent(
                    id: try read.int64(0), batchID: batchID, type: BatchEventType(rawValue: try read.string(2)),
                    at: Date(milliseconds: try read.int64(3)), data: try JSONText(unchecked: try read.string(4)).value()
                )
            }
        }
    }

    public func statusSummary() async throws -> [BatchStatusSummary] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT status, count(*),
                           sum(CASE WHEN status IN (\(SQLList.openBatches))
                               THEN max(0, total - succeeded - skipped - dead - canceled - running) ELSE 0 END)
                    FROM batches GROUP BY status
                    """
            ).compactMap { row in
                // Damaged counters can overflow the sum into a REAL: a storage error, not a trap.
                let read = SQLiteRow(row: row)
                guard let status = BatchStatus(rawValue: try read.string(0)) else { return nil }
                return BatchStatusSummary(
                    status: status, batches: try read.int64(1), waitingItems: try read.int64(at: 2) ?? 0)
            }
        }
    }

    public func queuedItems(owner: String) async throws -> Int64 {
        try await read { db in
            try Int64.fetchOne(
                db,
                sql: """
                    SELECT coalesce(\(TenantUsage.queuedSQL(greatest: "max")), 0) FROM batches
                    WHERE owner = ? AND status IN (\(SQLList.openBatches))
                    """,
                arguments: [owner]) ?? 0
        }
    }

    public func latestEventID() async throws -> Int64 {
        try await read { db in try Int64.fetchOne(db, sql: "SELECT max(id) FROM events") ?? 0 }
    }

    /// Writes the WAL back into the database file and truncates it, so the
    /// WAL stays bounded however long the store runs.
    public func checkpointWAL() async throws {
        do {
            try await pool.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
            }
        } catch let error as DatabaseError {
            throw StoreError(.storage, "the database failed (\(error.resultCode))")
        }
    }

    /// Checkpoints the WAL when it has grown past the configured limit:
    /// SQLite's automatic checkpoints cannot shrink it while readers overlap
    /// without end, so maintenance does it.
    func compactWAL(now: Date) async throws {
        let size = (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int) ?? 0
        if size > walLimit { try await checkpointWAL() }
    }

    /// A write transaction; database failures become `StoreError.storage`.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.write(body)
        } catch let error as DatabaseError {
            throw StoreError(.storage, "the database failed (\(error.resultCode))")
        }
    }

    /// A read on the reader pool; database failures become `StoreError.storage`.
    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.read(body)
        } catch let error as DatabaseError {
            throw StoreError(.storage, "the database failed (\(error.resultCode))")
        }
    }
}
