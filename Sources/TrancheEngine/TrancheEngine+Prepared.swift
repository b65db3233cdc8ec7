import Foundation

// Submitting in two steps, for a caller that stores the batch in its own
// transaction (the HTTP server stores an idempotency key's record with it).
// ``TrancheEngine/submit(_:items:)`` is these steps around `createBatch`.
extension TrancheEngine {
    /// Checks a submission with its strategy (options validated, context
    /// prepared, each item validated) and returns the batch and its items,
    /// ready to store; nothing is stored. Hand the stored batch to
    /// ``accept(_:)``.
    /// - Parameter items: the batch's items, or nil for an open batch that
    ///   takes its items by ``append(to:startSeq:items:cursor:)`` until sealed.
    public func prepareBatch(_ submission: Submission, items: [JSONText]?) throws -> (
        batch: NewBatch, items: [NewItem]
    ) {
        var (batch, bound) = try prepare(submission)
        guard let items else {
            batch.sealed = false
            return (batch, [])
        }
        let checked = items.enumerated().map { offset, payload in
            NewItem(
                payload: payload,
                rejection: bound.validate(
                    ItemInput(batchID: batch.id, seq: Int64(offset), payload: payload, attempt: 1)))
        }
        return (batch, checked)
    }

    /// Takes on a batch the caller stored from ``prepareBatch(_:items:)``:
    /// a sealed dry run gets its report (once), and the workers wake.
    public func accept(_ record: BatchRecord) async throws -> BatchRecord {
        var record = record
        if record.dryRun, record.status == .preProcessed, record.result == nil {
            record = try await reportDryRun(record)
        }
        signalWork()
        return record
    }
}
