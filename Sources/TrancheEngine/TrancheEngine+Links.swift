import Foundation

// Linked batches: resubmitting an ended batch's failures, `then` (a
// successor the store starts when a batch completes), and a dry run
// confirmed into a real run. The stores do the work (``LinkedBatchStore``).
extension TrancheEngine {
    /// The store's linked-batch operations, or an error naming what is missing.
    var linkedStore: any LinkedBatchStore {
        get throws {
            guard let linked = store as? any LinkedBatchStore else {
                throw EngineError(.invalidSubmission, "this store does not keep linked batches")
            }
            return linked
        }
    }

    /// Creates a new batch of the ended batch's items in `statuses` (by
    /// default dead and skipped), with its type, context and options, linked
    /// to it; with `idempotency`, a repeat answers the batch the first created.
    public func resubmit(
        _ id: BatchID, statuses: Set<ItemStatus> = LinkRules.defaultResubmit, idempotency: IdempotencyKey? = nil
    ) async throws -> IdempotentCreation {
        try await registerPrepareTypes()
        let creation = try await linkedStore.resubmit(
            Resubmission(parent: id, statuses: statuses, createdAt: now, idempotencyKey: idempotency?.key),
            idempotency: idempotency)
        signalWork()
        return creation
    }

    /// The batch's parent and children (none on a store that keeps no links).
    public func links(of id: BatchID) async throws -> BatchLinks {
        guard let linked = store as? any LinkedBatchStore else { return BatchLinks() }
        return try await linked.links(of: id)
    }

    /// Turns a reported dry run into a real run of the same stored items;
    /// its report stays in its history (the `batch.confirmed` event's `preview`).
    func confirmDryRun(_ record: BatchRecord) async throws -> BatchRecord {
        let confirmed = try await linkedStore.confirmDryRun(record.id, at: now)
        signalWork()
        return confirmed
    }

    /// A submission's `then` checked as a submission of its own (the
    /// strategy known, options valid, context prepared), or an
    /// ``EngineError`` that names `then`.
    func preparedSuccessor(_ then: Successor) throws -> Successor {
        do {
            let (batch, _) = try prepare(Submission(type: then.type, context: then.context, options: then.options))
            return Successor(type: batch.type, context: batch.context, options: batch.options)
        } catch let error as EngineError {
            throw EngineError(error.code, "then: \(error.message)")
        }
    }
}
