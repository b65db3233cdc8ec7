import Foundation
import Testing
import TrancheEngine
import TrancheSQLite
import TrancheStrategies
import TrancheTestSupport

@Suite("exec strategy")
struct ExecStrategyTests {
    func run(
        _ command: String, payload: String = #"{"a":1}"#, context extra: [String: JSONValue] = [:],
        strategy exec: ExecStrategy = ExecStrategy()
    ) async throws -> ItemResult {
        let strategy = AnyBatchStrategy(exec)
        var context = extra
        context["command"] = .string(command)
        let bound = try strategy.bind(
            context: try strategy.prepare(context: try JSONText(encoding: JSONValue.object(context))))
        return await bound.process(
            ItemInput(batchID: .generate(), seq: 12, payload: JSONText(unchecked: payload), attempt: 3))
    }

    @Test("exit 0: stdout is the output, JSON when it parses, text otherwise")
    func success() async throws {
        #expect(try await run(#"cat"#).get().text == #"{"a":1}"#)
        #expect(try await run("echo hello").get().text == #""hello\n""#)
        #expect(try await run("true").get() == .null)
        #expect(
            try await run(#"echo "{\"seq\": $TRANCHE_SEQ, \"attempt\": $TRANCHE_ATTEMPT}""#).get().text
                == #"{"attempt":3,"seq":12}"#)
    }

    @Test("exit 65 skips, 77 is fatal, others retry; stderr's tail is the message")
    func classification() async throws {
        guard case .failure(let permanent) = try await run("echo 'bad record' >&2; exit 65") else {
            Issue.record("exit 65 succeeded")
            return
        }
        #expect(permanent.category == .permanent)
        #expect(permanent.message == "bad record")
        guard case .failure(let fatal) = try await run("exit 77") else { return }
        #expect(fatal.category == .fatal)
        #expect(fatal.code == "exit_77")
        guard case .failure(let retry) = try await run("head -c 5000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 3")
        else { return }
        #expect(retry.category == .retryable)
        #expect(retry.code == "exit_3")
        #expect(retry.message.hasSuffix("END"))
        #expect(retry.message.count <= ExecStrategy.stderrTailBytes)
        guard case .failure(let signaled) = try await run("kill -9 $$") else { return }
        #expect(signaled.code == "signal_9")
    }

    @Test("output is bounded")
    func bounded() async throws {
        let output = try await run("head -c 10000000 /dev/zero | tr '\\0' y", context: ["max_output_bytes": 100]).get()
        #expect(output.text.count == 102)  // 100 characters and the quotes
    }

    @Test("a command that cannot start is fatal; a bad context is refused")
    func badCommand() async throws {
        let strategy = AnyBatchStrategy(ExecStrategy())
        let bound = try strategy.bind(context: JSONText(unchecked: #"{"argv": ["/nonexistent/program"]}"#))
        guard
            case .failure(let error) = await bound.process(
                ItemInput(batchID: .generate(), seq: 0, payload: .null, attempt: 1))
        else {
            Issue.record("a missing program succeeded")
            return
        }
        #expect(error.category == .fatal)
        #expect(throws: OptionsError.self) { try strategy.prepare(context: JSONText(unchecked: "{}")) }
        #expect(throws: OptionsError.self) { try strategy.prepare(context: JSONText(unchecked: #"{"command": "  "}"#)) }
    }

    /// Runs the registered command `line` as the server would, by name.
    func registered(_ line: String, passing: [String] = []) async throws -> String {
        let strategy = ExecStrategy(commands: ["probe": line], passing: passing)
        guard case .string(let text) = try await run("probe", strategy: strategy).get().value() else {
            Issue.record("\(line) printed JSON or nothing")
            return ""
        }
        return text
    }

    @Test("registered commands: run by name; any other command, argv or env is refused at submission")
    func registeredOnly() async throws {
        let strategy = AnyBatchStrategy(ExecStrategy(commands: ["hello": "echo hello; cat"]))
        #expect(
            try await run("hello", strategy: ExecStrategy(commands: ["hello": "echo hello"])).get().text
                == #""hello\n""#)
        _ = try strategy.prepare(context: JSONText(unchecked: #"{"command": "hello", "max_output_bytes": 10}"#))
        for context in [
            #"{"command": "echo hello"}"#, #"{"command": "HELLO"}"#, "{}", #"{"argv": ["/bin/echo"]}"#,
            #"{"command": "hello", "argv": ["/bin/echo"]}"#, #"{"command": "hello", "env": {"A": "b"}}"#,
        ] {
            #expect(throws: OptionsError.self, "\(context)") {
                try strategy.prepare(context: JSONText(unchecked: context))
            }
        }
        // A stored context naming a command this node lacks fails the batch rather than run anything.
        let bound = try strategy.bind(context: JSONText(unchecked: #"{"command": "rm -rf ."}"#))
        guard
            case .failure(let error) = await bound.process(
                ItemInput(batchID: .generate(), seq: 0, payload: .null, attempt: 1))
        else {
            Issue.record("an unregistered command ran")
            return
        }
        #expect(error.category == .fatal)
        #expect(error.code == "exec_unregistered")
    }

    @Test("the child sees PATH, HOME, LANG, its TRANCHE_* variables and what is passed, nothing else")
    func cleanEnvironment() async throws {
        let ours = ProcessInfo.processInfo.environment
        let base: Set = [
            "PATH", "HOME", "LANG", "TRANCHE_SEQ", "TRANCHE_ATTEMPT", "TRANCHE_BATCH_ID", "TRANCHE_IDEMPOTENCY_KEY",
            "PWD",  // set by the shell
        ]
        let others = ours.keys.filter { !base.contains($0) }.sorted()
        let passed = try #require(others.first, "this process has variables beyond the base set")
        let printed = try await registered("exec env", passing: [passed, "TRANCHE_EXEC_TEST_UNSET"])
        let names = Set(printed.split(separator: "\n").map { String($0.prefix { $0 != "=" }) })
        #expect(names.isSubset(of: base.union([passed])), "\(names.subtracting(base.union([passed])))")
        #expect(names.contains(passed))
        #expect(names.contains("PATH"))
        #expect(printed.contains("TRANCHE_SEQ=12\n"))
    }

    @Test("the child leads its own process group, with no signal blocked or ignored and no descriptor beyond 2")
    func walls() async throws {
        let group = try await registered("cut -d' ' -f5 /proc/$$/stat; echo $$")
        let ids = group.split(separator: "\n").compactMap { Int32($0) }
        #expect(ids.count == 2 && ids[0] == ids[1], "pgid and pid: \(group)")
        #expect(ids.first != getpgrp())

        // This process ignores SIGPIPE (ExecStrategy's init) and may block signals on this thread.
        // (`exec`: the shell itself blocks every signal while it waits for a child.)
        // glibc's posix_spawn hands down its two internal signals (32 and 33) ignored, whatever it is asked.
        let signals = try await registered("exec grep -E '^Sig(Blk|Ign)' /proc/self/status")
        #expect(
            [
                "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
                "SigBlk:\t0000000000000000\nSigIgn:\t0000000180000000\n",
            ]
            .contains(signals), "\(signals)")

        // A descriptor without close-on-exec, which a plain fork and exec would hand down.
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { for end in ends { close(end) } }
        #expect(try await registered("ls /proc/$$/fd") == "0\n1\n2\n")
    }

    @Test("stdout and stderr are cut at their caps as they are read, and a flood does not block the child")
    func caps() async throws {
        let flood = "head -c 50000000 /dev/zero | tr '\\0' y; head -c 50000000 /dev/zero | tr '\\0' z >&2; exit 3"
        guard case .failure(let error) = try await run(flood, context: ["max_output_bytes": 10]) else {
            Issue.record("exit 3 succeeded")
            return
        }
        #expect(error.message.count == ExecStrategy.stderrTailBytes)
        #expect(error.message.allSatisfy { $0 == "z" })
        let output = try await run("head -c 50000000 /dev/zero | tr '\\0' y", context: ["max_output_bytes": 10]).get()
        #expect(output.text == #""yyyyyyyyyy""#)
    }

    @Test("an item timeout kills the command's whole group, a grandchild that ignores SIGTERM included")
    func timeoutKillsGroup() async throws {
        try await withTemporaryDirectory("tranche-exec") { directory in
            let pidFile = directory.appendingPathComponent("pid").path
            let engine = try engine(
                running: "trap '' TERM; sleep 300 & echo $$ $! > '\(pidFile)'; wait", in: directory)
            var options = BatchOptions()
            options.itemTimeout = 0.5
            options.maxAttempts = 1
            let report = try await withRunning(engine) { [options] engine in
                try await engine.execute(
                    Submission(
                        type: "exec", context: try JSONText(encoding: ["command": JSONValue.string("probe")]),
                        options: options),
                    items: [.null])
            }
            #expect(report.items.first?.status == .dead)
            #expect(report.items.first?.error?.code == "timeout")
            try await waitGone(try pids(in: pidFile))
        }
    }

    @Test("draining the engine kills a running command's whole group")
    func drainKillsGroup() async throws {
        try await withTemporaryDirectory("tranche-exec") { directory in
            let pidFile = directory.appendingPathComponent("pid").path
            var configuration = TrancheEngine.Configuration()
            configuration.drainGracePeriod = 0
            let engine = try engine(
                running: "sleep 300 & echo $$ $! > '\(pidFile).new'; mv '\(pidFile).new' '\(pidFile)'; wait",
                in: directory, configuration: configuration)
            try await withRunning(engine) { engine in
                _ = try await engine.submit(
                    Submission(type: "exec", context: try JSONText(encoding: ["command": JSONValue.string("probe")])),
                    items: [.null])
                try await waitUntil("the command to start") { FileManager.default.fileExists(atPath: pidFile) }
            }
            try await waitGone(try pids(in: pidFile))
        }
    }

    /// An engine on a store in `directory` whose exec strategy registers `line` as `probe`.
    func engine(
        running line: String, in directory: URL,
        configuration: TrancheEngine.Configuration = TrancheEngine.Configuration()
    ) throws -> TrancheEngine {
        let store = try SQLiteBatchStore(path: directory.appendingPathComponent("e.db").path)
        let exec = ExecStrategy(commands: ["probe": line], terminationGrace: .milliseconds(200))
        return TrancheEngine(store: store, strategies: [AnyBatchStrategy(exec)], configuration: configuration)
    }

    /// The pids a command wrote to `file`: its shell's and its grandchild's.
    func pids(in file: String) throws -> [Int32] {
        let pids = try String(contentsOfFile: file, encoding: .utf8).split(separator: " ").compactMap {
            Int32($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(pids.count == 2, "the shell's and the grandchild's pids")
        return pids
    }

    /// Waits until each of `pids` is gone, or a zombie about to be reaped: none runs any more.
    func waitGone(_ pids: [Int32]) async throws {
        for pid in pids {
            try await waitUntil("process \(pid) of the command to be killed") {
                guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else {
                    return true
                }
                return status.contains("State:\tZ")
            }
        }
    }
}
