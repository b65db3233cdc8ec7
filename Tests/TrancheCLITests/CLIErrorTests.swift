import Foundation
import Testing
import TrancheTestSupport

/// What a person sees when a command cannot do what it was asked: one
/// message on stderr that names the thing at fault, exit status 1, and no
/// crash report, errno number or Foundation error domain.
@Suite("tranche: error messages")
struct CLIErrorTests {
    /// Checks a failed command's outputs: exit 1, each of `parts` on stderr,
    /// nothing of a crash or of a raw system error.
    func expectRefused(
        _ result: (status: Int32, stdout: String, stderr: String), _ parts: [String], _ what: [String],
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(result.status == 1, "\(what): \(result.stderr)", sourceLocation: sourceLocation)
        for part in parts {
            #expect(result.stderr.contains(part), "\(what): \(result.stderr)", sourceLocation: sourceLocation)
        }
        for noise in ["errno", "Error Domain=", "Fatal error", "Backtrac", "Program crashed", "SQLite error"] {
            #expect(!result.stderr.contains(noise), "\(what): \(result.stderr)", sourceLocation: sourceLocation)
        }
    }

    @Test("--version prints the version, and a server logs the same one when it starts")
    func version() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let result = try await tranche(["--version"], in: directory)
            #expect(result.status == 0, "\(result.stderr)")
            let version = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let parts = version.split(separator: ".")
            #expect(parts.count == 3 && parts.allSatisfy { Int($0) != nil }, "\(version)")
            let (server, _) = try await startServer(["--database", "v.db"], in: directory)
            defer { server.kill9() }
            #expect(server.stdout.hasPrefix("tranche \(version): listening on http://"), "\(server.stdout)")
        }
    }

    @Test("--help works for every command; every argument has a help text that does not repeat its default")
    func help() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let run = try await tranche(["run", "--help"], in: directory)
            #expect(run.status == 0, "\(run.stderr)")
            #expect(run.stdout.contains("USAGE: tranche run [<options>] --input <input>"), "\(run.stdout)")
            let words = run.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            #expect(words.contains("(values: continue, stop_on_first_error, stop_above_ratio)"), "\(run.stdout)")
            // ArgumentParser's description of every command: each argument's
            // help text (`abstract`) and the default it prints itself.
            let dump = try await tranche(["--experimental-dump-help"], in: directory)
            let root = try #require(try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])
            var checked = 0
            func walk(_ command: [String: Any], _ path: String) {
                let name = command["commandName"] as? String ?? ""
                guard name != "help" else { return }
                for argument in command["arguments"] as? [[String: Any]] ?? [] {
                    let flag = (argument["preferredName"] as? [String: Any])?["name"] ?? argument["valueName"] ?? "?"
                    let abstract = argument["abstract"] as? String ?? ""
                    #expect(!abstract.isEmpty, "\(path) \(name) --\(flag) has no help text")
                    if argument["defaultValue"] != nil {
                        #expect(
                            !abstract.contains("default"), "\(path) \(name) --\(flag) repeats its default: \(abstract)")
                    }
                    checked += 1
                }
                for sub in command["subcommands"] as? [[String: Any]] ?? [] { walk(sub, path + " " + name) }
            }
            walk(try #require(root["command"] as? [String: Any]), "")
            #expect(checked > 100)
        }
    }

    @Test("an unknown option is reported as unknown, before a missing required one")
    func unknownOption() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let misspelt = try await tranche(["run", "--inpt", "x"], in: directory)
            expectRefused(misspelt, ["Unknown option '--inpt'", "Did you mean '--input'?", "tranche run"], ["run"])
            #expect(!misspelt.stderr.contains("Missing expected argument"), "\(misspelt.stderr)")
            let short = try await tranche(["run", "-z", "--type", "noop"], in: directory)
            expectRefused(short, ["Unknown option '-z'"], ["run -z"])
            let nested = try await tranche(["keys", "create", "--tenant", "acme", "--bogus=3"], in: directory)
            expectRefused(nested, ["Unknown option '--bogus'", "tranche keys create"], ["keys create"])
            let positional = try await tranche(["status", "--bogus"], in: directory)
            expectRefused(positional, ["Unknown option '--bogus'"], ["status"])
            #expect(!positional.stderr.contains("Missing expected argument"), "\(positional.stderr)")
        }
    }

    @Test("a value outside a flag's choices is refused by the parser, with the choices")
    func badChoice() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let cases: [([String], String)] = [
                (
                    ["export", "some-id", "--format", "xml"],
                    "The value 'xml' is invalid for '--format <format>'. Please provide one of 'ndjson', 'csv' or 'json'."
                ),
                (
                    ["run", "--input", "in.ndjson", "--type", "noop", "--durability", "fast"],
                    "Please provide one of 'full' and 'normal'."
                ),
                (["serve", "--durability", "fast"], "Please provide one of 'full' and 'normal'."),
                (
                    ["run", "--input", "in.ndjson", "--type", "noop", "--failure-policy", "never"],
                    "Please provide one of 'continue', 'stop_on_first_error' or 'stop_above_ratio'."
                ),
                (["ls", "--status", "done"], "  - pre_processed\n"),
                (["results", "some-id", "--status", "done"], "  - succeeded\n"),
                (["bench", "--modes", "full,fast"], "The value 'full,fast' is invalid for '--modes <modes>'"),
            ]
            for (arguments, message) in cases {
                expectRefused(try await tranche(arguments, in: directory), [message], arguments)
            }
        }
    }

    @Test("absurd numbers in flags are refused with the flag's range, never a crash")
    func absurdFlags() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let cases: [([String], String)] = [
                (["serve", "--drain-grace", "1e300"], "--drain-grace must be between 0 and 86400 seconds, got 1e+300"),
                (
                    ["serve", "--lease-duration", "1e300"],
                    "--lease-duration must be between 2 and 31536000 seconds, got 1e+300"
                ),
                (["worker", "--drain-grace", "nan"], "--drain-grace must be between 0 and 86400 seconds, got nan"),
                (["worker", "--lease-duration", "inf"], "--lease-duration must be between 2 and 31536000 seconds"),
                (["serve", "--port", "70000"], "--port must be between 0 and 65535, got 70000"),
                (["serve", "--workers", "0"], "--workers must be between 1 and 100000, got 0"),
                (["serve", "--pool-size", "9999"], "--pool-size must be between 2 and 500, got 9999"),
                (
                    ["run", "--input", "in.ndjson", "--type", "noop", "--progress-interval", "1e300"],
                    "--progress-interval must be between 0.5 and 86400 seconds"
                ),
                (["run", "--input", "in.ndjson", "--type", "noop", "--item-timeout", "1e300"], "item_timeout"),
                (["bench", "--items", "0"], "--items must be between 1 and 100000000, got 0"),
                (["bench", "--chunk-size", "0"], "--chunk-size must be between 1 and 100000, got 0"),
                (["bench", "--nodes", "1,x"], "--nodes must be worker-node counts from 1 to 64"),
            ]
            try writeItems(1, to: directory.appendingPathComponent("in.ndjson"))
            for (arguments, message) in cases {
                expectRefused(try await tranche(arguments, in: directory), [message], arguments)
            }
        }
    }

    @Test("--context that is not a JSON object says where it broke or what it is")
    func badContext() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            try writeItems(1, to: directory.appendingPathComponent("in.ndjson"))
            let run = try await tranche(
                ["run", "--input", "in.ndjson", "--type", "sleep", "--context", #"{"ms": 1,"#], in: directory)
            expectRefused(run, ["tranche: --context is not valid JSON at byte 9: "], ["run"])
            #expect(run.stderr.split(separator: "\n").count == 1, "\(run.stderr)")
            // Checked before any request: an unreachable server is not what is reported.
            let submit = try await tranche(
                ["submit", "--server", "http://127.0.0.1:1", "--type", "noop", "--context", "[1,}"], in: directory)
            expectRefused(submit, ["tranche: --context is not valid JSON at byte 3: "], ["submit"])
            let array = try await tranche(
                ["run", "--input", "in.ndjson", "--type", "sleep", "--context", "[1]"], in: directory)
            expectRefused(array, ["tranche: --context must be a JSON object, got an array"], ["array"])
        }
    }

    @Test("an unreachable server is named with the reason, in a few words")
    func unreachableServer() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let refused = try await tranche(["ls", "--server", "http://127.0.0.1:1"], in: directory)
            expectRefused(refused, [], ["ls"])
            #expect(refused.stderr == "tranche: cannot reach the server at http://127.0.0.1:1: connection refused\n")
            let status = try await tranche(["status", "some-id", "--server", "http://127.0.0.1:1/"], in: directory)
            #expect(status.stderr == "tranche: cannot reach the server at http://127.0.0.1:1: connection refused\n")
            let notURL = try await tranche(["ls", "--server", "localhost"], in: directory)
            expectRefused(notURL, ["cannot reach the server at localhost: not an http:// or https:// URL"], ["url"])
        }
    }

    @Test("a database that cannot be opened is named, with why")
    func unopenableDatabase() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let missing = directory.appendingPathComponent("missing/x.db").path
            let serve = try await tranche(["serve", "--port", "0", "--database", missing], in: directory)
            expectRefused(
                serve,
                [
                    "tranche: cannot open the database \(missing): the directory \(directory.path)/missing does not exist"
                ],
                ["serve"])
            let keys = try await tranche(["keys", "list", "--database", directory.path], in: directory)
            expectRefused(keys, ["tranche: cannot open the database \(directory.path): it is a directory"], ["keys"])
            try writeItems(1, to: directory.appendingPathComponent("in.ndjson"))
            let run = try await tranche(
                ["run", "--input", "in.ndjson", "--type", "noop", "--state", "in.ndjson"], in: directory)
            expectRefused(run, ["tranche: cannot open the database in.ndjson: "], ["run"])
        }
    }

    @Test("a port in use is named")
    func portInUse() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let holder = LoopbackHTTPServer { _, _ in .init(status: 200) }
            try await holder.withRunning { port in
                let result = try await tranche(
                    ["serve", "--port", String(port), "--database", "p.db"], in: directory)
                expectRefused(
                    result, ["tranche: cannot listen on 127.0.0.1 port \(port): the port is already in use"], ["serve"])
            }
        }
    }

    @Test("submit opens its items before it creates a batch; a refused upload cancels the batch it opened")
    func submitMissingItems() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let (server, url) = try await startServer(["--database", "s.db"], in: directory)
            defer { server.kill9() }
            for items in ["missing.ndjson", "."] {
                let result = try await tranche(
                    ["submit", "--server", url, "--type", "noop", "--items", items], in: directory)
                expectRefused(result, ["tranche: cannot ", "input \(items): "], [items])
            }
            let listed = try await tranche(["ls", "--server", url, "--json"], in: directory)
            #expect(listed.status == 0, "\(listed.stderr)")
            let page = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [String: Any])
            #expect((page["batches"] as? [Any])?.isEmpty == true, "no batch was created: \(listed.stdout)")
            // An upload the server refuses (a line over its 1 MiB item limit) cancels the batch it opened.
            let big = #"{"a":""# + String(repeating: "x", count: 1_100_000) + #""}"#
            try (big + "\n").write(
                to: directory.appendingPathComponent("big.ndjson"), atomically: true, encoding: .utf8)
            let refused = try await tranche(
                ["submit", "--server", url, "--type", "noop", "--items", "big.ndjson"], in: directory)
            expectRefused(refused, ["tranche: line 1 is longer than", "was canceled)"], ["big"])
            let after = try await tranche(["ls", "--server", url, "--json"], in: directory)
            let batches = try #require(
                (try JSONSerialization.jsonObject(with: Data(after.stdout.utf8)) as? [String: Any])?["batches"]
                    as? [[String: Any]])
            #expect(batches.map { $0["status"] as? String } == ["canceled"], "\(after.stdout)")
        }
    }

    @Test("absurd numbers in a server's answer are printed, never a crash")
    func absurdAnswer() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            // A real batch's JSON from a real server, with its numbers made absurd.
            let (server, url) = try await startServer(["--database", "a.db"], in: directory)
            defer { server.kill9() }
            try writeItems(3, to: directory.appendingPathComponent("in.ndjson"))
            let done = try await tranche(
                ["submit", "--server", url, "--type", "noop", "--items", "in.ndjson", "--wait", "--json"],
                in: directory)
            #expect(done.status == 0, "\(done.stderr)")
            var batch = try summary(done.stdout)
            let id = try #require(batch["id"] as? String)
            batch["rate"] = 1e300
            batch["eta_seconds"] = 1e300
            batch["eta_low_seconds"] = 1e300
            batch["eta_high_seconds"] = 1e300
            batch["progress"] = 1e300
            let ended = String(decoding: try JSONSerialization.data(withJSONObject: batch), as: UTF8.self)
            // Shown as still processing too: an ended batch's line has no rate or ETA.
            batch["status"] = "processing"
            let processing = String(decoding: try JSONSerialization.data(withJSONObject: batch), as: UTF8.self)
            for (command, body) in [("status", processing), ("watch", ended)] {
                let fake = LoopbackHTTPServer { _, _ in .init(status: 200, body: body) }
                try await fake.withRunning { port in
                    let result = try await tranche(
                        [command, id, "--server", "http://127.0.0.1:\(port)"], in: directory)
                    #expect(result.status == 0, "\(command): \(result.stderr)")
                    #expect(result.stdout.contains("100.0%"), "\(command): \(result.stdout)")
                    if command == "status" {
                        #expect(result.stdout.contains("9,223,372,036,854,775,807/s"), "\(result.stdout)")
                        #expect(result.stdout.contains("ETA –"), "\(result.stdout)")
                    }
                }
            }
        }
    }
}
