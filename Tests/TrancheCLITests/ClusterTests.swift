import Foundation
import Testing
import TranchePostgres
import TrancheStore
import TrancheTestSupport

/// Several `tranche worker` processes on one PostgreSQL database, with the
/// failures a cluster meets: a node killed mid-run, the database restarted,
/// the maintenance leader killed.
@Suite("nodes on PostgreSQL", .serialized)
struct ClusterTests {
    /// A node's lease: short enough that a killed node's chunks are rescued
    /// within the test, long enough that a live node on a busy machine keeps
    /// its leases (it extends them every checkpoint).
    static let leaseDuration = 10

    func worker(_ url: String, id: String, in directory: URL, workers: Int = 32) throws -> TrancheProcess {
        try TrancheProcess(
            [
                "worker", "--database", url, "--node-id", id, "--workers", String(workers), "--lease-duration",
                String(Self.leaseDuration),
                "--drain-grace", "1", "--http-allow", "127.0.0.1",
            ], in: directory)
    }

    /// Sends SIGTERM and waits for the exits: status 0 once the whole node
    /// (the engine, then the store's pool) shut down. After a database
    /// restart a call sent as the server went away may never be answered;
    /// the node then ends with status 1 when its shutdown bound passes.
    func stop(_ processes: [TrancheProcess], cleanExit: Bool = true) async throws {
        for process in processes where process.process.isRunning { process.process.terminate() }
        for process in processes {
            let status = try await process.wait(seconds: 60)
            #expect(status == 0 || (!cleanExit && status == 1), "a node exited \(status) on SIGTERM: \(process.stderr)")
        }
    }

    /// Every item of a batch, page by page.
    func allItems(_ store: PostgresBatchStore, _ id: BatchID) async throws -> [ItemRecord] {
        var all: [ItemRecord] = []
        var after: Int64?
        while true {
            let page = try await store.items(of: id, status: nil, afterSeq: after, limit: 10_000)
            all += page
            guard let last = page.last, page.count == 10_000 else { return all }
            after = last.seq
        }
    }

