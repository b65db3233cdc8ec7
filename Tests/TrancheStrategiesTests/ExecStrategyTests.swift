import Foundation
import Testing
import TrancheEngine
import TrancheSQLite
import TrancheStrategies
import TrancheTestSupport

@Suite("exec strategy")
struct ExecStrategyTests {
    func run(_ command: String, payload: String = #"{"a":1}"#, context extra: [String: JSONValue] = [:]) async throws
        -> ItemResult
    {
        let strategy = AnyBatchStrategy(ExecStrategy())
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

    @Test("an item timeout kills the command")
    func timeoutKills() async throws {
        try await withTemporaryDirectory("tranche-exec") { directory in
            let pidFile = directory.appendingPathComponent("pid").path
            let store = try SQLiteBatchStore(path: directory.appendingPathComponent("e.db").path)
            let engine = TrancheEngine(store: store, strategies: BuiltinStrategies.all())
            var options = BatchOptions()
            options.itemTimeout = 0.5
            options.maxAttempts = 1
            let report = try await withRunning(engine) { [options] engine in
                try await engine.execute(
                    Submission(
                        type: "exec",
                        context: try JSONText(encoding: [
                            "command": JSONValue.string("echo $$ > \(pidFile); exec sleep 60")
                        ]
                        ),
                        options: options),
                    items: [.null])
            }
            #expect(report.items.first?.status == .dead)
            #expect(report.items.first?.error?.code == "timeout")
            let pid = try #require(
                Int32(
                    try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                ))
            // The process goes (or is a zombie about to be reaped): it no longer runs `sleep`.
            try await withDeadline("the timed-out command to be killed") {
                while let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                    !status.contains("State:\tZ")
                {
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
        }
    }
}
