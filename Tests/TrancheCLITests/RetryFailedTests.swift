import Foundation
import Testing
import TrancheSQLite
import TrancheStore
import TrancheTestSupport

@Suite("tranche run --retry-failed and tranche resubmit")
struct RetryFailedTests {
    @Test("--retry-failed runs the last run's failures again as a linked batch in the same state file")
    func retryFailed() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            try writeItems(10, to: directory.appendingPathComponent("in.ndjson"))
            let marker = directory.appendingPathComponent("fixed").path
            // Item 3 fails until the marker exists (in the retry it is item 0: items are renumbered).
            let command = #"if grep -q '"id":3' && [ ! -f \#(marker) ]; then echo refused >&2; exit 65; fi"#
            let first = try await tranche(
                ["run", "--input", "in.ndjson", "--exec", command, "--state", "run.db", "--json", "--quiet"],
                in: directory)
            #expect(first.status == 2, "\(first.stderr)")
            #expect(try summary(first.stdout)["succeeded"] as? Int == 9)

            #expect(FileManager.default.createFile(atPath: marker, contents: nil))
            let retry = try await tranche(["run", "--retry-failed", "run.db", "--json", "--quiet"], in: directory)
            #expect(retry.status == 0, "\(retry.stderr)")
            let report = try summary(retry.stdout)
            #expect(report["total"] as? Int == 1)
            #expect(report["succeeded"] as? Int == 1)
            let store = try SQLiteBatchStore(path: directory.appendingPathComponent("run.db").path)
            let batches = try await store.batches(BatchQuery(limit: 10))
            #expect(batches.count == 2)
            let child = try #require(batches.first { $0.id.rawValue == report["batch_id"] as? String })
            let parent = try #require(batches.first { $0.id != child.id })
            #expect(try await store.links(of: child.id).parentID == parent.id)
            let items = try await store.items(of: child.id, status: nil, afterSeq: nil, limit: 10)
            #expect(items.map { $0.payload?.text } == [#"{"id":3}"#])

            let nothing = try await tranche(["run", "--retry-failed", "run.db", "--quiet"], in: directory)
            #expect(nothing.status == 0, "\(nothing.stderr)")
            #expect(nothing.stderr.contains("nothing to retry"), "\(nothing.stderr)")
        }
    }

    @Test("--retry-failed takes no --input, and a state file that does not exist is an error")
    func retryFailedRefused() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let both = try await tranche(["run", "--retry-failed", "x.db", "--input", "in.ndjson"], in: directory)
            #expect(both.status == 1)
            #expect(both.stderr.contains("exactly one of --input or --retry-failed"), "\(both.stderr)")
            let command = try await tranche(["run", "--retry-failed", "x.db", "--exec", "cat"], in: directory)
            #expect(command.status == 1)
            #expect(command.stderr.contains("drop --exec"), "\(command.stderr)")
            let missing = try await tranche(["run", "--retry-failed", "missing.db"], in: directory)
            #expect(missing.status == 1)
            #expect(missing.stderr.contains("does not exist"), "\(missing.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("missing.db").path))
        }
    }

    @Test("tranche resubmit checks --status before any request")
    func resubmitStatus() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let bad = try await tranche(["resubmit", "01ABC", "--status", "dead,succeeded"], in: directory)
            #expect(bad.status == 1)
            #expect(bad.stderr.contains("--status takes some of failed, skipped, dead, canceled"), "\(bad.stderr)")
        }
    }
}
