public import Foundation
import PostgresNIO
public import TrancheStore

extension PostgresBatchStore {
    // MARK: - Submission

    public func createBatch(_ batch: NewBatch, items: [NewItem]) async throws -> BatchRecord {
        try await write { db in try await Self.insertBatch(db, batch, items: items).record }
    }

    /// Stores a batch, its first items and its first events inside the
    /// caller's transaction (the idempotent submit adds its record to the same one).
    static func insertBatch(_ db: PostgresConnection, _ batch: NewBatch, items: [NewItem]) async throws
        -> StoredBatch
    {
        let optionsText = try JSONText(encoding: batch.options).text
        let now = batch.createdAt
        let keyRow = try await db.one(
            """
            INSERT INTO batches(id, type, owner, status, context, options, dry_run, priority, sealed,
                                max_chunks, created_at)
            VALUES (\(batch.id.rawValue), \(batch.type), \(batch.owner), \(BatchStatus.created.rawValue),
                    \(batch.context.text), \(optionsText), \(batch.dryRun), \(batch.priority), false,
                    \(batch.options.maxChunksInFlight), \(now.milliseconds))
            RETURNING key
            """)
        guard let keyRow else { throw StoreError(.storage, "the batch was not stored") }
        let key = try PostgresStoredRow(row: keyRow).int64(0)
        try await Self.insertShards(db, key)
        try await Self.insertItems(db, try await Self.current(db, key: key), startSeq: 0, items: items, now: now)
        try await Self.storeSuccessor(db, batch)
        try await Self.storePreparation(db, key, batch)
        let stored = try await Self.current(db, key: key)
        _ = try await Self.recordEvent(
            db, stored, .created, at: now, data: ["status": .string(BatchStatus.created.rawValue)])
        if batch.sealed { return try await Self.seal(db, stored, now: now).batch }
        return try await Self.apply(db, stored, BatchRules.actionsForStreamingBatch(stored.record), now: now).batch
    }

