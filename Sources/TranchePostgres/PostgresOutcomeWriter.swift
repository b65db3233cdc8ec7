import Foundation
import PostgresNIO
import TrancheCore
import TrancheStore

/// Writes a checkpoint's outcomes as ``OutcomeRules`` groups them, in one
/// statement whatever their number: each run (a range of plain outcomes, or
/// one outcome with an output or an error) is a row of `UNNEST` arrays. An
/// outcome applies only where the item's stored attempts are below its
/// attempt, and the counters move by the statuses the rows had before it,
/// so a checkpoint repeated after an unknown commit result never counts an
/// outcome twice.
struct OutcomeWriter: Sendable {
    let outcomes: [ItemOutcome]
    let now: Date

    /// The runs as parallel arrays, one element per run. postgres-nio binds
    /// no NULL inside an array, so each optional column has a flag array and
    /// the statement stores NULL where the flag is false.
    private struct Columns {
        var first: [Int64] = []
        var last: [Int64] = []
        var status: [Int16] = []
        var attempts: [Int32] = []
        var hasOutput: [Bool] = []
        var output: [String] = []
        var hasError: [Bool] = []
        var errorCode: [String] = []
        var errorMessage: [String] = []
        var errorCategory: [String] = []
        var hasNextAttempt: [Bool] = []
        var nextAttemptAt: [Int64] = []

        mutating func append(
            first: Int64, last: Int64, status: ItemStatus, attempt: Int, output: JSONText?, error: ItemError?,
            nextAttemptAt next: Date?
        ) {
            self.first.append(first)
            self.last.append(last)
            self.status.append(Int16(status.rawValue))
            // Attempts are stored as 32 bits; an outcome beyond is clamped.
            attempts.append(Int32(clamping: attempt))
            hasOutput.append(output != nil)
            self.output.append(output?.text.storable ?? "")
            hasError.append(error != nil)
            errorCode.append(error?.code.storable ?? "")
            errorMessage.append(error?.message.storable ?? "")
            errorCategory.append(error?.category.rawValue ?? "")
            hasNextAttempt.append(next != nil)
            nextAttemptAt.append(next?.milliseconds ?? 0)
        }
    }

