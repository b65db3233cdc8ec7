import Foundation
import PostgresNIO
import TrancheStore

/// A batch row with its internal key.
struct StoredBatch {
    var key: Int64
    var record: BatchRecord
}

/// Chunk states as stored.
enum ChunkState: Int16 {
    case pending = 0
    case leased = 1
    case done = 2
}

extension PostgresBatchStore {
    static func decodeBatch(_ row: PostgresRandomAccessRow) throws -> StoredBatch {
        var counts = BatchCounts()
        counts.total = try row.get(11)
        counts.running = try row.get(12)
        counts.succeeded = try row.get(13)
        counts.failed = try row.get(14)
        counts.skipped = try row.get(15)
        counts.dead = try row.get(16)
        counts.canceled = try row.get(17)
        counts.retried = try row.get(18)
        counts.rescued = try row.get(19)
        let pausedFrom = try row.get(5, as: String?.self)
        let result = try row.get(21, as: String?.self)
        let cursor = try row.get(22, as: String?.self)
        func date(_ index: Int) throws -> Date? { try row.get(index, as: Int64?.self).map(Date.init(milliseconds:)) }
        guard let id = BatchID(try row.get(1, as: String.self)) else {
            throw StoreError(.storage, "a stored batch id is malformed")
        }
        let record = BatchRecord(
            id: id, type: try row.get(2), owner: try row.get(3),
            status: BatchStatus(rawValue: try row.get(4)) ?? .failed,
            pausedFrom: pausedFrom.flatMap(BatchStatus.init(rawValue:)),
            context: JSONText(unchecked: try row.get(6)),
            options: try JSONText(unchecked: try row.get(7, as: String.self)).decode(),
            dryRun: try row.get(8), priority: try row.get(9), sealed: try row.get(10), counts: counts,
            failureReason: try row.get(20), result: result.map(JSONText.init(unchecked:)),
            cursor: cursor.map(JSONText.init(unchecked:)), createdAt: Date(milliseconds: try row.get(23)),
            confirmedAt: try date(24), startedAt: try date(25), completedAt: try date(26), expiresAt: try date(27))
        return StoredBatch(key: try row.get(0), record: record)
    }

    /// The batch with internal `key`; with `lock`, held until the transaction ends.
    static func batch(_ db: PostgresConnection, key: Int64, lock: Bool = false) async throws -> StoredBatch? {
        let suffix = lock ? " FOR UPDATE" : ""
        return try await db.one(
            "SELECT \(unescaped: BatchRecord.storedColumns) FROM batches WHERE key = \(key)\(unescaped: suffix)"
        ).map(decodeBatch)
    }

    static func batch(_ db: PostgresConnection, id: BatchID, lock: Bool = false) async throws -> StoredBatch? {
        let suffix = lock ? " FOR UPDATE" : ""
        return try await db.one(
            "SELECT \(unescaped: BatchRecord.storedColumns) FROM batches WHERE id = \(id.rawValue)\(unescaped: suffix)"
        ).map(decodeBatch)
    }

    /// The batch, locked for this transaction, or `batchNotFound`.
    static func requireBatch(_ db: PostgresConnection, _ id: BatchID) async throws -> StoredBatch {
        guard let stored = try await batch(db, id: id, lock: true) else {
            throw StoreError(.batchNotFound, "no batch \(id)")
        }
        return stored
    }

    /// Stores an event. Event ids must become visible in order, so event
    /// writers take one transaction-scoped lock: ids are handed out in commit
    /// order and a reader following ids never skips one. Callers record
    /// events after their batch-row updates, so the lock is always taken last.
    static func recordEvent(
        _ db: PostgresConnection, _ stored: StoredBatch, _ type: BatchEventType, at now: Date,
        data: [String: JSONValue]
    ) async throws -> BatchEvent {
        let text = try JSONText(encoding: JSONValue.object(data)).text
        try await db.run("SELECT pg_advisory_xact_lock(\(eventLock))")
        let row = try await db.one(
            """
            INSERT INTO events(batch_key, type, at, data) VALUES (\(stored.key), \(type.rawValue), \(now.milliseconds), \(text))
            RETURNING id
            """)
        try await db.notifyWork()
        return BatchEvent(
            id: try row!.get(0), batchID: stored.record.id, type: type, at: now, data: .object(data))
    }

    /// The advisory lock that orders event ids.
    static let eventLock: Int64 = 0x7472_616e_6368_6502

