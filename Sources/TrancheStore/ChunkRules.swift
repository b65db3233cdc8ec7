package import Foundation

/// What becomes of a chunk whose lease expired (or was released), decided
/// once: the drivers read the chunk, its batch and, when asked, its open
/// items, and carry out the decision.
package enum RescueRules {
    /// The chunk row as the rescue read it.
    package struct Chunk: Sendable {
        package var id: Int64
        package var batchKey: Int64
        package var firstSeq: Int64
        package var lastSeq: Int64
        /// Rescues before this one.
        package var rescues: Int
        /// Items the lost lease had claimed and not yet reported.
        package var unfinished: Int64

        package init(id: Int64, batchKey: Int64, firstSeq: Int64, lastSeq: Int64, rescues: Int, unfinished: Int64) {
            self.id = id
            self.batchKey = batchKey
            self.firstSeq = firstSeq
            self.lastSeq = lastSeq
            self.rescues = rescues
            self.unfinished = unfinished
        }

        /// Rescues counting this one, within the 32 bits both stores keep
        /// (a damaged count at that limit stays there and can be written back).
        package var rescuesAfter: Int { rescues.clamped(to: 0...Int(Int32.max) - 1) + 1 }

        /// The `chunks` columns a rescue reads, in the order of ``init(row:)``.
        package static let columns = "id, batch_key, first_seq, last_seq, rescues, claimed_items"

        /// Decodes a row of ``columns``. A claim below zero cannot be, and
        /// reads as none: the rescue's arithmetic never traps on a damaged row.
        package init(row: some StoredRow) throws {
            self.init(
                id: try row.int64(0), batchKey: try row.int64(1), firstSeq: try row.int64(2),
                lastSeq: try row.int64(3), rescues: try row.int(4), unfinished: max(0, try row.int64(5)))
        }

        /// What the rescue reports, before its decision adds to it.
        package func report(batchID: BatchID) -> RescuedChunk {
            RescuedChunk(
                batchID: batchID, firstSeq: firstSeq, lastSeq: lastSeq, unfinished: unfinished, split: false,
                quarantinedSeq: nil)
        }
    }

    /// What to do with the chunk.
    package enum Decision: Sendable, Hashable {
        /// The batch ended: its open items are canceled and the chunk is done.
        case cancelRest
        /// Claimable again (from its earliest due item).
        case settle
        /// The one open item killed its worker too often: it is `dead`.
        case quarantine(seq: Int64, previous: ItemStatus, message: String)
        /// Split after `lastOfFirstHalf`, both halves claimable now.
        case split(lastOfFirstHalf: Int64)
    }

    /// The open items' columns the decision reads, in seq order.
    package static let openItemColumns = "seq, status"

    /// Decodes a row of ``openItemColumns``.
    package static func openItem(_ row: some StoredRow) throws -> (seq: Int64, status: ItemStatus) {
        (try row.int64(0), ItemStatus(rawValue: try row.int(1)) ?? .pending)
    }

    /// Whether the decision needs the chunk's open items (seq order).
    package static func needsOpenItems(_ chunk: Chunk, batchEnded: Bool, splitAfter: Int) -> Bool {
        !batchEnded && chunk.rescuesAfter >= splitAfter
    }

    /// Decides the rescue. `openItems` are the chunk's waiting items in seq
    /// order, read only when ``needsOpenItems(_:batchEnded:splitAfter:)`` said so.
    package static func decide(
        _ chunk: Chunk, batchEnded: Bool, splitAfter: Int, openItems: [(seq: Int64, status: ItemStatus)]
    ) -> Decision {
        if batchEnded { return .cancelRest }
        guard needsOpenItems(chunk, batchEnded: batchEnded, splitAfter: splitAfter) else { return .settle }
        if openItems.count == 1, let item = openItems.first {
            let message = "the item's worker stopped \(chunk.rescuesAfter) times while running it; quarantined"
            return .quarantine(seq: item.seq, previous: item.status, message: message)
        }
        if openItems.count > 1 { return .split(lastOfFirstHalf: openItems[openItems.count / 2 - 1].seq) }
        return .settle
    }

    /// The error a quarantined item carries.
    package static func quarantineError(message: String) -> ItemError {
        ItemError(code: "worker_lost", message: message, category: .retryable)
    }

    /// The counter change of a rescue before its decision's own: the lost
    /// lease's items stop running and count as possibly run twice.
    package static func counts(_ chunk: Chunk) -> BatchCounts {
        var delta = BatchCounts()
        delta.running = -chunk.unfinished
        delta.rescued = chunk.unfinished
        return delta
    }
}