    /// Applies the outcomes; returns the counter change, how many applied,
    /// and the outcomes that made items dead.
    func write(_ db: PostgresConnection, key: Int64, batchEnded: Bool) async throws -> (
        delta: BatchCounts, applied: Int64, dead: [ItemOutcome]
    ) {
        let runs = OutcomeRules.runs(outcomes, batchEnded: batchEnded)
        guard !runs.isEmpty else { return (BatchCounts(), 0, []) }
        var columns = Columns()
        for run in runs {
            switch run {
            case .plain(let first, let last, let status, let attempt, _):
                columns.append(
                    first: first, last: last, status: status, attempt: attempt, output: nil, error: nil,
                    nextAttemptAt: nil)
            case .detailed(let outcome, let status):
                columns.append(
                    first: outcome.seq, last: outcome.seq, status: status, attempt: outcome.attempt,
                    output: outcome.output, error: outcome.error,
                    nextAttemptAt: OutcomeRules.nextAttempt(outcome, status: status))
            }
        }
        // `prev` reads the items each run applies to and carries the run's
        // values; the update then finds each row by its `ctid`. The items
        // are not locked first (a lock writes a WAL record per item): every
        // other writer that changes a leased chunk's items holds the chunk's
        // row, which the checkpoint fenced first, or the batch's exclusive
        // lock, which conflicts with the checkpoint's shared one. A row
        // changed or deleted meanwhile anyway (a prune deletes an ended
        // batch's items) has moved from its `ctid`: the update skips it and
        // does not count it. `prev` is `MATERIALIZED`, as its row locks
        // made it before, so that the plan stays fixed whatever the
        // tables' statistics: the fenced (`OFFSET 0`)
        // lateral subquery is one index range scan per run, and the update
        // joins `prev` to the index range of the outcomes' seqs (bounds given
        // as constants, so the planner sees a chunk's rows, not the table). A
        // join left to the planner was estimated from a tenth of the batch or
        // a never analysed table and became a scan of the whole batch or a
        // nested loop over every pair of rows; joined by `ctid` alone, the
        // update hashed every item of the table.
        //
        // Once `items` is analysed with the batch's rows in it, the planner
        // prices each per-run scan from a default range selectivity, far
        // above what it reads, so with many runs (outcomes with details) the
        // statement passed `jit_above_cost` and spent 0.5–0.9 s compiling
        // each checkpoint for a 25 ms execution: the store's connections run
        // without JIT (``PostgresBatchStore/init(url:configuration:logger:)``).
        let lowest = columns.first.min() ?? 0
        let highest = columns.last.max() ?? 0
        let changed = try await db.rows(
            """
            WITH prev AS MATERIALIZED (
                SELECT i.item_ctid, i.old, o.*
                FROM unnest(
                    \(columns.first)::bigint[], \(columns.last)::bigint[], \(columns.status)::smallint[],
                    \(columns.attempts)::int[], \(columns.hasOutput)::bool[], \(columns.output)::text[],
                    \(columns.hasError)::bool[], \(columns.errorCode)::text[], \(columns.errorMessage)::text[],
                    \(columns.errorCategory)::text[], \(columns.hasNextAttempt)::bool[],
                    \(columns.nextAttemptAt)::bigint[]
                ) WITH ORDINALITY AS o(
                    first_seq, last_seq, status, attempts, has_output, output, has_error, error_code,
                    error_message, error_category, has_next_attempt, next_attempt_at, run),
                LATERAL (
                    SELECT i.ctid AS item_ctid, i.status AS old FROM items i
                    WHERE i.batch_key = \(key) AND i.seq BETWEEN o.first_seq AND o.last_seq
                      AND i.attempts < o.attempts
                    OFFSET 0) i),
            changed AS (
                UPDATE items i SET status = prev.status, attempts = prev.attempts,
                    output = CASE WHEN prev.has_output THEN prev.output END,
                    error_code = CASE WHEN prev.has_error THEN prev.error_code END,
                    error_message = CASE WHEN prev.has_error THEN prev.error_message END,
                    error_category = CASE WHEN prev.has_error THEN prev.error_category END,
                    next_attempt_at = CASE WHEN prev.has_next_attempt THEN prev.next_attempt_at END,
                    updated_at = \(now.milliseconds)
                FROM prev
                WHERE i.ctid = prev.item_ctid AND i.batch_key = \(key) AND i.seq BETWEEN \(lowest) AND \(highest)
                RETURNING prev.run, prev.old)
            SELECT run, old, count(*) FROM changed GROUP BY run, old
            """)
        var delta = BatchCounts()
        var applied: Int64 = 0
        var deadRuns = Set<Int>()
        for row in changed {
            let read = PostgresStoredRow(row: row)
            // `run` is the 1-based ordinality of a row this statement sent.
            let index = try read.int64(0) - 1
            guard index >= 0, index < Int64(runs.count) else { continue }
            let old = ItemStatus(rawValue: try read.int(1)) ?? .pending
            let moved = try read.int64(2)
            let (status, attempt) = Self.target(runs[Int(index)])
            delta.add(OutcomeRules.counts(moving: moved, from: old, to: status, attempt: attempt))
            applied += moved
            if status == .dead && moved > 0 { deadRuns.insert(Int(index)) }
        }
        let dead = deadRuns.sorted().flatMap { index -> [ItemOutcome] in
            switch runs[index] {
            case .plain(_, _, _, _, let items): items
            case .detailed(let outcome, _): [outcome]
            }
        }
        return (delta, applied, dead)
    }

    /// The status a run stores and the attempt it counts as.
    private static func target(_ run: OutcomeRules.Run) -> (ItemStatus, Int) {
        switch run {
        case .plain(_, _, let status, let attempt, _): (status, attempt)
        case .detailed(let outcome, let status): (status, outcome.attempt)
        }
    }
}

extension PostgresBatchStore {
    /// Records events of one batch in one statement (see ``recordEvent``):
    /// under the event lock, ids in the order given.
    static func recordEvents(
        _ db: PostgresConnection, _ stored: StoredBatch, _ events: [(BatchEventType, [String: JSONValue])],
        at now: Date
    ) async throws -> [BatchEvent] {
        guard !events.isEmpty else { return [] }
        let types = events.map(\.0.rawValue)
        let texts = try events.map { try JSONText(encoding: JSONValue.object($0.1)).text }
        try await db.run("SELECT pg_advisory_xact_lock(\(eventLock))")
        // Ids are drawn in the order the rows are inserted, which is the
        // ordinality's: the n-th smallest id returned is the n-th event.
        let ids = try await db.rows(
            """
            INSERT INTO events(batch_key, type, at, data)
            SELECT \(stored.key), t, \(now.milliseconds), d
            FROM unnest(\(types)::text[], \(texts)::text[]) WITH ORDINALITY AS e(t, d, n) ORDER BY n
            RETURNING id
            """
        ).map { try PostgresStoredRow(row: $0).int64(0) }.sorted()
        try await db.notifyWork()
        guard ids.count == events.count else { throw StoreError(.storage, "the events were not stored") }
        return zip(ids, events).map { id, event in
            BatchEvent(id: id, batchID: stored.record.id, type: event.0, at: now, data: .object(event.1))
        }
    }
}
