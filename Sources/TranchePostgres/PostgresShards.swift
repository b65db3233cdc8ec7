import Foundation
import PostgresNIO
import TrancheStore

/// A batch's counters and chunks in flight, kept where the writers of one
/// batch do not collide (PostgreSQL migration 13).
///
/// A claim and a checkpoint used to move the counters on the batch row, so
/// every claim and checkpoint of a batch held that row's lock until its
/// commit, one after another (with 8 claimers on one batch a claim waited
/// 20–47 ms at the median). Now each batch has ``count`` rows in
/// `batch_shards`: a claim takes one that no other transaction holds
/// (`SKIP LOCKED`) and records the lease and its running items there; the
/// chunk remembers the shard, and its checkpoints move that row. Instead of
/// the batch row they hold the batch's advisory lock shared
/// (``sharedBatch(_:_:)``), which a status change takes exclusively first
/// (``batch(_:key:lock:)``), so whether the batch ended is still read under
/// a lock. (A row lock `FOR KEY SHARE` would do the same, but PostgreSQL
/// grants a row lock compatible with its holders at once, ahead of a
/// waiting `FOR UPDATE`: under steady claims a cancel waited for ever. The
/// lock manager queues an advisory request behind a conflicting waiter.)
/// Readers add the shards to the row's own counters (the `batch_load`
/// view), which inserts, recounts and cancels, holding the batch, still
/// write.
///
/// The cap on chunks in flight holds without a shared counter: shard `s`
/// may hold `max_chunks / count` leases, plus one for the first
/// `max_chunks % count` shards, so the shards together never hold more than
/// `max_chunks`.
enum BatchShards {
    /// Shard rows per batch.
    static let count: Int64 = 16

    /// The advisory lock of batch `key`: shared by its claims and
    /// checkpoints, exclusive for a status change. Batch keys are far below
    /// 2^56, so the locks keep clear of the store's other advisory locks.
    static func lock(_ key: Int64) -> Int64 { 0x4254_0000_0000_0000 &+ key }

    /// The counters shards hold, named as on `batches` and in `batch_load`.
    static let counters: Set<String> = [
        "running", "succeeded", "failed", "skipped", "dead", "canceled", "retried", "rescued",
    ]

    /// ``StoredBatch/columns`` read from ``from``: the counters from the
    /// load view (row plus shards), every other column from the row.
    static let columns = StoredBatch.columns.split(separator: ",").map {
        let name = $0.trimmingCharacters(in: .whitespacesAndNewlines)
        return counters.contains(name) ? "l.\(name)" : "b.\(name)"
    }.joined(separator: ", ")

    /// The batch row `b` joined to its load `l`.
    static let from = "batches b JOIN batch_load l ON l.key = b.key"

    /// The counters a recount writes that shards also hold: zeroed on the
    /// shards when the row gets the recounted values.
    static let recounted = BatchCounts.recountColumns.filter { counters.contains($0) }
}

extension PostgresBatchStore {
    /// Creates a new batch's shard rows.
    static func insertShards(_ db: PostgresConnection, _ key: Int64) async throws {
        try await db.run(
            """
            INSERT INTO batch_shards(batch_key, shard)
            SELECT \(key), s FROM generate_series(0, \(BatchShards.count - 1)) s
            """)
    }

    /// The claim's gate on batch `key`, in one statement: the batch row if
    /// it is runnable (``StoredBatch/columns``, its own counters only),
    /// whether its tenant has a cap on running items (checked under the
    /// tenant's lock only then), and a shard of the batch under its share
    /// of the cap on chunks in flight that no other transaction holds,
    /// locked until this one ends (NULL when every shard is at its share
    /// or busy).
    static func claimGate(key: Int64) -> PostgresQuery {
        let count = String(BatchShards.count)
        return """
            WITH shard AS (
                SELECT s.shard FROM batch_shards s JOIN batches b ON b.key = s.batch_key
                WHERE s.batch_key = \(key)
                  AND s.leased < b.max_chunks / \(unescaped: count)
                      + CASE WHEN s.shard < b.max_chunks % \(unescaped: count) THEN 1 ELSE 0 END
                ORDER BY s.leased, s.shard LIMIT 1 FOR UPDATE OF s SKIP LOCKED)
            SELECT \(unescaped: StoredBatch.columns),
                EXISTS (SELECT 1 FROM tenants t WHERE t.name = batches.owner AND t.max_running IS NOT NULL),
                (SELECT shard FROM shard)
            FROM batches WHERE key = \(key) AND status IN (\(unescaped: SQLList.runnableBatches))
            """
    }

    /// What a claim leased of a chunk: the due items, the lease's token and
    /// the chunk's last seq once cut.
    struct LeasedChunk {
        var items: [LeasedItem]
        var token: Int64
        var lastSeq: Int64
    }

