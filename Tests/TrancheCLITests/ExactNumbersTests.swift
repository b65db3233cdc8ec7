import Foundation
import Testing
import TrancheTestSupport

/// Numbers a `Double` cannot hold go through the client commands as written.
@Suite("Exact numbers through the CLI")
struct ExactNumbersTests {
    static let numbers = #"{"above":9007199254740993,"below":-9223372036854775809,"huge":1e400}"#

    @Test("an item and a context with 9007199254740993, -9223372036854775809 and 1e400 come back unchanged")
    func exactNumbers() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let (server, url) = try await startServer(["--database", "n.db"], in: directory)
            defer { server.kill9() }
            try (Self.numbers + "\n").write(
                to: directory.appendingPathComponent("items.ndjson"), atomically: true, encoding: .utf8)
            let client = ["--server", url]

            // A context is sent, and the batch read back, with its numbers as written.
            let submitted = try await tranche(
                ["submit", "--type", "noop", "--context", Self.numbers, "--items", "items.ndjson", "--wait", "--json"]
                    + client, in: directory)
            #expect(submitted.status == 0, "\(submitted.stderr)")
            #expect(submitted.stdout.contains(#""context":\#(Self.numbers)"#), "\(submitted.stdout)")
            // (JSONSerialization refuses 1e400: the id is read from the text.)
            let id = try #require(
                submitted.stdout.firstMatch(of: /"id":"([0-9a-f-]+)"/).map { String($0.output.1) },
                "\(submitted.stdout)")
            let status = try await tranche(["status", id, "--json"] + client, in: directory)
            #expect(status.status == 0, "\(status.stderr)")
            #expect(status.stdout.contains(#""context":\#(Self.numbers)"#), "\(status.stdout)")
            let results = try await tranche(["results", id] + client, in: directory)
            #expect(results.stdout.contains(#""item":\#(Self.numbers)"#), "\(results.stdout)")

            // A schedule's items are sent in its body: its run's items are exact.
            let created = try await tranche(
                ["schedules", "create", "--type", "noop", "--items", "items.ndjson", "--every", "1s", "--json"]
                    + client, in: directory)
            #expect(created.status == 0, "\(created.stderr)")
            let schedule = try #require(try summary(created.stdout)["id"] as? String)
            @Sendable func run() async throws -> String? {
                let list = try await tranche(["schedules", "list", "--json"] + client, in: directory)
                let schedules = try summary(list.stdout)["schedules"] as? [[String: Any]] ?? []
                return schedules.first { $0["id"] as? String == schedule }?["last_batch_id"] as? String
            }
            try await waitUntil("the schedule's first run") { try await run() != nil }
            let batch = try #require(try await run())
            try await waitUntil("the schedule's run to end") {
                try await tranche(["status", batch] + client, in: directory).stdout.contains("completed")
            }
            let exported = try await tranche(["export", batch, "--format", "json"] + client, in: directory)
            #expect(exported.status == 0, "\(exported.stderr)")
            #expect(exported.stdout.contains(#""item":\#(Self.numbers)"#), "\(exported.stdout)")
        }
    }
}
