public import Foundation

/// How a linked batch came from its parent.
public struct LinkKind: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// Some of the parent's items (dead, skipped...) submitted again.
    public static let resubmit = LinkKind(rawValue: "resubmit")
    /// The parent completed and its `then` ran on its succeeded items' outputs.
    public static let chain = LinkKind(rawValue: "chain")
    public var description: String { rawValue }
}

/// Where a batch came from and the batches that came from it.
public struct BatchLinks: Sendable, Hashable {
    public var parentID: BatchID?
    /// How it came from its parent; nil without one.
    public var kind: LinkKind?
    /// Its children, oldest first (batches since deleted are left out).
    public var children: [BatchID]

    public init(parentID: BatchID? = nil, kind: LinkKind? = nil, children: [BatchID] = []) {
        self.parentID = parentID
        self.kind = kind
        self.children = children
    }
}

/// What runs after a batch completes (`then` on a submission): a new
/// linked batch whose items are the succeeded items' outputs, in order.
public struct Successor: Sendable, Hashable {
    public var type: String
    /// The prepared context (secrets included: stored, never shown).
    public var context: JSONText
    public var options: BatchOptions

    public init(type: String, context: JSONText, options: BatchOptions = BatchOptions()) {
        self.type = type
        self.context = context
        self.options = options
    }
}

/// A request to submit some of an ended batch's items again as a new batch.
public struct Resubmission: Sendable, Hashable {
    public var parent: BatchID
    /// The item statuses to take; see ``LinkRules/resubmittable``.
    public var statuses: Set<ItemStatus>
    /// The new batch's id.
    public var id: BatchID
    public var createdAt: Date
    /// The key the new batch's options carry (its create was idempotent).
    public var idempotencyKey: String?

    public init(
        parent: BatchID, statuses: Set<ItemStatus> = LinkRules.defaultResubmit, id: BatchID = .generate(),
        createdAt: Date = Date(), idempotencyKey: String? = nil
    ) {
        self.parent = parent
        self.statuses = statuses
        self.id = id
        self.createdAt = createdAt
        self.idempotencyKey = idempotencyKey
    }
}

/// Linked batches: resubmitting an ended batch's failures, the successor a
/// completed batch starts (`then`), and turning a dry run into a real run.
/// Items move between batches inside the store (`INSERT … SELECT`), never
/// through memory, whatever the batch's size.
public protocol LinkedBatchStore: BatchStore {
    /// Creates, in one transaction, a batch of the parent's items in
    /// `statuses` (their original payloads, renumbered from 0), with the
    /// parent's type, owner, context, options and priority, linked to it.
    /// With `idempotency`, the key's record is stored in the same
    /// transaction, and a repeat answers the batch it names (as
    /// ``ServerStore/createBatch(_:items:idempotency:)`` does).
    /// Throws `batchNotFound`, or `conflict` when the parent has not ended,
    /// was pruned, or has no item in `statuses`.
    func resubmit(_ resubmission: Resubmission, idempotency: IdempotencyKey?) async throws -> IdempotentCreation

    /// The batch's parent and children.
    func links(of id: BatchID) async throws -> BatchLinks

    /// Confirms a reported dry run (`pre_processed`): it becomes a real run
    /// of its stored items; its report moves into the `batch.confirmed`
    /// event (`preview`) and `result` is cleared. Throws `batchNotFound`, or
    /// an ``IllegalTransition`` when it is no dry run waiting to be confirmed.
    func confirmDryRun(_ id: BatchID, at now: Date) async throws -> BatchRecord
}

/// The rules of linked batches, decided once for both stores.
public enum LinkRules {
    /// The item statuses a resubmit takes by default.
    public static let defaultResubmit: Set<ItemStatus> = [.dead, .skipped]
    /// The item statuses a resubmit may take: those of items that did not succeed.
    public static let resubmittable: [ItemStatus] = ItemStatus.retriable

