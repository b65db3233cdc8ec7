public import Foundation
import PostgresNIO
public import TrancheStore

extension PostgresBatchStore {
    // MARK: - Submission

    public func createBatch(_ batch: NewBatch, items: [NewItem]) async throws -> BatchRecord {
        let optionsText = try JSONText(encoding: batch.options).text
        return try await write { db in
            let now = batch.createdAt
            let chunkSize = batch.options.chunkSize
            let maxChunks = (batch.options.concurrency + chunkSize - 1) / chunkSize + 1
            let keyRow = try await db.one(
                """
                INSERT INTO batches(id, type, owner, status, context, options, dry_run, priority, sealed,
                                    max_chunks, created_at)
                VALUES (\(batch.id.rawValue), \(batch.type), \(batch.owner), 'created', \(batch.context.text),
                        \(optionsText), \(batch.dryRun), \(batch.priority), false, \(maxChunks), \(now.milliseconds))
                RETURNING key
                """)
            let key: Int64 = try keyRow!.get(0)
            var stored = try await Self.batch(db, key: key, lock: true)!
            try await Self.insertItems(db, stored, startSeq: 0, items: items, now: now)
            stored = try await Self.batch(db, key: key)!
            _ = try await Self.recordEvent(db, stored, .created, at: now, data: ["status": "created"])
            if batch.sealed {
                stored = try await Self.seal(db, stored, now: now).batch
            } else if !batch.options.requireConfirmation && !batch.dryRun {
                // Streaming uploads start running before the total is known.
                stored = try await Self.apply(db, stored, .preProcess, reason: nil, now: now).batch
                stored = try await Self.apply(db, stored, .confirm, reason: nil, now: now).batch
            }
            return stored.record
        }
    }

    public func appendItems(
        to id: BatchID, startSeq: Int64, items: [NewItem], cursor: JSONText?
    ) async throws -> AppendResult {
        try await write { db in
            let stored = try await Self.requireBatch(db, id)
            let total = stored.record.counts.total
            let fresh = items.dropFirst(
                try stored.record.itemsAlreadyStored(appendingAt: startSeq, count: items.count))
            try await Self.insertItems(db, stored, startSeq: total, items: fresh, now: Date())
            if let cursor {
                try await db.run("UPDATE batches SET cursor = \(cursor.text) WHERE key = \(stored.key)")
            }
            return AppendResult(inserted: fresh.count, total: total + Int64(fresh.count))
        }
    }

    public func seal(_ id: BatchID, at now: Date) async throws -> BatchRecord {
        try await write { db in
            let stored = try await Self.requireBatch(db, id)
            return try await Self.seal(db, stored, now: now).batch.record
        }
    }

    public func transition(_ id: BatchID, _ action: LifecycleAction, reason: String?, at now: Date) async throws
        -> BatchRecord
    {
        try await write { db in
            let stored = try await Self.requireBatch(db, id)
            return try await Self.apply(db, stored, action, reason: reason, now: now).batch.record
        }
    }

    public func retry(_ id: BatchID, statuses: Set<ItemStatus>, at now: Date) async throws -> (BatchRecord, Int64) {
        try await write { db in
            var stored = try await Self.requireBatch(db, id)
            // Checks the transition before touching any item.
            _ = try Self.next(stored.record, .retry)
            let codes = statuses.filter { $0 != .pending && $0 != .running && $0 != .succeeded }.map {
                Int16($0.rawValue)
            }
            guard !codes.isEmpty else { return (stored.record, 0) }
            let reset = try await db.count(
                """
                UPDATE items SET status = 0, attempts = 0, next_attempt_at = NULL,
                    error_code = NULL, error_message = NULL, error_category = NULL, updated_at = \(now.milliseconds)
                WHERE batch_key = \(stored.key) AND status = ANY(\(codes)::smallint[])
                  AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.batch_key = items.batch_key AND c.state = 1
                                  AND items.seq BETWEEN c.first_seq AND c.last_seq)
                RETURNING 1
                """)
            try await db.run(
                """
                UPDATE chunks SET state = 0, ready_at = 0, rescues = 0
                WHERE batch_key = \(stored.key) AND state = 2 AND EXISTS (
                    SELECT 1 FROM items i WHERE i.batch_key = chunks.batch_key AND i.status = 0
                      AND i.seq BETWEEN chunks.first_seq AND chunks.last_seq)
                """)
            try await Self.recountItems(db, stored.key)
            stored = try await Self.batch(db, key: stored.key)!
            stored = try await Self.apply(
                db, stored, .retry, reason: nil, now: now, data: ["items": .number(Double(reset))]
            ).batch
            try await db.notifyWork()
            return (stored.record, Int64(reset))
        }
    }

