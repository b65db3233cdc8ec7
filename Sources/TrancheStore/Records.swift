public import Foundation
@_exported public import TrancheCore

/// A batch as submitted, before it is stored.
public struct NewBatch: Sendable {
    public var id: BatchID
    public var type: String
    /// The tenant that owns it.
    public var owner: String
    /// The prepared context.
    public var context: JSONText
    public var options: BatchOptions
    public var dryRun: Bool
    /// Higher runs first.
    public var priority: Int
    /// True when no items will be appended later (items came inline).
    public var sealed: Bool
    public var createdAt: Date
    /// What runs after it completes (see ``Successor``); stored with it.
    public var then: Successor? = nil

    public init(
        id: BatchID = .generate(),
        type: String,
        owner: String = "local",
        context: JSONText = JSONText(unchecked: "{}"),
        options: BatchOptions = BatchOptions(),
        dryRun: Bool = false,
        priority: Int = 0,
        sealed: Bool = true,
        createdAt: Date = Date()
    ) {
        self.id = id
        self.type = type
        self.owner = owner
        self.context = context
        self.options = options
        self.dryRun = dryRun
        self.priority = priority
        self.sealed = sealed
        self.createdAt = createdAt
    }
}

/// An item to append: its payload, or why it was refused at upload (it is
/// then stored as `skipped` with that error, keeping its position).
public struct NewItem: Sendable, Hashable {
    public var payload: JSONText
    public var rejection: ItemError?

    public init(payload: JSONText, rejection: ItemError? = nil) {
        self.payload = payload
        self.rejection = rejection
    }
}

/// A stored batch.
public struct BatchRecord: Sendable, Hashable {
    public var id: BatchID
    public var type: String
    public var owner: String
    public var status: BatchStatus
    /// The status a paused batch returns to on resume.
    public var pausedFrom: BatchStatus?
    public var context: JSONText
    public var options: BatchOptions
    public var dryRun: Bool
    public var priority: Int
    public var sealed: Bool
    public var counts: BatchCounts
    /// Why the batch failed, when it did.
    public var failureReason: String?
    /// The dry-run report or the strategy's summary.
    public var result: JSONText?
    /// A client's position in its input, saved with each append (see ``BatchStore/appendItems(to:startSeq:items:cursor:at:)``).
    public var cursor: JSONText?
    public var createdAt: Date
    public var confirmedAt: Date?
    public var startedAt: Date?
    public var completedAt: Date?
    /// When the items' payloads and outputs are pruned (the batch's `ttl` after it ended).
    public var expiresAt: Date?
    /// Seconds spent `processing` before the current run: the batch timeout
    /// counts this plus the time since ``runningSince``, so time waiting for
    /// confirmation or paused does not count, and a retry starts afresh.
    public var processingTime: Double = 0
    /// When the batch last entered `processing`, while it is there.
    public var runningSince: Date?
    /// The items were pruned: only the summary is left.
    public var pruned: Bool = false
    /// Counters, grouped errors and timings, stored when the batch ended
    /// (see ``BatchSummary``): what is left once the items are pruned.
    public var summary: JSONText?

    public init(
        id: BatchID, type: String, owner: String, status: BatchStatus, pausedFrom: BatchStatus?,
        context: JSONText, options: BatchOptions, dryRun: Bool, priority: Int, sealed: Bool,
        counts: BatchCounts, failureReason: String?, result: JSONText?, cursor: JSONText?,
        createdAt: Date, confirmedAt: Date?, startedAt: Date?, completedAt: Date?, expiresAt: Date?
    ) {
        self.id = id
        self.type = type
        self.owner = owner
        self.status = status
        self.pausedFrom = pausedFrom
        self.context = context
        self.options = options
        self.dryRun = dryRun
        self.priority = priority
        self.sealed = sealed
        self.counts = counts
        self.failureReason = failureReason
        self.result = result
        self.cursor = cursor
        self.createdAt = createdAt
        self.confirmedAt = confirmedAt
        self.startedAt = startedAt
        self.completedAt = completedAt
        self.expiresAt = expiresAt
    }
}

