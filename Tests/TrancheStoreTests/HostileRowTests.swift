import Foundation
import GRDB
import Logging
import PostgresNIO
import Testing
import TranchePostgres
import TrancheSQLite
import TrancheStore
import TrancheTestSupport

/// Rows no store would write (counters at Int64's ends, negative counts,
/// times at the ends of the range, text where a number belongs), written
/// straight into a real database behind the store's back: every read and
/// sweep must go on without trapping and report something sane.
@Suite("Hostile stored rows")
struct HostileRowTests {
    @Test(
        "a batch row with impossible counters and times is read, listed and failed by the deadline sweep",
        arguments: HostileSite.Kind.allCases)
    func hostileBatchRow(_ kind: HostileSite.Kind) async throws {
        try await HostileSite.with(kind) { site in
            let (store, now) = (site.store, Date())
            let batch = try await site.claimedBatch(chunkSize: 2, now: now)
            try await site.execute(
                """
                UPDATE batches SET total = -5, succeeded = \(Int64.max), dead = \(Int64.max),
                    skipped = \(Int64.max), running = \(Int64.min), failed = \(Int64.min),
                    processing_ms = \(Int64.max), running_since = \(Int64.min), created_at = \(Int64.max)
                """)
            let read = try #require(try await store.batch(batch.id))
            #expect(read.counts.processed == .max)
            #expect(read.counts.terminal == .max)
            #expect(read.counts.pending == 0)
            #expect(read.counts.progress == 0)
            #expect(try await store.batches(BatchQuery()).map(\.id) == [batch.id])
            // Processing since the dawn of time: far past any batch timeout.
            let events = try await store.enforceDeadlines(now: now)
            #expect(events.map(\.type).contains(.failed))
            let failed = try #require(try await store.batch(batch.id))
            #expect(failed.status == .failed)
            #expect(failed.failureReason?.hasPrefix("batch_timeout") == true, "\(failed.failureReason ?? "nil")")
        }
    }

