import Foundation
import Testing
import TranchePostgres
import TrancheSQLite
import TrancheStore
import TrancheTestSupport

/// Progress samples on every store, and the figures made from them: the
/// times are passed in (`at:`), so nothing waits.
@Suite("Progress samples", .testResources)
struct ProgressStoreTests {
    /// A time in whole milliseconds, as the stores keep it.
    let start = Date(milliseconds: Date().milliseconds)

    func at(_ seconds: Double) -> Date { start.addingTimeInterval(seconds) }

    @Test(
        "samples: only batches in progress, at most one per interval, pruned by age, gone with their batch",
        arguments: StoreFactory.all)
    func samples(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let progress = try #require(store as? any ProgressStore)
        func record(_ seconds: Double, retention: Double = 600) async throws -> Int {
            try await progress.recordProgressSamples(at: at(seconds), minimumInterval: 0.8, retention: retention)
        }
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 5)), items: payloads(20))
        #expect(try await record(0) == 0, "a batch not started yet has nothing to sample")
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: at(0)))
        _ = try await store.checkpoint(
            lease, outcomes: succeeded(lease), finish: true, failBatch: nil, leaseDuration: 30, now: at(0))
        #expect(try await record(0) == 1)
        #expect(try await record(0.5) == 0, "a second sample within the interval is not written")
        #expect(try await record(1) == 1)
        var stored = try #require(try await progress.progress(of: [batch.id], since: at(-1))[batch.id])
        #expect(stored.samples == [ProgressSample(at: at(0), done: 5), ProgressSample(at: at(1), done: 5)])
        #expect(stored.chunksDone == 1)
        #expect(stored.chunksTotal == 4)
        stored = try #require(try await progress.progress(of: [batch.id], since: at(0.5))[batch.id])
        #expect(stored.samples == [ProgressSample(at: at(1), done: 5)], "samples before `since` are not read")
        // Ten minutes on, the old samples are pruned.
        #expect(try await record(700, retention: 600) == 1)
        stored = try #require(try await progress.progress(of: [batch.id], since: .distantPast)[batch.id])
        #expect(stored.samples == [ProgressSample(at: at(700), done: 5)])
        // Deleted with the batch: the next batch (which SQLite may give the
        // same key) starts with none.
        _ = try await store.transition(batch.id, .cancel, reason: nil, at: at(701))
        try await store.deleteBatch(batch.id)
        #expect(try await progress.progress(of: [batch.id], since: .distantPast).isEmpty)
        let next = try await store.createBatch(NewBatch(type: "t", options: options(chunkSize: 5)), items: payloads(5))
        _ = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: at(702)))
        stored = try #require(try await progress.progress(of: [next.id], since: .distantPast)[next.id])
        #expect(stored.samples.isEmpty)
        #expect(stored.chunksDone == 0)
        #expect(stored.chunksTotal == 1)
    }

    @Test("two PostgreSQL stores on one database report the same rate, ETA and chunks")
    func sameFiguresOnPostgres() async throws {
        let url = try await TestPostgres.freshDatabaseURL()
        try await TestPostgres.withStore(url: url) { writer in
            try await TestPostgres.withStore(url: url) { reader in
                try await sameFigures(writer: writer, reader: { reader })
            }
        }
    }

    @Test("a SQLite store opened afresh on the file reports the same rate, ETA and chunks")
    func sameFiguresOnSQLite() async throws {
        try await withTemporaryDirectory("tranche-progress") { directory in
            let path = directory.appendingPathComponent("progress.db").path
            try await sameFigures(
                writer: try SQLiteBatchStore(path: path), reader: { try SQLiteBatchStore(path: path) })
        }
    }

    /// Runs a batch of 100 items at 5 items a second (one chunk of 5 a
    /// second, sampled after each) through `writer`; checks that no ETA is
    /// given until the samples span 10 s, then that `writer` and a store
    /// made by `reader` (after the samples are written) give the same figures.
    func sameFigures(writer: any BatchStore, reader: () throws -> any BatchStore) async throws {
        let batch = try await writer.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 5)), items: payloads(100))
        let sampler = try #require(writer as? any ProgressStore)
        func figures(_ store: any BatchStore, at now: Date) async throws -> BatchProgress {
            let record = try #require(try await store.batch(batch.id))
            let stored = try await #require(store as? any ProgressStore).progress(of: [batch.id], since: .distantPast)
            return BatchProgress(record: record, stored: stored[batch.id], now: now)
        }
        for second in 0...12 {
            let lease = try #require(
                try await writer.claimChunk(owner: "w", leaseDuration: 30, now: at(Double(second))))
            _ = try await writer.checkpoint(
                lease, outcomes: succeeded(lease), finish: true, failBatch: nil, leaseDuration: 30,
                now: at(Double(second)))
            #expect(
                try await sampler.recordProgressSamples(at: at(Double(second)), minimumInterval: 0.8, retention: 600)
                    == 1)
            if second == 5 {
                let early = try await figures(writer, at: at(5))
                #expect(early.estimate.rate == 5)
                #expect(early.estimate.eta == nil, "5 s of samples are not enough for an ETA")
                #expect(early.estimate.etaLow == nil && early.estimate.etaHigh == nil)
            }
        }
        let written = try await figures(writer, at: at(12.5))
        let read = try await figures(try reader(), at: at(12.5))
        #expect(written == read)
        // 65 done, 35 left at 5 a second.
        #expect(read.estimate.rate == 5)
        #expect(read.estimate.eta == 7)
        let low = try #require(read.estimate.etaLow)
        let high = try #require(read.estimate.etaHigh)
        #expect(low < 7 && 7 < high, "the range holds the ETA: \(low)…\(high)")
        #expect(high - low < 3, "a steady rate gives a narrow range: \(low)…\(high)")
        #expect(read.chunksDone == 13)
        #expect(read.chunksTotal == 20)
    }
}

