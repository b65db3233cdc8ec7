public import TrancheCore

/// What a claiming node asks of a batch whose chunks are sized automatically
/// (no `chunk_size`): how many items it wants from each batch, and how many
/// workers share the work, so that a claim leaves slow items for the others.
///
/// The node learns the sizes from its chunks (``TrancheEngine``'s sizing);
/// a batch with a fixed `chunk_size` ignores them.
public struct ChunkSizes: Sendable, Hashable {
    /// Items to lease from a batch not in ``perBatch``. Default 100.
    public var initial: Int
    /// Items to lease from each batch, as the node learned them.
    public var perBatch: [BatchID: Int]
    /// Workers in the cluster: a claim leases at most an even share of a
    /// batch's waiting items per worker (at least one item). Default 1.
    public var workers: Int

    public init(initial: Int = 100, perBatch: [BatchID: Int] = [:], workers: Int = 1) {
        self.initial = initial
        self.perBatch = perBatch
        self.workers = workers
    }
}

/// How many items one claim leases, decided once for both stores.
///
/// A batch with a fixed `chunk_size` is cut into chunks of that size when
/// its items are stored, and a claim leases a whole chunk. An automatic
/// batch is stored in pending segments of up to ``maximumSegment`` items,
/// and a claim leases a prefix of one: the first ``claimLimit(_:_:)`` due
/// items (the driver cuts the segment after the last of them, in the
/// claim's transaction); the rest stays pending for the next claim.
package enum ChunkSizeRules {
    /// The most items an automatic batch's stored segment holds, and so the
    /// most one claim of it leases.
    package static let maximumSegment = 10_000

    /// The most due items one claim of an automatic batch leases. Larger
    /// chunks of quick items gained nothing in `tranche bench` (1,000,000
    /// `noop` items: chunks of 10,000 were no faster than chunks of 1,000
    /// and held the single SQLite writer longer); see docs/benchmarks.md.
    package static let maximumClaim = 2_000

    /// The size of the chunks (or segments) a batch's items are stored in.
    package static func segmentSize(_ options: BatchOptions) -> Int64 {
        Int64(max(1, options.chunkSize ?? maximumSegment))
    }

    /// The most due items a claim of `batch` leases; nil to lease the whole
    /// chunk (a fixed `chunk_size`). Within `1…maximumClaim`: what the
    /// node asks for, but no more than the batch's waiting items shared
    /// out over the cluster's workers, so a batch of slow items is spread
    /// over every worker instead of waiting in one worker's chunk.
    package static func claimLimit(_ batch: BatchRecord, _ sizes: ChunkSizes) -> Int? {
        guard batch.options.chunkSize == nil else { return nil }
        let asked = sizes.perBatch[batch.id] ?? sizes.initial
        let waiting = batch.counts.pending.adding(saturating: max(0, batch.counts.failed))
        let share = waiting / Int64(max(1, sizes.workers))
        let limit = min(Int64(asked.clamped(to: 1...maximumClaim)), max(1, share))
        return Int(limit.clamped(to: 1...Int64(maximumClaim)))
    }

    /// How many due items a claim reads: one more than it may lease, so it
    /// knows whether the chunk goes on after them.
    package static func readLimit(_ limit: Int?) -> Int? { leaseLimit(limit).map { $0 + 1 } }

    /// The most due items a claim leases for a `limit` (``claimLimit(_:_:)``),
    /// nil for every due item of the chunk.
    package static func leaseLimit(_ limit: Int?) -> Int? { limit.map { $0.clamped(to: 1...maximumClaim) } }

    /// What a claim leases of the due items it read (in seq order, at most
    /// ``readLimit(_:)``): the first `limit`, and the seq to cut the chunk
    /// after when a due item follows them (nil: the chunk is leased whole).
    /// The rest becomes a pending chunk of its own, keeping the chunk's
    /// `ready_at` and `rescues`, so it always holds a due item.
    package static func cut(_ due: [LeasedItem], limit: Int?) -> (items: [LeasedItem], after: Int64?) {
        guard let limit = leaseLimit(limit), due.count > limit else { return (due, nil) }
        let leased = Array(due.prefix(limit))
        return (leased, leased.last?.seq)
    }
}
