import Foundation
import GRDB
import TrancheStore

/// A GRDB row read by position, without trapping on NULL or a wrong type.
struct SQLiteRow: StoredRow {
    let row: Row

    func int64(at index: Int) throws -> Int64? { try value(at: index, Int64.self) }
    func string(at index: Int) throws -> String? { try value(at: index, String.self) }
    func bool(at index: Int) throws -> Bool? { try value(at: index, Bool.self) }

    private func value<T: DatabaseValueConvertible>(at index: Int, _ type: T.Type) throws -> T? {
        guard index < row.count else { throw StoreError(.storage, "a stored row has no column \(index)") }
        let stored: DatabaseValue = row[index]
        if stored.isNull { return nil }
        guard let value = T.fromDatabaseValue(stored) else {
            throw StoreError(.storage, "a stored value in column \(index) has the wrong type")
        }
        return value
    }
}

extension SQLiteBatchStore {
    static func decodeBatch(_ row: Row) throws -> StoredBatch {
        try StoredBatch(row: SQLiteRow(row: row))
    }

    static func batch(_ db: Database, key: Int64) throws -> StoredBatch? {
        try Row.fetchOne(
            db.cachedStatement(sql: "SELECT \(StoredBatch.columns) FROM batches WHERE key = ?"), arguments: [key]
        ).map(decodeBatch)
    }

    static func batch(_ db: Database, id: BatchID) throws -> StoredBatch? {
        try Row.fetchOne(
            db.cachedStatement(sql: "SELECT \(StoredBatch.columns) FROM batches WHERE id = ?"),
            arguments: [id.rawValue]
        ).map(decodeBatch)
    }

    /// The batch with `key`, which the transaction has just written.
    static func current(_ db: Database, key: Int64) throws -> StoredBatch {
        guard let stored = try batch(db, key: key) else { throw StoreError(.batchNotFound, "no batch with key \(key)") }
        return stored
    }

    static func requireBatch(_ db: Database, _ id: BatchID) throws -> StoredBatch {
        guard let stored = try batch(db, id: id) else { throw StoreError(.batchNotFound, "no batch \(id)") }
        return stored
    }

    static func recordEvent(
        _ db: Database, _ stored: StoredBatch, _ type: BatchEventType, at now: Date, data: [String: JSONValue]
    ) throws -> BatchEvent {
        let text = try JSONText(encoding: JSONValue.object(data)).text
        try db.cachedStatement(sql: "INSERT INTO events(batch_key, type, at, data) VALUES (?, ?, ?, ?)")
            .execute(arguments: [stored.key, type.rawValue, now.milliseconds, text])
        return BatchEvent(id: db.lastInsertedRowID, batchID: stored.record.id, type: type, at: now, data: .object(data))
    }

    /// Inserts items from `startSeq` and the chunks that cover them, in bulk.
    static func insertItems(
        _ db: Database, _ stored: StoredBatch, startSeq: Int64, items: some Collection<NewItem>, now: Date
    ) throws {
        guard !items.isEmpty else { return }
        let insert = try db.cachedStatement(
            sql: """
                INSERT INTO items(batch_key, seq, status, payload, error_code, error_message, error_category, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """)
        let insertChunk = try db.cachedStatement(
            sql: "INSERT INTO chunks(batch_key, first_seq, last_seq, state) VALUES (?, ?, ?, ?)")
        let chunkSize = ChunkSizeRules.segmentSize(stored.record.options)
        let nowMS = now.milliseconds
        var seq = startSeq
        var chunkStart = startSeq
        var runnableInChunk = 0
        var rejected: Int64 = 0
        func closeChunk(through last: Int64) throws {
            let state = runnableInChunk > 0 ? ChunkState.pending : .done
            try insertChunk.execute(arguments: [stored.key, chunkStart, last, state.stored])
            chunkStart = last + 1
            runnableInChunk = 0
        }
        let raw = RawStatement(insert)
        for item in items {
            raw.bind(1, stored.key)
            raw.bind(2, seq)
            raw.bind(4, item.payload.text)
            raw.bind(8, nowMS)
            if let rejection = item.rejection {
                rejected += 1
                raw.bind(3, Int64(ItemStatus.skipped.rawValue))
                raw.bind(5, rejection.code.storable)
                raw.bind(6, rejection.message.storable)
                raw.bind(7, rejection.category.rawValue)
            } else {
                runnableInChunk += 1
                raw.bind(3, Int64(ItemStatus.pending.rawValue))
                raw.bind(5, nil as String?)
                raw.bind(6, nil as String?)
                raw.bind(7, nil as String?)
            }
            try raw.execute()
            if seq - chunkStart + 1 == chunkSize { try closeChunk(through: seq) }
            seq += 1
        }
        if chunkStart < seq { try closeChunk(through: seq - 1) }
        var delta = BatchCounts()
        delta.total = seq - startSeq
        delta.skipped = rejected
        try addCounts(db, stored.key, delta)
    }