    func payloads(_ count: Int) -> [NewItem] {
        (0..<count).map { NewItem(payload: JSONText(unchecked: #"{"n":\#($0)}"#)) }
    }

    @Test("three workers share 100,000 items; one is killed with kill -9; every item runs, duplicates counted")
    func killOneOfThree() async throws {
        // Every execution is a request to this server: duplicates are counted where they happen.
        let server = LoopbackHTTPServer { _, _ in .init(status: 200, body: "{}") }
        let url = try await TestPostgres.freshDatabaseURL()
        try await server.withRunning { port in
            try await TestPostgres.withStore(url: url) { store in
                try await withTemporaryDirectory("tranche-cli") { directory in
                    let workers = try (1...3).map { try worker(url, id: "w\($0)", in: directory) }
                    var options = BatchOptions()
                    options.chunkSize = 250
                    options.concurrency = 3_000
                    // This test is about kill -9 and rescue, not pace: 3,000 calls at once to one
                    // loopback thread raise its latency, which an adaptive pace answers by slowing
                    // down (the run took 307 s instead of 169 s on a busy machine).
                    options.pace = .fixed
                    let count = 100_000
                    let batch = try await store.createBatch(
                        NewBatch(
                            type: "http",
                            context: JSONText(unchecked: #"{"url":"http://127.0.0.1:\#(port)/items/{{n}}"}"#),
                            options: options),
                        items: payloads(count))
                    // Kill w2 once the batch is well under way, while it holds chunks.
                    try await waitUntil("the batch to get under way (20,000 items) with w2 holding chunks") {
                        let record = try await store.batch(batch.id)
                        let nodes = try await store.nodes(since: Date().addingTimeInterval(-60), now: Date())
                        let held = nodes.first { $0.id == "w2" }?.chunks ?? 0
                        return (record?.counts.processed ?? 0) >= 20_000 && held > 0
                    }
                    let held = try await store.nodes(since: Date().addingTimeInterval(-60), now: Date()).first {
                        $0.id == "w2"
                    }
                    workers[1].kill9()
                    let notDone = try #require(try await store.batch(batch.id))
                    #expect(notDone.status == .processing, "the kill must land mid-run")
                    try await waitUntil("the batch to end after w2's chunks were rescued", seconds: 300) {
                        try await store.batch(batch.id)?.status.isEnded ?? false
                    }
                    let record = try #require(try await store.batch(batch.id))
                    #expect(record.status == .completed)
                    #expect(record.counts.succeeded == Int64(count))
                    #expect(record.counts.running == 0)
                    let items = try await allItems(store, batch.id)
                    #expect(items.count == count && items.allSatisfy { $0.status == .succeeded })
                    // Every item reached the server; those that ran twice were in the dead node's chunks.
                    let seen = server.requests.compactMap { Int($0.uri.split(separator: "/").last ?? "") }
                    #expect(Set(seen) == Set(0..<count), "every item ran")
                    let duplicates = seen.count - count
                    print(
                        "kill -9 of w2 holding \(held?.chunks ?? 0) chunks: \(seen.count) requests for \(count) items, "
                            + "\(duplicates) ran twice, rescued \(record.counts.rescued)")
                    #expect(
                        Int64(duplicates) <= record.counts.rescued, "items run twice are bounded by what was in flight")
                    // A node holds at most one chunk per worker: 32 chunks of 250.
                    #expect(record.counts.rescued <= Int64(32 * 250))
                    try await stop([workers[0], workers[2]])
                }
            }
        }
    }

    @Test("PostgreSQL restarted mid-run: the nodes reconnect and the batch completes, nothing lost")
    func databaseRestart() async throws {
        let url = try await TestPostgres.freshDatabaseURL()
        try await TestPostgres.withStore(url: url) { store in
            try await withTemporaryDirectory("tranche-cli") { directory in
                let workers = try (1...2).map { try worker(url, id: "r\($0)", in: directory) }
                var options = BatchOptions()
                options.chunkSize = 100
                options.concurrency = 64
                let batch = try await store.createBatch(
                    NewBatch(type: "sleep", context: JSONText(unchecked: #"{"ms":4}"#), options: options),
                    items: payloads(30_000))
                try await waitUntil("3,000 items to be processed before the restart") {
                    (try await store.batch(batch.id)?.counts.processed ?? 0) >= 3_000
                }
                #expect(try await TestPostgres.restart() == 0, "pg_ctl restart failed")
                // Reads right after the restart may fail while the pool reconnects.
                try await waitUntil("the batch to end after the restart", seconds: 300) {
                    (try? await store.batch(batch.id))?.status.isEnded ?? false
                }
                let record = try #require(try await store.batch(batch.id))
                #expect(record.status == .completed)
                #expect(record.counts.succeeded == 30_000)
                #expect(record.counts.running == 0)
                let items = try await allItems(store, batch.id)
                #expect(items.count == 30_000 && items.allSatisfy { $0.status == .succeeded })
                #expect(Int64(items.filter { $0.attempts > 1 }.count) <= record.counts.rescued)
                for worker in workers {
                    #expect(worker.process.isRunning, "a node died with the database: \(worker.stderr)")
                }
                try await stop(workers, cleanExit: false)
            }
        }
    }

    @Test("the maintenance leader killed: another node takes over and enforces a batch timeout")
    func leaderKilled() async throws {
        let url = try await TestPostgres.freshDatabaseURL()
        try await TestPostgres.withStore(url: url) { store in
            try await withTemporaryDirectory("tranche-cli") { directory in
                let workers = try ["a", "b"].map { try worker(url, id: $0, in: directory) }
                @Sendable func leader() async throws -> NodeRecord? {
                    let nodes = try await store.nodes(since: Date().addingTimeInterval(-60), now: Date())
                    return nodes.count == 2 ? nodes.first { $0.isLeader } : nil
                }
                try await waitUntil("both nodes to report and one to lead") { try await leader() != nil }
                let leaderID = try #require(try await leader()?.id)
                let survivorID = leaderID == "a" ? "b" : "a"
                workers[leaderID == "a" ? 0 : 1].kill9()
                let killedAt = Date()
                // Only a leader fails batches that run too long.
                var options = BatchOptions()
                options.batchTimeout = 2
                options.itemTimeout = 120
                let batch = try await store.createBatch(
                    NewBatch(type: "sleep", context: JSONText(unchecked: #"{"ms":60000}"#), options: options),
                    items: payloads(2))
                try await waitUntil("the surviving node to fail the batch at its timeout") {
                    try await store.batch(batch.id)?.status == .failed
                }
                let record = try #require(try await store.batch(batch.id))
                #expect(record.failureReason?.hasPrefix("batch_timeout") == true)
                // The killed node was not heard from again; the survivor leads.
                let nodes = try await store.nodes(since: Date().addingTimeInterval(-3_600), now: Date())
                let killed = nodes.first { $0.id == leaderID }
                #expect(killed.map { $0.heartbeatAt <= killedAt && !$0.isLeader } ?? true)
                #expect(nodes.first { $0.id == survivorID }?.isLeader == true)
                try await stop([workers[leaderID == "a" ? 1 : 0]])
            }
        }
    }
}
