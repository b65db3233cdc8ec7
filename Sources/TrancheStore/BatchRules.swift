package import Foundation

/// The rules of a batch's life, decided once above the drivers: given the
/// batch a transaction read, each function says what to write. SQLite and
/// PostgreSQL only carry the answer out.
package enum BatchRules {
    /// One lifecycle action, decided: the batch as it must be stored, the
    /// event to record, and the side effects the driver carries out.
    package struct Step: Sendable {
        /// The batch after the action (counters as read: side effects may move them).
        package var batch: BatchRecord
        package var from: BatchStatus
        package var event: BatchEventType
        package var eventData: [String: JSONValue]
        /// Cancel and fail: the items not in flight are canceled now.
        package var cancelsWaitingItems: Bool
        /// The batch became runnable: idle workers should look for work.
        package var wakesWorkers: Bool
        /// The batch ended: the driver stores its ``BatchSummary``.
        package var endsBatch: Bool { batch.status.isEnded }
    }

    /// Decides `action` on `batch` at `now`, or throws ``IllegalTransition``.
    package static func step(
        _ batch: BatchRecord, _ action: LifecycleAction, reason: String?, now: Date,
        data: [String: JSONValue] = [:]
    ) throws -> Step {
        let from = batch.status
        let to = try BatchLifecycle.next(from: from, action, pausedFrom: batch.pausedFrom)
        var next = batch
        next.status = to
        switch action {
        case .pause: next.pausedFrom = from
        case .resume: next.pausedFrom = nil
        case .confirm: next.confirmedAt = now
        case .start: next.startedAt = batch.startedAt ?? now
        case .retry:
            // A retry starts a fresh batch-timeout clock.
            next.processingTime = 0
            next.runningSince = nil
            if from.isEnded {
                next.completedAt = nil
                next.expiresAt = nil
                next.failureReason = nil
                next.pausedFrom = nil
                next.summary = nil
                next.confirmedAt = now
            }
        default: break
        }
        if action == .fail { next.failureReason = reason ?? "the batch failed" }
        if to.isEnded {
            next.completedAt = now
            next.expiresAt = now.addingTimeInterval(min(max(0, batch.options.ttl), maximumRetention))
        }
        moveProcessingClock(&next, from: action == .retry ? nil : from, at: now)
        var eventData = data
        eventData["status"] = .string(to.rawValue)
        eventData["from"] = .string(from.rawValue)
        if let reason { eventData["reason"] = .string(reason.storable) }
        return Step(
            batch: next, from: from, event: action.eventType, eventData: eventData,
            cancelsWaitingItems: action == .cancel || action == .fail,
            wakesWorkers: to.isRunnable && (!from.isRunnable || action == .retry))
    }

    /// The longest any time span from outside may reach (about 100 years), so
    /// that dates stay within what a store can hold.
    package static let maximumRetention: Double = 100 * 365 * 86_400

    /// The batch-timeout clock runs only while the batch is `processing`.
    static func moveProcessingClock(_ batch: inout BatchRecord, from: BatchStatus?, at now: Date) {
        if from == .processing, batch.status != .processing, let since = batch.runningSince {
            batch.processingTime += max(0, now.timeIntervalSince(since))
            batch.runningSince = nil
        }
        if batch.status == .processing, from != .processing || batch.runningSince == nil {
            batch.runningSince = now
        }
    }

    /// Seconds the batch has been processing, as its timeout counts them.
    package static func processingTime(of batch: BatchRecord, at now: Date) -> Double {
        batch.processingTime + (batch.runningSince.map { max(0, now.timeIntervalSince($0)) } ?? 0)
    }

    /// Why the batch must fail now for running past its `batchTimeout`, or nil.
    package static func timeoutReason(_ batch: BatchRecord, at now: Date) -> String? {
        guard !batch.status.isEnded else { return nil }
        let limit = batch.options.batchTimeout
        guard processingTime(of: batch, at: now) > limit else { return nil }
        return "batch_timeout: the batch processed for longer than \(Int64.saturating(limit)) s"
    }

    /// The actions that follow once a batch's items are all known (at seal):
    /// pre-process, then confirm unless a person must confirm or it is a dry run.
    package static func actionsWhenItemsKnown(_ batch: BatchRecord) -> [LifecycleAction] {
        guard batch.status == .created else { return [] }
        return batch.options.requireConfirmation || batch.dryRun ? [.preProcess] : [.preProcess, .confirm]
    }

    /// The actions right after creating a batch whose items will stream in:
    /// it starts running before its total is known, unless it waits for a
    /// confirmation or is a dry run. A sealed batch is sealed instead.
    package static func actionsForStreamingBatch(_ batch: BatchRecord) -> [LifecycleAction] {
        guard !batch.sealed else { return [] }
        return batch.options.requireConfirmation || batch.dryRun ? [] : [.preProcess, .confirm]
    }

    /// Whether sealing `batch` has anything to do (nil: sealed already);
    /// throws for an ended batch.
    package static func mustSeal(_ batch: BatchRecord) throws -> Bool {
        guard !batch.sealed else { return false }
        guard !batch.status.isEnded else { throw StoreError(.invalidAppend, "batch \(batch.id) has ended") }
        return true
    }

    /// Whether the batch may finish if all its chunks are done: the driver
    /// looks at its chunks only then.
    package static func mayFinish(_ batch: BatchRecord) -> Bool { batch.sealed && batch.status.isRunnable }

    /// How a batch whose chunks are all done ends: failed when its final
    /// counts trip its failure policy, else completed when an item
    /// succeeded (or it was empty), failed otherwise.
    package static func finishingAction(_ batch: BatchRecord) -> (action: LifecycleAction, reason: String?) {
        // Decided again on the final counts: checkpoints committing side by
        // side (PostgreSQL) each see too few failures to trip the policy.
        if let reason = BatchOutcome.failurePolicyTrips(batch.counts, options: batch.options) {
            return (.fail, reason)
        }
        switch BatchOutcome.whenAllTerminal(batch.counts) {
        case .completed: return (.complete, nil)
        default: return (.fail, "no item succeeded")
        }
    }

    /// After a checkpoint: why the batch fails now (a fatal item error or the
    /// failure policy), or nil.
    package static func failureAfterCheckpoint(_ batch: BatchRecord, fatal: String?) -> String? {
        guard !batch.status.isEnded else { return nil }
        return fatal ?? BatchOutcome.failurePolicyTrips(batch.counts, options: batch.options)
    }

    /// The item statuses a retry resets, after checking the retry is allowed:
    /// never for a batch whose items were pruned (its counters would drop to zero).
    package static func statusesToRetry(_ batch: BatchRecord, _ statuses: Set<ItemStatus>, at now: Date) throws
        -> [ItemStatus]
    {
        _ = try BatchLifecycle.next(from: batch.status, .retry, pausedFrom: batch.pausedFrom)
        if batch.pruned || (batch.expiresAt.map { $0 <= now } ?? false) {
            let gone = batch.counts.total
            throw StoreError(
                .conflict,
                "batch \(batch.id) was pruned after its ttl: its \(gone) items are gone, so it cannot be retried; "
                    + "its summary is kept")
        }
        return ItemStatus.retriable.filter(statuses.contains)
    }

    /// Whether a batch may be deleted now.
    package static func checkDeletable(_ batch: BatchRecord) throws {
        guard batch.status.isEnded || batch.dryRun else {
            throw StoreError(.conflict, "batch \(batch.id) is \(batch.status); cancel it before deleting it")
        }
    }
}

/// Event payloads the stores record, written once.
package enum EventData {
    package static func sealed(total: Int64) -> [String: JSONValue] { ["total": .number(Double(total))] }

    package static func itemDead(seq: Int64, error: ItemError?) -> [String: JSONValue] {
        [
            "seq": .number(Double(seq)), "code": .string(error?.code ?? ""),
            "message": .string(error?.message.storable ?? ""),
        ]
    }

    package static func chunkRescued(_ chunk: RescuedChunk) -> [String: JSONValue] {
        [
            "first_seq": .number(Double(chunk.firstSeq)), "last_seq": .number(Double(chunk.lastSeq)),
            "unfinished": .number(Double(chunk.unfinished)), "split": .bool(chunk.split),
        ]
    }

    package static func retried(items: Int64) -> [String: JSONValue] { ["items": .number(Double(items))] }
}