    public func setResult(_ id: BatchID, result: JSONText) async throws {
        try await write { db in
            let stored = try await Self.requireBatch(db, id)
            try await db.run("UPDATE batches SET result = \(result.text) WHERE key = \(stored.key)")
        }
    }

    // MARK: - Leasing

    /// What one claim attempt found.
    private enum Claim: Sendable {
        case leased(ChunkLease)
        case nothing
        /// The batch reached its cap or ended meanwhile: look again.
        case raced
    }

    public func claimChunk(owner: String, leaseDuration: Double, now: Date) async throws -> ChunkLease? {
        let nowMS = now.milliseconds
        let expires = nowMS + Int64(leaseDuration * 1000)
        for _ in 0..<16 {
            // Candidates in the claim order, read without locks.
            let candidates = try await read { db in
                try await db.rows(
                    """
                    SELECT b.key FROM batches b
                    WHERE b.status IN ('confirmed', 'processing') AND b.leased_chunks < b.max_chunks
                      AND EXISTS (SELECT 1 FROM chunks c WHERE c.batch_key = b.key AND c.state = 0
                                  AND c.ready_at <= \(nowMS))
                    ORDER BY b.priority DESC, b.leased_chunks, b.last_claim_at, b.key
                    LIMIT 4
                    """
                ).map { try $0.get(0, as: Int64.self) }
            }
            guard !candidates.isEmpty else { return nil }
            var raced = false
            for key in candidates {
                switch try await claim(in: key, owner: owner, nowMS: nowMS, expires: expires, now: now) {
                case .leased(let lease): return lease
                // The candidates were read without locks: another node may have
                // emptied this one, so read them again rather than give up.
                case .nothing, .raced: raced = true
                }
            }
            if !raced { return nil }
        }
        return nil
    }

