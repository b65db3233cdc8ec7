import Foundation
import TranchePostgres
import TrancheSQLite
import TrancheStore
import TrancheTestSupport

/// The stores the conformance suite runs against. Each case makes a fresh,
/// empty store backed by a real database.
struct StoreFactory: CustomStringConvertible, Sendable {
    var description: String
    var make: @Sendable () async throws -> any BatchStore

    /// A file in a temporary directory removed when the test ends.
    static let sqlite = StoreFactory(description: "sqlite") {
        // The trait first: without it, nothing would remove the directory.
        let resources = try TestResources.required()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tranche-store-\(UUID())")
        resources.removeAfterwards(directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return try SQLiteBatchStore(path: directory.appendingPathComponent("test.db").path)
    }

    /// A fresh database on the test cluster, running until the test ends;
    /// fails when PostgreSQL is missing.
    static let postgres = StoreFactory(description: "postgres") {
        try await TestPostgres.runningStore()
    }

    static let all: [StoreFactory] = [.sqlite, .postgres]
}

func payloads(_ count: Int, from start: Int = 0) -> [NewItem] {
    (start..<(start + count)).map { NewItem(payload: JSONText(unchecked: "{\"n\":\($0)}")) }
}

func options(chunkSize: Int = 10, concurrency: Int = 10, maxAttempts: Int = 3) -> BatchOptions {
    var options = BatchOptions()
    options.chunkSize = chunkSize
    options.concurrency = concurrency
    options.maxAttempts = maxAttempts
    return options
}

/// Outcomes that mark every leased item succeeded.
func succeeded(_ lease: ChunkLease) -> [ItemOutcome] {
    lease.items.map {
        ItemOutcome(seq: $0.seq, previousStatus: $0.status, attempt: $0.attempts + 1, status: .succeeded)
    }
}

extension BatchStore {
    /// Claims and completes chunks until none is left; returns how many.
    func drainAll(owner: String = "w", now: Date = Date()) async throws -> Int {
        var chunks = 0
        while let lease = try await claimChunk(owner: owner, leaseDuration: 30, now: now) {
            _ = try await checkpoint(
                lease, outcomes: succeeded(lease), finish: true, failBatch: nil, leaseDuration: 30, now: now)
            chunks += 1
        }
        return chunks
    }
}
