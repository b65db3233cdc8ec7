import Foundation
import Testing
import TrancheStore

/// The pure rules, without a database.
@Suite("Rules decided above the drivers")
struct RulesTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func batch(_ status: BatchStatus, options: BatchOptions = BatchOptions()) -> BatchRecord {
        BatchRecord(
            id: .generate(), type: "t", owner: "o", status: status, pausedFrom: nil, context: JSONText(unchecked: "{}"),
            options: options, dryRun: false, priority: 0, sealed: true, counts: BatchCounts(), failureReason: nil,
            result: nil, cursor: nil, createdAt: now, confirmedAt: nil, startedAt: nil, completedAt: nil,
            expiresAt: nil)
    }

    @Test("the processing clock runs only while processing")
    func processingClock() throws {
        var record = batch(.confirmed)
        record = try BatchRules.step(record, .start, reason: nil, now: now).batch
        #expect(record.runningSince == now)
        record = try BatchRules.step(record, .pause, reason: nil, now: now.addingTimeInterval(10)).batch
        #expect(record.runningSince == nil && record.processingTime == 10)
        #expect(BatchRules.processingTime(of: record, at: now.addingTimeInterval(500)) == 10)
        record = try BatchRules.step(record, .resume, reason: nil, now: now.addingTimeInterval(100)).batch
        #expect(BatchRules.processingTime(of: record, at: now.addingTimeInterval(105)) == 15)
        record = try BatchRules.step(record, .cancel, reason: nil, now: now.addingTimeInterval(110)).batch
        #expect(record.processingTime == 20 && record.runningSince == nil)
        record = try BatchRules.step(record, .retry, reason: nil, now: now.addingTimeInterval(200)).batch
        #expect(record.processingTime == 0 && record.status == .confirmed && record.completedAt == nil)
    }

    @Test("ending a batch sets its completion and expiry; a huge ttl cannot overflow")
    func ending() throws {
        var options = BatchOptions()
        options.ttl = 1e300
        let step = try BatchRules.step(batch(.processing, options: options), .fail, reason: nil, now: now)
        #expect(step.batch.status == .failed)
        #expect(step.batch.failureReason == "the batch failed")
        #expect(step.cancelsWaitingItems && step.endsBatch)
        #expect(step.batch.completedAt == now)
        let expires = try #require(step.batch.expiresAt)
        #expect(expires.timeIntervalSince(now) == BatchRules.maximumRetention)
        #expect(expires.milliseconds > now.milliseconds)
    }

    @Test("a batch whose chunks are all done fails when its final counts trip its failure policy")
    func finishingAction() {
        var options = BatchOptions()
        options.failurePolicy = .stopAboveRatio
        options.failureRatio = 0.5
        options.failureMinimumItems = 100
        var record = batch(.processing, options: options)
        // 60 of 100 processed items failed: two checkpoints that committed
        // side by side each saw 90 processed, under the minimum.
        record.counts.total = 100
        record.counts.succeeded = 40
        record.counts.dead = 50
        record.counts.skipped = 10
        let tripped = BatchRules.finishingAction(record)
        #expect(tripped.action == .fail)
        #expect(tripped.reason?.hasPrefix("failure policy stop_above_ratio: 60 of 100") == true)
        record.counts.succeeded = 60
        record.counts.dead = 30
        #expect(BatchRules.finishingAction(record).action == .complete)
        record.counts.succeeded = 0
        record.counts.dead = 40
        record.counts.skipped = 0
        record.counts.canceled = 60
        record.options = BatchOptions()
        #expect(BatchRules.finishingAction(record) == (.fail, "no item succeeded"))
    }

    @Test("illegal actions throw before anything is decided")
    func illegal() {
        #expect(throws: IllegalTransition.self) {
            try BatchRules.step(batch(.completed), .pause, reason: nil, now: now)
        }
    }

    @Test("sealing: pre-process, then confirm unless a person or a dry run must look first")
    func sealing() throws {
        var record = batch(.created)
        record.sealed = false
        #expect(try BatchRules.mustSeal(record))
        #expect(BatchRules.actionsWhenItemsKnown(record) == [.preProcess, .confirm])
        record.options.requireConfirmation = true
        #expect(BatchRules.actionsWhenItemsKnown(record) == [.preProcess])
        #expect(BatchRules.actionsForStreamingBatch(record) == [])
        record.sealed = true
        #expect(try !BatchRules.mustSeal(record))
        var ended = batch(.canceled)
        ended.sealed = false
        #expect(throws: StoreError.self) { try BatchRules.mustSeal(ended) }
    }

    @Test("rescue: settle, split in halves, quarantine the last one, cancel when ended")
    func rescue() {
        let chunk = RescueRules.Chunk(id: 1, batchKey: 1, firstSeq: 0, lastSeq: 9, rescues: 1, unfinished: 4)
        #expect(RescueRules.decide(chunk, batchEnded: true, splitAfter: 2, openItems: []) == .cancelRest)
        #expect(RescueRules.decide(chunk, batchEnded: false, splitAfter: 5, openItems: []) == .settle)
        let open: [(seq: Int64, status: ItemStatus)] = (0..<4).map { (Int64($0), .pending) }
        #expect(
            RescueRules.decide(chunk, batchEnded: false, splitAfter: 2, openItems: open) == .split(lastOfFirstHalf: 1))
        guard
            case .quarantine(let seq, let previous, let message) = RescueRules.decide(
                chunk, batchEnded: false, splitAfter: 2, openItems: [(7, .failed)])
        else {
            Issue.record("one open item is quarantined")
            return
        }
        #expect(seq == 7 && previous == .failed && message.contains("2 times"))
        let counts = RescueRules.counts(chunk)
        #expect(counts.running == -4 && counts.rescued == 4)
    }

    @Test("outcomes: plain runs coalesce, details stand alone, late ones are canceled")
    func outcomeRuns() {
        func outcome(_ seq: Int64, _ status: ItemStatus, error: ItemError? = nil) -> ItemOutcome {
            ItemOutcome(seq: seq, previousStatus: .pending, attempt: 1, status: status, error: error)
        }
        let outcomes = [
            outcome(3, .succeeded), outcome(0, .succeeded), outcome(1, .succeeded),
            outcome(2, .skipped, error: .permanent("bad", "bad")), outcome(4, .succeeded),
        ]
        let runs = OutcomeRules.runs(outcomes, batchEnded: false)
        #expect(runs.count == 3)
        guard case .plain(0, 1, .succeeded, 1, _) = runs[0], case .detailed(_, .skipped) = runs[1],
            case .plain(3, 4, .succeeded, 1, _) = runs[2]
        else {
            Issue.record("unexpected runs \(runs)")
            return
        }
        let late = OutcomeRules.runs(outcomes, batchEnded: true)
        for run in late {
            switch run {
            case .plain(_, _, let status, _, _), .detailed(_, let status): #expect(status == .canceled)
            }
        }
    }

    @Test("chunks in flight: enough for the concurrency plus one, never overflowing")
    func maxChunks() {
        var options = BatchOptions()
        options.chunkSize = 100
        options.concurrency = 8
        #expect(options.maxChunksInFlight == 2)
        options.chunkSize = 3
        #expect(options.maxChunksInFlight == 4)
        options.concurrency = Int.max
        options.chunkSize = 1
        #expect(options.maxChunksInFlight == Int(Int32.max))
    }

    @Test("conversions from outside saturate instead of trapping")
    func saturating() {
        #expect(Int64.saturating(1e300) == .max)
        #expect(Int64.saturating(-1e300) == .min)
        #expect(Int64.saturating(.nan) == 0)
        #expect(Int64.saturating(.infinity) == .max)
        #expect(Int64.saturating(41.6) == 42)
        #expect(Date(timeIntervalSince1970: 1e300).milliseconds == .max)
    }

    @Test("status lists for SQL come from the enums")
    func lists() {
        #expect(SQLList.runnableBatches == "'confirmed', 'processing'")
        #expect(SQLList.waitingItems == "0, 3")
        #expect(SQLList.endedBatches == "'completed', 'failed', 'canceled'")
    }
}