    /// Leases the next due chunk of one batch. The batch row is locked first
    /// (the cap on chunks in flight holds across nodes); the chunk is taken
    /// with `SKIP LOCKED`, so claimers never wait on each other's chunks.
    private func claim(in key: Int64, owner: String, nowMS: Int64, expires: Int64, now: Date) async throws -> Claim {
        try await write { db in
            let gate = try await db.count(
                """
                UPDATE batches SET leased_chunks = leased_chunks + 1, last_claim_at = \(nowMS)
                WHERE key = \(key) AND status IN ('confirmed', 'processing') AND leased_chunks < max_chunks
                RETURNING 1
                """)
            guard gate == 1 else { return .raced }
            while true {
                guard
                    let claimed = try await db.one(
                        """
                        UPDATE chunks SET state = 1, lease_owner = \(owner), lease_token = nextval('lease_tokens'),
                            lease_expires_at = \(expires)
                        WHERE id = (SELECT id FROM chunks WHERE batch_key = \(key) AND state = 0
                                      AND ready_at <= \(nowMS)
                                    ORDER BY ready_at, first_seq LIMIT 1 FOR UPDATE SKIP LOCKED)
                        RETURNING id, first_seq, last_seq, lease_token
                        """)
                else {
                    try await db.run("UPDATE batches SET leased_chunks = leased_chunks - 1 WHERE key = \(key)")
                    return .nothing
                }
                let chunkID: Int64 = try claimed.get(0)
                let firstSeq: Int64 = try claimed.get(1)
                let lastSeq: Int64 = try claimed.get(2)
                let token: Int64 = try claimed.get(3)
                var items: [LeasedItem] = []
                items.reserveCapacity(Int(lastSeq - firstSeq + 1))
                let rows = try await db.query(
                    """
                    SELECT seq, payload, attempts, status FROM items
                    WHERE batch_key = \(key) AND seq BETWEEN \(firstSeq) AND \(lastSeq) AND status IN (0, 3)
                      AND (next_attempt_at IS NULL OR next_attempt_at <= \(nowMS))
                    ORDER BY seq
                    """, logger: PostgresConnection.quiet)
                for try await (seq, payload, attempts, status) in rows.decode((Int64, String?, Int, Int).self) {
                    items.append(
                        LeasedItem(
                            seq: seq, payload: JSONText(unchecked: payload ?? "null"), attempts: attempts,
                            status: ItemStatus(rawValue: status) ?? .pending))
                }
                if items.isEmpty {
                    // Nothing due after all: settle the chunk and look again.
                    try await Self.settleChunk(db, chunkID: chunkID, batchKey: key)
                    continue
                }
                try await db.run("UPDATE chunks SET claimed_items = \(Int64(items.count)) WHERE id = \(chunkID)")
                var running = BatchCounts()
                running.running = Int64(items.count)
                var stored = try await Self.addCounts(db, key, running)
                if stored.record.status == .confirmed {
                    stored = try await Self.apply(db, stored, .start, reason: nil, now: now).batch
                }
                return .leased(
                    ChunkLease(
                        chunkID: chunkID, batchID: stored.record.id, type: stored.record.type, token: token,
                        owner: owner, firstSeq: firstSeq, lastSeq: lastSeq, items: items))
            }
        }
    }

    public func checkpoint(
        _ lease: ChunkLease, outcomes: [ItemOutcome], finish: Bool, failBatch: String?, leaseDuration: Double,
        now: Date
    ) async throws -> CheckpointResult {
        let applier = OutcomeWriter(outcomes: outcomes, now: now)
        return try await write { db in
            let nowMS = now.milliseconds
            let fenced = try await db.one(
                """
                UPDATE chunks SET lease_expires_at = \(nowMS + Int64(leaseDuration * 1000))
                WHERE id = \(lease.chunkID) AND lease_token = \(lease.token) AND state = 1
                RETURNING batch_key, claimed_items
                """)
            guard let fenced else {
                throw StoreError(.leaseLost, "the lease on chunk \(lease.chunkID) was taken over")
            }
            let key: Int64 = try fenced.get(0)
            let claimed: Int64 = try fenced.get(1)
            // Read without a lock: only whether the batch ended matters here.
            guard let before = try await Self.batch(db, key: key) else {
                throw StoreError(.leaseLost, "the batch of chunk \(lease.chunkID) is gone")
            }
            let written = try await applier.write(db, key: key, ended: before.record.status.isEnded)
            var delta = written.delta
            if finish {
                delta.running = -claimed
                if before.record.status.isEnded {
                    delta.add(try await Self.cancelItems(db, key, first: lease.firstSeq, last: lease.lastSeq))
                    try await db.run(
                        "UPDATE chunks SET state = 2, lease_owner = NULL, lease_expires_at = NULL WHERE id = \(lease.chunkID)"
                    )
                } else {
                    try await Self.settleChunk(db, chunkID: lease.chunkID, batchKey: key)
                }
            } else {
                delta.running = -written.applied
                try await db.run(
                    "UPDATE chunks SET claimed_items = greatest(0, claimed_items - \(written.applied)) WHERE id = \(lease.chunkID)"
                )
            }
            // The batch row last: its lock is the contended one.
            var stored = try await Self.addCounts(db, key, delta, releasingChunk: finish)
            if finish {
                // A slot of the batch's chunk cap is free again.
                try await db.notifyWork()
                if stored.record.status.isEnded && !before.record.status.isEnded {
                    // Ended while this checkpoint ran: what is left of the chunk will never run.
                    let canceled = try await Self.cancelItems(db, key, first: lease.firstSeq, last: lease.lastSeq)
                    try await db.run("UPDATE chunks SET state = 2 WHERE id = \(lease.chunkID)")
                    stored = try await Self.addCounts(db, key, canceled)
                }
            }
            var events: [BatchEvent] = []
            for dead in written.dead {
                events.append(
                    try await Self.recordEvent(
                        db, stored, .itemDead, at: now,
                        data: [
                            "seq": .number(Double(dead.seq)), "code": .string(dead.error?.code ?? ""),
                            "message": .string(dead.error?.message ?? ""),
                        ]))
            }
            if !stored.record.status.isEnded {
                let reason =
                    failBatch ?? BatchOutcome.failurePolicyTrips(stored.record.counts, options: stored.record.options)
                if let reason {
                    let applied = try await Self.apply(db, stored, .fail, reason: reason, now: now)
                    stored = applied.batch
                    events += applied.events
                } else if finish {
                    let finished = try await Self.finishIfDone(db, stored, now: now)
                    stored = finished.batch
                    events += finished.events
                }
            }
            return CheckpointResult(batchStatus: stored.record.status, counts: stored.record.counts, events: events)
        }
    }