/// A stored item.
public struct ItemRecord: Sendable, Hashable {
    public var seq: Int64
    public var status: ItemStatus
    public var attempts: Int
    public var payload: JSONText?
    public var output: JSONText?
    public var error: ItemError?
    public var nextAttemptAt: Date?
    public var updatedAt: Date?

    public init(
        seq: Int64, status: ItemStatus, attempts: Int, payload: JSONText?, output: JSONText?,
        error: ItemError?, nextAttemptAt: Date?, updatedAt: Date?
    ) {
        self.seq = seq
        self.status = status
        self.attempts = attempts
        self.payload = payload
        self.output = output
        self.error = error
        self.nextAttemptAt = nextAttemptAt
        self.updatedAt = updatedAt
    }
}

/// What a node asks of a chunk claim: who leases, for how long, and
/// whose work it passes over.
public struct ChunkClaim: Sendable, Hashable {
    /// The node that holds the lease.
    public var owner: String
    public var leaseDuration: Double
    /// Tenants whose batches this claim passes over: a node whose chunk
    /// slots are full claims one more chunk only for a tenant it is not
    /// running, so that tenant waits one item, not one chunk.
    public var excludingTenants: Set<String>
    /// How many items to lease from a batch whose chunks are sized automatically.
    public var sizes: ChunkSizes

    public init(
        owner: String, leaseDuration: Double, excludingTenants: Set<String> = [], sizes: ChunkSizes = ChunkSizes()
    ) {
        self.owner = owner
        self.leaseDuration = leaseDuration
        self.excludingTenants = excludingTenants
        self.sizes = sizes
    }
}

/// A chunk leased to one worker: a contiguous range of items, fenced by `token`.
public struct ChunkLease: Sendable, Hashable {
    public var chunkID: Int64
    public var batchID: BatchID
    public var type: String
    /// Grows with every grant of this chunk; every write for the chunk must carry it.
    public var token: Int64
    public var owner: String
    /// The tenant whose batch this is (its owner).
    public var tenant: String
    public var firstSeq: Int64
    public var lastSeq: Int64
    /// The items to run now: pending, or failed and due for a retry.
    public var items: [LeasedItem]

    public init(
        chunkID: Int64, batchID: BatchID, type: String, token: Int64, owner: String, tenant: String,
        firstSeq: Int64, lastSeq: Int64, items: [LeasedItem]
    ) {
        self.chunkID = chunkID
        self.batchID = batchID
        self.type = type
        self.token = token
        self.owner = owner
        self.tenant = tenant
        self.firstSeq = firstSeq
        self.lastSeq = lastSeq
        self.items = items
    }
}

/// One item of a leased chunk.
public struct LeasedItem: Sendable, Hashable {
    public var seq: Int64
    public var payload: JSONText
    /// Attempts already made.
    public var attempts: Int
    /// `pending` or `failed`.
    public var status: ItemStatus

    public init(seq: Int64, payload: JSONText, attempts: Int, status: ItemStatus) {
        self.seq = seq
        self.payload = payload
        self.attempts = attempts
        self.status = status
    }

    /// The attempt about to run, 1-based. The stored count may hold any
    /// number: the next one never traps and stays within the 32 bits both
    /// stores keep (far above any `max_attempts`), so it can be written back.
    public var nextAttempt: Int { attempts.clamped(to: 0...Int(Int32.max) - 1) + 1 }
}

/// The result of one attempt, to be written with the chunk's checkpoint.
public struct ItemOutcome: Sendable, Hashable {
    public var seq: Int64
    /// The status the item had when it was leased (`pending` or `failed`).
    public var previousStatus: ItemStatus
    /// The attempt that produced this outcome, 1-based.
    public var attempt: Int
    /// `succeeded`, `failed` (retry later), `skipped` or `dead`.
    public var status: ItemStatus
    public var output: JSONText?
    public var error: ItemError?
    /// For `failed`: when the retry is due.
    public var nextAttemptAt: Date?