    /// Inserts items from `startSeq` and the chunks that cover them, in bulk
    /// (`UNNEST` arrays: one statement per few thousand items).
    static func insertItems(
        _ db: PostgresConnection, _ stored: StoredBatch, startSeq: Int64, items: some Collection<NewItem>, now: Date
    ) async throws {
        guard !items.isEmpty else { return }
        let chunkSize = Int64(stored.record.options.chunkSize)
        let nowMS = now.milliseconds
        var seqs: [Int64] = []
        var payloads: [String] = []
        var rejectedSeqs: [Int64] = []
        var rejectedPayloads: [String] = []
        var codes: [String] = []
        var messages: [String] = []
        var categories: [String] = []
        var chunkFirst: [Int64] = []
        var chunkLast: [Int64] = []
        var chunkStates: [Int16] = []
        var seq = startSeq
        var chunkStart = startSeq
        var runnableInChunk = 0
        func flushItems() async throws {
            if !seqs.isEmpty {
                try await db.run(
                    """
                    INSERT INTO items(batch_key, seq, status, payload, updated_at)
                    SELECT \(stored.key), s, 0, p, \(nowMS) FROM unnest(\(seqs)::bigint[], \(payloads)::text[]) AS u(s, p)
                    """)
                seqs.removeAll(keepingCapacity: true)
                payloads.removeAll(keepingCapacity: true)
            }
            if !rejectedSeqs.isEmpty {
                try await db.run(
                    """
                    INSERT INTO items(batch_key, seq, status, payload, error_code, error_message, error_category, updated_at)
                    SELECT \(stored.key), s, \(Int16(ItemStatus.skipped.rawValue)), p, c, m, k, \(nowMS)
                    FROM unnest(\(rejectedSeqs)::bigint[], \(rejectedPayloads)::text[], \(codes)::text[],
                                \(messages)::text[], \(categories)::text[]) AS u(s, p, c, m, k)
                    """)
                rejectedSeqs.removeAll(keepingCapacity: true)
                rejectedPayloads.removeAll(keepingCapacity: true)
                codes.removeAll(keepingCapacity: true)
                messages.removeAll(keepingCapacity: true)
                categories.removeAll(keepingCapacity: true)
            }
        }
        func closeChunk(through last: Int64) {
            chunkFirst.append(chunkStart)
            chunkLast.append(last)
            chunkStates.append(runnableInChunk > 0 ? ChunkState.pending.rawValue : ChunkState.done.rawValue)
            chunkStart = last + 1
            runnableInChunk = 0
        }
        var rejected: Int64 = 0
        for item in items {
            if let rejection = item.rejection {
                rejected += 1
                rejectedSeqs.append(seq)
                rejectedPayloads.append(item.payload.text)
                codes.append(rejection.code.storable)
                messages.append(rejection.message.storable)
                categories.append(rejection.category.rawValue)
            } else {
                runnableInChunk += 1
                seqs.append(seq)
                payloads.append(item.payload.text)
            }
            if seq - chunkStart + 1 == chunkSize { closeChunk(through: seq) }
            seq += 1
            if seqs.count + rejectedSeqs.count >= 5_000 { try await flushItems() }
        }
        if chunkStart < seq { closeChunk(through: seq - 1) }
        try await flushItems()
        try await db.run(
            """
            INSERT INTO chunks(batch_key, first_seq, last_seq, state)
            SELECT \(stored.key), f, l, s FROM unnest(\(chunkFirst)::bigint[], \(chunkLast)::bigint[], \(chunkStates)::smallint[]) AS u(f, l, s)
            """)
        var delta = BatchCounts()
        delta.total = seq - startSeq
        delta.skipped = rejected
        try await addCounts(db, stored.key, delta)
        if chunkStates.contains(ChunkState.pending.rawValue) { try await db.notifyWork() }
    }

    /// Moves the batch's counters by `delta` (and, `releasingChunk`, frees one
    /// of its chunk slots); returns the batch as it now is. One statement
    /// takes the batch row, so callers need no separate lock or re-read.
    @discardableResult
    static func addCounts(
        _ db: PostgresConnection, _ key: Int64, _ delta: BatchCounts, releasingChunk: Bool = false
    ) async throws -> StoredBatch {
        let released: Int32 = releasingChunk ? 1 : 0
        guard
            let row = try await db.one(
                """
                UPDATE batches SET total = total + \(delta.total), running = greatest(0, running + \(delta.running)),
                    succeeded = succeeded + \(delta.succeeded), failed = failed + \(delta.failed),
                    skipped = skipped + \(delta.skipped), dead = dead + \(delta.dead), canceled = canceled + \(delta.canceled),
                    retried = retried + \(delta.retried), rescued = rescued + \(delta.rescued),
                    leased_chunks = greatest(0, leased_chunks - \(released))
                WHERE key = \(key)
                RETURNING \(unescaped: BatchRecord.storedColumns)
                """)
        else { throw StoreError(.batchNotFound, "no batch with key \(key)") }
        return try decodeBatch(row)
    }

