import Foundation
import Synchronization
public import TrancheEngine
import TrancheCore

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a command per item: the item's JSON on stdin, `TRANCHE_SEQ`,
/// `TRANCHE_ATTEMPT`, `TRANCHE_BATCH_ID` and `TRANCHE_IDEMPOTENCY_KEY` in
/// its environment.
///
/// Exit 0 succeeds (stdout is the output: JSON when it parses, a string
/// otherwise); 65 (`EX_DATAERR`) is permanent and skips the item; 77
/// (`EX_NOPERM`) is fatal and fails the batch; any other exit, a signal or a
/// timeout is retryable. The tail of stderr is the error message.
public struct ExecStrategy: BatchStrategy {
    public struct Context: Codable, Sendable {
        /// A shell command line, run with `/bin/sh -c`.
        public var command: String?
        /// Or a program and its arguments, run without a shell.
        public var argv: [String]?
        /// Extra environment variables.
        public var env: [String: String]?
        /// Bytes of stdout kept as output. Default 1 MiB.
        public var maxOutputBytes: Int?

        public init(command: String? = nil, argv: [String]? = nil, env: [String: String]? = nil, maxOutputBytes: Int? = nil) {
            self.command = command
            self.argv = argv
            self.env = env
            self.maxOutputBytes = maxOutputBytes
        }

        enum CodingKeys: String, CodingKey {
            case command, argv, env
            case maxOutputBytes = "max_output_bytes"
        }
    }

    public typealias Item = JSONValue
    public typealias Output = JSONValue

    /// Exit code for a permanent failure (`EX_DATAERR`).
    public static let permanentExitCode: Int32 = 65
    /// Exit code for a fatal failure (`EX_NOPERM`).
    public static let fatalExitCode: Int32 = 77
    /// Bytes of stderr kept for the error message.
    public static let stderrTailBytes = 2_000

    public var type: String { "exec" }

    public init() {
        // A child that exits before reading its stdin must not kill us with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
    }

    public func prepare(_ context: Context) throws -> Context {
        switch (context.command, context.argv) {
        case (let command?, nil) where !command.trimmingCharacters(in: .whitespaces).isEmpty: break
        case (nil, let argv?) where !argv.isEmpty && !argv[0].isEmpty: break
        default: throw OptionsError("exec needs exactly one of context.command (a shell line) or context.argv")
        }
        if let max = context.maxOutputBytes, max < 0 || max > 64 << 20 {
            throw OptionsError("context.max_output_bytes must be between 0 and 67108864")
        }
        return context
    }

    public func process(_ item: JSONValue, context: Context, input: ItemInput) async throws -> JSONValue {
        let executable = context.argv?.first ?? "/bin/sh"
        let arguments = context.argv.map { Array($0.dropFirst()) } ?? ["-c", context.command ?? ""]
        var environment = ProcessInfo.processInfo.environment
        for (key, value) in context.env ?? [:] { environment[key] = value }
        environment["TRANCHE_SEQ"] = String(input.seq)
        environment["TRANCHE_ATTEMPT"] = String(input.attempt)
        environment["TRANCHE_BATCH_ID"] = input.batchID.rawValue
        environment["TRANCHE_IDEMPOTENCY_KEY"] = input.idempotencyKey
        let run = try await ChildProcess.run(
            executable: executable, arguments: arguments, environment: environment,
            stdin: Data(input.payload.text.utf8), maxStdout: context.maxOutputBytes ?? 1 << 20,
            maxStderr: Self.stderrTailBytes)
        let message = String(decoding: run.stderrTail, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        switch run.termination {
        case .exit(0):
            let text = String(decoding: run.stdout, as: UTF8.self)
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { return .null }
            if let json = try? JSONText(validating: trimmed) { return try json.value() }
            return .string(text)
        case .exit(Self.permanentExitCode):
            throw ItemError.permanent("exit_65", message.isEmpty ? "the command exited with 65" : message)
        case .exit(Self.fatalExitCode):
            throw ItemError.fatal("exit_77", message.isEmpty ? "the command exited with 77" : message)
        case .exit(let code):
            throw ItemError.retryable("exit_\(code)", message.isEmpty ? "the command exited with \(code)" : message)
        case .signal(let signal):
            throw ItemError.retryable("signal_\(signal)", message.isEmpty ? "the command was killed by signal \(signal)" : message)
        case .launchFailed(let reason):
            throw ItemError.fatal("exec_failed", "the command could not start: \(reason)")
        }
    }
}

/// A child process whose output is read without blocking Swift's
/// cooperative threads; canceling the task kills the child.
enum ChildProcess {
    enum Termination: Sendable, Equatable {
        case exit(Int32)
        case signal(Int32)
        case launchFailed(String)
    }

