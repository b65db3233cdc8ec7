import Foundation
import PostgresNIO
import TrancheStore

/// A PostgreSQL row read by position, without trapping on NULL or a wrong type.
struct PostgresStoredRow: StoredRow {
    let row: PostgresRandomAccessRow

    func int64(at index: Int) throws -> Int64? { try value(at: index, Int64?.self) }
    func string(at index: Int) throws -> String? { try value(at: index, String?.self) }
    func bool(at index: Int) throws -> Bool? { try value(at: index, Bool?.self) }

    private func value<T: PostgresDecodable>(at index: Int, _ type: T.Type) throws -> T {
        guard index < row.count else { throw StoreError(.storage, "a stored row has no column \(index)") }
        do {
            return try row[index].decode(T.self)
        } catch {
            throw StoreError(.storage, "a stored value in column \(index) has the wrong type")
        }
    }
}

extension PostgresBatchStore {
    static func decodeBatch(_ row: PostgresRandomAccessRow) throws -> StoredBatch {
        try StoredBatch(row: PostgresStoredRow(row: row))
    }

    /// The batch with internal `key`, its counters summed over its shards
    /// (``BatchShards``); with `lock`, the batch is held until the
    /// transaction ends: its advisory lock exclusively (so claims and
    /// checkpoints, which share it, wait), then its row. The locks are taken
    /// by statements of their own: the read after them sees every writer
    /// that held them before, where a statement that waited for a lock would
    /// sum the shards as they were when it began.
    static func batch(_ db: PostgresConnection, key: Int64, lock: Bool = false) async throws -> StoredBatch? {
        if lock {
            try await db.run("SELECT pg_advisory_xact_lock(\(BatchShards.lock(key)))")
            try await db.run("SELECT 1 FROM batches WHERE key = \(key) FOR UPDATE")
        }
        return try await db.one(
            Prepared.BatchByKey.self,
            "SELECT \(unescaped: BatchShards.columns) FROM \(unescaped: BatchShards.from) WHERE b.key = \(key)"
        ).map(decodeBatch)
    }

    static func batch(_ db: PostgresConnection, id: BatchID, lock: Bool = false) async throws -> StoredBatch? {
        if lock {
            try await db.run(
                "SELECT pg_advisory_xact_lock(\(BatchShards.lock(0)) + key) FROM batches WHERE id = \(id.rawValue)")
            try await db.run("SELECT 1 FROM batches WHERE id = \(id.rawValue) FOR UPDATE")
        }
        return try await db.one(
            "SELECT \(unescaped: BatchShards.columns) FROM \(unescaped: BatchShards.from) WHERE b.id = \(id.rawValue)"
        ).map(decodeBatch)
    }

    /// The batch with `key`, which the transaction has just written.
    static func current(_ db: PostgresConnection, key: Int64) async throws -> StoredBatch {
        guard let stored = try await batch(db, key: key) else {
            throw StoreError(.batchNotFound, "no batch with key \(key)")
        }
        return stored
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
        guard let event = try await recordEvents(db, stored, [(type, data)], at: now).first else {
            throw StoreError(.storage, "the event was not stored")
        }
        return event
    }

    /// The advisory lock that orders event ids.
    static let eventLock: Int64 = 0x7472_616e_6368_6502