    /// Leases chunk `chunkID` (locked by the caller, seqs `first…last`) on
    /// `shard`, in one statement: reads its due items, at most `limit`
    /// (``ChunkSizeRules/leaseLimit(_:)``), marks the chunk leased with the
    /// count it claimed, and records one more chunk in flight with those
    /// items running on the shard. A chunk with more due items than that is
    /// cut after the last one leased, as ``ChunkSizeRules/cut(_:limit:)``
    /// cuts: the rest becomes a pending chunk with the same `ready_at` and
    /// `rescues`. Nil, leasing nothing, when no item of the chunk is due.
    static func leaseChunk(
        _ db: PostgresConnection, _ key: Int64, chunkID: Int64, first: Int64, last: Int64, shard: Int16,
        limit: Int?, owner: String, expires: Int64, nowMS: Int64
    ) async throws -> LeasedChunk? {
        let leaseLimit = Int64(ChunkSizeRules.leaseLimit(limit) ?? .max)
        let readLimit = Int64(ChunkSizeRules.readLimit(limit) ?? .max)
        var items: [LeasedItem] = []
        // A hint only: a stored range may hold anything.
        items.reserveCapacity(Int(clamping: (last &- first &+ 1).clamped(to: 0...100_000)))
        var lease: (token: Int64, lastSeq: Int64)?
        try await db.forEachRow(
            Prepared.LeaseChunk.self,
            """
            WITH due AS (
                SELECT seq, payload, attempts, status, row_number() OVER (ORDER BY seq) AS n FROM items
                WHERE batch_key = \(key) AND seq BETWEEN \(first) AND \(last)
                  AND status IN (\(unescaped: SQLList.waitingItems))
                  AND (next_attempt_at IS NULL OR next_attempt_at <= \(nowMS))
                ORDER BY seq LIMIT \(readLimit)),
            leased AS (SELECT seq, payload, attempts, status FROM due WHERE n <= \(leaseLimit)),
            chunk AS (
                UPDATE chunks SET state = \(unescaped: ChunkState.leased.literal), lease_owner = \(owner),
                    lease_token = nextval('lease_tokens'), lease_expires_at = \(expires),
                    claimed_items = (SELECT count(*) FROM leased), shard = \(shard),
                    last_seq = CASE WHEN (SELECT count(*) FROM due) > \(leaseLimit)
                                    THEN (SELECT max(seq) FROM leased) ELSE last_seq END
                WHERE id = \(chunkID) AND EXISTS (SELECT 1 FROM leased)
                RETURNING batch_key, last_seq, ready_at, rescues, lease_token),
            rest AS (
                INSERT INTO chunks(batch_key, first_seq, last_seq, state, ready_at, rescues)
                SELECT batch_key, last_seq + 1, \(last), \(unescaped: ChunkState.pending.literal), ready_at, rescues
                FROM chunk WHERE last_seq < \(last)),
            counted AS (
                UPDATE batch_shards SET leased = leased + 1, running = running + (SELECT count(*) FROM leased),
                    last_claim_at = \(nowMS)
                WHERE batch_key = \(key) AND shard = \(shard) AND EXISTS (SELECT 1 FROM chunk))
            SELECT l.seq, l.payload, l.attempts, l.status, c.lease_token, c.last_seq FROM leased l, chunk c
            ORDER BY l.seq
            """
        ) { row in
            let (seq, payload, attempts, status, token, lastSeq) = try row.decode(
                (Int64, String?, Int, Int, Int64, Int64).self)
            items.append(
                LeasedItem(
                    seq: seq, payload: JSONText(unchecked: payload ?? "null"), attempts: attempts,
                    status: ItemStatus(rawValue: status) ?? .pending))
            lease = (token, lastSeq)
        }
        guard let lease else { return nil }
        return LeasedChunk(items: items, token: lease.token, lastSeq: min(lease.lastSeq, last))
    }

    /// Moves the counters of `shard` by `delta` and, `releasingChunk`, frees
    /// one of its leases. A shard's `running` may go below zero (its lease
    /// ran items another shard counted before an upgrade); readers hold the
    /// sum at zero or above. Answers whether a claim may have been refused
    /// for want of the place this frees: the batch was at its cap on chunks
    /// in flight, or its tenant has a `max_running`. Only then need other
    /// nodes be woken (`NOTIFY`): each wake-up sends every listening node
    /// looking for work.
    static func addShardCounts(
        _ db: PostgresConnection, _ key: Int64, shard: Int16, _ delta: BatchCounts, releasingChunk: Bool
    ) async throws -> Bool {
        let released: Int32 = releasingChunk ? 1 : 0
        // The subqueries read the shards as they were before this statement.
        let row = try await db.one(
            Prepared.ShardCounts.self,
            """
            UPDATE batch_shards s SET running = s.running + \(delta.running),
                succeeded = s.succeeded + \(delta.succeeded), failed = s.failed + \(delta.failed),
                skipped = s.skipped + \(delta.skipped), dead = s.dead + \(delta.dead),
                canceled = s.canceled + \(delta.canceled), retried = s.retried + \(delta.retried),
                rescued = s.rescued + \(delta.rescued), leased = greatest(0, s.leased - \(released))
            FROM batches b
            WHERE s.batch_key = \(key) AND s.shard = \(shard) AND b.key = s.batch_key
            RETURNING (SELECT sum(leased) FROM batch_shards WHERE batch_key = \(key)) + b.leased_chunks >= b.max_chunks
                OR EXISTS (SELECT 1 FROM tenants t WHERE t.name = b.owner AND t.max_running IS NOT NULL)
            """)
        return try row.map { try PostgresStoredRow(row: $0).bool(0) } ?? false
    }

    /// The batch, read once this transaction holds the batch's advisory
    /// lock shared (``BatchShards/lock(_:)``, taken by an earlier
    /// statement): claims and checkpoints hold it together, a status change
    /// waits for them and they for it. Read by a statement after the
    /// lock's, the status is the one a change that held the lock committed.
    /// Nil when the batch is gone.
    static func sharedBatch(_ db: PostgresConnection, _ key: Int64) async throws -> StoredBatch? {
        try await batch(db, key: key)
    }
}
