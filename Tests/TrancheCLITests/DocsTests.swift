import Foundation
import Testing
import TrancheTestSupport

@Suite("docs")
struct DocsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// README.md and every `docs/*.md`, as paths from the repository's root.
    static let documents: [String] = {
        let docs =
            (try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("docs").path)) ?? []
        return ["README.md"] + docs.filter { $0.hasSuffix(".md") }.sorted().map { "docs/" + $0 }
    }()

    @Test("the library guide shows the example that the build compiles")
    func libraryExample() throws {
        let guide = try String(contentsOf: Self.root.appendingPathComponent("docs/library.md"), encoding: .utf8)
        let source = try String(
            contentsOf: Self.root.appendingPathComponent("Examples/LibraryExample/LibraryExample.swift"),
            encoding: .utf8)
        let begin = try #require(guide.range(of: "<!-- example:begin -->\n```swift\n"))
        let end = try #require(guide.range(of: "```\n<!-- example:end -->"))
        #expect(String(guide[begin.upperBound..<end.lowerBound]) == source)
    }

    @Test("the checker reads transcripts, scripts, continuations, not-run marks and shown exit statuses")
    func extraction() throws {
        let markdown = """
            ```console
            $ curl -fsS localhost:8080/v1/batches \\
                -d '{}'
            {"id":"x"}
            $ tranche run --input in.ndjson
            completed
            $ echo $?
            2
            ```

            <!-- not-run -->
            ```sh
            swift run tranche serve
            ```

            ```sh
            while false; do
              sleep 1
            done
            ```

            ```text
            $ shown only
            ```

            """
        let commands = try DocsCheck.commands(in: markdown)
        #expect(
            commands == [
                .init(line: 2, text: "curl -fsS localhost:8080/v1/batches \\\n    -d '{}'", expectedStatus: 0),
                .init(line: 5, text: "tranche run --input in.ndjson", expectedStatus: 2),
                .init(line: 7, text: "echo $?", expectedStatus: 0),
                .init(line: 17, text: "while false; do\n  sleep 1\ndone", expectedStatus: 0),
            ])
        #expect(
            DocsCheck.rewrite("swift run tranche-library-example", port: 4321) == "tranche-library-example")
        #expect(
            DocsCheck.rewrite("curl localhost:8080/v1 http://127.0.0.1:8080/", port: 4321)
                == "curl 127.0.0.1:4321/v1 http://127.0.0.1:4321/")
        #expect(
            DocsCheck.missingFiles(
                "curl -d @Examples/tour/users.ndjson --data-binary '@nope.ndjson' x", root: Self.root)
                == ["nope.ndjson"])
        #expect(throws: DocsCheck.Malformed.self) { try DocsCheck.commands(in: "```\n$ curl x\n```\n") }
        #expect(throws: DocsCheck.Malformed.self) {
            try DocsCheck.commands(in: "```console\n$ false\n$ echo $?\n```\n")
        }
        #expect(throws: DocsCheck.Malformed.self) { try DocsCheck.commands(in: "<!-- not-run -->\ntext\n") }
        #expect(throws: DocsCheck.Malformed.self) { try DocsCheck.commands(in: "```sh\nopen\n") }
    }

    @Test(
        "every shell command in the docs runs as written from the repository's root", .serialized,
        arguments: documents)
    func commandsRun(_ document: String) async throws {
        let markdown = try String(contentsOf: Self.root.appendingPathComponent(document), encoding: .utf8)
        let commands = try DocsCheck.commands(in: markdown)
        guard !commands.isEmpty else { return }
        for command in commands {
            // curl sends an empty body, and succeeds, when its @FILE is missing.
            let missing = DocsCheck.missingFiles(command.text, root: Self.root)
            #expect(missing.isEmpty, "\(document):\(command.line) uploads files the repository lacks: \(missing)")
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let jq = path.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/jq") }
        try #require(jq, "the docs' commands use jq: install it (apt-get install jq)")
        try await withTemporaryDirectory("tranche-docs") { base in
            let (serverDirectory, work, logs) = (
                base.appendingPathComponent("server"), base.appendingPathComponent("root"),
                base.appendingPathComponent("logs")
            )
            for directory in [serverDirectory, work, logs] {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            }
            let links = try DocsCheck.linkRepository(Self.root, into: work)
            defer { for link in links { unlink(link) } }
            let (server, url) = try await ServeTests().start(
                ["--database", "docs.db", "--http-allow", "hooks.example.com"], in: serverDirectory)
            defer { if server.process.isRunning { server.kill9() } }
            guard let port = URLComponents(string: url)?.port else {
                Issue.record("no port in \(url)")
                return
            }
            let script = logs.appendingPathComponent("commands.sh")
            try DocsCheck.script(commands, document: document, port: port).write(
                to: script, atomically: true, encoding: .utf8)
            let (status, output) = try await DocsCheck.runBash(
                script, in: work, logs: logs, binaries: URL(fileURLWithPath: trancheBinary).deletingLastPathComponent(),
                port: port, seconds: 150)
            #expect(status == 0, "\(document): \(status == 124 ? "ran past 150 s" : "failed"); output:\n\(output)")
            let leftovers = try DocsCheck.createdFiles(in: work)
            let unignored = try DocsCheck.notIgnored(leftovers, repository: Self.root)
            #expect(unignored.isEmpty, "\(document) leaves files that .gitignore does not cover: \(unignored)")
            kill(server.process.processIdentifier, SIGTERM)
            #expect(try await server.wait(seconds: 40) == 0, "\(server.stderr)")
        }
    }
}

