import Foundation
import TrancheCore
public import TrancheEngine

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

        public init(
            command: String? = nil, argv: [String]? = nil, env: [String: String]? = nil, maxOutputBytes: Int? = nil
        ) {
            self.command = command
            self.argv = argv
            self.env = env
            self.maxOutputBytes = maxOutputBytes
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case command, argv, env
            case maxOutputBytes = "max_output_bytes"
        }

        /// Decodes the context; an unknown field is refused by name.
        public init(from decoder: any Decoder) throws {
            let container = try decoder.contextContainer(keyedBy: CodingKeys.self)
            command = try container.decodeIfPresent(String.self, forKey: .command)
            argv = try container.decodeIfPresent([String].self, forKey: .argv)
            env = try container.decodeIfPresent([String: String].self, forKey: .env)
            maxOutputBytes = try container.decodeIfPresent(Int.self, forKey: .maxOutputBytes)
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
            throw ItemError.retryable(
                "signal_\(signal)", message.isEmpty ? "the command was killed by signal \(signal)" : message)
        case .launchFailed(let reason):
            throw ItemError.fatal("exec_failed", "the command could not start: \(reason)")
        }
    }
}

/// A child process whose stdin, stdout and stderr are unlinked temporary
/// files: no pipe can fill up and block the child, no reader thread is
/// needed, and a grandchild that keeps a descriptor open cannot stall us.
/// Canceling the task kills the child.
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

    static func run(
        executable: String, arguments: [String], environment: [String: String], stdin: Data, maxStdout: Int,
        maxStderr: Int
    ) async throws -> Result {
        let input = try ScratchFile()
        let output = try ScratchFile()
        let errors = try ScratchFile()
        defer {
            input.close()
            output.close()
            errors.close()
        }
        try input.write(stdin)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        process.standardInput = input.handle
        process.standardOutput = output.handle
        process.standardError = errors.handle
        let exited = OneShotEvent()
        process.terminationHandler = { _ in exited.fire() }
        do {
            try process.run()
        } catch {
            return Result(
                termination: .launchFailed("\(executable) was not found or is not executable"), stdout: Data(),
                stderrTail: Data())
        }
        let pid = process.processIdentifier
        await withTaskCancellationHandler {
            await exited.wait()
        } onCancel: {
            kill(pid, SIGKILL)
        }
        try Task.checkCancellation()
        let termination: Termination =
            process.terminationReason == .uncaughtSignal
            ? .signal(process.terminationStatus) : .exit(process.terminationStatus)
        return Result(
            termination: termination, stdout: output.read(head: maxStdout), stderrTail: errors.read(tail: maxStderr))
    }
}

/// A temporary file with no name: unlinked as soon as it is created, gone
/// when its descriptor closes.
final class ScratchFile {
    let handle: FileHandle

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/tranche-exec-XXXXXX").utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { throw ItemError.retryable("exec_failed", "cannot create a temporary file") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
    }

    func close() {
        try? handle.close()
    }

    func write(_ data: Data) throws {
        try handle.write(contentsOf: data)
        try handle.seek(toOffset: 0)
    }

    /// The first `limit` bytes.
    func read(head limit: Int) -> Data {
        var data = Data(count: limit)
        let count = data.withUnsafeMutableBytes { pread(handle.fileDescriptor, $0.baseAddress, limit, 0) }
        return data.prefix(max(0, count))
    }

    /// The last `limit` bytes.
    func read(tail limit: Int) -> Data {
        let size = lseek(handle.fileDescriptor, 0, SEEK_END)
        let start = max(0, Int(size) - limit)
        var data = Data(count: limit)
        let count = data.withUnsafeMutableBytes { pread(handle.fileDescriptor, $0.baseAddress, limit, off_t(start)) }
        return data.prefix(max(0, count))
    }
}