    public init(
        seq: Int64, previousStatus: ItemStatus, attempt: Int, status: ItemStatus,
        output: JSONText? = nil, error: ItemError? = nil, nextAttemptAt: Date? = nil
    ) {
        self.seq = seq
        self.previousStatus = previousStatus
        self.attempt = attempt
        self.status = status
        self.output = output
        self.error = error
        self.nextAttemptAt = nextAttemptAt
    }
}

/// What a checkpoint found out about the batch, so the worker can stop early.
public struct CheckpointResult: Sendable, Hashable {
    /// The batch's status after the checkpoint.
    public var batchStatus: BatchStatus
    /// The batch's counters after the checkpoint.
    public var counts: BatchCounts
    /// Status changes the checkpoint caused (e.g. `completed`), to publish.
    public var events: [BatchEvent]

    public init(batchStatus: BatchStatus, counts: BatchCounts, events: [BatchEvent]) {
        self.batchStatus = batchStatus
        self.counts = counts
        self.events = events
    }
}

/// The result of an append.
public struct AppendResult: Sendable, Hashable {
    /// Items newly stored (a repeated append stores nothing again).
    public var inserted: Int
    /// Items in the batch after the append.
    public var total: Int64

    public init(inserted: Int, total: Int64) {
        self.inserted = inserted
        self.total = total
    }
}

/// A chunk whose lease expired and was made claimable again.
public struct RescuedChunk: Sendable, Hashable {
    public var batchID: BatchID
    public var firstSeq: Int64
    public var lastSeq: Int64
    /// Items that were not finished and so run again (possible duplicates).
    public var unfinished: Int64
    /// The chunk was split in two to find a poison item.
    public var split: Bool
    /// The item quarantined as `dead` because it killed its worker too often.
    public var quarantinedSeq: Int64?

    public init(
        batchID: BatchID, firstSeq: Int64, lastSeq: Int64, unfinished: Int64, split: Bool, quarantinedSeq: Int64?
    ) {
        self.batchID = batchID
        self.firstSeq = firstSeq
        self.lastSeq = lastSeq
        self.unfinished = unfinished
        self.split = split
        self.quarantinedSeq = quarantinedSeq
    }
}

/// Errors grouped by code, for the error log.
public struct ErrorGroup: Sendable, Hashable {
    public var code: String
    public var category: ErrorCategory
    public var count: Int64
    /// A few items with this error: seq and message.
    public var samples: [ErrorSample]

    public init(code: String, category: ErrorCategory, count: Int64, samples: [ErrorSample]) {
        self.code = code
        self.category = category
        self.count = count
        self.samples = samples
    }
}

/// One sample of an error group.
public struct ErrorSample: Sendable, Hashable {
    public var seq: Int64
    public var message: String

    public init(seq: Int64, message: String) {
        self.seq = seq
        self.message = message
    }
}

/// A filter for listing batches.
public struct BatchQuery: Sendable, Hashable {
    public var owner: String?
    public var type: String?
    public var status: BatchStatus?
    /// Only batches older than this id (newest first paging).
    public var before: BatchID?
    public var limit: Int

    public init(
        owner: String? = nil, type: String? = nil, status: BatchStatus? = nil, before: BatchID? = nil,
        limit: Int = 50
    ) {
        self.owner = owner
        self.type = type
        self.status = status
        self.before = before
        self.limit = limit
    }
}

extension BatchRecord {
    /// How many of the items appended at `startSeq` are stored already (a
    /// repeated append), or why the append is refused: the one rule both
    /// stores apply.
    package func itemsAlreadyStored(appendingAt startSeq: Int64, count: Int) throws -> Int {
        guard !sealed, !status.isEnded else {
            throw StoreError(.invalidAppend, "batch \(id) is sealed; no more items can be added")
        }
        guard startSeq >= 0, startSeq <= counts.total else {
            throw StoreError(
                .invalidAppend,
                "items must be appended at seq \(counts.total) or earlier (got start seq \(startSeq))")
        }
        // A damaged total at the end of the range: the next seq would overflow.
        guard counts.total <= Int64.max - Int64(count) else {
            throw StoreError(.storage, "batch \(id) stores a total of \(counts.total) items; no more can be added")
        }
        return Int(min(Int64(count), counts.total - startSeq))
    }
}