    static func addCounts(_ db: Database, _ key: Int64, _ delta: BatchCounts) throws {
        try db.cachedStatement(
            sql: """
                UPDATE batches SET total = total + ?, running = max(0, running + ?), succeeded = succeeded + ?,
                    failed = failed + ?, skipped = skipped + ?, dead = dead + ?, canceled = canceled + ?,
                    retried = retried + ?, rescued = rescued + ?
                WHERE key = ?
                """
        ).execute(arguments: [
            delta.total, delta.running, delta.succeeded, delta.failed, delta.skipped, delta.dead, delta.canceled,
            delta.retried, delta.rescued, key,
        ])
    }

    /// Recounts the stored item counters from the items themselves (after bulk changes).
    static func recountItems(_ db: Database, _ key: Int64) throws {
        let histogram = try Row.fetchAll(
            db, sql: "SELECT status, count(*) FROM items WHERE batch_key = ? GROUP BY status", arguments: [key]
        ).map { row in
            let read = SQLiteRow(row: row)
            return (status: try read.int(0), count: try read.int64(1))
        }
        try db.execute(
            sql: "UPDATE batches SET \(assignments(BatchCounts.recountColumns) { _ in "?" }) WHERE key = ?",
            arguments: StatementArguments(BatchCounts.recounted(histogram).recountValues + [key]))
    }

    /// Cancels the waiting items of a seq range; returns the counter change.
    static func cancelItems(_ db: Database, _ key: Int64, first: Int64, last: Int64) throws -> BatchCounts {
        var delta = BatchCounts()
        let cancel = try db.cachedStatement(
            sql: """
                UPDATE items SET status = \(ItemStatus.canceled.rawValue), next_attempt_at = NULL
                WHERE batch_key = ? AND seq BETWEEN ? AND ? AND status = ?
                """)
        for status in ItemStatus.waiting {
            try cancel.execute(arguments: [key, first, last, status.rawValue])
            delta.add(OutcomeRules.counts(moving: Int64(db.changesCount), from: status, to: .canceled, attempt: 0))
        }
        return delta
    }

    /// Cancels every item that is not in flight: the chunks not leased.
    static func cancelPending(_ db: Database, _ stored: StoredBatch) throws {
        var delta = BatchCounts()
        let chunks = try Row.fetchAll(
            db,
            sql: "SELECT first_seq, last_seq FROM chunks WHERE batch_key = ? AND state = \(ChunkState.pending.stored)",
            arguments: [stored.key])
        for chunk in chunks {
            delta.add(try cancelItems(db, stored.key, first: chunk[0], last: chunk[1]))
        }
        try db.execute(
            sql: """
                UPDATE chunks SET state = \(ChunkState.done.stored)
                WHERE batch_key = ? AND state = \(ChunkState.pending.stored)
                """,
            arguments: [stored.key])
        try addCounts(db, stored.key, delta)
    }