    public func rescueExpiredLeases(now: Date, splitAfter: Int) async throws -> [RescuedChunk] {
        try await rescue(
            where: "state = 1 AND lease_expires_at < \(now.milliseconds)", now: now, splitAfter: splitAfter)
    }

    public func releaseAllLeases(now: Date) async throws -> [RescuedChunk] {
        try await write { db in try await db.run("DELETE FROM leader") }
        return try await rescue(where: "state = 1", now: now, splitAfter: Int.max)
    }

    /// Rescues the chunks matching `condition`, one transaction per chunk so
    /// that a rescue never holds two batches' rows at once.
    private func rescue(where condition: String, now: Date, splitAfter: Int) async throws -> [RescuedChunk] {
        let ids = try await read { db in
            try await db.rows(PostgresQuery(unsafeSQL: "SELECT id FROM chunks WHERE \(condition) LIMIT 1000")).map {
                try $0.get(0, as: Int64.self)
            }
        }
        var rescued: [RescuedChunk] = []
        for id in ids {
            let chunk = try await write { db -> RescuedChunk? in
                guard
                    let row = try await db.one(
                        PostgresQuery(
                            unsafeSQL: """
                                SELECT id, batch_key, first_seq, last_seq, rescues, claimed_items FROM chunks
                                WHERE id = \(id) AND \(condition) FOR UPDATE SKIP LOCKED
                                """))
                else { return nil }
                return try await Self.rescueChunk(db, chunk: row, now: now, splitAfter: splitAfter)
            }
            if let chunk { rescued.append(chunk) }
        }
        return rescued
    }

    // MARK: - Maintenance

    public func enforceDeadlines(now: Date) async throws -> [BatchEvent] {
        let keys = try await read { db in
            try await db.rows(
                """
                SELECT key FROM batches
                WHERE status IN ('created', 'pre_processed', 'confirmed', 'processing', 'paused')
                """
            ).map { try $0.get(0, as: Int64.self) }
        }
        var events: [BatchEvent] = []
        for key in keys {
            events += try await write { db in
                guard let stored = try await Self.batch(db, key: key, lock: true), !stored.record.status.isEnded
                else { return [] }
                let start = stored.record.startedAt ?? stored.record.confirmedAt ?? stored.record.createdAt
                if now.timeIntervalSince(start) > stored.record.options.batchTimeout {
                    let seconds = stored.record.options.batchTimeout
                    return try await Self.apply(
                        db, stored, .fail, reason: "batch_timeout: the batch ran longer than \(Int(seconds)) s",
                        now: now
                    ).events
                }
                if stored.record.status.isRunnable {
                    return try await Self.finishIfDone(db, stored, now: now).events
                }
                return []
            }
        }
        return events
    }

