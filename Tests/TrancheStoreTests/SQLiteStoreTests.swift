import Foundation
import Testing
import TrancheSQLite
import TrancheStore
import TrancheTestSupport

/// What only the SQLite store does.
@Suite("SQLite store")
struct SQLiteStoreTests {
    @Test("maintenance keeps the WAL bounded under a steady load")
    func walStaysBounded() async throws {
        try await withTemporaryDirectory("tranche-wal") { directory in
            try await walStaysBounded(path: directory.appendingPathComponent("wal.db").path)
        }
    }

    func walStaysBounded(path: String) async throws {
        let limit = 1 << 20
        let store = try SQLiteBatchStore(path: path, configuration: .init(durability: .normal, walLimit: limit))
        let padding = String(repeating: "x", count: 2_000)
        let items = (0..<2_000).map { NewItem(payload: JSONText(unchecked: "{\"n\":\($0),\"p\":\"\(padding)\"}")) }
        // Each round writes about 4 MB (four times the limit) through the WAL;
        // without a size limit and checkpoints the file keeps its largest size.
        for round in 0..<4 {
            _ = try await store.createBatch(NewBatch(type: "t", options: options(chunkSize: 500)), items: items)
            _ = try await store.drainAll()
            _ = try await store.prune(now: Date(), retention: 86_400, limit: 100)
            #expect(try walSize(path) <= limit, "round \(round): the WAL is back under its limit after maintenance")
        }
    }

    @Test("reopening a file runs no migration twice and keeps every batch")
    func reopen() async throws {
        try await withTemporaryDirectory("tranche-reopen") { directory in
            try await reopen(path: directory.appendingPathComponent("reopen.db").path)
        }
    }

    func reopen(path: String) async throws {
        let first = try SQLiteBatchStore(path: path)
        let batch = try await first.createBatch(NewBatch(type: "t", options: options(chunkSize: 2)), items: payloads(5))
        _ = try #require(try await first.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        // A second store on the same file at the same time, then a third after.
        let second = try SQLiteBatchStore(path: path)
        #expect(try await second.batch(batch.id)?.status == .processing)
        let third = try SQLiteBatchStore(path: path)
        let record = try #require(try await third.batch(batch.id))
        #expect(record.counts.total == 5)
        #expect(record.runningSince != nil)
    }

    func walSize(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int) ?? 0
    }
}