/// How a chunk's row is left when its lease ends.
package enum SettleRules {
    /// Done when no item waits; otherwise pending again from the earliest
    /// due item (`readyAt` 0 when one is pending now).
    package static func state(waitingItems: Int64) -> ChunkState { waitingItems > 0 ? .pending : .done }

    /// ``state(waitingItems:)`` as a SQL expression over the expression
    /// `waiting`, for a driver that settles a chunk in one statement.
    package static func stateSQL(waitingItems waiting: String) -> String {
        "CASE WHEN \(waiting) > 0 THEN \(ChunkState.pending.rawValue) ELSE \(ChunkState.done.rawValue) END"
    }
}

/// A checkpoint's outcomes, grouped into the writes a driver makes.
package enum OutcomeRules {
    /// One write: a run of consecutive items with the same plain result
    /// (no output, no error), or one item with details.
    package enum Run: Sendable, Hashable {
        case plain(first: Int64, last: Int64, status: ItemStatus, attempt: Int, outcomes: [ItemOutcome])
        case detailed(ItemOutcome, status: ItemStatus)
    }

    /// The status an outcome is stored with. Once a batch has ended its
    /// counters never move: an outcome that arrives after its end is stored
    /// as `canceled` (its output and error are kept for the record).
    package static func storedStatus(_ outcome: ItemOutcome, batchEnded: Bool) -> ItemStatus {
        batchEnded ? .canceled : outcome.status
    }

    /// When a stored `failed` item is due again; nil for any other status.
    package static func nextAttempt(_ outcome: ItemOutcome, status: ItemStatus) -> Date? {
        status == .failed ? outcome.nextAttemptAt : nil
    }

    /// Groups outcomes (in any order) into runs, in seq order.
    package static func runs(_ outcomes: [ItemOutcome], batchEnded: Bool) -> [Run] {
        let sorted = outcomes.sorted { $0.seq < $1.seq }
        func isPlain(_ outcome: ItemOutcome) -> Bool { outcome.output == nil && outcome.error == nil }
        var runs: [Run] = []
        var index = 0
        while index < sorted.count {
            let outcome = sorted[index]
            let status = storedStatus(outcome, batchEnded: batchEnded)
            guard isPlain(outcome) else {
                runs.append(.detailed(outcome, status: status))
                index += 1
                continue
            }
            var last = index
            while last + 1 < sorted.count, sorted[last + 1].seq == sorted[last].seq + 1, isPlain(sorted[last + 1]),
                sorted[last + 1].attempt == outcome.attempt,
                storedStatus(sorted[last + 1], batchEnded: batchEnded) == status
            {
                last += 1
            }
            runs.append(
                .plain(
                    first: outcome.seq, last: sorted[last].seq, status: status, attempt: outcome.attempt,
                    outcomes: Array(sorted[index...last])))
            index = last + 1
        }
        return runs
    }

    /// The counter change of outcomes applied over items that had `previous`.
    package static func counts(moving count: Int64, from previous: ItemStatus, to status: ItemStatus, attempt: Int)
        -> BatchCounts
    {
        var delta = BatchCounts()
        delta[previous] -= count
        delta[status] += count
        if attempt > 1 { delta.retried += count }
        return delta
    }
}