    /// Recounts the stored item counters from the items themselves (after bulk changes).
    static func recountItems(_ db: PostgresConnection, _ key: Int64) async throws {
        var counts = [Int: Int64]()
        for row in try await db.rows("SELECT status, count(*) FROM items WHERE batch_key = \(key) GROUP BY status") {
            counts[try row.get(0, as: Int.self)] = try row.get(1)
        }
        func count(_ status: ItemStatus) -> Int64 { counts[status.rawValue] ?? 0 }
        try await db.run(
            """
            UPDATE batches SET total = \(counts.values.reduce(0, +)), succeeded = \(count(.succeeded)),
                failed = \(count(.failed)), skipped = \(count(.skipped)), dead = \(count(.dead)),
                canceled = \(count(.canceled))
            WHERE key = \(key)
            """)
    }

    /// Cancels the not-yet-terminal items of a seq range; returns the counter change.
    static func cancelItems(_ db: PostgresConnection, _ key: Int64, first: Int64, last: Int64) async throws
        -> BatchCounts
    {
        var delta = BatchCounts()
        let rows = try await db.rows(
            """
            WITH prev AS (
                SELECT seq, status FROM items
                WHERE batch_key = \(key) AND seq BETWEEN \(first) AND \(last) AND status IN (0, 3) FOR UPDATE),
            changed AS (
                UPDATE items i SET status = 6, next_attempt_at = NULL FROM prev
                WHERE i.batch_key = \(key) AND i.seq = prev.seq RETURNING prev.status AS old)
            SELECT old, count(*) FROM changed GROUP BY old
            """)
        for row in rows {
            let status = ItemStatus(rawValue: try row.get(0, as: Int.self)) ?? .pending
            let changed: Int64 = try row.get(1)
            delta[status] -= changed
            delta.canceled += changed
        }
        return delta
    }

    /// Cancels every item that is not in flight (the chunks not leased), in
    /// one statement whatever the batch's size.
    static func cancelPending(_ db: PostgresConnection, _ stored: StoredBatch) async throws {
        let rows = try await db.rows(
            """
            WITH closed AS (
                UPDATE chunks SET state = 2 WHERE batch_key = \(stored.key) AND state = 0
                RETURNING first_seq, last_seq),
            prev AS (
                SELECT i.seq, i.status FROM items i JOIN closed ON i.seq BETWEEN closed.first_seq AND closed.last_seq
                WHERE i.batch_key = \(stored.key) AND i.status IN (0, 3) FOR UPDATE OF i),
            changed AS (
                UPDATE items i SET status = 6, next_attempt_at = NULL FROM prev
                WHERE i.batch_key = \(stored.key) AND i.seq = prev.seq RETURNING prev.status AS old)
            SELECT old, count(*) FROM changed GROUP BY old
            """)
        var delta = BatchCounts()
        for row in rows {
            let status = ItemStatus(rawValue: try row.get(0, as: Int.self)) ?? .pending
            let changed: Int64 = try row.get(1)
            delta[status] -= changed
            delta.canceled += changed
        }
        try await addCounts(db, stored.key, delta)
    }

    /// Ends a chunk's lease and sets its state from its items: done when all
    /// are terminal, otherwise pending again from the earliest due retry.
    static func settleChunk(_ db: PostgresConnection, chunkID: Int64, batchKey: Int64) async throws {
        let row = try await db.one(
            """
            SELECT count(i.seq), min(CASE WHEN i.status = 0 THEN 0 ELSE coalesce(i.next_attempt_at, 0) END)
            FROM chunks c JOIN items i ON i.batch_key = c.batch_key AND i.seq BETWEEN c.first_seq AND c.last_seq
            WHERE c.id = \(chunkID) AND i.status IN (0, 3)
            """)
        let remaining: Int64 = try row?.get(0) ?? 0
        let readyAt: Int64 = try row?.get(1, as: Int64?.self) ?? 0
        let state = remaining > 0 ? ChunkState.pending : .done
        try await db.run(
            """
            UPDATE chunks SET state = \(state.rawValue), ready_at = \(readyAt), lease_owner = NULL,
                lease_expires_at = NULL, claimed_items = 0 WHERE id = \(chunkID)
            """)
        if state == .pending { try await db.notifyWork() }
    }