    public func appendItems(
        to id: BatchID, startSeq: Int64, items: [NewItem], cursor: JSONText?, at now: Date
    ) async throws -> AppendResult {
        try await write { db in
            let stored = try await Self.requireBatch(db, id)
            let total = stored.record.counts.total
            let fresh = items.dropFirst(
                try stored.record.itemsAlreadyStored(appendingAt: startSeq, count: items.count))
            try await Self.insertItems(db, stored, startSeq: total, items: fresh, now: now)
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
            let stored = try await Self.requireBatch(db, id)
            let reset = try BatchRules.statusesToRetry(stored.record, statuses, at: now)
            guard !reset.isEmpty else { return (stored.record, 0) }
            let count = try await db.count(
                """
                UPDATE items SET status = \(Int16(ItemStatus.pending.rawValue)), attempts = 0, next_attempt_at = NULL,
                    error_code = NULL, error_message = NULL, error_category = NULL, updated_at = \(now.milliseconds)
                WHERE batch_key = \(stored.key) AND status IN (\(unescaped: SQLList.of(reset)))
                  AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.batch_key = items.batch_key
                                  AND c.state = \(ChunkState.leased.rawValue)
                                  AND items.seq BETWEEN c.first_seq AND c.last_seq)
                RETURNING 1
                """)
            try await db.run(
                """
                UPDATE chunks SET state = \(ChunkState.pending.rawValue), ready_at = 0, rescues = 0
                WHERE batch_key = \(stored.key) AND state = \(ChunkState.done.rawValue) AND EXISTS (
                    SELECT 1 FROM items i WHERE i.batch_key = chunks.batch_key
                      AND i.status = \(Int16(ItemStatus.pending.rawValue))
                      AND i.seq BETWEEN chunks.first_seq AND chunks.last_seq)
                """)
            try await Self.recountItems(db, stored.key)
            let retried = try await Self.apply(
                db, try await Self.current(db, key: stored.key), .retry, reason: nil, now: now,
                data: EventData.retried(items: Int64(count)))
            try await db.notifyWork()
            return (retried.batch.record, Int64(count))
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

    public func claimChunk(_ request: ChunkClaim, now: Date) async throws -> ChunkLease? {
        let owner = request.owner
        let excluded = request.excludingTenants.sorted()
        let nowMS = now.milliseconds
        let expires = now.milliseconds(after: request.leaseDuration)
        let sizes = request.sizes
        for _ in 0..<16 {
            // Candidates in the claim order, read without row locks: the
            // tenant first (fair share, under its max_running;
            // TenantShareSQL), then the batch within it. The first is
            // claimed in the same transaction, its batch's lock taken by
            // the same statement (the claim's reads come in later
            // statements, which see what a status change that held the
            // lock committed).
            let (first, others) = try await write { db -> (Claim?, [Int64]) in
                let candidates = try await db.rows(
                    Prepared.ClaimCandidates.self,
                    """
                    SELECT key, CASE WHEN n = 1 THEN pg_advisory_xact_lock_shared(\(BatchShards.lock(0)) + key) END
                    FROM (SELECT b.key, row_number() OVER (ORDER BY \(unescaped: Self.candidateOrder)) AS n
                          FROM batch_load b \(unescaped: TenantShareSQL.join(load: "batch_load"))
                          WHERE b.status IN (\(unescaped: SQLList.runnableBatches)) AND b.leased_chunks < b.max_chunks
                            AND \(unescaped: TenantShareSQL.admits) AND NOT (b.owner = ANY(\(excluded)))
                            AND EXISTS (SELECT 1 FROM chunks c WHERE c.batch_key = b.key
                                        AND c.state = \(unescaped: ChunkState.pending.literal) AND c.ready_at <= \(nowMS))
                          ORDER BY \(unescaped: Self.candidateOrder) LIMIT 4) c
                    ORDER BY n
                    """
                ).map { try PostgresStoredRow(row: $0).int64(0) }
                guard let key = candidates.first else { return (nil, []) }
                let claim = try await Self.claim(
                    db, in: key, owner: owner, sizes: sizes, nowMS: nowMS, expires: expires, now: now)
                return (claim, Array(candidates.dropFirst()))
            }
            guard let first else { return nil }
            if case .leased(let lease) = first { return lease }
            // The others each in a transaction of its own, which holds one
            // batch's lock as the first did.
            for key in others {
                let claim = try await write { db in
                    try await db.run("SELECT pg_advisory_xact_lock_shared(\(BatchShards.lock(key)))")
                    return try await Self.claim(
                        db, in: key, owner: owner, sizes: sizes, nowMS: nowMS, expires: expires, now: now)
                }
                if case .leased(let lease) = claim { return lease }
            }
            // The candidates were read without row locks: other nodes may
            // have emptied them, so read them again rather than give up.
        }
        return nil
    }

    /// The order claims take batches in: the tenant first (fair share),
    /// then the batch within it.
    private static let candidateOrder =
        "\(TenantShareSQL.order), b.priority DESC, b.leased_chunks, b.last_claim_at, b.key"

    /// Leases the next due chunk of one batch, in a transaction that holds
    /// the batch's lock shared (``sharedBatch(_:_:)``: claims and
    /// checkpoints of the batch hold it together, a status change waits for
    /// them). A shard under its share of the cap on chunks in flight and
    /// the chunk are taken with `SKIP LOCKED` (``BatchShards``), so
    /// claimers of one batch never wait on each other. A batch still
    /// `confirmed` is started by its first claim, which takes the batch's
    /// row for that only at the end: the other claims that found it
    /// `confirmed` wait for that commit alone, not for each other's whole
    /// claims.
    private static func claim(
        _ db: PostgresConnection, in key: Int64, owner: String, sizes: ChunkSizes, nowMS: Int64, expires: Int64,
        now: Date
    ) async throws -> Claim {
        guard let gate = try await db.one(Prepared.ClaimGate.self, Self.claimGate(key: key)) else { return .raced }
        // The row's own counters only: what the claim uses is its id,
        // type, owner and status.
        let gated = try StoredBatch(row: PostgresStoredRow(row: gate))
        if let damage = gated.damage {
            // Fail the batch instead of running it.
            guard let locked = try await Self.batch(db, key: key, lock: true) else { return .raced }
            _ = try await Self.apply(db, locked, .fail, reason: damage, now: now)
            return .raced
        }
        let tenantCapped = try PostgresStoredRow(row: gate).bool(at: gate.count - 2) ?? true
        if tenantCapped, try await Self.tenantAtCap(db, owner: gated.record.owner) { return .raced }
        guard let shard = try PostgresStoredRow(row: gate).int64(at: gate.count - 1).flatMap(Int16.init(exactly:))
        else { return .raced }
        let limit = try await Self.claimLimit(db, gated, sizes)
        while true {
            // Locked here, leased by the next statement: the items are
            // read there, after this lock. Read in the statement that
            // takes the chunk, they would be seen as of its start, and a
            // chunk that another claim leased, partly ran and put back
            // meanwhile (locked at its newest version, PostgreSQL's
            // re-check) would lease items already done.
            guard
                let picked = try await db.one(
                    Prepared.ClaimChunk.self,
                    """
                    SELECT id, first_seq, last_seq FROM chunks
                    WHERE batch_key = \(key) AND state = \(unescaped: ChunkState.pending.literal) AND ready_at <= \(nowMS)
                    ORDER BY ready_at, first_seq LIMIT 1 FOR UPDATE SKIP LOCKED
                    """)
            else { return .nothing }
            let chunk = PostgresStoredRow(row: picked)
            let chunkID = try chunk.int64(0)
            let firstSeq = try chunk.int64(1)
            let lastSeq = try chunk.int64(2)
            guard
                let leased = try await Self.leaseChunk(
                    db, key, chunkID: chunkID, first: firstSeq, last: lastSeq, shard: shard,
                    limit: limit, owner: owner, expires: expires, nowMS: nowMS)
            else {
                // Nothing due after all: settle the chunk and look again.
                try await Self.settleChunk(db, chunkID: chunkID)
                continue
            }
            // Only another claim can have started it since the gate: a
            // status change waits for the shared lock this one holds.
            // The row is locked only while still `confirmed`, so the
            // claims that waited for the one that started it lock nothing.
            if gated.record.status == .confirmed,
                try await db.one(
                    """
                    SELECT 1 FROM batches WHERE key = \(key) AND status = \(BatchStatus.confirmed.rawValue)
                    FOR UPDATE
                    """) != nil
            {
                _ = try await Self.apply(db, try await Self.current(db, key: key), .start, reason: nil, now: now)
            }
            return .leased(
                ChunkLease(
                    chunkID: chunkID, batchID: gated.record.id, type: gated.record.type, token: leased.token,
                    owner: owner, tenant: gated.record.owner, firstSeq: firstSeq, lastSeq: leased.lastSeq,
                    items: leased.items))
        }
    }

    public func checkpoint(
        _ lease: ChunkLease, outcomes: [ItemOutcome], finish: Bool, failBatch: String?, leaseDuration: Double,
        now: Date
    ) async throws -> CheckpointResult {
        let writer = OutcomeWriter(outcomes: outcomes, now: now)
        let (result, key, mayFinish) = try await write { db in
            // The fenced chunk's batch's lock is taken shared in the same
            // statement (``sharedBatch(_:_:)``).
            let fenced = try await db.one(
                Prepared.FenceLease.self,
                """
                UPDATE chunks SET lease_expires_at = \(now.milliseconds(after: leaseDuration))
                WHERE id = \(lease.chunkID) AND lease_token = \(lease.token) AND state = \(ChunkState.leased.rawValue)
                RETURNING batch_key, claimed_items, shard, pg_advisory_xact_lock_shared(\(BatchShards.lock(0)) + batch_key)
                """)
            guard let fenced else {
                throw StoreError(.leaseLost, "the lease on chunk \(lease.chunkID) was taken over")
            }
            let key = try PostgresStoredRow(row: fenced).int64(0)
            let claimed = try PostgresStoredRow(row: fenced).int64(1)
            // A lease from before the shards has none: it counts on the batch row.
            let shard = try PostgresStoredRow(row: fenced).int64(at: 2).flatMap { Int16(exactly: $0) }
            // Whether the batch ended is read under the batch's lock, taken
            // before any item row: read without it, a cancel or fail that
            // committed between this read and the counter update below would
            // see its counters moved by outcomes stored as if it were
            // running. The lock is shared (``sharedBatch(_:_:)``): checkpoints
            // and claims of the batch hold it together, a status change
            // waits for them. Lock order batch → items, as a cancel takes
            // them; the chunk row is ours already (fenced above) and a claim
            // skips locked chunks.
            // Its counters, read here too, are returned moved by this
            // checkpoint's (``addCounts(_:_:_:releasingChunk:shard:seen:)``).
            guard let seen = try await Self.sharedBatch(db, key) else {
                throw StoreError(.leaseLost, "the batch of chunk \(lease.chunkID) is gone")
            }
            let ended = seen.record.status.isEnded
            let written = try await writer.write(db, key: key, batchEnded: ended)
            var delta = written.delta
            if finish {
                delta.running = -claimed
                if ended {
                    delta.add(try await Self.cancelItems(db, key, first: lease.firstSeq, last: lease.lastSeq))
                    try await Self.closeChunk(db, chunkID: lease.chunkID)
                } else {
                    try await Self.settleChunk(db, chunkID: lease.chunkID)
                }
            } else {
                delta.running = -written.applied
                try await db.run(
                    """
                    UPDATE chunks SET claimed_items = greatest(0, claimed_items - \(written.applied))
                    WHERE id = \(lease.chunkID)
                    """)
            }
            // The batch's lock is held since the read above: its status
            // cannot have changed since, so `ended` still holds.
            // A finishing checkpoint frees a place among the batch's chunks in
            // flight (waking other nodes if they may want it).
            var stored = try await Self.addCounts(db, key, delta, releasingChunk: finish, shard: shard, seen: seen)
            var events = try await Self.recordEvents(
                db, stored, written.dead.map { (.itemDead, EventData.itemDead(seq: $0.seq, error: $0.error)) }, at: now)
            if BatchRules.failureAfterCheckpoint(stored.record, fatal: failBatch) != nil {
                // Failing takes the row for itself: wait for the claims and
                // checkpoints sharing it, then decide again on what they wrote.
                if let locked = try await Self.batch(db, key: key, lock: true),
                    let reason = BatchRules.failureAfterCheckpoint(locked.record, fatal: failBatch)
                {
                    let applied = try await Self.apply(db, locked, .fail, reason: reason, now: now)
                    stored = applied.batch
                    events += applied.events
                }
            }
            return (
                CheckpointResult(batchStatus: stored.record.status, counts: stored.record.counts, events: events), key,
                BatchRules.mayFinish(stored.record)
            )
        }
        guard finish, mayFinish else { return result }
        return try await finishAfterCheckpoint(key: key, result, now: now)
    }

    /// Ends a batch whose last chunk a checkpoint just finished. Checkpoints
    /// of one batch commit side by side, each unable to see the other's
    /// chunk done before it commits; so each finishing checkpoint looks
    /// once more after its commit, and the last to commit sees every chunk
    /// done. The end itself is decided under the batch row's lock
    /// (``finishIfDone``), so it happens once.
    private func finishAfterCheckpoint(key: Int64, _ result: CheckpointResult, now: Date) async throws
        -> CheckpointResult
    {
        let open = try await read { db in
            try await db.rows(
                Prepared.OpenChunk.self,
                "SELECT 1 FROM chunks WHERE batch_key = \(key) AND state <> \(unescaped: ChunkState.done.literal) LIMIT 1"
            ).count
        }
        guard open == 0 else { return result }
        let finished = try await write { db -> (batch: StoredBatch, events: [BatchEvent])? in
            guard let stored = try await Self.batch(db, key: key, lock: true) else { return nil }
            return try await Self.finishIfDone(db, stored, now: now)
        }
        guard let finished else { return result }
        return CheckpointResult(
            batchStatus: finished.batch.record.status, counts: finished.batch.record.counts,
            events: result.events + finished.events)
    }

    public func rescueExpiredLeases(now: Date, splitAfter: Int) async throws -> [RescuedChunk] {
        try await rescue(
            where: "state = \(ChunkState.leased.rawValue) AND lease_expires_at < \(now.milliseconds)", now: now,
            splitAfter: splitAfter)
    }

    public func releaseAllLeases(now: Date) async throws -> [RescuedChunk] {
        try await write { db in try await db.run("DELETE FROM leader") }
        return try await rescue(where: "state = \(ChunkState.leased.rawValue)", now: now, splitAfter: Int.max)
    }

    /// Rescues the chunks matching `condition`, one transaction per chunk so
    /// that a rescue never holds two batches' rows at once.
    private func rescue(where condition: String, now: Date, splitAfter: Int) async throws -> [RescuedChunk] {
        let ids = try await read { db in
            try await db.rows(PostgresQuery(unsafeSQL: "SELECT id FROM chunks WHERE \(condition) LIMIT 1000")).map {
                try PostgresStoredRow(row: $0).int64(0)
            }
        }
        var rescued: [RescuedChunk] = []
        // A chunk whose rows cannot be read or written (damaged) does not hold
        // up the others: its error is thrown once every other chunk was seen.
        var firstFailure: (any Error)?
        for id in ids {
            do {
                let chunk = try await write { db -> RescuedChunk? in
                    guard
                        let row = try await db.one(
                            PostgresQuery(
                                unsafeSQL: """
                                    SELECT \(RescueRules.Chunk.columns) FROM chunks
                                    WHERE id = \(id) AND \(condition) FOR UPDATE SKIP LOCKED
                                    """))
                    else { return nil }
                    return try await Self.rescueChunk(db, chunk: row, now: now, splitAfter: splitAfter)
                }
                if let chunk { rescued.append(chunk) }
            } catch let error as StoreError where error.code == .storage {
                firstFailure = firstFailure ?? error
            }
        }
        if let firstFailure { throw firstFailure }
        return rescued
    }

    // MARK: - Maintenance

    public func enforceDeadlines(now: Date) async throws -> [BatchEvent] {
        let keys = try await read { db in
            try await db.rows(
                "SELECT key FROM batches WHERE status IN (\(unescaped: SQLList.openBatches))"
            ).map { try PostgresStoredRow(row: $0).int64(0) }
        }
        var events: [BatchEvent] = []
        // A batch whose row cannot be read or written (damaged) does not hold
        // up the others: its error is thrown once every other batch was seen.
        var firstFailure: (any Error)?
        for key in keys {
            do {
                events += try await write { db in
                    // Looked at first without the batch's lock, which would
                    // hold up its claims and checkpoints each sweep: only a
                    // batch past its timeout or with every chunk done is
                    // locked and decided on again.
                    guard let seen = try await Self.batch(db, key: key) else { return [] }
                    var due = BatchRules.timeoutReason(seen.record, at: now) != nil
                    if !due && BatchRules.mayFinish(seen.record) {
                        due =
                            try await db.count(
                                """
                                SELECT 1 FROM chunks WHERE batch_key = \(key) AND state <> \(ChunkState.done.rawValue)
                                LIMIT 1
                                """) == 0
                    }
                    guard due, let stored = try await Self.batch(db, key: key, lock: true) else { return [] }
                    if let reason = BatchRules.timeoutReason(stored.record, at: now) {
                        return try await Self.apply(db, stored, .fail, reason: reason, now: now).events
                    }
                    return try await Self.finishIfDone(db, stored, now: now).events
                }
            } catch let error as StoreError where error.code == .storage {
                firstFailure = firstFailure ?? error
            }
        }
        if let firstFailure { throw firstFailure }
        return events
    }

    public func prune(now: Date, retention: Double, limit: Int) async throws -> Int {
        try await write { db in
            if let row = try await db.one(
                """
                SELECT key FROM batches WHERE NOT pruned AND expires_at < \(now.milliseconds)
                ORDER BY expires_at LIMIT 1 FOR UPDATE SKIP LOCKED
                """)
            {
                return try await Self.pruneItems(db, try PostgresStoredRow(row: row).int64(0), limit: limit)
            }
            let forgetBefore = now.addingTimeInterval(-min(max(0, retention), BatchRules.maximumRetention))
            let keys = try await db.rows(
                """
                SELECT key FROM batches
                WHERE pruned AND completed_at < \(forgetBefore.milliseconds)
                  AND status IN (\(unescaped: SQLList.endedBatches))
                ORDER BY completed_at LIMIT \(Int64(max(1, min(limit, 100)))) FOR UPDATE SKIP LOCKED
                """
            ).map { try PostgresStoredRow(row: $0).int64(0) }
            for key in keys { try await Self.deleteRows(db, key) }
            return keys.count
        }
    }

    /// Deletes up to `limit` items of an expired batch; once none are left,
    /// its chunks go and it is marked pruned (its summary stays).
    static func pruneItems(_ db: PostgresConnection, _ key: Int64, limit: Int) async throws -> Int {
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

    /// Deletes a batch and everything it holds.
    static func deleteRows(_ db: PostgresConnection, _ key: Int64) async throws {
        try await deleteLinks(db, key)
        for table in LimitKey.tables {
            try await db.run(
                "DELETE FROM \(unescaped: table) WHERE key = '\(unescaped: LimitKey.batchPrefix)' || (SELECT id FROM batches WHERE key = \(key))"
            )
        }
        try await db.run("DELETE FROM items WHERE batch_key = \(key)")
        try await db.run("DELETE FROM chunks WHERE batch_key = \(key)")
        try await db.run("DELETE FROM batch_shards WHERE batch_key = \(key)")
        try await db.run("DELETE FROM events WHERE batch_key = \(key)")
        try await db.run("DELETE FROM progress_samples WHERE batch_key = \(key)")
        try await db.run("DELETE FROM batches WHERE key = \(key)")
    }

    public func nextDueTime() async throws -> Date? {
        try await read { db in
            let row = try await db.one(
                """
                SELECT min(c.ready_at) FROM chunks c JOIN batches b ON b.key = c.batch_key
                WHERE c.state = \(ChunkState.pending.rawValue) AND b.status IN (\(unescaped: SQLList.runnableBatches))
                """)
            return try row.flatMap { try PostgresStoredRow(row: $0).date(at: 0) }
        }
    }

    public func deleteBatch(_ id: BatchID) async throws {
        try await write { db in
            let stored = try await Self.requireBatch(db, id)
            try BatchRules.checkDeletable(stored.record)
            try await Self.deleteRows(db, stored.key)
        }
    }
}