    @Test(
        "a chunk with impossible rescue and claim counts, and items with impossible attempts, are rescued and run",
        arguments: HostileSite.Kind.allCases)
    func hostileChunkRow(_ kind: HostileSite.Kind) async throws {
        try await HostileSite.with(kind) { site in
            let (store, now) = (site.store, Date())
            let batch = try await site.claimedBatch(chunkSize: 4, now: now)
            try await site.execute(
                """
                UPDATE chunks SET rescues = \(site.largestInteger), claimed_items = \(Int64.min),
                    lease_expires_at = \(Int64.min)
                """)
            try await site.execute("UPDATE items SET attempts = \(site.largestInteger)")
            let rescued = try await store.rescueExpiredLeases(now: now, splitAfter: 2)
            #expect(rescued.count == 1)
            #expect(rescued.first?.unfinished == 0, "a negative claim counts as none")
            #expect(rescued.first?.split == true, "rescued too often: split in halves")
            let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: now))
            // Held within the 32 bits both stores keep, so the outcome can be written.
            #expect(lease.items.map(\.nextAttempt) == [Int(Int32.max), Int(Int32.max)])
            let outcomes = lease.items.map {
                ItemOutcome(seq: $0.seq, previousStatus: $0.status, attempt: $0.nextAttempt, status: .dead)
            }
            _ = try await store.checkpoint(
                lease, outcomes: outcomes, finish: true, failBatch: nil, leaseDuration: 30, now: now)
            let items = try await store.items(of: batch.id, status: nil, afterSeq: nil, limit: 10)
            #expect(items.count == 4)
            #expect(items.allSatisfy { $0.attempts >= Int32.max }, "\(items.map(\.attempts))")
            // The lost lease's claim was unknown (below zero): the items it ran stay counted as running.
            #expect(try await store.batch(batch.id)?.counts.running == 4)
        }
    }

    @Test(
        "node and leader rows with impossible numbers and times are listed, and any term length is taken",
        arguments: HostileSite.Kind.allCases)
    func hostileNodeRows(_ kind: HostileSite.Kind) async throws {
        try await HostileSite.with(kind) { site in
            let store = site.store
            let now = Date()
            try await store.recordHeartbeat(
                NodeRecord(id: "n1", role: "serve", host: "h", pid: 1, workers: 4, startedAt: now, heartbeatAt: now))
            try await site.execute(
                """
                UPDATE nodes SET workers = \(site.largestInteger), pid = \(site.smallestInteger),
                    started_at = \(Int64.min), heartbeat_at = \(Int64.max)
                """)
            let nodes = try await store.nodes(since: now.addingTimeInterval(-15), now: now)
            #expect(nodes.map(\.id) == ["n1"])
            #expect(nodes.first?.workers == Int(site.largestInteger))
            #expect(nodes.first?.pid == Int(site.smallestInteger))
            for seconds in [1e300, -1e300, .infinity, -.infinity, .nan] {
                #expect(try await store.acquireLeadership(node: "n1", for: seconds, now: now), "\(seconds)")
            }
            try await site.execute("UPDATE leader SET expires_at = \(Int64.min)")
            #expect(try await store.acquireLeadership(node: "n2", for: 5, now: now), "an expired term is taken over")
        }
    }

    @Test(
        "a batch whose stored row cannot be read does not hold up the deadline sweep of the others",
        arguments: HostileSite.Kind.allCases)
    func damagedBatchDoesNotHoldUpSweep(_ kind: HostileSite.Kind) async throws {
        try await HostileSite.with(kind) { site in
            let store = site.store
            let now = Date()
            let damaged = try await store.createBatch(NewBatch(type: "t", options: options()), items: payloads(2))
            var timed = options()
            timed.batchTimeout = 1
            let healthy = try await store.createBatch(NewBatch(type: "t", options: timed), items: payloads(2))
            while try await store.claimChunk(owner: "w", leaseDuration: 30, now: now) != nil {}
            try await site.execute("UPDATE batches SET id = 'garbage' WHERE id = '\(damaged.id)'")
            await #expect(throws: StoreError.self, "the damaged batch is reported") {
                try await store.enforceDeadlines(now: now.addingTimeInterval(10))
            }
            let failed = try #require(try await store.batch(healthy.id))
            #expect(failed.status == .failed, "the healthy batch's timeout was enforced all the same")
            #expect(failed.failureReason?.hasPrefix("batch_timeout") == true)
        }
    }

    @Test(
        "a chunk whose batch cannot be read does not hold up the rescue of the others",
        arguments: HostileSite.Kind.allCases)
    func damagedChunkDoesNotHoldUpRescue(_ kind: HostileSite.Kind) async throws {
        try await HostileSite.with(kind) { site in
            let (store, now) = (site.store, Date())
            let damaged = try await store.createBatch(NewBatch(type: "t", options: options()), items: payloads(2))
            let healthy = try await store.createBatch(NewBatch(type: "t", options: options()), items: payloads(2))
            while try await store.claimChunk(owner: "w", leaseDuration: 1, now: now) != nil {}
            try await site.execute("UPDATE batches SET id = 'garbage' WHERE id = '\(damaged.id)'")
            await #expect(throws: StoreError.self, "the damaged chunk is reported") {
                try await store.rescueExpiredLeases(now: now.addingTimeInterval(10), splitAfter: 2)
            }
            let lease = try #require(
                try await store.claimChunk(owner: "w", leaseDuration: 30, now: now.addingTimeInterval(10)),
                "the healthy batch's chunk was rescued all the same")
            #expect(lease.batchID == healthy.id)
        }
    }

    @Test(
        "a batch whose stored options cannot be read fails with that reason at its first claim, and the others run",
        arguments: HostileSite.Kind.allCases)
    func damagedOptionsFailTheBatch(_ kind: HostileSite.Kind) async throws {
        try await HostileSite.with(kind) { site in
            let (store, now) = (site.store, Date())
            let damaged = try await store.createBatch(
                NewBatch(type: "t", options: options(), priority: 5), items: payloads(4))
            let healthy = try await store.createBatch(NewBatch(type: "t", options: options()), items: payloads(2))
            try await site.execute(
                "UPDATE batches SET options = '{\"chunk_size\": \"many\"}' WHERE id = '\(damaged.id)'")
            let listed = try #require(try await store.batch(damaged.id), "a damaged batch can still be read")
            #expect(listed.status == .confirmed)
            let lease = try #require(
                try await store.claimChunk(owner: "w", leaseDuration: 30, now: now), "the healthy batch still runs")
            #expect(lease.batchID == healthy.id)
            let failed = try #require(try await store.batch(damaged.id))
            #expect(failed.status == .failed)
            #expect(failed.failureReason?.contains("options") == true, "\(failed.failureReason ?? "nil")")
            #expect(failed.counts.canceled == 4, "its items will not run")
            #expect(try await store.claimChunk(owner: "w", leaseDuration: 30, now: now) == nil)
        }
    }

    @Test(
        "an append to a batch whose stored total is at Int64's end is refused, not an overflow",
        arguments: HostileSite.Kind.allCases)
    func appendAtTheEnd(_ kind: HostileSite.Kind) async throws {
        try await HostileSite.with(kind) { site in
            let open = try await site.store.createBatch(
                NewBatch(type: "t", options: options(), sealed: false), items: [])
            try await site.execute("UPDATE batches SET total = \(Int64.max)")
            await #expect(throws: StoreError.self) {
                try await site.store.appendItems(
                    to: open.id, startSeq: .max, items: payloads(2), cursor: nil, at: Date())
            }
            #expect(try await site.store.batch(open.id)?.counts.total == .max)
        }
    }

    @Test("SQLite: text where a number belongs is a storage error, never a trap")
    func textInNumberColumns() async throws {
        try await HostileSite.with(.sqlite) { site in
            let store = site.store
            let now = Date()
            let batch = try await store.createBatch(NewBatch(type: "t", options: options()), items: payloads(2))
            try await store.recordHeartbeat(
                NodeRecord(id: "n1", role: "serve", host: "h", pid: 1, workers: 4, startedAt: now, heartbeatAt: now))
            try await site.execute("UPDATE nodes SET workers = 'many'")
            try await site.execute("UPDATE items SET attempts = 'many', next_attempt_at = 'soon'")
            await #expect(throws: StoreError.self) {
                try await store.nodes(since: now.addingTimeInterval(-15), now: now)
            }
            await #expect(throws: StoreError.self) {
                try await store.items(of: batch.id, status: nil, afterSeq: nil, limit: 10)
            }
            #expect(try await store.batch(batch.id)?.counts.total == 2, "the batch row itself is intact")
            // Server rows, and a sum that overflows into a REAL.
            let server = try #require(store as? SQLiteBatchStore)
            try await server.createAPIKey(
                APIKeyRecord(id: "k1", tenant: "t", hash: "h", createdAt: now, revokedAt: nil))
            try await site.execute("UPDATE api_keys SET created_at = 'yesterday'")
            await #expect(throws: StoreError.self) { try await server.apiKeys() }
            await #expect(throws: StoreError.self) { try await server.apiKey(id: "k1") }
            try await site.execute("UPDATE batches SET succeeded = \(Int64.min)")
            await #expect(throws: StoreError.self) { try await store.statusSummary() }
        }
    }
}