    static func next(_ record: BatchRecord, _ action: LifecycleAction) throws -> BatchStatus {
        try BatchLifecycle.next(from: record.status, action, pausedFrom: record.pausedFrom)
    }

    /// Applies one lifecycle action with its side effects and event: the one
    /// place where a batch's status changes. The caller holds the batch row.
    static func apply(
        _ db: PostgresConnection, _ stored: StoredBatch, _ action: LifecycleAction, reason: String?, now: Date,
        data: [String: JSONValue] = [:]
    ) async throws -> (batch: StoredBatch, events: [BatchEvent]) {
        let from = stored.record.status
        let to = try next(stored.record, action)
        let nowMS = now.milliseconds
        var binds = PostgresBindings()
        binds.append(to.rawValue)
        var assignments = ["status = $1"]
        func bind(_ value: some PostgresEncodable & Sendable) throws -> String {
            try binds.append(value)
            return "$\(binds.count)"
        }
        switch action {
        case .pause:
            assignments.append("paused_from = \(try bind(from.rawValue))")
        case .resume:
            assignments.append("paused_from = NULL")
        case .confirm:
            assignments.append("confirmed_at = \(try bind(nowMS))")
        case .start:
            assignments.append("started_at = coalesce(started_at, \(try bind(nowMS)))")
        case .retry where from.isEnded:
            assignments += [
                "completed_at = NULL", "expires_at = NULL", "failure_reason = NULL", "paused_from = NULL",
                "confirmed_at = \(try bind(nowMS))",
            ]
        default:
            break
        }
        if action == .fail {
            assignments.append("failure_reason = \(try bind((reason ?? "the batch failed").storable))")
        }
        if to.isEnded {
            assignments += [
                "completed_at = \(try bind(nowMS))",
                "expires_at = \(try bind(nowMS + Int64(stored.record.options.ttl * 1000)))",
            ]
        }
        let keyPlaceholder = try bind(stored.key)
        try await db.run(
            PostgresQuery(
                unsafeSQL: "UPDATE batches SET \(assignments.joined(separator: ", ")) WHERE key = \(keyPlaceholder)",
                binds: binds))
        if action == .cancel || action == .fail {
            try await cancelPending(db, stored)
        }
        if to.isRunnable && !from.isRunnable { try await db.notifyWork() }
        var eventData = data
        eventData["status"] = .string(to.rawValue)
        eventData["from"] = .string(from.rawValue)
        if let reason { eventData["reason"] = .string(reason.storable) }
        let updated = try await batch(db, key: stored.key)!
        let event = try await recordEvent(db, updated, action.eventType, at: now, data: eventData)
        return (updated, [event])
    }

    /// Seals a batch: pre-processes it, confirms it unless confirmation is
    /// required, and completes it at once when it holds nothing to run.
    static func seal(_ db: PostgresConnection, _ stored: StoredBatch, now: Date) async throws -> (
        batch: StoredBatch, events: [BatchEvent]
    ) {
        guard !stored.record.sealed else { return (stored, []) }
        guard !stored.record.status.isEnded else {
            throw StoreError(.invalidAppend, "batch \(stored.record.id) has ended")
        }
        try await db.run("UPDATE batches SET sealed = true WHERE key = \(stored.key)")
        var current = try await batch(db, key: stored.key)!
        var events: [BatchEvent] = []
        events.append(
            try await recordEvent(
                db, current, .sealed, at: now, data: ["total": .number(Double(current.record.counts.total))]))
        if current.record.status == .created {
            let applied = try await apply(db, current, .preProcess, reason: nil, now: now)
            current = applied.batch
            events += applied.events
            if !current.record.options.requireConfirmation && !current.record.dryRun {
                let confirmed = try await apply(db, current, .confirm, reason: nil, now: now)
                current = confirmed.batch
                events += confirmed.events
            }
        }
        let finished = try await finishIfDone(db, current, now: now)
        return (finished.batch, events + finished.events)
    }