/// The estimate itself, from samples made up here.
@Suite("Progress estimate")
struct ProgressEstimateTests {
    let start = Date(timeIntervalSince1970: 1_000_000)

    /// One sample a second from `from` to `to` at `rate` items a second.
    func samples(_ seconds: ClosedRange<Int>, rate: Int64, base: Int64 = 0) -> [ProgressSample] {
        seconds.map {
            ProgressSample(at: start.addingTimeInterval(Double($0)), done: base + rate * Int64($0 - seconds.lowerBound))
        }
    }

    @Test("no samples, one sample: rate 0 and no ETA")
    func nothingKnown() {
        let none = ProgressEstimate(samples: [], remaining: 10, now: start)
        #expect(none == ProgressEstimate(rate: 0, eta: nil, etaLow: nil, etaHigh: nil))
        let one = ProgressEstimate(samples: samples(0...0, rate: 1), remaining: 10, now: start)
        #expect(one.rate == 0)
        #expect(one.eta == nil)
    }

    @Test("a speed change widens the range; the ETA follows the last 10 s")
    func speedChange() throws {
        // 60 s at 10 a second, then 20 s at 2 a second.
        let history = samples(0...60, rate: 10) + samples(61...80, rate: 2, base: 602)
        let estimate = ProgressEstimate(samples: history, remaining: 100, now: start.addingTimeInterval(80))
        #expect(estimate.rate == 2)
        #expect(estimate.eta == 50)
        let low = try #require(estimate.etaLow)
        let high = try #require(estimate.etaHigh)
        #expect(low < 20, "the older, faster rate allows an early end: \(low)")
        #expect(high > 50)
    }

    @Test("a slow batch (one item each 15 s) shows its real rate, not 0, and gets an ETA")
    func slowBatch() throws {
        // A sample a second for 2 min; an item finishes every 15 s.
        let history = (0...120).map {
            ProgressSample(at: start.addingTimeInterval(Double($0)), done: Int64($0 / 15))
        }
        let estimate = ProgressEstimate(samples: history, remaining: 4, now: start.addingTimeInterval(120))
        #expect(abs(estimate.rate - 1.0 / 15) < 0.001, "the last two steps over 30 s: \(estimate.rate)")
        let eta = try #require(estimate.eta)
        #expect(abs(eta - 60) < 0.001)
        #expect(try #require(estimate.etaLow) < eta)
        #expect(try #require(estimate.etaHigh) > eta)
    }

