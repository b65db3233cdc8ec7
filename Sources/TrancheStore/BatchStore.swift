public import Foundation

/// Why a store refused a request.
public struct StoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// An extensible code, safe to show.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        /// No such batch (or not the caller's).
        public static let batchNotFound = Code(rawValue: "batch_not_found")
        /// The lease was taken over or the chunk is gone: the holder must abandon it.
        public static let leaseLost = Code(rawValue: "lease_lost")
        /// An illegal lifecycle transition.
        public static let illegalTransition = Code(rawValue: "illegal_transition")
        /// An append that would leave a gap, or to a sealed batch.
        public static let invalidAppend = Code(rawValue: "invalid_append")
        /// A batch that cannot be deleted yet.
        public static let conflict = Code(rawValue: "conflict")
        /// The database failed; the store reopens before trying again.
        public static let storage = Code(rawValue: "storage")
        public var description: String { rawValue }
    }

    public var code: Code
    /// A message fit for users: no SQL, no paths.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// Everything the engine needs from storage. Two implementations (SQLite and
/// PostgreSQL) pass one conformance suite.
///
/// Every method is one transaction: a batch is visible whole or not at all,
/// a chunk's outcomes and the batch counters commit together, and every
/// write for a leased chunk is conditional on its lease token.
public protocol BatchStore: Sendable {
    /// Stores a batch and its first items (whole or nothing) with its
    /// `batch.created` event. A sealed batch is pre-processed at once.
    func createBatch(_ batch: NewBatch, items: [NewItem]) async throws -> BatchRecord

    /// Appends items at `startSeq`. Idempotent: items already stored at those
    /// positions are kept, so a repeated append stores nothing twice.
    /// `cursor`, when given, is saved in the same transaction (a client's
    /// position in its input, for resuming).
    func appendItems(to id: BatchID, startSeq: Int64, items: [NewItem], cursor: JSONText?, at now: Date)
        async throws -> AppendResult

    /// Ends the upload: no more appends; the batch can finish.
    func seal(_ id: BatchID, at now: Date) async throws -> BatchRecord

    /// Applies a lifecycle action, recording its event. Cancel cancels the
    /// items not in flight; fail records `reason`.
    func transition(_ id: BatchID, _ action: LifecycleAction, reason: String?, at now: Date) async throws
        -> BatchRecord

    /// Makes items in `statuses` pending again (attempts reset) and queues the batch.
    func retry(_ id: BatchID, statuses: Set<ItemStatus>, at now: Date) async throws -> (BatchRecord, Int64)

    /// Stores a dry run's report or a strategy's summary.
    func setResult(_ id: BatchID, result: JSONText) async throws

    /// Leases the next chunk: the tenant first (fair share), then the highest
    /// priority, then fairly across batches (fewest chunks in flight, least
    /// recently served), then oldest.
    func claimChunk(_ claim: ChunkClaim, now: Date) async throws -> ChunkLease?

    /// Writes outcomes for a leased chunk and extends its lease; with
    /// `finish`, also ends the lease. Throws `leaseLost` when the token is stale.
    func checkpoint(
        _ lease: ChunkLease, outcomes: [ItemOutcome], finish: Bool, failBatch: String?, leaseDuration: Double,
        now: Date
    ) async throws -> CheckpointResult

    /// Makes chunks whose lease expired claimable again; splits chunks
    /// rescued `splitAfter` times or more, and quarantines single items.
    func rescueExpiredLeases(now: Date, splitAfter: Int) async throws -> [RescuedChunk]

    /// Releases every lease held by anyone (a local run starting after a crash
    /// owns the file alone).
    func releaseAllLeases(now: Date) async throws -> [RescuedChunk]

    /// Fails batches running longer than their `batchTimeout`; finishes
    /// sealed batches whose items are all terminal. Returns the events.
    func enforceDeadlines(now: Date) async throws -> [BatchEvent]

    /// Retention, a small step at a time: deletes the items of batches whose
    /// `expiresAt` passed (their summary stays), then forgets pruned batches
    /// (row and events) that ended more than `retention` seconds ago. Also
    /// keeps the store's own files bounded (SQLite's WAL). Returns the rows
    /// it removed; 0 when there was nothing to do.
    func prune(now: Date, retention: Double, limit: Int) async throws -> Int

    /// When the next retry becomes due, for the scheduler's sleep.
    func nextDueTime() async throws -> Date?

    /// Removes an ended batch and everything it holds.
    func deleteBatch(_ id: BatchID) async throws

    func batch(_ id: BatchID) async throws -> BatchRecord?
    func batches(_ query: BatchQuery) async throws -> [BatchRecord]
    func items(of id: BatchID, status: ItemStatus?, afterSeq: Int64?, limit: Int) async throws -> [ItemRecord]
    func events(of id: BatchID, afterID: Int64, limit: Int) async throws -> [BatchEvent]
    func errorGroups(of id: BatchID, samples: Int) async throws -> [ErrorGroup]

    /// Events of every batch after `afterID`, oldest first, for live subscribers.
    func allEvents(afterID: Int64, limit: Int) async throws -> [BatchEvent]
    /// The id of the newest event, or 0.
    func latestEventID() async throws -> Int64

    /// Batches, and items waiting to run, per batch status: the queue depth.
    func statusSummary() async throws -> [BatchStatusSummary]

    /// Items of `owner`'s unfinished batches that have not ended yet: what a
    /// tenant has queued, for backpressure.
    func queuedItems(owner: String) async throws -> Int64

    // MARK: Nodes

    /// Takes or renews the maintenance leadership for `seconds`. Returns
    /// whether `node` leads: only the leader rescues leases, enforces
    /// deadlines and prunes. A leader that stops renewing is replaced once
    /// its term runs out.
    func acquireLeadership(node: String, for seconds: Double, now: Date) async throws -> Bool

    /// Gives up the leadership if `node` holds it, so another node takes over at once.
    func resignLeadership(node: String) async throws

    /// Records that a node is alive (inserting it on its first heartbeat).
    func recordHeartbeat(_ node: NodeRecord) async throws

    /// Removes a node that stopped cleanly.
    func removeNode(id: String) async throws

    /// Nodes heard from since `since`, with the chunks they hold and whether they lead.
    func nodes(since: Date, now: Date) async throws -> [NodeRecord]
}

extension BatchStore {
    /// Leases the next chunk of any tenant (see ``claimChunk(_:now:)``).
    public func claimChunk(owner: String, leaseDuration: Double, now: Date) async throws -> ChunkLease? {
        try await claimChunk(ChunkClaim(owner: owner, leaseDuration: leaseDuration), now: now)
    }
}

/// How many batches are in one status and how many of their items wait to run.
public struct BatchStatusSummary: Sendable, Hashable {
    public var status: BatchStatus
    public var batches: Int64
    /// Items neither finished nor running (pending, or failed and waiting
    /// for a retry) of batches that have not ended; 0 for ended ones, whose
    /// items wait for nothing. (Counting only open batches spares
    /// PostgreSQL summing the counter shards of every ended batch.)
    public var waitingItems: Int64

    public init(status: BatchStatus, batches: Int64, waitingItems: Int64) {
        self.status = status
        self.batches = batches
        self.waitingItems = waitingItems
    }
}
