import Foundation
import GRDB
import TrancheStore

/// A batch row with its internal key.
struct StoredBatch {
    var key: Int64
    var record: BatchRecord
}

extension SQLiteBatchStore {
    static func decodeBatch(_ row: Row) throws -> StoredBatch {
        var counts = BatchCounts()
        counts.total = row[11]
        counts.running = row[12]
        counts.succeeded = row[13]
        counts.failed = row[14]
        counts.skipped = row[15]
        counts.dead = row[16]
        counts.canceled = row[17]
        counts.retried = row[18]
        counts.rescued = row[19]
        let pausedFrom: String? = row[5]
        let result: String? = row[21]
        let cursor: String? = row[22]
        let optionsText: String = row[7]
        func date(_ index: Int) -> Date? { (row[index] as Int64?).map(Date.init(milliseconds:)) }
        let record = BatchRecord(
            id: BatchID(row[1] as String)!, type: row[2], owner: row[3],
            status: BatchStatus(rawValue: row[4]) ?? .failed,
            pausedFrom: pausedFrom.flatMap(BatchStatus.init(rawValue:)),
            context: JSONText(unchecked: row[6]), options: try JSONText(unchecked: optionsText).decode(),
            dryRun: row[8], priority: row[9], sealed: row[10], counts: counts, failureReason: row[20],
            result: result.map(JSONText.init(unchecked:)), cursor: cursor.map(JSONText.init(unchecked:)),
            createdAt: Date(milliseconds: row[23]), confirmedAt: date(24), startedAt: date(25),
            completedAt: date(26), expiresAt: date(27))
        return StoredBatch(key: row[0], record: record)
    }

    static func batch(_ db: Database, key: Int64) throws -> StoredBatch? {
        try Row.fetchOne(
            db.cachedStatement(sql: "SELECT \(BatchRecord.storedColumns) FROM batches WHERE key = ?"), arguments: [key]
        ).map(decodeBatch)
    }

