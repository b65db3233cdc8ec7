import Foundation
import Testing
import TrancheSQLite
import TrancheStore
import TrancheTestSupport

@Suite("tranche run")
struct RunCommandTests {
    @Test("a clean run exits 0 with a JSON summary, and running it again reports without running")
    func cleanRun() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            try writeItems(500, to: directory.appendingPathComponent("items.ndjson"))
            let log = directory.appendingPathComponent("log").path
            let arguments = [
                "run", "--input", "items.ndjson", "--exec", "echo $TRANCHE_SEQ >> \(log)", "--concurrency", "4",
                "--json",
            ]
            let first = try await tranche(arguments, in: directory)
            #expect(first.status == 0, "\(first.stderr)")
            let report = try summary(first.stdout)
            #expect(report["status"] as? String == "completed")
            #expect(report["total"] as? Int == 500)
            #expect(report["succeeded"] as? Int == 500)
            #expect(report["resumed"] as? Bool == false)
            let state = try #require(report["state"] as? String)
            #expect(state.hasPrefix("items.ndjson.") && state.hasSuffix(".tranche.db"))
            #expect(FileManager.default.fileExists(atPath: directory.appendingPathComponent(state).path))
            let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
            #expect(lines.count == 500)
            #expect(Set(lines.compactMap { Int($0) }) == Set(0..<500))
            // The same command again finds the finished state file and runs nothing.
            let second = try await tranche(arguments, in: directory)
            #expect(second.status == 0)
            let again = try summary(second.stdout)
            #expect(again["resumed"] as? Bool == true)
            #expect(again["processed_this_run"] as? Int == 0)
            #expect(try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").count == 500)
        }
    }

    @Test("failures exit 2; --failed-out lists them; a malformed line is skipped with its line number")
    func failures() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            var text = ""
            for index in 0..<20 { text += #"{"id":\#(index)}"# + "\n" }
            text += "{not json\n\n"
            text += #"{"id":20}"#
            try text.write(to: directory.appendingPathComponent("in.ndjson"), atomically: true, encoding: .utf8)
            let result = try await tranche(
                [
                    "run", "--input", "in.ndjson", "--exec",
                    #"if [ "$TRANCHE_SEQ" = 3 ]; then echo "refused: no email" >&2; exit 65; fi; cat"#,
                    "--failed-out", "failed.ndjson", "--json", "--quiet",
                ], in: directory)
            #expect(result.status == 2, "\(result.stderr)")
            let report = try summary(result.stdout)
            #expect(report["total"] as? Int == 22)
            #expect(report["succeeded"] as? Int == 20)
            #expect(report["skipped"] as? Int == 2)
            let failed = try String(contentsOf: directory.appendingPathComponent("failed.ndjson"), encoding: .utf8)
                .split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
            #expect(failed.count == 2)
            let bySeq = Dictionary(uniqueKeysWithValues: failed.map { ($0["seq"] as! Int, $0) })
            let refused = try #require(bySeq[3]?["error"] as? [String: Any])
            #expect(refused["message"] as? String == "refused: no email")
            #expect(refused["code"] as? String == "exit_65")
            #expect((bySeq[3]?["item"] as? [String: Any])?["id"] as? Int == 3)
            let malformed = try #require(bySeq[20]?["error"] as? [String: Any])
            #expect(malformed["code"] as? String == "invalid_json")
            #expect((malformed["message"] as? String)?.hasPrefix("line 21:") == true)
            #expect(bySeq[20]?["item"] as? String == "{not json")
        }
    }

    @Test("usage errors exit 1 with a one-line reason")
    func usageErrors() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            try writeItems(3, to: directory.appendingPathComponent("in.ndjson"))
            let cases: [([String], String)] = [
                (["run", "--input", "in.ndjson", "--type", "nope"], "unknown strategy 'nope'"),
                (
                    ["run", "--input", "in.ndjson", "--type", "noop", "--chunk-size", "0"],
                    "chunk_size must be between 1"
                ),
                (
                    ["run", "--input", "in.ndjson", "--type", "noop", "--concurrency=-2"],
                    "concurrency must be between 1"
                ),
                (["run", "--input", "missing.ndjson", "--type", "noop"], "does not exist"),
                (["run", "--input", "in.ndjson", "--exec", "true", "--type", "noop"], "exactly one of"),
                (["run", "--input", "in.ndjson", "--type", "noop", "--rate", "lots"], "rate must look like"),
                (
                    ["run", "--input", "in.ndjson", "--type", "noop", "--batch-timeout", "0"],
                    "batch_timeout must be more than 0"
                ),
                (
                    ["run", "--input", "in.ndjson", "--type", "sleep", "--context", "[1]"],
                    "--context must be a JSON object"
                ),
            ]
            let parse = try await tranche(
                ["run", "--input", "in.ndjson", "--type", "noop", "--chunk-size", "many"], in: directory)
            #expect(parse.status == 1)
            #expect(parse.stderr.contains("--chunk-size"))
            for (arguments, message) in cases {
                let result = try await tranche(arguments, in: directory)
                #expect(result.status == 1, "\(arguments)")
                #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
                #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
            }
        }
    }

    @Test("a changed input is refused instead of mixed in")
    func changedInput() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let input = directory.appendingPathComponent("in.ndjson")
            try writeItems(100, to: input)
            let arguments = ["run", "--input", "in.ndjson", "--type", "noop", "--json"]
            #expect(try await tranche(arguments, in: directory).status == 0)
            try writeItems(101, to: input)
            let grown = try await tranche(arguments, in: directory)
            #expect(grown.status == 1)
            #expect(grown.stderr.contains("changed since"))
            try writeItems(100, to: input) { #"{"id":\#($0 + 1)}"# }
            #expect(try await tranche(arguments, in: directory).stderr.contains("changed since"))
        }
    }

    @Test("a run's batch has no timeout unless --batch-timeout gives one")
    func batchTimeout() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            try writeItems(3, to: directory.appendingPathComponent("in.ndjson"))
            /// The options stored with the run's batch in its state file.
            func storedOptions(_ state: String) async throws -> BatchOptions? {
                let store = try SQLiteBatchStore(path: directory.appendingPathComponent(state).path)
                return try await store.batches(BatchQuery(limit: 1)).first?.options
            }
            let plain = try await tranche(
                ["run", "--input", "in.ndjson", "--type", "noop", "--state", "plain.db"], in: directory)
            #expect(plain.status == 0, "\(plain.stderr)")
            // Not the server's 4 h: a run resumed days later must not fail for its age.
            let year = 365 * 24 * 3600.0
            #expect(try await storedOptions("plain.db")?.batchTimeout ?? 0 >= year)
            let given = try await tranche(
                ["run", "--input", "in.ndjson", "--type", "noop", "--state", "given.db", "--batch-timeout", "7200"],
                in: directory)
            #expect(given.status == 0, "\(given.stderr)")
            #expect(try await storedOptions("given.db")?.batchTimeout == 7200)
        }
    }

    @Test("a state file made for another command is refused")
    func otherCommand() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            try writeItems(10, to: directory.appendingPathComponent("in.ndjson"))
            #expect(
                try await tranche(["run", "--input", "in.ndjson", "--type", "noop", "--state", "s.db"], in: directory)
                    .status == 0)
            let other = try await tranche(
                ["run", "--input", "in.ndjson", "--exec", "true", "--state", "s.db"], in: directory)
            #expect(other.status == 1)
            #expect(other.stderr.contains("different command"))
        }
    }

    @Test("--lines takes each line as a string item; stdin works")
    func lines() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let process = try TrancheProcess(
                [
                    "run", "--input", "-", "--lines", "--exec", "cat", "--state", "l.db", "--failed-out", "f.ndjson",
                    "--json",
                ],
                in: directory, stdinFromPipe: true)
            process.feed(Data("alpha\n\"quoted\" \\ back\nomega".utf8), close: true)
            #expect(try await process.wait() == 0, "\(process.stderr)")
            let report = try summary(process.stdout)
            #expect(report["succeeded"] as? Int == 3)
        }
    }
}
