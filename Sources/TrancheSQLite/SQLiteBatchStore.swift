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

        public init(durability: Durability = .full, readers: Int = 4) {
            self.durability = durability
            self.readers = readers
        }
    }

    let pool: DatabasePool
    /// The file's path.
    public let path: String

    /// Opens (creating if needed) the store at `path` and runs its migrations.
    public init(path: String, configuration: Configuration = Configuration()) throws {
        var config = GRDB.Configuration()
        config.busyMode = .timeout(10)
        config.maximumReaderCount = max(1, configuration.readers)
        config.foreignKeysEnabled = false
        let synchronous = configuration.durability == .normal ? "NORMAL" : "FULL"
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
            try db.execute(sql: "PRAGMA cache_size = -16000")
        }
        self.path = path
        self.pool = try DatabasePool(path: path, configuration: config)
        try Schema.migrator.migrate(pool)
    }

    // MARK: - Submission

    public func createBatch(_ batch: NewBatch, items: [NewItem]) async throws -> BatchRecord {
        let optionsText = try JSONText(encoding: batch.options).text
        return try await write { db in
            let now = batch.createdAt
            let chunkSize = batch.options.chunkSize
            let concurrency = batch.options.concurrency
            let maxChunks = (concurrency + chunkSize - 1) / chunkSize + 1
            try db.execute(
                sql: """
                    INSERT INTO batches(id, type, owner, status, context, options, dry_run, priority, sealed,
                                        max_chunks, created_at)
                    VALUES (?, ?, ?, 'created', ?, ?, ?, ?, 0, ?, ?)
                    """,
                arguments: [
                    batch.id.rawValue, batch.type, batch.owner, batch.context.text, optionsText, batch.dryRun,
                    batch.priority, maxChunks, now.milliseconds,
                ])
            let key = db.lastInsertedRowID
            var stored = try Self.batch(db, key: key)!
            _ = try Self.recordEvent(db, stored, .created, at: now, data: ["status": "created"])
            try Self.insertItems(db, stored, startSeq: 0, items: items, now: now)
            stored = try Self.batch(db, key: key)!
            if batch.sealed {
                stored = try Self.seal(db, stored, now: now).batch
            } else if !batch.options.requireConfirmation && !batch.dryRun {
                // Streaming uploads start running before the total is known.
                stored = try Self.apply(db, stored, .preProcess, reason: nil, now: now).batch
                stored = try Self.apply(db, stored, .confirm, reason: nil, now: now).batch
            }
            return stored.record
        }
    }

    public func appendItems(
        to id: BatchID, startSeq: Int64, items: [NewItem], cursor: JSONText?
    ) async throws -> AppendResult {
        try await write { db in
            let stored = try Self.requireBatch(db, id)
            let total = stored.record.counts.total
            let fresh = items.dropFirst(
                try stored.record.itemsAlreadyStored(appendingAt: startSeq, count: items.count))
            try Self.insertItems(db, stored, startSeq: total, items: fresh, now: Date())
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
            var stored = try Self.requireBatch(db, id)
            // Checks the transition before touching any item.
            _ = try Self.next(stored.record, .retry)
            let codes = statuses.filter { $0 != .pending && $0 != .running && $0 != .succeeded }.map(\.rawValue)
            guard !codes.isEmpty else { return (stored.record, 0) }
            let list = codes.map(String.init).joined(separator: ",")
            try db.execute(
                sql: """
                    UPDATE items SET status = 0, attempts = 0, next_attempt_at = NULL,
                        error_code = NULL, error_message = NULL, error_category = NULL, updated_at = ?
                    WHERE batch_key = ? AND status IN (\(list))
                      AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.batch_key = items.batch_key AND c.state = 1
                                      AND items.seq BETWEEN c.first_seq AND c.last_seq)
                    """,
                arguments: [now.milliseconds, stored.key])
            let reset = Int64(db.changesCount)
            try db.execute(
                sql: """
                    UPDATE chunks SET state = 0, ready_at = 0, rescues = 0
                    WHERE batch_key = ? AND state = 2 AND EXISTS (
                        SELECT 1 FROM items i WHERE i.batch_key = chunks.batch_key AND i.status = 0
                          AND i.seq BETWEEN chunks.first_seq AND chunks.last_seq)
                    """,
                arguments: [stored.key])
            try Self.recountItems(db, stored.key)
            stored = try Self.batch(db, key: stored.key)!
            stored = try Self.apply(db, stored, .retry, reason: nil, now: now, data: ["items": .number(Double(reset))])
                .batch
            return (stored.record, reset)
        }
    }

    public func setResult(_ id: BatchID, result: JSONText) async throws {
        try await write { db in
            let stored = try Self.requireBatch(db, id)
            try db.execute(sql: "UPDATE batches SET result = ? WHERE key = ?", arguments: [result.text, stored.key])
        }
    }

    // MARK: - Leasing

    public func claimChunk(owner: String, leaseDuration: Double, now: Date) async throws -> ChunkLease? {
        try await write { db in
            let nowMS = now.milliseconds
            let expires = nowMS + Int64(leaseDuration * 1000)
            for _ in 0..<16 {
                let token = try Int64.fetchOne(
                    db.cachedStatement(
                        sql: "UPDATE counters SET value = value + 1 WHERE name = 'lease_token' RETURNING value"))!
                let claimed = try Row.fetchOne(
                    db.cachedStatement(
                        sql: """
                            UPDATE chunks SET state = 1, lease_owner = ?, lease_token = ?, lease_expires_at = ?
                            WHERE id = (
                                SELECT (SELECT c.id FROM chunks c
                                        WHERE c.batch_key = b.key AND c.state = 0 AND c.ready_at <= ?
                                        ORDER BY c.ready_at, c.first_seq LIMIT 1) AS chunk
                                FROM batches b
                                WHERE b.status IN ('confirmed', 'processing') AND b.leased_chunks < b.max_chunks
                                  AND chunk IS NOT NULL
                                ORDER BY b.priority DESC, b.leased_chunks, b.last_claim_at, b.key
                                LIMIT 1)
                            RETURNING id, batch_key, first_seq, last_seq
                            """),
                    arguments: [owner, token, expires, nowMS])
                guard let claimed else { return nil }
                let chunkID: Int64 = claimed[0]
                let batchKey: Int64 = claimed[1]
                let firstSeq: Int64 = claimed[2]
                let lastSeq: Int64 = claimed[3]
                var items: [LeasedItem] = []
                items.reserveCapacity(Int(lastSeq - firstSeq + 1))
                let rows = try Row.fetchCursor(
                    db.cachedStatement(
                        sql: """
                            SELECT seq, payload, attempts, status FROM items
                            WHERE batch_key = ? AND seq BETWEEN ? AND ? AND status IN (0, 3)
                              AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
                            """),
                    arguments: [batchKey, firstSeq, lastSeq, nowMS])
                while let row = try rows.next() {
                    let status: Int = row[3]
                    items.append(
                        LeasedItem(
                            seq: row[0], payload: JSONText(unchecked: row[1]), attempts: row[2],
                            status: ItemStatus(rawValue: status) ?? .pending))
                }
                var stored = try Self.batch(db, key: batchKey)!
                if items.isEmpty {
                    // Nothing due after all: settle the chunk and look again.
                    try Self.settleChunk(db, chunkID: chunkID, batch: stored, now: nowMS)
                    continue
                }
                try db.cachedStatement(sql: "UPDATE chunks SET claimed_items = ? WHERE id = ?")
                    .execute(arguments: [items.count, chunkID])
                try db.cachedStatement(
                    sql: """
                        UPDATE batches SET leased_chunks = leased_chunks + 1, last_claim_at = ?,
                            running = running + ? WHERE key = ?
                        """
                ).execute(arguments: [nowMS, items.count, batchKey])
                if stored.record.status == .confirmed {
                    stored = try Self.batch(db, key: batchKey)!
                    _ = try Self.apply(db, stored, .start, reason: nil, now: now)
                }
                return ChunkLease(
                    chunkID: chunkID, batchID: stored.record.id, type: stored.record.type, token: token,
                    owner: owner, firstSeq: firstSeq, lastSeq: lastSeq, items: items)
            }
            return nil
        }
    }

    public func checkpoint(
        _ lease: ChunkLease, outcomes: [ItemOutcome], finish: Bool, failBatch: String?, leaseDuration: Double,
        now: Date
    ) async throws -> CheckpointResult {
        try await write { db in
            let nowMS = now.milliseconds
            try db.cachedStatement(
                sql: "UPDATE chunks SET lease_expires_at = ? WHERE id = ? AND lease_token = ? AND state = 1"
            ).execute(arguments: [nowMS + Int64(leaseDuration * 1000), lease.chunkID, lease.token])
            guard db.changesCount == 1 else {
                throw StoreError(.leaseLost, "the lease on chunk \(lease.chunkID) was taken over")
            }
            var stored = try Self.requireBatch(db, lease.batchID)
            let ended = stored.record.status.isEnded
            var delta = BatchCounts()
            var events: [BatchEvent] = []
            let update = RawStatement(
                try db.cachedStatement(
                    sql: """
                        UPDATE items SET status = ?, attempts = ?, output = ?, error_code = ?, error_message = ?,
                            error_category = ?, next_attempt_at = ?, updated_at = ?
                        WHERE batch_key = ? AND seq = ?
                        """))
            let updateRange = RawStatement(
                try db.cachedStatement(
                    sql: """
                        UPDATE items SET status = ?, attempts = ?, output = NULL, error_code = NULL,
                            error_message = NULL, error_category = NULL, next_attempt_at = NULL, updated_at = ?
                        WHERE batch_key = ? AND seq BETWEEN ? AND ?
                        """))
            // A retry of a batch that has ended will never come: cancel it.
            let sorted = outcomes.sorted { $0.seq < $1.seq }
            func storedStatus(of outcome: ItemOutcome) -> ItemStatus {
                ended && outcome.status == .failed ? .canceled : outcome.status
            }
            func isPlain(_ outcome: ItemOutcome) -> Bool { outcome.output == nil && outcome.error == nil }
            var index = 0
            while index < sorted.count {
                let outcome = sorted[index]
                let status = storedStatus(of: outcome)
                // Consecutive items with the same plain result are written as one range.
                var last = index
                if isPlain(outcome) {
                    while last + 1 < sorted.count, sorted[last + 1].seq == sorted[last].seq + 1,
                        isPlain(sorted[last + 1]), sorted[last + 1].attempt == outcome.attempt,
                        storedStatus(of: sorted[last + 1]) == status
                    {
                        last += 1
                    }
                }
                if last > index || isPlain(outcome) {
                    updateRange.bind(1, Int64(status.rawValue))
                    updateRange.bind(2, Int64(outcome.attempt))
                    updateRange.bind(3, nowMS)
                    updateRange.bind(4, stored.key)
                    updateRange.bind(5, outcome.seq)
                    updateRange.bind(6, sorted[last].seq)
                    try updateRange.execute()
                } else {
                    update.bind(1, Int64(status.rawValue))
                    update.bind(2, Int64(outcome.attempt))
                    update.bind(3, outcome.output?.text.storable)
                    update.bind(4, outcome.error?.code.storable)
                    update.bind(5, outcome.error?.message.storable)
                    update.bind(6, outcome.error?.category.rawValue)
                    update.bind(7, status == .failed ? outcome.nextAttemptAt?.milliseconds : nil)
                    update.bind(8, nowMS)
                    update.bind(9, stored.key)
                    update.bind(10, outcome.seq)
                    try update.execute()
                }
                for item in sorted[index...last] {
                    delta.move(from: item.previousStatus, to: status)
                    if item.attempt > 1 { delta.retried += 1 }
                    if status == .dead {
                        events.append(
                            try Self.recordEvent(
                                db, stored, .itemDead, at: now,
                                data: [
                                    "seq": .number(Double(item.seq)),
                                    "code": .string(item.error?.code ?? ""),
                                    "message": .string(item.error?.message ?? ""),
                                ]))
                    }
                }
                index = last + 1
            }
            delta.running = -Int64(outcomes.count)
            if finish {
                let claimed =
                    try Int64.fetchOne(
                        db.cachedStatement(sql: "SELECT claimed_items FROM chunks WHERE id = ?"),
                        arguments: [lease.chunkID]) ?? 0
                delta.running = -claimed
                try db.cachedStatement(
                    sql: "UPDATE batches SET leased_chunks = leased_chunks - 1 WHERE key = ?"
                ).execute(arguments: [stored.key])
            } else {
                try db.cachedStatement(sql: "UPDATE chunks SET claimed_items = claimed_items - ? WHERE id = ?")
                    .execute(arguments: [outcomes.count, lease.chunkID])
            }
            try Self.addCounts(db, stored.key, delta)
            stored = try Self.batch(db, key: stored.key)!
            if finish {
                if stored.record.status.isEnded {
                    let canceled = try Self.cancelItems(db, stored.key, first: lease.firstSeq, last: lease.lastSeq)
                    try Self.addCounts(db, stored.key, canceled)
                    try db.cachedStatement(
                        sql: "UPDATE chunks SET state = 2, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?"
                    ).execute(arguments: [lease.chunkID])
                } else {
                    try Self.settleChunk(db, chunkID: lease.chunkID, batch: stored, now: nowMS)
                }
                stored = try Self.batch(db, key: stored.key)!
            }
            if !stored.record.status.isEnded {
                let reason =
                    failBatch ?? BatchOutcome.failurePolicyTrips(stored.record.counts, options: stored.record.options)
                if let reason {
                    let applied = try Self.apply(db, stored, .fail, reason: reason, now: now)
                    stored = applied.batch
                    events += applied.events
                } else if finish {
                    let finished = try Self.finishIfDone(db, stored, now: now)
                    stored = finished.batch
                    events += finished.events
                }
            }
            return CheckpointResult(batchStatus: stored.record.status, counts: stored.record.counts, events: events)
        }
    }

    public func rescueExpiredLeases(now: Date, splitAfter: Int) async throws -> [RescuedChunk] {
        try await write { db in
            try Self.rescue(
                db, condition: "state = 1 AND lease_expires_at < ?", arguments: [now.milliseconds], now: now,
                splitAfter: splitAfter)
        }
    }

    public func releaseAllLeases(now: Date) async throws -> [RescuedChunk] {
        try await write { db in
            // The caller owns the file alone: whoever led before is gone too.
            try db.execute(sql: "DELETE FROM leader")
            return try Self.rescue(db, condition: "state = 1", arguments: [], now: now, splitAfter: Int.max)
        }
    }

    // MARK: - Maintenance

    public func enforceDeadlines(now: Date) async throws -> [BatchEvent] {
        try await write { db in
            var events: [BatchEvent] = []
            let keys = try Int64.fetchAll(
                db,
                sql: """
                    SELECT key FROM batches WHERE status IN ('created', 'pre_processed', 'confirmed', 'processing', 'paused')
                    """)
            for key in keys {
                var stored = try Self.batch(db, key: key)!
                let start = stored.record.startedAt ?? stored.record.confirmedAt ?? stored.record.createdAt
                if now.timeIntervalSince(start) > stored.record.options.batchTimeout {
                    let seconds = stored.record.options.batchTimeout
                    events += try Self.apply(
                        db, stored, .fail,
                        reason: "batch_timeout: the batch ran longer than \(Int(seconds)) s", now: now
                    ).events
                    continue
                }
                if stored.record.status.isRunnable {
                    let finished = try Self.finishIfDone(db, stored, now: now)
                    stored = finished.batch
                    events += finished.events
                }
            }
            return events
        }
    }

    public func prune(now: Date, limit: Int) async throws -> Int {
        try await write { db in
            guard
                let key = try Int64.fetchOne(
                    db, sql: "SELECT key FROM batches WHERE pruned = 0 AND expires_at < ? ORDER BY expires_at LIMIT 1",
                    arguments: [now.milliseconds])
            else { return 0 }
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
    }

    public func nextDueTime() async throws -> Date? {
        try await read { db in
            let ms = try Int64.fetchOne(
                db,
                sql: """
                    SELECT min(c.ready_at) FROM chunks c JOIN batches b ON b.key = c.batch_key
                    WHERE c.state = 0 AND b.status IN ('confirmed', 'processing')
                    """)
            return ms.map(Date.init(milliseconds:))
        }
    }

    public func deleteBatch(_ id: BatchID) async throws {
        try await write { db in
            let stored = try Self.requireBatch(db, id)
            guard stored.record.status.isEnded || stored.record.dryRun else {
                throw StoreError(.conflict, "batch \(id) is \(stored.record.status); cancel it before deleting it")
            }
            try db.execute(sql: "DELETE FROM items WHERE batch_key = ?", arguments: [stored.key])
            try db.execute(sql: "DELETE FROM chunks WHERE batch_key = ?", arguments: [stored.key])
            try db.execute(sql: "DELETE FROM events WHERE batch_key = ?", arguments: [stored.key])
            try db.execute(sql: "DELETE FROM batches WHERE key = ?", arguments: [stored.key])
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
                db, sql: "SELECT \(BatchRecord.storedColumns) FROM batches \(filter) ORDER BY id DESC LIMIT ?",
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
                         AND status IN (0, 3) AND EXISTS (SELECT 1 FROM chunks c WHERE c.batch_key = items.batch_key
                         AND c.state = 1 AND items.seq BETWEEN c.first_seq AND c.last_seq)
                        """
                } else {
                    sql += " AND status = ?"
                    arguments.append(status.rawValue)
                }
            }
            sql += " ORDER BY seq LIMIT ?"
            arguments.append(max(1, min(limit, 10_000)))
            let rows = try Row.fetchAll(db, sql: sql, arguments: StatementArguments(arguments))
            return rows.map { row in
                let code: String? = row[5]
                let category: String? = row[7]
                let payload: String? = row[3]
                let output: String? = row[4]
                return ItemRecord(
                    seq: row[0], status: ItemStatus(rawValue: row[1]) ?? .pending, attempts: row[2],
                    payload: payload.map(JSONText.init(unchecked:)), output: output.map(JSONText.init(unchecked:)),
                    error: code.map {
                        ItemError(
                            code: $0, message: row[6] ?? "",
                            category: category.flatMap(ErrorCategory.init(rawValue:)) ?? .retryable)
                    },
                    nextAttemptAt: (row[8] as Int64?).map(Date.init(milliseconds:)),
                    updatedAt: (row[9] as Int64?).map(Date.init(milliseconds:)))
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
                BatchEvent(
                    id: row[0], batchID: id, type: BatchEventType(rawValue: row[1]),
                    at: Date(milliseconds: row[2]), data: try JSONText(unchecked: row[3]).value())
            }
        }
    }

    public func errorGroups(of id: BatchID, samples: Int) async throws -> [ErrorGroup] {
        try await read { db in
            guard let stored = try Self.batch(db, id: id) else {
                throw StoreError(.batchNotFound, "no batch \(id)")
            }
            let groups = try Row.fetchAll(
                db,
                sql: """
                    SELECT error_code, error_category, count(*) AS n FROM items
                    WHERE batch_key = ? AND error_code IS NOT NULL AND status IN (3, 4, 5)
                    GROUP BY error_code, error_category ORDER BY n DESC, error_code
                    """,
                arguments: [stored.key])
            return try groups.map { group in
                let code: String = group[0]
                let sampleRows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT seq, error_message FROM items
                        WHERE batch_key = ? AND error_code = ? AND status IN (3, 4, 5) ORDER BY seq LIMIT ?
                        """,
                    arguments: [stored.key, code, samples])
                return ErrorGroup(
                    code: code, category: ErrorCategory(rawValue: group[1]) ?? .retryable, count: group[2],
                    samples: sampleRows.map { ErrorSample(seq: $0[0], message: $0[1] ?? "") })
            }
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
                BatchEvent(
                    id: row[0], batchID: BatchID(row[1] as String)!, type: BatchEventType(rawValue: row[2]),
                    at: Date(milliseconds: row[3]), data: try JSONText(unchecked: row[4]).value())
            }
        }
    }

    public func statusSummary() async throws -> [BatchStatusSummary] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT status, count(*),
                           sum(max(0, total - succeeded - skipped - dead - canceled - running))
                    FROM batches GROUP BY status
                    """
            ).compactMap { row in
                BatchStatus(rawValue: row[0]).map {
                    BatchStatusSummary(status: $0, batches: row[1], waitingItems: row[2] ?? 0)
                }
            }
        }
    }

    public func queuedItems(owner: String) async throws -> Int64 {
        try await read { db in
            try Int64.fetchOne(
                db,
                sql: """
                    SELECT coalesce(sum(max(0, total - succeeded - skipped - dead - canceled)), 0) FROM batches
                    WHERE owner = ? AND status NOT IN ('completed', 'failed', 'canceled')
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
        try await pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
        }
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
