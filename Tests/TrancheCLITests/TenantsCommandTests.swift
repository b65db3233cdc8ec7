import Foundation
import Testing
import TrancheTestSupport

/// `tranche tenants set|list` on a store: settings kept between calls,
/// options left out unchanged, every number checked before anything is stored.
@Suite("tranche tenants")
struct TenantsCommandTests {
    static let header = "TENANT\tWEIGHT\tMAX_RUNNING\tMAX_QUEUED\tMAX_OPEN_BATCHES\tRUNNING\tQUEUED\tOPEN_BATCHES"

    @Test("set changes only the options given; list shows every tenant; bad numbers exit 1 naming the option")
    func setAndList() async throws {
        try await withTemporaryDirectory("tranche-tenants") { directory in
            let database = ["--database", directory.appendingPathComponent("t.db").path]
            func run(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
                try await tranche(["tenants"] + arguments + database, in: directory)
            }
            let set = try await run(["set", "acme", "--weight", "2", "--max-running", "50"])
            #expect(set.status == 0, "\(set.stderr)")
            #expect(set.stdout == "\(Self.header)\nacme\t2\t50\t-\t-\t0\t0\t0\n")
            let more = try await run(["set", "acme", "--max-queued", "7", "--max-running", "none"])
            #expect(more.stdout.hasSuffix("acme\t2\t-\t7\t-\t0\t0\t0\n"), "\(more.stdout)")
            #expect(try await run(["set", "beta", "--max-open-batches", "0"]).status == 0)

            for (arguments, message) in [
                (["--weight", "1e300"], "weight must be between 0.001 and 1000000"),
                (["--weight", "nan"], "weight must be between 0.001 and 1000000"),
                (["--weight", "0"], "weight must be between 0.001 and 1000000"),
                (["--max-running", "1e300"], "--max-running"),
                (["--max-queued=-1"], "--max-queued"),
                (["--max-open-batches", "1000000000001"], "--max-open-batches"),
            ] {
                let refused = try await run(["set", "acme"] + arguments)
                #expect(refused.status == 1, "\(arguments): \(refused.stderr)")
                #expect(refused.stderr.contains(message), "\(arguments): \(refused.stderr)")
                #expect(!refused.stderr.contains("Fatal error"), "\(arguments): \(refused.stderr)")
            }
            let long = try await run(["set", String(repeating: "n", count: 101)])
            #expect(long.status == 1)
            #expect(long.stderr.contains("a tenant's name must be 1 to 100 characters"), "\(long.stderr)")

            let list = try await run(["list"])
            #expect(list.status == 0, "\(list.stderr)")
            #expect(list.stdout == "\(Self.header)\nacme\t2\t-\t7\t-\t0\t0\t0\nbeta\t1\t-\t-\t0\t0\t0\t0\n")
        }
    }
}