    /// Ends a chunk's lease and sets its state from its items (``SettleRules``).
    static func settleChunk(_ db: Database, chunkID: Int64, batch: StoredBatch, now: Int64) throws {
        guard
            let range = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT first_seq, last_seq FROM chunks WHERE id = ?"), arguments: [chunkID])
        else { return }
        let row = try Row.fetchOne(
            db.cachedStatement(
                sql: """
                    SELECT count(*), min(CASE WHEN status = \(ItemStatus.pending.rawValue) THEN 0
                                         ELSE coalesce(next_attempt_at, 0) END)
                    FROM items WHERE batch_key = ? AND seq BETWEEN ? AND ? AND status IN (\(SQLList.waitingItems))
                    """),
            arguments: [batch.key, range[0], range[1]])
        let waiting = try row.map { try SQLiteRow(row: $0).int64(at: 0) ?? 0 } ?? 0
        let readyAt = try row.flatMap { try SQLiteRow(row: $0).int64(at: 1) } ?? 0
        try db.cachedStatement(
            sql: """
                UPDATE chunks SET state = ?, ready_at = ?, lease_owner = NULL, lease_expires_at = NULL,
                    claimed_items = 0 WHERE id = ?
                """
        ).execute(arguments: [SettleRules.state(waitingItems: waiting).stored, readyAt, chunkID])
    }

    /// Marks a chunk done and ends its lease.
    static func closeChunk(_ db: Database, chunkID: Int64) throws {
        try db.cachedStatement(
            sql: """
                UPDATE chunks SET state = \(ChunkState.done.stored), lease_owner = NULL, lease_expires_at = NULL,
                    claimed_items = 0 WHERE id = ?
                """
        ).execute(arguments: [chunkID])
    }

    /// Writes the lifecycle columns of `record` (``BatchRecord/lifecycleColumns``).
    static func writeLifecycle(_ db: Database, _ key: Int64, _ record: BatchRecord) throws {
        let values: [DatabaseValue] = record.lifecycleValues.map { value in
            switch value {
            case .int(let number): return number?.databaseValue ?? .null
            case .text(let text): return text?.databaseValue ?? .null
            }
        }
        try db.cachedStatement(
            sql: "UPDATE batches SET \(assignments(BatchRecord.lifecycleColumns) { _ in "?" }) WHERE key = ?"
        ).execute(arguments: StatementArguments(values + [key.databaseValue]))
    }

    /// Applies one lifecycle action as ``BatchRules/step(_:_:reason:now:data:)``
    /// decides it: the one place where a batch's status is written.
    static func apply(
        _ db: Database, _ stored: StoredBatch, _ action: LifecycleAction, reason: String?, now: Date,
        data: [String: JSONValue] = [:]
    ) throws -> (batch: StoredBatch, events: [BatchEvent]) {
        var step = try BatchRules.step(stored.record, action, reason: reason, now: now, data: data)
        if step.cancelsWaitingItems { try cancelPending(db, stored) }
        if step.endsBatch {
            step.batch.counts = try current(db, key: stored.key).record.counts
            step.batch.summary = try step.batch.summaryText(
                errors: errorGroups(db, stored.key, samples: BatchSummary.samplesPerGroup))
        }
        try writeLifecycle(db, stored.key, step.batch)
        let updated = try current(db, key: stored.key)
        let event = try recordEvent(db, updated, step.event, at: now, data: step.eventData)
        if step.endsBatch { try startSuccessor(db, updated, now: now) }
        if PrepareRules.mayPrepare(after: action, updated.record), try preparationWaits(db, stored.key) {
            let preparing = try apply(db, updated, .prepare, reason: nil, now: now)
            return (preparing.batch, [event] + preparing.events)
        }
        return (updated, [event])
    }

    /// Applies `actions` in order.
    static func apply(_ db: Database, _ stored: StoredBatch, _ actions: [LifecycleAction], now: Date) throws -> (
        batch: StoredBatch, events: [BatchEvent]
    ) {
        var current = stored
        var events: [BatchEvent] = []
        for action in actions {
            let applied = try apply(db, current, action, reason: nil, now: now)
            current = applied.batch
            events += applied.events
        }
        return (current, events)
    }