    static func batch(_ db: Database, id: BatchID) throws -> StoredBatch? {
        try Row.fetchOne(
            db.cachedStatement(sql: "SELECT \(BatchRecord.storedColumns) FROM batches WHERE id = ?"),
            arguments: [id.rawValue]
        ).map(decodeBatch)
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
        let chunkSize = Int64(stored.record.options.chunkSize)
        let nowMS = now.milliseconds
        var seq = startSeq
        var chunkStart = startSeq
        var runnableInChunk = 0
        var rejected: Int64 = 0
        func closeChunk(through last: Int64) throws {
            let state = runnableInChunk > 0 ? ChunkState.pending : .done
            try insertChunk.execute(arguments: [stored.key, chunkStart, last, state.rawValue])
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
        var counts = [Int: Int64]()
        for row in try Row.fetchAll(
            db, sql: "SELECT status, count(*) FROM items WHERE batch_key = ? GROUP BY status", arguments: [key])
        {
            counts[row[0]] = row[1]
        }
        func count(_ status: ItemStatus) -> Int64 { counts[status.rawValue] ?? 0 }
        try db.execute(
            sql: """
                UPDATE batches SET total = ?, succeeded = ?, failed = ?, skipped = ?, dead = ?, canceled = ?
                WHERE key = ?
                """,
            arguments: [
                counts.values.reduce(0, +), count(.succeeded), count(.failed), count(.skipped), count(.dead),
                count(.canceled), key,
            ])
    }

    /// Cancels the not-yet-terminal items of a seq range; returns the counter change.
    static func cancelItems(_ db: Database, _ key: Int64, first: Int64, last: Int64) throws -> BatchCounts {
        var delta = BatchCounts()
        let cancel = try db.cachedStatement(
            sql:
                "UPDATE items SET status = 6, next_attempt_at = NULL WHERE batch_key = ? AND seq BETWEEN ? AND ? AND status = ?"
        )
        for status in [ItemStatus.pending, .failed] {
            try cancel.execute(arguments: [key, first, last, status.rawValue])
            let changed = Int64(db.changesCount)
            delta[status] -= changed
            delta.canceled += changed
        }
        return delta
    }

    /// Cancels every item that is not in flight: the chunks not leased.
    static func cancelPending(_ db: Database, _ stored: StoredBatch) throws {
        var delta = BatchCounts()
        let chunks = try Row.fetchAll(
            db, sql: "SELECT first_seq, last_seq FROM chunks WHERE batch_key = ? AND state = 0",
            arguments: [stored.key])
        for chunk in chunks {
            delta.add(try cancelItems(db, stored.key, first: chunk[0], last: chunk[1]))
        }
        try db.execute(sql: "UPDATE chunks SET state = 2 WHERE batch_key = ? AND state = 0", arguments: [stored.key])
        try addCounts(db, stored.key, delta)
    }

    /// Ends a chunk's lease and sets its state from its items: done when all
    /// are terminal, otherwise pending again from the earliest due retry.
    static func settleChunk(_ db: Database, chunkID: Int64, batch: StoredBatch, now: Int64) throws {
        let range = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT first_seq, last_seq FROM chunks WHERE id = ?"), arguments: [chunkID])!
        let row = try Row.fetchOne(
            db.cachedStatement(
                sql: """
                    SELECT count(*), min(CASE WHEN status = 0 THEN 0 ELSE coalesce(next_attempt_at, 0) END)
                    FROM items WHERE batch_key = ? AND seq BETWEEN ? AND ? AND status IN (0, 3)
                    """),
            arguments: [batch.key, range[0], range[1]])!
        let remaining: Int64 = row[0]
        let readyAt: Int64 = row[1] ?? 0
        try db.cachedStatement(
            sql: """
                UPDATE chunks SET state = ?, ready_at = ?, lease_owner = NULL, lease_expires_at = NULL,
                    claimed_items = 0 WHERE id = ?
                """
        ).execute(arguments: [remaining > 0 ? ChunkState.pending.rawValue : ChunkState.done.rawValue, readyAt, chunkID])
    }

    static func next(_ record: BatchRecord, _ action: LifecycleAction) throws -> BatchStatus {
        try BatchLifecycle.next(from: record.status, action, pausedFrom: record.pausedFrom)
    }

    /// Applies one lifecycle action with its side effects and event: the one
    /// place where a batch's status changes.
    static func apply(
        _ db: Database, _ stored: StoredBatch, _ action: LifecycleAction, reason: String?, now: Date,
        data: [String: JSONValue] = [:]
    ) throws -> (batch: StoredBatch, events: [BatchEvent]) {
        let from = stored.record.status
        let to = try next(stored.record, action)
        let nowMS = now.milliseconds
        var assignments = ["status = ?"]
        var arguments: [(any DatabaseValueConvertible)?] = [to.rawValue]
        switch action {
        case .pause:
            assignments.append("paused_from = ?")
            arguments.append(from.rawValue)
        case .resume:
            assignments.append("paused_from = NULL")
        case .confirm:
            assignments.append("confirmed_at = ?")
            arguments.append(nowMS)
        case .start:
            assignments.append("started_at = coalesce(started_at, ?)")
            arguments.append(nowMS)
        case .retry where from.isEnded:
            assignments += [
                "completed_at = NULL", "expires_at = NULL", "failure_reason = NULL", "paused_from = NULL",
                "confirmed_at = ?",
            ]
            arguments.append(nowMS)
        default:
            break
        }
        if action == .fail {
            assignments.append("failure_reason = ?")
            arguments.append((reason ?? "the batch failed").storable)
        }
        if to.isEnded {
            assignments += ["completed_at = ?", "expires_at = ?"]
            arguments += [nowMS, nowMS + Int64(stored.record.options.ttl * 1000)]
        }
        arguments.append(stored.key)
        try db.execute(
            sql: "UPDATE batches SET \(assignments.joined(separator: ", ")) WHERE key = ?",
            arguments: StatementArguments(arguments))
        if action == .cancel || action == .fail {
            try cancelPending(db, stored)
        }
        var eventData = data
        eventData["status"] = .string(to.rawValue)
        eventData["from"] = .string(from.rawValue)
        if let reason { eventData["reason"] = .string(reason) }
        let updated = try batch(db, key: stored.key)!
        let event = try recordEvent(db, updated, action.eventType, at: now, data: eventData)
        return (updated, [event])
    }

    /// Seals a batch: pre-processes it, confirms it unless confirmation is
    /// required, and completes it at once when it holds nothing to run.
    static func seal(_ db: Database, _ stored: StoredBatch, now: Date) throws -> (
        batch: StoredBatch, events: [BatchEvent]
    ) {
        guard !stored.record.sealed else { return (stored, []) }
        guard !stored.record.status.isEnded else {
            throw StoreError(.invalidAppend, "batch \(stored.record.id) has ended")
        }
        try db.execute(sql: "UPDATE batches SET sealed = 1 WHERE key = ?", arguments: [stored.key])
        var current = try batch(db, key: stored.key)!
        var events: [BatchEvent] = []
        events.append(
            try recordEvent(
                db, current, .sealed, at: now, data: ["total": .number(Double(current.record.counts.total))]))
        if current.record.status == .created {
            let applied = try apply(db, current, .preProcess, reason: nil, now: now)
            current = applied.batch
            events += applied.events
            if !current.record.options.requireConfirmation && !current.record.dryRun {
                let confirmed = try apply(db, current, .confirm, reason: nil, now: now)
                current = confirmed.batch
                events += confirmed.events
            }
        }
        let finished = try finishIfDone(db, current, now: now)
        return (finished.batch, events + finished.events)
    }

    /// Ends a sealed, running batch whose chunks are all done, by the outcome rule.
    static func finishIfDone(_ db: Database, _ stored: StoredBatch, now: Date) throws -> (
        batch: StoredBatch, events: [BatchEvent]
    ) {
        guard stored.record.sealed, stored.record.status.isRunnable else { return (stored, []) }
        let unfinished =
            try Bool.fetchOne(
                db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM chunks WHERE batch_key = ? AND state != 2)"),
                arguments: [stored.key]) ?? false
        guard !unfinished else { return (stored, []) }
        switch BatchOutcome.whenAllTerminal(stored.record.counts) {
        case .completed:
            return try apply(db, stored, .complete, reason: nil, now: now)
        default:
            return try apply(db, stored, .fail, reason: "no item succeeded", now: now)
        }
    }