    public func prune(now: Date, limit: Int) async throws -> Int {
        try await write { db in
            guard
                let row = try await db.one(
                    """
                    SELECT key FROM batches WHERE NOT pruned AND expires_at < \(now.milliseconds)
                    ORDER BY expires_at LIMIT 1 FOR UPDATE SKIP LOCKED
                    """)
            else { return 0 }
            let key: Int64 = try row.get(0)
            let deleted = try await db.count(
                """
                DELETE FROM items WHERE batch_key = \(key) AND seq IN (
                    SELECT seq FROM items WHERE batch_key = \(key) ORDER BY seq LIMIT \(Int64(limit)))
                RETURNING 1
                """)
            if deleted < limit {
                try await db.run("DELETE FROM chunks WHERE batch_key = \(key)")
                try await db.run("UPDATE batches SET pruned = true WHERE key = \(key)")
            }
            return max(deleted, 1)
        }
    }

    public func nextDueTime() async throws -> Date? {
        try await read { db in
            let row = try await db.one(
                """
                SELECT min(c.ready_at) FROM chunks c JOIN batches b ON b.key = c.batch_key
                WHERE c.state = 0 AND b.status IN ('confirmed', 'processing')
                """)
            return try row?.get(0, as: Int64?.self).map(Date.init(milliseconds:))
        }
    }

    public func deleteBatch(_ id: BatchID) async throws {
        try await write { db in
            let stored = try await Self.requireBatch(db, id)
            guard stored.record.status.isEnded || stored.record.dryRun else {
                throw StoreError(.conflict, "batch \(id) is \(stored.record.status); cancel it before deleting it")
            }
            try await db.run("DELETE FROM items WHERE batch_key = \(stored.key)")
            try await db.run("DELETE FROM chunks WHERE batch_key = \(stored.key)")
            try await db.run("DELETE FROM events WHERE batch_key = \(stored.key)")
            try await db.run("DELETE FROM batches WHERE key = \(stored.key)")
        }
    }
}

/// Writes a checkpoint's outcomes. Each outcome is applied only if the item's
/// stored attempts are below the outcome's attempt, so a checkpoint repeated
/// after an unknown commit result never counts an outcome twice.
struct OutcomeWriter: Sendable {
    /// One non-plain outcome, as the JSON the statement unpacks.
    struct Row: Encodable {
        var seq: Int64
        var status: Int
        var attempts: Int
        var output: String?
        var errorCode: String?
        var errorMessage: String?
        var errorCategory: String?
        var nextAttemptAt: Int64?

        enum CodingKeys: String, CodingKey {
            case seq, status, attempts, output
            case errorCode = "error_code"
            case errorMessage = "error_message"
            case errorCategory = "error_category"
            case nextAttemptAt = "next_attempt_at"
        }
    }

    let outcomes: [ItemOutcome]
    let now: Date