    /// Seals a batch: its items are known, so it is pre-processed, confirmed
    /// unless that waits for a person, and finished at once when it holds nothing to run.
    static func seal(_ db: Database, _ stored: StoredBatch, now: Date) throws -> (
        batch: StoredBatch, events: [BatchEvent]
    ) {
        guard try BatchRules.mustSeal(stored.record) else { return (stored, []) }
        try db.execute(sql: "UPDATE batches SET sealed = 1 WHERE key = ?", arguments: [stored.key])
        let sealed = try current(db, key: stored.key)
        let event = try recordEvent(
            db, sealed, .sealed, at: now, data: EventData.sealed(total: sealed.record.counts.total))
        let known = try apply(db, sealed, BatchRules.actionsWhenItemsKnown(sealed.record), now: now)
        let finished = try finishIfDone(db, known.batch, now: now)
        return (finished.batch, [event] + known.events + finished.events)
    }

    /// Ends a sealed, running batch whose chunks are all done (``BatchRules/finishingAction(_:)``).
    static func finishIfDone(_ db: Database, _ stored: StoredBatch, now: Date) throws -> (
        batch: StoredBatch, events: [BatchEvent]
    ) {
        guard BatchRules.mayFinish(stored.record) else { return (stored, []) }
        let unfinished =
            try Bool.fetchOne(
                db.cachedStatement(
                    sql: """
                        SELECT EXISTS (SELECT 1 FROM chunks WHERE batch_key = ? AND state != \(ChunkState.done.stored))
                        """),
                arguments: [stored.key]) ?? false
        guard !unfinished else { return (stored, []) }
        let finishing = BatchRules.finishingAction(stored.record)
        return try apply(db, stored, finishing.action, reason: finishing.reason, now: now)
    }

    /// Errors of a batch's items grouped by code, with samples.
    static func errorGroups(_ db: Database, _ key: Int64, samples: Int) throws -> [ErrorGroup] {
        let groups = try Row.fetchAll(
            db,
            sql: """
                SELECT error_code, error_category, count(*) AS n FROM items
                WHERE batch_key = ? AND error_code IS NOT NULL AND status IN (\(SQLList.itemsWithErrors))
                GROUP BY error_code, error_category ORDER BY n DESC, error_code
                """,
            arguments: [key])
        return try groups.map { group in
            let row = SQLiteRow(row: group)
            let code = try row.string(0)
            let sampleRows = try Row.fetchAll(
                db,
                sql: """
                    SELECT seq, error_message FROM items
                    WHERE batch_key = ? AND error_code = ? AND status IN (\(SQLList.itemsWithErrors))
                    ORDER BY seq LIMIT ?
                    """,
                arguments: [key, code, samples])
            return ErrorGroup(
                code: code, category: try row.string(at: 1).flatMap(ErrorCategory.init(rawValue:)) ?? .retryable,
                count: try row.int64(2),
                samples: try sampleRows.map {
                    let sample = SQLiteRow(row: $0)
                    return ErrorSample(seq: try sample.int64(0), message: try sample.string(at: 1) ?? "")
                })
        }
    }

    /// Rescues the chunks matching `condition` as ``RescueRules`` decides.
    /// Rescues the chunks matching `condition`, each in a savepoint: a chunk
    /// whose rows cannot be read or written (damaged) does not hold up the
    /// others. Its error is returned, for the caller to throw once the
    /// others' work is committed.
    static func rescue(
        _ db: Database, condition: String, arguments: StatementArguments, now: Date, splitAfter: Int
    ) throws -> (rescued: [RescuedChunk], firstFailure: (any Error)?) {
        let rows = try Row.fetchAll(
            db,
            sql: "SELECT \(RescueRules.Chunk.columns) FROM chunks WHERE \(condition)",
            arguments: arguments)
        var rescued: [RescuedChunk] = []
        var touched = Set<Int64>()
        var firstFailure: (any Error)?
        for row in rows {
            do {
                try db.inSavepoint {
                    let chunk = try RescueRules.Chunk(row: SQLiteRow(row: row))
                    guard let stored = try batch(db, key: chunk.batchKey) else { return .commit }
                    rescued.append(try rescue(db, chunk, of: stored, now: now, splitAfter: splitAfter))
                    touched.insert(chunk.batchKey)
                    return .commit
                }
            } catch let error as StoreError where error.code == .storage {
                firstFailure = firstFailure ?? error
            }
        }
        for key in touched {
            if let stored = try batch(db, key: key) { _ = try finishIfDone(db, stored, now: now) }
        }
        return (rescued, firstFailure)
    }