/// Runs the shell commands of a Markdown document.
///
/// A ` ```console ` block is a transcript: a line that starts with `$ ` (and
/// the lines it continues with a trailing backslash) is a command, the other
/// lines are output. A ` ```sh ` or ` ```bash ` block is one command. A block
/// right after `<!-- not-run -->` is illustrative and skipped. A command
/// followed by `$ echo $?` must exit with the status shown below that;
/// every other command must exit 0.
enum DocsCheck {
    static let notRun = "<!-- not-run -->"

    struct Command: Equatable {
        /// The line of the document the command starts on (1-based).
        var line: Int
        var text: String
        var expectedStatus: Int32
    }

    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }

    /// The commands of `markdown`, in order.
    static func commands(in markdown: String) throws -> [Command] {
        let lines = markdown.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var commands: [Command] = []
        var index = 0
        var skipNext = false
        while index < lines.count {
            let line = lines[index]
            if line.trimmingCharacters(in: .whitespaces) == notRun {
                guard index + 1 < lines.count, lines[index + 1].hasPrefix("```") else {
                    throw Malformed(description: "line \(index + 1): \(notRun) must be right before a fenced block")
                }
                skipNext = true
                index += 1
                continue
            }
            guard line.hasPrefix("```") else {
                index += 1
                continue
            }
            let info = line.dropFirst(3).trimmingCharacters(in: .whitespaces)
            let start = index + 1
            guard let end = lines[start...].firstIndex(where: { $0.hasPrefix("```") }) else {
                throw Malformed(description: "line \(index + 1): the block is not closed")
            }
            let body = Array(lines[start..<end])
            let skip = skipNext
            skipNext = false
            index = end + 1
            switch info {
            case _ where skip:
                break
            case "console":
                commands += try transcript(body, firstLine: start + 1)
            case "sh", "bash":
                commands.append(Command(line: start + 1, text: body.joined(separator: "\n"), expectedStatus: 0))
            case "":
                if let prompt = body.firstIndex(where: { $0.hasPrefix("$ ") }) {
                    throw Malformed(
                        description: "line \(start + prompt + 1): a `$ ` command in a block without a language; "
                            + "mark the block console (run) or \(notRun) console (illustrative)")
                }
            default:
                break
            }
        }
        return commands
    }

    /// The commands of one ` ```console ` block whose first line is `firstLine`.
    static func transcript(_ body: [String], firstLine: Int) throws -> [Command] {
        var commands: [Command] = []
        var index = 0
        while index < body.count {
            guard body[index].hasPrefix("$ ") else {
                index += 1
                continue
            }
            let line = firstLine + index
            var text = String(body[index].dropFirst(2))
            while text.hasSuffix("\\"), index + 1 < body.count {
                index += 1
                text += "\n" + body[index]
            }
            index += 1
            if text == "echo $?" {
                let shown = index < body.count ? body[index].trimmingCharacters(in: .whitespaces) : ""
                guard let status = Int32(shown), let previous = commands.indices.last else {
                    throw Malformed(
                        description:
                            "line \(line): `echo $?` must follow a command and show its status on the next line")
                }
                commands[previous].expectedStatus = status
            }
            commands.append(Command(line: line, text: text, expectedStatus: 0))
        }
        return commands
    }

    /// The files a curl command uploads (`-d @FILE`, `--data-binary @FILE`)
    /// that are not in the repository at `root`.
    static func missingFiles(_ command: String, root: URL) -> [String] {
        command.matches(of: #/(?:--data-binary|--data|-d)\s+'?@([^\s']+)/#).map { String($0.output.1) }
            .filter { !FileManager.default.fileExists(atPath: root.appendingPathComponent($0).path) }
    }

    /// The command as the test runs it: against the test's server, with the built binaries.
    static func rewrite(_ text: String, port: Int) -> String {
        var text = text.replacingOccurrences(of: "localhost:8080", with: "127.0.0.1:\(port)")
            .replacingOccurrences(of: "127.0.0.1:8080", with: "127.0.0.1:\(port)")
        if text.hasPrefix("swift run ") { text.removeFirst("swift run ".count) }
        return text
    }

    /// One bash script for a document: each command, then a check of its exit
    /// status that names the command's line. `$?` is restored before each
    /// command, so that `echo $?` shows the previous command's status.
    static func script(_ commands: [Command], document: String, port: Int) -> String {
        var script = """
            set -o pipefail
            __docs_status=0
            __docs_fail() { printf '\\ndocs check: %s\\n' "$1" >&2; exit 97; }

            """
        for command in commands {
            let place = "\(document):\(command.line)"
            script += """
                printf '\\n== %s\\n' '\(place)'
                ( exit "$__docs_status" )
                \(rewrite(command.text, port: port))
                __docs_status=$?
                [ "$__docs_status" -eq \(command.expectedStatus) ] || __docs_fail "\(place) exited $__docs_status, expected \(command.expectedStatus)"

                """
        }
        return script
    }

    /// Links every visible top-level entry of the repository into `directory`
    /// (not `.build`, `.git` nor stray database files), so commands see the
    /// repository's files and write only into `directory`. Returns the links.
    static func linkRepository(_ root: URL, into directory: URL) throws -> [String] {
        let entries = try FileManager.default.contentsOfDirectory(atPath: root.path)
            .filter { !$0.hasPrefix(".") && !$0.contains(".db") }
        return try entries.map { entry in
            let link = directory.appendingPathComponent(entry).path
            try FileManager.default.createSymbolicLink(
                atPath: link, withDestinationPath: root.appendingPathComponent(entry).path)
            return link
        }
    }

    /// Runs `script` with bash in `directory`, with `binaries` first on PATH
    /// and TRANCHE_URL at the server; at most `seconds` (`timeout` then ends
    /// the whole process group and the status is 124). Returns the status and
    /// the last part of the output.
    static func runBash(
        _ script: URL, in directory: URL, logs: URL, binaries: URL, port: Int, seconds: Int
    ) async throws -> (Int32, String) {
        let output = logs.appendingPathComponent("output")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let handle = try FileHandle(forWritingTo: output)
        defer { try? handle.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["timeout", "--kill-after=5", "\(seconds)", "bash", script.path]
        process.currentDirectoryURL = directory
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = binaries.path + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment["TRANCHE_URL"] = "http://127.0.0.1:\(port)"
        environment["TRANCHE_TOKEN"] = nil
        process.environment = environment
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = ContinuousClock.now + .seconds(seconds + 15)
        while process.isRunning {
            guard ContinuousClock.now < deadline else {
                process.terminate()
                return (-1, "bash did not exit within \(seconds + 15) s")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        return (process.terminationStatus, String(text.suffix(6_000)))
    }

    /// The files under `directory` that are not links into the repository, as relative paths.
    static func createdFiles(in directory: URL, prefix: String = "") throws -> [String] {
        var files: [String] = []
        for entry in try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() {
            let path = directory.appendingPathComponent(entry).path
            let type = try FileManager.default.attributesOfItem(atPath: path)[.type] as? FileAttributeType
            if type == .typeSymbolicLink { continue }
            if type == .typeDirectory {
                files += try createdFiles(in: URL(fileURLWithPath: path), prefix: prefix + entry + "/")
            } else {
                files.append(prefix + entry)
            }
        }
        return files
    }

    /// Those of `paths` (relative to the repository's root) that its `.gitignore` does not cover.
    static func notIgnored(_ paths: [String], repository: URL) throws -> [String] {
        guard !paths.isEmpty else { return [] }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            ["git", "-C", repository.path, "check-ignore", "--no-index", "--verbose", "--non-matching"]
            + ["--"] + paths
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        // 0: some are ignored, 1: none is; anything else: not a git checkout.
        guard [0, 1].contains(process.terminationStatus) else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n")
            .filter { $0.hasPrefix("::\t") }.map { String($0.dropFirst(3)) }
    }
}