    /// Ends a sealed, running batch whose chunks are all done, by the outcome
    /// rule. The caller holds the batch row, so two nodes finishing the last
    /// chunks see each other's commits.
    static func finishIfDone(_ db: PostgresConnection, _ stored: StoredBatch, now: Date) async throws -> (
        batch: StoredBatch, events: [BatchEvent]
    ) {
        guard stored.record.sealed, stored.record.status.isRunnable else { return (stored, []) }
        let unfinished = try await db.count(
            "SELECT 1 FROM chunks WHERE batch_key = \(stored.key) AND state != 2 LIMIT 1")
        guard unfinished == 0 else { return (stored, []) }
        switch BatchOutcome.whenAllTerminal(stored.record.counts) {
        case .completed:
            return try await apply(db, stored, .complete, reason: nil, now: now)
        default:
            return try await apply(db, stored, .fail, reason: "no item succeeded", now: now)
        }
    }

    /// Makes one chunk claimable again, splitting it when it was rescued
    /// `splitAfter` times so a poison item ends up alone and `dead`. The
    /// chunk row is locked by the caller; the batch row is locked here.
    static func rescueChunk(
        _ db: PostgresConnection, chunk row: PostgresRandomAccessRow, now: Date, splitAfter: Int
    ) async throws -> RescuedChunk? {
        let nowMS = now.milliseconds
        let chunkID: Int64 = try row.get(0)
        let key: Int64 = try row.get(1)
        let first: Int64 = try row.get(2)
        let last: Int64 = try row.get(3)
        let rescues = try row.get(4, as: Int.self) + 1
        let unfinished: Int64 = try row.get(5)
        guard let stored = try await batch(db, key: key, lock: true) else { return nil }
        var delta = BatchCounts()
        delta.running = -unfinished
        delta.rescued = unfinished
        try await db.run(
            """
            UPDATE chunks SET lease_owner = NULL, lease_expires_at = NULL, claimed_items = 0, rescues = \(rescues)
            WHERE id = \(chunkID)
            """)
        var split = false
        var quarantined: (seq: Int64, message: String)?
        if stored.record.status.isEnded {
            delta.add(try await cancelItems(db, key, first: first, last: last))
            try await db.run("UPDATE chunks SET state = 2 WHERE id = \(chunkID)")
        } else if rescues >= splitAfter {
            let open = try await db.rows(
                """
                SELECT seq, status FROM items WHERE batch_key = \(key) AND seq BETWEEN \(first) AND \(last)
                  AND status IN (0, 3) ORDER BY seq
                """)
            if open.count == 1, let item = open.first {
                let seq: Int64 = try item.get(0)
                let previous = ItemStatus(rawValue: try item.get(1, as: Int.self)) ?? .pending
                let message = "the item's worker stopped \(rescues) times while running it; quarantined"
                try await db.run(
                    """
                    UPDATE items SET status = 5, error_code = 'worker_lost', error_message = \(message),
                        error_category = 'retryable', next_attempt_at = NULL, updated_at = \(nowMS)
                    WHERE batch_key = \(key) AND seq = \(seq)
                    """)
                delta.move(from: previous, to: .dead)
                quarantined = (seq, message)
                try await settleChunk(db, chunkID: chunkID, batchKey: key)
            } else if open.count > 1 {
                let middle: Int64 = try open[open.count / 2 - 1].get(0)
                try await db.run(
                    "UPDATE chunks SET last_seq = \(middle), state = 0, ready_at = 0 WHERE id = \(chunkID)")
                try await db.run(
                    """
                    INSERT INTO chunks(batch_key, first_seq, last_seq, state, rescues)
                    VALUES (\(key), \(middle + 1), \(last), 0, \(rescues))
                    """)
                try await db.notifyWork()
                split = true
            } else {
                try await settleChunk(db, chunkID: chunkID, batchKey: key)
            }
        } else {
            try await settleChunk(db, chunkID: chunkID, batchKey: key)
        }
        try await addCounts(db, key, delta, releasingChunk: true)
        if let quarantined {
            _ = try await recordEvent(
                db, stored, .itemDead, at: now,
                data: [
                    "seq": .number(Double(quarantined.seq)), "code": "worker_lost",
                    "message": .string(quarantined.message),
                ])
        }
        _ = try await recordEvent(
            db, stored, .chunkRescued, at: now,
            data: [
                "first_seq": .number(Double(first)), "last_seq": .number(Double(last)),
                "unfinished": .number(Double(unfinished)), "split": .bool(split),
            ])
        if let current = try await batch(db, key: key) { _ = try await finishIfDone(db, current, now: now) }
        return RescuedChunk(
            batchID: stored.record.id, firstSeq: first, lastSeq: last, unfinished: unfinished, split: split,
            quarantinedSeq: quarantined?.seq)
    }
}