    /// Applies the outcomes; returns the counter change, how many applied,
    /// and the outcomes that made items dead.
    func write(_ db: PostgresConnection, key: Int64, ended: Bool) async throws -> (
        delta: BatchCounts, applied: Int64, dead: [ItemOutcome]
    ) {
        var delta = BatchCounts()
        var applied: Int64 = 0
        var dead: [ItemOutcome] = []
        let nowMS = now.milliseconds
        // A retry of a batch that has ended will never come: cancel it.
        func storedStatus(of outcome: ItemOutcome) -> ItemStatus {
            ended && outcome.status == .failed ? .canceled : outcome.status
        }
        func isPlain(_ outcome: ItemOutcome) -> Bool { outcome.output == nil && outcome.error == nil }
        let sorted = outcomes.sorted { $0.seq < $1.seq }
        var detailed: [Row] = []
        var bySeq: [Int64: ItemOutcome] = [:]
        var index = 0
        while index < sorted.count {
            let outcome = sorted[index]
            let status = storedStatus(of: outcome)
            guard isPlain(outcome) else {
                detailed.append(
                    Row(
                        seq: outcome.seq, status: status.rawValue, attempts: outcome.attempt,
                        output: outcome.output?.text.storable, errorCode: outcome.error?.code.storable,
                        errorMessage: outcome.error?.message.storable, errorCategory: outcome.error?.category.rawValue,
                        nextAttemptAt: status == .failed ? outcome.nextAttemptAt?.milliseconds : nil))
                bySeq[outcome.seq] = outcome
                index += 1
                continue
            }
            // Consecutive items with the same plain result are written as one range.
            var last = index
            while last + 1 < sorted.count, sorted[last + 1].seq == sorted[last].seq + 1, isPlain(sorted[last + 1]),
                sorted[last + 1].attempt == outcome.attempt, storedStatus(of: sorted[last + 1]) == status
            {
                last += 1
            }
            let rows = try await db.rows(
                """
                WITH prev AS (
                    SELECT seq, status FROM items
                    WHERE batch_key = \(key) AND seq BETWEEN \(outcome.seq) AND \(sorted[last].seq)
                      AND attempts < \(outcome.attempt) FOR UPDATE),
                changed AS (
                    UPDATE items i SET status = \(Int16(status.rawValue)), attempts = \(outcome.attempt), output = NULL,
                        error_code = NULL, error_message = NULL, error_category = NULL, next_attempt_at = NULL,
                        updated_at = \(nowMS)
                    FROM prev WHERE i.batch_key = \(key) AND i.seq = prev.seq RETURNING prev.status AS old)
                SELECT old, count(*) FROM changed GROUP BY old
                """)
            for row in rows {
                let old = ItemStatus(rawValue: try row.get(0, as: Int.self)) ?? .pending
                let count: Int64 = try row.get(1)
                delta[old] -= count
                delta[status] += count
                applied += count
                if outcome.attempt > 1 { delta.retried += count }
            }
            index = last + 1
        }
        if !detailed.isEmpty {
            let json = String(decoding: try JSONEncoder().encode(detailed), as: UTF8.self)
            let rows = try await db.rows(
                """
                WITH input AS (
                    SELECT * FROM jsonb_to_recordset(\(json)::jsonb) AS x(
                        seq bigint, status smallint, attempts int, output text, error_code text,
                        error_message text, error_category text, next_attempt_at bigint)),
                prev AS (
                    SELECT i.seq, i.status FROM items i JOIN input ON input.seq = i.seq
                    WHERE i.batch_key = \(key) AND i.attempts < input.attempts FOR UPDATE OF i),
                changed AS (
                    UPDATE items i SET status = input.status, attempts = input.attempts, output = input.output,
                        error_code = input.error_code, error_message = input.error_message,
                        error_category = input.error_category, next_attempt_at = input.next_attempt_at,
                        updated_at = \(nowMS)
                    FROM prev JOIN input ON input.seq = prev.seq
                    WHERE i.batch_key = \(key) AND i.seq = prev.seq
                    RETURNING i.seq, prev.status AS old)
                SELECT seq, old FROM changed
                """)
            for row in rows {
                let seq: Int64 = try row.get(0)
                let old = ItemStatus(rawValue: try row.get(1, as: Int.self)) ?? .pending
                guard let outcome = bySeq[seq] else { continue }
                let status = storedStatus(of: outcome)
                delta[old] -= 1
                delta[status] += 1
                applied += 1
                if outcome.attempt > 1 { delta.retried += 1 }
                if status == .dead { dead.append(outcome) }
            }
        }
        return (delta, applied, dead)
    }
}