    /// Inserts items from `startSeq` and the chunks that cover them, in bulk
    /// (`UNNEST` arrays: one statement per few thousand items).
    static func insertItems(
        _ db: PostgresConnection, _ stored: StoredBatch, startSeq: Int64, items: some Collection<NewItem>, now: Date
    ) async throws {
        guard !items.isEmpty else { return }
        let chunkSize = ChunkSizeRules.segmentSize(stored.record.options)
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
                    SELECT \(stored.key), s, \(Int16(ItemStatus.pending.rawValue)), p, \(nowMS) FROM unnest(\(seqs)::bigint[], \(payloads)::text[]) AS u(s, p)
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
            chunkStates.append((runnableInChunk > 0 ? ChunkState.pending : ChunkState.done).rawValue)
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

    /// Moves the batch's counters by `delta` and, `releasingChunk`, frees the
    /// chunk's place among those in flight; returns the batch as it now is.
    /// With the `shard` of the chunk's lease the change goes to that shard
    /// (``BatchShards``); without, to the batch row, which the caller holds
    /// (inserts, cancels, a lease from before the shards). A freed place
    /// wakes other nodes when a claim may have wanted it. `seen`, the batch
    /// as this transaction read it before these counters moved, is returned
    /// with `delta` added instead of being read again: a read would add only
    /// what other transactions committed since, and checkpoints committing
    /// side by side miss each other's counts either way.
    @discardableResult
    static func addCounts(
        _ db: PostgresConnection, _ key: Int64, _ delta: BatchCounts, releasingChunk: Bool = false,
        shard: Int16? = nil, seen: StoredBatch? = nil
    ) async throws -> StoredBatch {
        func moved() async throws -> StoredBatch {
            guard var seen else { return try await current(db, key: key) }
            seen.record.counts.add(delta)
            // As the load view holds it (``BatchShards``).
            seen.record.counts.running = max(0, seen.record.counts.running)
            return seen
        }
        if let shard {
            let wake = try await addShardCounts(db, key, shard: shard, delta, releasingChunk: releasingChunk)
            if releasingChunk && wake { try await db.notifyWork() }
            return try await moved()
        }
        if releasingChunk { try await db.notifyWork() }
        let released: Int32 = releasingChunk ? 1 : 0
        guard
            try await db.one(
                """
                UPDATE batches SET total = total + \(delta.total), running = running + \(delta.running),
                    succeeded = succeeded + \(delta.succeeded), failed = failed + \(delta.failed),
                    skipped = skipped + \(delta.skipped), dead = dead + \(delta.dead), canceled = canceled + \(delta.canceled),
                    retried = retried + \(delta.retried), rescued = rescued + \(delta.rescued),
                    leased_chunks = greatest(0, leased_chunks - \(released))
                WHERE key = \(key)
                RETURNING key
                """) != nil
        else { throw StoreError(.batchNotFound, "no batch with key \(key)") }
        return try await moved()
    }

    /// Recounts the stored item counters from the items themselves (after bulk changes).
    static func recountItems(_ db: PostgresConnection, _ key: Int64) async throws {
        let histogram = try await db.rows("SELECT status, count(*) FROM items WHERE batch_key = \(key) GROUP BY status")
            .map { row in
                let read = PostgresStoredRow(row: row)
                return (status: try read.int(0), count: try read.int64(1))
            }
        var binds = PostgresBindings()
        for value in BatchCounts.recounted(histogram).recountValues { binds.append(value) }
        binds.append(key)
        let columns = assignments(BatchCounts.recountColumns) { "$\($0)" }
        try await db.run(
            PostgresQuery(unsafeSQL: "UPDATE batches SET \(columns) WHERE key = $\(binds.count)", binds: binds))
        // The row now holds the whole count: what the shards held goes.
        let zeroed = BatchShards.recounted.map { "\($0) = 0" }.joined(separator: ", ")
        try await db.run(PostgresQuery(unsafeSQL: "UPDATE batch_shards SET \(zeroed) WHERE batch_key = \(key)"))
    }

    /// Cancels the waiting items of a seq range; returns the counter change.
    static func cancelItems(_ db: PostgresConnection, _ key: Int64, first: Int64, last: Int64) async throws
        -> BatchCounts
    {
        try await movedCounts(
            db.rows(
                """
                WITH prev AS (
                    SELECT seq, status FROM items
                    WHERE batch_key = \(key) AND seq BETWEEN \(first) AND \(last)
                      AND status IN (\(unescaped: SQLList.waitingItems)) FOR UPDATE),
                changed AS (
                    UPDATE items i SET status = \(Int16(ItemStatus.canceled.rawValue)), next_attempt_at = NULL FROM prev
                    WHERE i.batch_key = \(key) AND i.seq = prev.seq RETURNING prev.status AS old)
                SELECT old, count(*) FROM changed GROUP BY old
                """), to: .canceled)
    }

    /// The counter change of rows `(old status, count)` moved to `status`.
    static func movedCounts(_ rows: [PostgresRandomAccessRow], to status: ItemStatus, attempt: Int = 0) throws
        -> BatchCounts
    {
        var delta = BatchCounts()
        for row in rows {
            let read = PostgresStoredRow(row: row)
            let old = ItemStatus(rawValue: try read.int(0)) ?? .pending
            delta.add(OutcomeRules.counts(moving: try read.int64(1), from: old, to: status, attempt: attempt))
        }
        return delta
    }

    /// Cancels every item that is not in flight (the chunks not leased), in
    /// one statement whatever the batch's size, with the plan of a
    /// checkpoint's outcomes (``OutcomeWriter``): an index range scan per
    /// chunk, then the rows by `ctid`.
    static func cancelPending(_ db: PostgresConnection, _ stored: StoredBatch) async throws {
        let delta = try await movedCounts(
            db.rows(
                """
                WITH closed AS (
                    UPDATE chunks SET state = \(ChunkState.done.rawValue)
                    WHERE batch_key = \(stored.key) AND state = \(ChunkState.pending.rawValue)
                    RETURNING first_seq, last_seq),
                prev AS (
                    SELECT i.item_ctid, i.status FROM closed, LATERAL (
                        SELECT i.ctid AS item_ctid, i.status FROM items i
                        WHERE i.batch_key = \(stored.key) AND i.seq BETWEEN closed.first_seq AND closed.last_seq
                          AND i.status IN (\(unescaped: SQLList.waitingItems))
                        FOR UPDATE OFFSET 0) i),
                changed AS (
                    UPDATE items i SET status = \(Int16(ItemStatus.canceled.rawValue)), next_attempt_at = NULL FROM prev
                    WHERE i.ctid = prev.item_ctid RETURNING prev.status AS old)
                SELECT old, count(*) FROM changed GROUP BY old
                """), to: .canceled)
        try await addCounts(db, stored.key, delta)
    }

    /// Ends a chunk's lease and sets its state from its items (``SettleRules``),
    /// in one statement.
    static func settleChunk(_ db: PostgresConnection, chunkID: Int64) async throws {
        // One index range scan over the chunk's items, a subquery of the
        // chunk's row; the only value bound is the chunk's id, so the
        // prepared statement keeps one plan.
        let row = try await db.one(
            Prepared.SettleChunk.self,
            """
            UPDATE chunks c SET (state, ready_at) = (
                SELECT \(unescaped: SettleRules.stateSQL(waitingItems: "count(i.seq)")),
                    coalesce(min(CASE WHEN i.status = \(unescaped: String(ItemStatus.pending.rawValue)) THEN 0
                                      ELSE coalesce(i.next_attempt_at, 0) END), 0)
                FROM items i
                WHERE i.batch_key = c.batch_key AND i.seq BETWEEN c.first_seq AND c.last_seq
                  AND i.status IN (\(unescaped: SQLList.waitingItems))),
                lease_owner = NULL, lease_expires_at = NULL, claimed_items = 0
            WHERE c.id = \(chunkID)
            RETURNING c.state
            """)
        let state = try row.map { ChunkState(rawValue: Int16(clamping: try PostgresStoredRow(row: $0).int64(0))) }
        if state == .pending { try await db.notifyWork() }
    }

    /// Marks a chunk done and ends its lease.
    static func closeChunk(_ db: PostgresConnection, chunkID: Int64) async throws {
        try await db.run(
            """
            UPDATE chunks SET state = \(ChunkState.done.rawValue), lease_owner = NULL, lease_expires_at = NULL,
                claimed_items = 0 WHERE id = \(chunkID)
            """)
    }

    /// Writes the lifecycle columns of `record` (``BatchRecord/lifecycleColumns``).
    static func writeLifecycle(_ db: PostgresConnection, _ key: Int64, _ record: BatchRecord) async throws {
        var binds = PostgresBindings()
        for value in record.lifecycleValues {
            switch value {
            case .int(let number): binds.append(number)
            case .text(let text): binds.append(text)
            }
        }
        binds.append(key)
        let columns = assignments(BatchRecord.lifecycleColumns) { "$\($0)" }
        try await db.run(
            PostgresQuery(unsafeSQL: "UPDATE batches SET \(columns) WHERE key = $\(binds.count)", binds: binds))
    }

    /// Applies one lifecycle action as ``BatchRules/step(_:_:reason:now:data:)``
    /// decides it: the one place where a batch's status is written. The
    /// caller holds the batch row.
    static func apply(
        _ db: PostgresConnection, _ stored: StoredBatch, _ action: LifecycleAction, reason: String?, now: Date,
        data: [String: JSONValue] = [:]
    ) async throws -> (batch: StoredBatch, events: [BatchEvent]) {
        var step = try BatchRules.step(stored.record, action, reason: reason, now: now, data: data)
        if step.cancelsWaitingItems { try await cancelPending(db, stored) }
        if step.endsBatch {
            step.batch.counts = try await current(db, key: stored.key).record.counts
            step.batch.summary = try step.batch.summaryText(
                errors: await errorGroups(db, stored.key, samples: BatchSummary.samplesPerGroup))
        }
        try await writeLifecycle(db, stored.key, step.batch)
        if step.wakesWorkers { try await db.notifyWork() }
        let updated = try await current(db, key: stored.key)
        let event = try await recordEvent(db, updated, step.event, at: now, data: step.eventData)
        if step.endsBatch { try await startSuccessor(db, updated, now: now) }
        if PrepareRules.mayPrepare(after: action, updated.record), try await preparationWaits(db, stored.key) {
            let preparing = try await apply(db, updated, .prepare, reason: nil, now: now)
            return (preparing.batch, [event] + preparing.events)
        }
        return (updated, [event])
    }

    /// Applies `actions` in order.
    static func apply(_ db: PostgresConnection, _ stored: StoredBatch, _ actions: [LifecycleAction], now: Date)
        async throws -> (batch: StoredBatch, events: [BatchEvent])
    {
        var current = stored
        var events: [BatchEvent] = []
        for action in actions {
            let applied = try await apply(db, current, action, reason: nil, now: now)
            current = applied.batch
            events += applied.events
        }
        return (current, events)
    }

    /// Seals a batch: its items are known, so it is pre-processed, confirmed
    /// unless that waits for a person, and finished at once when it holds nothing to run.
    static func seal(_ db: PostgresConnection, _ stored: StoredBatch, now: Date) async throws -> (
        batch: StoredBatch, events: [BatchEvent]
    ) {
        guard try BatchRules.mustSeal(stored.record) else { return (stored, []) }
        try await db.run("UPDATE batches SET sealed = true WHERE key = \(stored.key)")
        let sealed = try await current(db, key: stored.key)
        let event = try await recordEvent(
            db, sealed, .sealed, at: now, data: EventData.sealed(total: sealed.record.counts.total))
        let known = try await apply(db, sealed, BatchRules.actionsWhenItemsKnown(sealed.record), now: now)
        let finished = try await finishIfDone(db, known.batch, now: now)
        return (finished.batch, [event] + known.events + finished.events)
    }

    /// Ends a sealed, running batch whose chunks are all done
    /// (``BatchRules/finishingAction(_:)``). The caller holds the batch row,
    /// so two nodes finishing the last chunks see each other's commits.
    static func finishIfDone(_ db: PostgresConnection, _ stored: StoredBatch, now: Date) async throws -> (
        batch: StoredBatch, events: [BatchEvent]
    ) {
        guard BatchRules.mayFinish(stored.record) else { return (stored, []) }
        let unfinished = try await db.count(
            """
            SELECT 1 FROM chunks WHERE batch_key = \(stored.key) AND state != \(ChunkState.done.rawValue) LIMIT 1
            """)
        guard unfinished == 0 else { return (stored, []) }
        let finishing = BatchRules.finishingAction(stored.record)
        return try await apply(db, stored, finishing.action, reason: finishing.reason, now: now)
    }

    /// Errors of a batch's items grouped by code, with samples.
    static func errorGroups(_ db: PostgresConnection, _ key: Int64, samples: Int) async throws -> [ErrorGroup] {
        let groups = try await db.rows(
            """
            SELECT error_code, error_category, count(*) AS n FROM items
            WHERE batch_key = \(key) AND error_code IS NOT NULL AND status IN (\(unescaped: SQLList.itemsWithErrors))
            GROUP BY error_code, error_category ORDER BY n DESC, error_code
            """)
        var result: [ErrorGroup] = []
        for group in groups {
            let row = PostgresStoredRow(row: group)
            let code = try row.string(0)
            let sampleRows = try await db.rows(
                """
                SELECT seq, error_message FROM items
                WHERE batch_key = \(key) AND error_code = \(code) AND status IN (\(unescaped: SQLList.itemsWithErrors))
                ORDER BY seq LIMIT \(Int64(samples))
                """)
            result.append(
                ErrorGroup(
                    code: code,
                    category: try row.string(at: 1).flatMap(ErrorCategory.init(rawValue:)) ?? .retryable,
                    count: try row.int64(2),
                    samples: try sampleRows.map {
                        let sample = PostgresStoredRow(row: $0)
                        return ErrorSample(seq: try sample.int64(0), message: try sample.string(at: 1) ?? "")
                    }))
        }
        return result
    }

    /// Rescues one chunk as ``RescueRules`` decides. The chunk row is locked
    /// by the caller; the batch row is locked here.
    static func rescueChunk(
        _ db: PostgresConnection, chunk row: PostgresRandomAccessRow, now: Date, splitAfter: Int
    ) async throws -> RescuedChunk? {
        let chunk = try RescueRules.Chunk(row: PostgresStoredRow(row: row))
        guard let stored = try await batch(db, key: chunk.batchKey, lock: true) else { return nil }
        let ended = stored.record.status.isEnded
        // The shard of the lease being ended, before the chunk forgets it.
        let shard = try await db.one("SELECT shard FROM chunks WHERE id = \(chunk.id)").flatMap {
            try PostgresStoredRow(row: $0).int64(at: 0).flatMap { Int16(exactly: $0) }
        }
        try await db.run(
            """
            UPDATE chunks SET lease_owner = NULL, lease_expires_at = NULL, claimed_items = 0, shard = NULL,
                rescues = \(Int64(chunk.rescuesAfter))
            WHERE id = \(chunk.id)
            """)
        var open: [(seq: Int64, status: ItemStatus)] = []
        if RescueRules.needsOpenItems(chunk, batchEnded: ended, splitAfter: splitAfter) {
            open = try await db.rows(
                """
                SELECT \(unescaped: RescueRules.openItemColumns) FROM items WHERE batch_key = \(chunk.batchKey)
                  AND seq BETWEEN \(chunk.firstSeq) AND \(chunk.lastSeq)
                  AND status IN (\(unescaped: SQLList.waitingItems)) ORDER BY seq
                """
            ).map { try RescueRules.openItem(PostgresStoredRow(row: $0)) }
        }
        var delta = RescueRules.counts(chunk)
        var result = chunk.report(batchID: stored.record.id)
        var quarantineError: ItemError?
        switch RescueRules.decide(chunk, batchEnded: ended, splitAfter: splitAfter, openItems: open) {
        case .cancelRest:
            delta.add(try await cancelItems(db, chunk.batchKey, first: chunk.firstSeq, last: chunk.lastSeq))
            try await closeChunk(db, chunkID: chunk.id)
        case .settle:
            try await settleChunk(db, chunkID: chunk.id)
        case .quarantine(let seq, let previous, let message):
            let error = RescueRules.quarantineError(message: message)
            try await db.run(
                """
                UPDATE items SET status = \(Int16(ItemStatus.dead.rawValue)), error_code = \(error.code),
                    error_message = \(error.message), error_category = \(error.category.rawValue),
                    next_attempt_at = NULL, updated_at = \(now.milliseconds)
                WHERE batch_key = \(chunk.batchKey) AND seq = \(seq)
                """)
            delta.move(from: previous, to: .dead)
            result.quarantinedSeq = seq
            quarantineError = error
            try await settleChunk(db, chunkID: chunk.id)
        case .split(let middle):
            try await db.run(
                """
                UPDATE chunks SET last_seq = \(middle), state = \(ChunkState.pending.rawValue), ready_at = 0
                WHERE id = \(chunk.id)
                """)
            try await db.run(
                """
                INSERT INTO chunks(batch_key, first_seq, last_seq, state, rescues)
                VALUES (\(chunk.batchKey), \(middle + 1), \(chunk.lastSeq), \(ChunkState.pending.rawValue),
                        \(Int64(chunk.rescuesAfter)))
                """)
            try await db.notifyWork()
            result.split = true
        }
        try await addCounts(db, chunk.batchKey, delta, releasingChunk: true, shard: shard)
        if let seq = result.quarantinedSeq {
            _ = try await recordEvent(
                db, stored, .itemDead, at: now, data: EventData.itemDead(seq: seq, error: quarantineError))
        }
        _ = try await recordEvent(db, stored, .chunkRescued, at: now, data: EventData.chunkRescued(result))
        if let current = try await batch(db, key: chunk.batchKey) { _ = try await finishIfDone(db, current, now: now) }
        return result
    }
}