    /// Makes the chunks matching `condition` claimable again, splitting those
    /// rescued `splitAfter` times so a poison item ends up alone and `dead`.
    static func rescue(
        _ db: Database, condition: String, arguments: StatementArguments, now: Date, splitAfter: Int
    ) throws -> [RescuedChunk] {
        let nowMS = now.milliseconds
        let rows = try Row.fetchAll(
            db,
            sql: "SELECT id, batch_key, first_seq, last_seq, rescues, claimed_items FROM chunks WHERE \(condition)",
            arguments: arguments)
        var rescued: [RescuedChunk] = []
        var touched = Set<Int64>()
        for row in rows {
            let chunkID: Int64 = row[0]
            let key: Int64 = row[1]
            let first: Int64 = row[2]
            let last: Int64 = row[3]
            let rescues: Int = row[4] + 1
            let unfinished: Int64 = row[5]
            guard let stored = try batch(db, key: key) else { continue }
            touched.insert(key)
            var delta = BatchCounts()
            delta.running = -unfinished
            delta.rescued = unfinished
            try db.execute(
                sql: "UPDATE batches SET leased_chunks = max(0, leased_chunks - 1) WHERE key = ?", arguments: [key])
            try db.execute(
                sql:
                    "UPDATE chunks SET lease_owner = NULL, lease_expires_at = NULL, claimed_items = 0, rescues = ? WHERE id = ?",
                arguments: [rescues, chunkID])
            var split = false
            var quarantined: Int64?
            if stored.record.status.isEnded {
                delta.add(try cancelItems(db, key, first: first, last: last))
                try db.execute(sql: "UPDATE chunks SET state = 2 WHERE id = ?", arguments: [chunkID])
            } else if rescues >= splitAfter {
                let open = try Row.fetchAll(
                    db,
                    sql:
                        "SELECT seq, status FROM items WHERE batch_key = ? AND seq BETWEEN ? AND ? AND status IN (0, 3) ORDER BY seq",
                    arguments: [key, first, last])
                if open.count == 1, let item = open.first {
                    let seq: Int64 = item[0]
                    let previous = ItemStatus(rawValue: item[1]) ?? .pending
                    let message = "the item's worker stopped \(rescues) times while running it; quarantined"
                    try db.execute(
                        sql: """
                            UPDATE items SET status = 5, error_code = 'worker_lost', error_message = ?,
                                error_category = 'retryable', next_attempt_at = NULL, updated_at = ?
                            WHERE batch_key = ? AND seq = ?
                            """,
                        arguments: [message, nowMS, key, seq])
                    delta.move(from: previous, to: .dead)
                    quarantined = seq
                    _ = try recordEvent(
                        db, stored, .itemDead, at: now,
                        data: ["seq": .number(Double(seq)), "code": "worker_lost", "message": .string(message)])
                    try settleChunk(db, chunkID: chunkID, batch: stored, now: nowMS)
                } else if open.count > 1 {
                    let middle: Int64 = open[open.count / 2 - 1][0]
                    try db.execute(
                        sql: "UPDATE chunks SET last_seq = ?, state = 0, ready_at = 0 WHERE id = ?",
                        arguments: [middle, chunkID])
                    try db.execute(
                        sql:
                            "INSERT INTO chunks(batch_key, first_seq, last_seq, state, rescues) VALUES (?, ?, ?, 0, ?)",
                        arguments: [key, middle + 1, last, rescues])
                    split = true
                } else {
                    try settleChunk(db, chunkID: chunkID, batch: stored, now: nowMS)
                }
            } else {
                try settleChunk(db, chunkID: chunkID, batch: stored, now: nowMS)
            }
            try addCounts(db, key, delta)
            let chunk = RescuedChunk(
                batchID: stored.record.id, firstSeq: first, lastSeq: last, unfinished: unfinished, split: split,
                quarantinedSeq: quarantined)
            _ = try recordEvent(
                db, stored, .chunkRescued, at: now,
                data: [
                    "first_seq": .number(Double(first)), "last_seq": .number(Double(last)),
                    "unfinished": .number(Double(unfinished)), "split": .bool(split),
                ])
            rescued.append(chunk)
        }
        for key in touched {
            if let stored = try batch(db, key: key) { _ = try finishIfDone(db, stored, now: now) }
        }
        return rescued
    }
}
