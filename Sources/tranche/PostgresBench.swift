import ArgumentParser
import Foundation
import TranchePostgres
import TrancheStore

#if canImport(Glibc)
    import Glibc
#endif

/// `tranche bench --database postgres://…`: bulk insert, end-to-end `noop`
/// throughput with one and more `tranche worker` processes, and claim
/// latency under contention. Figures only: nothing is asserted.
struct PostgresBench {
    let url: String
    let items: Int
    let chunkSize: Int
    let nodeWorkers: Int
    let nodeCounts: [Int]

    func run() async throws {
        let store = try await PostgresBatchStore(url: url)
        try await store.withRunning {
            // The benchmark's worker nodes would claim any open batch here
            // (running it as `noop`), and another batch's work skews the figures.
            let open = try await store.statusSummary().filter { !$0.status.isEnded }.reduce(0) { $0 + $1.batches }
            guard open == 0 else {
                throw ValidationError(
                    "the database holds \(open) open batch\(open == 1 ? "" : "es"): give the benchmark a database of its own"
                )
            }
            try await measure(store)
        }
    }

    /// Prints the figures, the store running.
    func measure(_ store: PostgresBatchStore) async throws {
        print("| measurement | result |")
        print("|---|---|")
        for nodes in nodeCounts {
            var options = BatchOptions()
            options.chunkSize = chunkSize
            options.concurrency = min(BatchOptions.maximumConcurrency, nodes * nodeWorkers * chunkSize)
            options.requireConfirmation = true
            // Insert first, then confirm with the workers ready: the run measures processing alone.
            let batch = try await store.createBatch(NewBatch(type: "noop", options: options, sealed: false), items: [])
            let insertStarted = ContinuousClock.now
            var seq = 0
            while seq < items {
                let count = min(10_000, items - seq)
                let block = (seq..<(seq + count)).map {
                    NewItem(payload: JSONText(unchecked: #"{"id":\#($0),"email":"user\#($0)@example.com"}"#))
                }
                _ = try await store.appendItems(
                    to: batch.id, startSeq: Int64(seq), items: block, cursor: nil, at: Date())
                seq += count
            }
            _ = try await store.seal(batch.id, at: Date())
            let insertSeconds = insertStarted.duration(to: .now).seconds
            print(
                "| insert \(format(Int64(items))) items (`UNNEST`, blocks of 10,000) | \(format(Int64.saturating(Double(items) / insertSeconds))) items/s |"
            )
            let pids = try (0..<nodes).map { index in
                try BenchCommand.spawnSelf([
                    "worker", "--database", url, "--workers", String(nodeWorkers), "--node-id", "bench-\(index)",
                    "--drain-grace", "1",
                ])
            }
            try await Task.sleep(for: .seconds(2))
            let started = ContinuousClock.now
            _ = try await store.transition(batch.id, .confirm, reason: nil, at: Date())
            while try await !(store.batch(batch.id)?.status.isEnded ?? true) {
                try await Task.sleep(for: .milliseconds(20))
            }
            let seconds = started.duration(to: .now).seconds
            var peak = 0
            for pid in pids {
                kill(pid, SIGTERM)
                peak = max(peak, BenchCommand.reap(pid).peakRSSKiB)
            }
            let record = try await store.batch(batch.id)
            print(
                "| `noop` end to end, \(format(Int64(items))) items, \(nodes) worker node\(nodes == 1 ? "" : "s") × \(nodeWorkers) workers, chunks of \(chunkSize), durable | "
                    + "\(format(Int64.saturating(Double(items) / seconds))) items/s (\(String(format: "%.2f", seconds)) s, "
                    + "\(record?.counts.succeeded ?? 0) succeeded, \(record?.status.rawValue ?? "gone")), peak RSS per node \(peak / 1024) MiB |"
            )
            // A batch that did not end with every item succeeded stays for a look.
            if record?.counts.succeeded == Int64(items) { _ = try? await store.deleteBatch(batch.id) }
        }
        try await claimLatency(store, batches: 1, warmUp: true)
        try await claimLatency(store, batches: 1)
        try await claimLatency(store, batches: 8)
        try await detailedCheckpoints(store)
    }

    /// A sealed `noop` batch of `count` small items with `options`, appended
    /// in blocks of 10,000.
    func makeBatch(_ store: PostgresBatchStore, options: BatchOptions, count: Int) async throws -> BatchRecord {
        let batch = try await store.createBatch(NewBatch(type: "noop", options: options, sealed: false), items: [])
        var seq = 0
        while seq < count {
            let block = (seq..<min(count, seq + 10_000)).map { NewItem(payload: JSONText(unchecked: "{\"n\":\($0)}")) }
            _ = try await store.appendItems(to: batch.id, startSeq: Int64(seq), items: block, cursor: nil, at: Date())
            seq += block.count
        }
        return try await store.seal(batch.id, at: Date())
    }

    /// Claim + finish of chunks whose every outcome carries an output or an
    /// error (half succeeded with an output, a quarter skipped, a quarter
    /// dead), one claimer: the cost of writing item details, which plain
    /// outcomes (coalesced into ranges) do not have. Nothing is left to retry,
    /// so the batch completes and is deleted without a cancel.
    func detailedCheckpoints(_ store: PostgresBatchStore) async throws {
        var options = BatchOptions()
        options.chunkSize = chunkSize
        options.concurrency = BatchOptions.maximumConcurrency
        let batch = try await makeBatch(store, options: options, count: items)
        var checkpointSeconds = 0.0
        var written = 0
        while let lease = try await store.claimChunk(owner: "details", leaseDuration: 60, now: Date()) {
            let outcomes = lease.items.map { item in
                var outcome = ItemOutcome(
                    seq: item.seq, previousStatus: item.status, attempt: item.attempts + 1, status: .succeeded)
                switch item.seq % 4 {
                case 1:
                    outcome.status = .skipped
                    outcome.error = .permanent("http_422", "the server refused item \(item.seq): invalid email")
                case 2:
                    outcome.status = .dead
                    outcome.error = .retryable("exit_1", "exit status 1: connection reset by peer (item \(item.seq))")
                default: outcome.output = JSONText(unchecked: "{\"id\":\(item.seq),\"ok\":true}")
                }
                return outcome
            }
            let before = ContinuousClock.now
            _ = try await store.checkpoint(
                lease, outcomes: outcomes, finish: true, failBatch: nil, leaseDuration: 60, now: Date())
            checkpointSeconds += before.duration(to: .now).seconds
            written += outcomes.count
        }
        print(
            "| checkpoints with details: \(format(Int64(written))) outcomes (outputs and errors), chunks of \(chunkSize), 1 claimer | "
                + "\(format(Int64.saturating(Double(written) / checkpointSeconds))) items/s in checkpoints "
                + "(\(String(format: "%.2f", checkpointSeconds)) s) |")
        _ = try? await store.deleteBatch(batch.id)
    }

    /// Claim + finish of chunks of 100 succeeded outcomes by 8 concurrent
    /// claimers on one batch: the cost of a claim and of a finishing
    /// checkpoint when the claimers of one batch collide. With `batches: 8`
    /// the same items are spread over 8 batches (claims go to the batch with
    /// the fewest chunks in flight, so claimers seldom share one): the same
    /// work without the collisions, to set the first figure against.
    /// `warmUp` runs 200 chunks first, and reports them on a line of their
    /// own: each claimer's first claims open the pool's connections and
    /// prepare its statements (PostgreSQL plans a prepared statement anew
    /// for its first five runs on a connection), a cost paid once per
    /// connection that the figures after it leave out.
    func claimLatency(_ store: PostgresBatchStore, batches: Int, warmUp: Bool = false) async throws {
        var options = BatchOptions()
        options.chunkSize = 100
        options.concurrency = BatchOptions.maximumConcurrency
        let count = min(items, warmUp ? 20_000 : 200_000) / batches * batches
        var made: [BatchRecord] = []
        for _ in 0..<batches { made.append(try await makeBatch(store, options: options, count: count / batches)) }
        let claimers = 8
        let started = ContinuousClock.now
        let timings = try await withThrowingTaskGroup(of: (claims: [Double], checkpoints: [Double]).self) { group in
            for index in 0..<claimers {
                group.addTask {
                    var claims: [Double] = []
                    var checkpoints: [Double] = []
                    while true {
                        let before = ContinuousClock.now
                        guard let lease = try await store.claimChunk(owner: "c\(index)", leaseDuration: 30, now: Date())
                        else { return (claims, checkpoints) }
                        claims.append(before.duration(to: .now).seconds * 1000)
                        let outcomes = lease.items.map {
                            ItemOutcome(
                                seq: $0.seq, previousStatus: $0.status, attempt: $0.attempts + 1, status: .succeeded)
                        }
                        let checkpointStarted = ContinuousClock.now
                        _ = try await store.checkpoint(
                            lease, outcomes: outcomes, finish: true, failBatch: nil, leaseDuration: 30, now: Date())
                        checkpoints.append(checkpointStarted.duration(to: .now).seconds * 1000)
                    }
                }
            }
            return try await group.reduce(into: (claims: [Double](), checkpoints: [Double]())) {
                $0.claims += $1.claims
                $0.checkpoints += $1.checkpoints
            }
        }
        let seconds = started.duration(to: .now).seconds
        for batch in made { _ = try? await store.deleteBatch(batch.id) }
        let claims = timings.claims.sorted()
        let checkpoints = timings.checkpoints.sorted()
        guard !claims.isEmpty, !checkpoints.isEmpty else { return }
        func percentile(_ sorted: [Double], _ p: Double) -> Double {
            sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
        }
        if warmUp {
            print(
                "| claim warm-up, cold connections: \(claimers) claimers on one batch, \(claims.count) chunks of 100 | "
                    + String(
                        format: "claim p50 %.2f ms, p99 %.2f ms, max %.2f ms |", percentile(claims, 0.5),
                        percentile(claims, 0.99), claims.last ?? 0))
            return
        }
        print(
            "| claim\(batches == 1 ? " under contention" : ""): \(claimers) claimers on "
                + "\(batches == 1 ? "one batch" : "\(batches) batches"), \(claims.count) chunks of 100 | "
                + String(
                    format: "claim p50 %.2f ms, p99 %.2f ms; finishing checkpoint p50 %.2f ms, p99 %.2f ms; "
                        + "claim + complete %@ items/s |",
                    percentile(claims, 0.5), percentile(claims, 0.99), percentile(checkpoints, 0.5),
                    percentile(checkpoints, 0.99), format(Int64.saturating(Double(count) / seconds))))
    }
}