    /// The statuses to copy from `parent`, after checking it may be resubmitted.
    package static func statusesToResubmit(_ parent: BatchRecord, _ statuses: Set<ItemStatus>, at now: Date) throws
        -> [ItemStatus]
    {
        guard parent.status.isEnded else {
            throw StoreError(
                .conflict, "batch \(parent.id) is \(parent.status); resubmit its items once it has ended")
        }
        if parent.pruned || (parent.expiresAt.map { $0 <= now } ?? false) {
            throw StoreError(
                .conflict, "batch \(parent.id) was pruned after its ttl: its items are gone, so none can be resubmitted"
            )
        }
        let chosen = resubmittable.filter(statuses.contains)
        guard !chosen.isEmpty else {
            throw StoreError(.conflict, "no item status to resubmit; give some of \(names(resubmittable))")
        }
        return chosen
    }

    /// The conflict when no item of `parent` is in `statuses`.
    package static func nothingToResubmit(_ parent: BatchRecord, _ statuses: [ItemStatus]) -> StoreError {
        StoreError(.conflict, "batch \(parent.id) has no \(names(statuses)) item to resubmit")
    }

    /// The new batch a resubmit of `parent` creates, open until its items are copied.
    package static func child(of parent: BatchRecord, _ resubmission: Resubmission) -> NewBatch {
        var options = parent.options
        options.idempotencyKey = resubmission.idempotencyKey
        return NewBatch(
            id: resubmission.id, type: parent.type, owner: parent.owner, context: parent.context, options: options,
            dryRun: false, priority: parent.priority, sealed: false, createdAt: resubmission.createdAt)
    }

    /// The batch `parent`'s successor starts as, open until its items are copied.
    package static func child(of parent: BatchRecord, _ successor: Successor, at now: Date) -> NewBatch {
        var options = successor.options
        options.idempotencyKey = nil
        return NewBatch(
            type: successor.type, owner: parent.owner, context: successor.context, options: options, dryRun: false,
            priority: parent.priority, sealed: false, createdAt: now)
    }

    /// Whether a completed batch starts its successor: only on `completed`
    /// (a failed or canceled batch does not; a retry that completes does).
    package static func startsSuccessor(_ batch: BatchRecord) -> Bool { batch.status == .completed }

    /// Checks that `batch` is a dry run whose report waits for a confirmation.
    package static func checkDryRunConfirmable(_ batch: BatchRecord) throws {
        guard batch.dryRun, batch.sealed, batch.status == .preProcessed else {
            throw IllegalTransition(from: batch.status, action: .confirm)
        }
    }

    /// The `batch.confirmed` data of a confirmed dry run: its report, kept in its history.
    package static func dryRunConfirmed(report: JSONText?) -> [String: JSONValue] {
        ["dry_run": .bool(true), "preview": (try? report?.value()) ?? .null]
    }

    /// The `batch.linked` data recorded on the parent.
    package static func linked(child: BatchID, kind: LinkKind, items: Int64) -> [String: JSONValue] {
        ["child_id": .string(child.rawValue), "kind": .string(kind.rawValue), "items": .number(Double(items))]
    }

    /// Chunk boundaries of a copied batch, in SQL: a chunk starts at every
    /// `chunkSize`-th seq and ends `chunkSize - 1` later or at the last item
    /// (an automatic batch's segments, ``ChunkSizeRules/segmentSize``).
    package static func chunkSize(_ options: BatchOptions) -> Int64 { ChunkSizeRules.segmentSize(options) }

    static func names(_ statuses: [ItemStatus]) -> String { statuses.map(\.name).joined(separator: ", ") }
}

/// The columns of the `batch_successors` row both stores read, in order.
package let successorColumns = "type, context, options"

extension Successor {
    /// Decodes a `batch_successors` row; nil when its options cannot be read.
    package init?(row: some StoredRow) throws {
        guard let options = try? JSONText(unchecked: try row.string(2)).decode(BatchOptions.self) else { return nil }
        self.init(type: try row.string(0), context: JSONText(unchecked: try row.string(1)), options: options)
    }
}