    @Test("a batch that stopped finishing items: its rate falls while the samples go on")
    func stall() {
        // 30 s at 50 a second, then nothing.
        let running = samples(0...30, rate: 50)
        let stalled = (31...90).map { ProgressSample(at: start.addingTimeInterval(Double($0)), done: 1_500) }
        let soon = ProgressEstimate(
            samples: running + stalled.prefix(10), remaining: 500, now: start.addingTimeInterval(40))
        let later = ProgressEstimate(samples: running + stalled, remaining: 500, now: start.addingTimeInterval(90))
        #expect(soon.rate > later.rate)
        #expect(later.rate < 2, "a minute without progress: \(later.rate)")
    }

    @Test("stale samples say nothing: rate 0, no ETA")
    func stale() {
        let estimate = ProgressEstimate(
            samples: samples(0...20, rate: 3), remaining: 10, now: start.addingTimeInterval(40))
        #expect(estimate == ProgressEstimate(rate: 0, eta: nil, etaLow: nil, etaHigh: nil))
    }

    @Test("a fall in the count (a retry) drops the samples before it")
    func retryResets() {
        let history = samples(0...30, rate: 10) + samples(31...33, rate: 1, base: 0)
        let estimate = ProgressEstimate(samples: history, remaining: 10, now: start.addingTimeInterval(33))
        #expect(estimate.rate == 1)
        #expect(estimate.eta == nil, "3 s since the retry are not enough for an ETA")
    }

    @Test("nothing left: ETA 0; an unsealed batch: no ETA; an ended one: rate 0")
    func batchStates() throws {
        let history = samples(0...20, rate: 3)
        let now = start.addingTimeInterval(20)
        #expect(ProgressEstimate(samples: history, remaining: 0, now: now).eta == 0)
        var record = BatchRecord.sample(total: 100, succeeded: 60, status: .processing)
        let stored = StoredProgress(samples: history, chunksDone: 6, chunksTotal: 10)
        #expect(BatchProgress(record: record, stored: stored, now: now).estimate.eta != nil)
        record.sealed = false
        #expect(BatchProgress(record: record, stored: stored, now: now).estimate.eta == nil)
        record.status = .completed
        let ended = BatchProgress(record: record, stored: stored, now: now)
        #expect(ended.estimate == ProgressEstimate(rate: 0, eta: 0, etaLow: 0, etaHigh: 0))
        #expect(ended.chunksDone == 6)
        #expect(BatchProgress(record: record, stored: nil, now: now).chunksTotal == nil)
    }

    @Test("hostile stored counts do not trap")
    func hostileCounts() {
        var record = BatchRecord.sample(total: .min, succeeded: .max, status: .processing)
        record.counts.skipped = .max
        let history = [
            ProgressSample(at: start, done: .min), ProgressSample(at: start.addingTimeInterval(5), done: .max),
            ProgressSample(at: start.addingTimeInterval(11), done: .max),
        ]
        let progress = BatchProgress(
            record: record, stored: StoredProgress(samples: history, chunksDone: -1, chunksTotal: .max),
            now: start.addingTimeInterval(11))
        #expect(progress.estimate.rate >= 0)
    }
}

extension BatchRecord {
    /// A record with these counts, for the estimate's tests.
    static func sample(total: Int64, succeeded: Int64, status: BatchStatus) -> BatchRecord {
        var counts = BatchCounts()
        counts.total = total
        counts.succeeded = succeeded
        return BatchRecord(
            id: .generate(), type: "t", owner: "local", status: status, pausedFrom: nil,
            context: JSONText(unchecked: "{}"), options: BatchOptions(), dryRun: false, priority: 0, sealed: true,
            counts: counts, failureReason: nil, result: nil, cursor: nil, createdAt: Date(), confirmedAt: nil,
            startedAt: nil, completedAt: nil, expiresAt: nil)
    }
}