    struct Result: Sendable {
        var termination: Termination
        var stdout: Data
        var stderrTail: Data
    }

    /// Output collected from a pipe: the head (stdout) or the tail (stderr), bounded.
    final class Collector: Sendable {
        private struct State {
            var data = Data()
            var closed = false
            var waiter: CheckedContinuation<Void, Never>?
        }

        private let state = Mutex(State())
        let limit: Int
        let keepTail: Bool

        init(limit: Int, keepTail: Bool) {
            self.limit = limit
            self.keepTail = keepTail
        }

        func append(_ chunk: Data) {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                if chunk.isEmpty {
                    state.closed = true
                    defer { state.waiter = nil }
                    return state.waiter
                }
                if keepTail {
                    state.data.append(chunk)
                    if state.data.count > limit { state.data = Data(state.data.suffix(limit)) }
                } else if state.data.count < limit {
                    state.data.append(chunk.prefix(limit - state.data.count))
                }
                return nil
            }
            waiter?.resume()
        }

        var data: Data { state.withLock { $0.data } }

        /// Waits for end of file, at most `seconds`.
        func waitClosed(seconds: Double) async {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await withCheckedContinuation { continuation in
                        let now = self.state.withLock { state -> Bool in
                            if state.closed { return true }
                            state.waiter = continuation
                            return false
                        }
                        if now { continuation.resume() }
                    }
                }
                group.addTask { try? await Task.sleep(for: .milliseconds(Int(seconds * 1000))) }
                await group.next()
                group.cancelAll()
                let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                    defer { state.waiter = nil }
                    return state.waiter
                }
                waiter?.resume()
            }
        }
    }

    static func run(
        executable: String, arguments: [String], environment: [String: String], stdin: Data, maxStdout: Int,
        maxStderr: Int
    ) async throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        let input = Pipe()
        let output = Pipe()
        let errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        let stdout = Collector(limit: maxStdout, keepTail: false)
        let stderr = Collector(limit: maxStderr, keepTail: true)
        output.fileHandleForReading.readabilityHandler = { handle in stdout.append(handle.availableData) }
        errors.fileHandleForReading.readabilityHandler = { handle in stderr.append(handle.availableData) }
        let exited = OneShotEvent()
        process.terminationHandler = { _ in exited.fire() }
        defer {
            output.fileHandleForReading.readabilityHandler = nil
            errors.fileHandleForReading.readabilityHandler = nil
            try? output.fileHandleForReading.close()
            try? errors.fileHandleForReading.close()
        }
        do {
            try process.run()
        } catch {
            try? input.fileHandleForWriting.close()
            return Result(termination: .launchFailed("\(executable) was not found or is not executable"), stdout: Data(), stderrTail: Data())
        }
        let writer = input.fileHandleForWriting
        DispatchQueue.global().async {
            try? writer.write(contentsOf: stdin)
            try? writer.close()
        }
        let pid = process.processIdentifier
        await withTaskCancellationHandler {
            await exited.wait()
        } onCancel: {
            kill(pid, SIGKILL)
        }
        try Task.checkCancellation()
        // The pipes may still hold output written just before the exit.
        await stdout.waitClosed(seconds: 1)
        await stderr.waitClosed(seconds: 1)
        let termination: Termination =
            process.terminationReason == .uncaughtSignal
            ? .signal(process.terminationStatus) : .exit(process.terminationStatus)
        return Result(termination: termination, stdout: stdout.data, stderrTail: stderr.data)
    }
}