    /// Rescues one chunk of `stored`.
    static func rescue(
        _ db: Database, _ chunk: RescueRules.Chunk, of stored: StoredBatch, now: Date, splitAfter: Int
    ) throws -> RescuedChunk {
        let nowMS = now.milliseconds
        let ended = stored.record.status.isEnded
        try db.execute(
            sql: "UPDATE batches SET leased_chunks = max(0, leased_chunks - 1) WHERE key = ?",
            arguments: [chunk.batchKey])
        try db.execute(
            sql: """
                UPDATE chunks SET lease_owner = NULL, lease_expires_at = NULL, claimed_items = 0, rescues = ?
                WHERE id = ?
                """,
            arguments: [chunk.rescuesAfter, chunk.id])
        var open: [(seq: Int64, status: ItemStatus)] = []
        if RescueRules.needsOpenItems(chunk, batchEnded: ended, splitAfter: splitAfter) {
            open = try Row.fetchAll(
                db,
                sql: """
                    SELECT \(RescueRules.openItemColumns) FROM items WHERE batch_key = ? AND seq BETWEEN ? AND ?
                      AND status IN (\(SQLList.waitingItems)) ORDER BY seq
                    """,
                arguments: [chunk.batchKey, chunk.firstSeq, chunk.lastSeq]
            ).map { try RescueRules.openItem(SQLiteRow(row: $0)) }
        }
        var delta = RescueRules.counts(chunk)
        var result = chunk.report(batchID: stored.record.id)
        switch RescueRules.decide(chunk, batchEnded: ended, splitAfter: splitAfter, openItems: open) {
        case .cancelRest:
            delta.add(try cancelItems(db, chunk.batchKey, first: chunk.firstSeq, last: chunk.lastSeq))
            try closeChunk(db, chunkID: chunk.id)
        case .settle:
            try settleChunk(db, chunkID: chunk.id, batch: stored, now: nowMS)
        case .quarantine(let seq, let previous, let message):
            let error = RescueRules.quarantineError(message: message)
            try db.execute(
                sql: """
                    UPDATE items SET status = \(ItemStatus.dead.rawValue), error_code = ?, error_message = ?,
                        error_category = ?, next_attempt_at = NULL, updated_at = ?
                    WHERE batch_key = ? AND seq = ?
                    """,
                arguments: [error.code, error.message, error.category.rawValue, nowMS, chunk.batchKey, seq])
            delta.move(from: previous, to: .dead)
            result.quarantinedSeq = seq
            _ = try recordEvent(db, stored, .itemDead, at: now, data: EventData.itemDead(seq: seq, error: error))
            try settleChunk(db, chunkID: chunk.id, batch: stored, now: nowMS)
        case .split(let middle):
            try db.execute(
                sql: "UPDATE chunks SET last_seq = ?, state = \(ChunkState.pending.stored), ready_at = 0 WHERE id = ?",
                arguments: [middle, chunk.id])
            try db.execute(
                sql: """
                    INSERT INTO chunks(batch_key, first_seq, last_seq, state, rescues)
                    VALUES (?, ?, ?, \(ChunkState.pending.stored), ?)
                    """,
                arguments: [chunk.batchKey, middle + 1, chunk.lastSeq, chunk.rescuesAfter])
            result.split = true
        }
        try addCounts(db, chunk.batchKey, delta)
        _ = try recordEvent(db, stored, .chunkRescued, at: now, data: EventData.chunkRescued(result))
        return result
    }
}