/// A fresh store and a connection of its own to the same database, for
/// writing what the store never would.
struct HostileSite {
    enum Kind: String, CaseIterable, CustomStringConvertible, Sendable {
        case sqlite, postgres
        var description: String { rawValue }
    }

    var store: any BatchStore
    var execute: (String) async throws -> Void
    /// The ends of an `INTEGER` column (`attempts`, `rescues`, `workers`):
    /// 64 bits in SQLite, 32 in PostgreSQL. Counters and times are 64 bits in both.
    var largestInteger: Int64
    var smallestInteger: Int64

    /// Runs `body` with a fresh store of `kind`; closes everything after.
    static func with(
        _ kind: Kind, isolation: isolated (any Actor)? = #isolation, _ body: (HostileSite) async throws -> Void
    ) async throws {
        switch kind {
        case .sqlite:
            try await withTemporaryDirectory("tranche-hostile") { directory in
                let path = directory.appendingPathComponent("hostile.db").path
                let store = try SQLiteBatchStore(path: path)
                let raw = try DatabaseQueue(path: path)
                try await body(
                    HostileSite(
                        store: store, execute: { sql in try await raw.write { try $0.execute(sql: sql) } },
                        largestInteger: .max, smallestInteger: .min))
            }
        case .postgres:
            let url = try await TestPostgres.freshDatabaseURL()
            let connection = try await connect(url)
            do {
                try await TestPostgres.withStore(url: url) { store in
                    try await body(
                        HostileSite(
                            store: store,
                            execute: { sql in
                                try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger)
                            }, largestInteger: Int64(Int32.max), smallestInteger: Int64(Int32.min)))
                }
            } catch {
                try? await connection.close()
                throw error
            }
            try await connection.close()
        }
    }

    /// A batch of four items whose first chunk (of `chunkSize` items) is leased.
    func claimedBatch(chunkSize: Int, now: Date) async throws -> BatchRecord {
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: chunkSize)), items: payloads(4))
        _ = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: now))
        return batch
    }

    static let logger = Logger(label: "tranche.test.hostile")

    /// A plain connection to the database at `url` (`postgres://user:password@host:port/database`).
    static func connect(_ url: String) async throws -> PostgresConnection {
        guard let components = URLComponents(string: url), let host = components.host else { throw URLError(.badURL) }
        let configuration = PostgresConnection.Configuration(
            host: host, port: components.port ?? 5432, username: components.user ?? "postgres",
            password: components.password, database: String(components.path.dropFirst()), tls: .disable)
        return try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
    }
}
