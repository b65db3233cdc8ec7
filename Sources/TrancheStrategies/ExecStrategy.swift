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
/// Built with ``init(commands:passing:terminationGrace:)`` (what `tranche
/// serve --exec-command` does) it runs only commands registered by name: the
/// context is `{"command": NAME}` and anything else is refused at submission.
/// Built with ``init(passing:terminationGrace:)`` it runs any command line or
/// argv the context gives: for a process of your own (`tranche run --exec`),
/// never behind an API others can reach.
///
/// Every child is walled off (see `ChildProcess`): a clean environment
/// (`PATH`, `HOME`, `LANG`, the `TRANCHE_*` variables above and the
/// variables named in `passing`), its own process group, killed as a whole
/// on timeout, cancellation and drain, the default signal mask and
/// dispositions, no descriptor besides 0, 1 and 2, and stdout and stderr
/// capped as they are read.
///
/// Exit 0 succeeds (stdout is the output: JSON when it parses, a string
/// otherwise); 65 (`EX_DATAERR`) is permanent and skips the item; 77
/// (`EX_NOPERM`) is fatal and fails the batch; any other exit, a signal or a
/// timeout is retryable. The tail of stderr is the error message.
public struct ExecStrategy: BatchStrategy {
    public struct Context: Codable, Sendable {
        /// A shell command line, run with `/bin/sh -c`; with registered
        /// commands, the name of one.
        public var command: String?
        /// Or a program and its arguments, run without a shell (not with registered commands).
        public var argv: [String]?
        /// Extra environment variables (not with registered commands).
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

    /// The commands it may run, by name (each a line for `/bin/sh -c`); nil runs any the context gives.
    public let commands: [String: String]?
    /// Variables of this process's environment passed on to every child.
    public let passedEnvironment: [String]
    /// How long a canceled child's group has between SIGTERM and SIGKILL.
    public let terminationGrace: Duration

    public typealias Item = JSONValue
    public typealias Output = JSONValue

    /// Exit code for a permanent failure (`EX_DATAERR`).
    public static let permanentExitCode: Int32 = 65
    /// Exit code for a fatal failure (`EX_NOPERM`).
    public static let fatalExitCode: Int32 = 77
    /// Bytes of stderr kept for the error message.
    public static let stderrTailBytes = 2_000

    public var type: String { "exec" }

    /// Runs any command line or argv a context gives, for a process of your own.
    public init(passing environment: [String] = [], terminationGrace: Duration = .seconds(5)) {
        self.init(commands: nil, passing: environment, terminationGrace: terminationGrace)
    }

    /// Runs only `commands`, named by the context (each a line for `/bin/sh -c`).
    public init(
        commands: [String: String], passing environment: [String] = [], terminationGrace: Duration = .seconds(5)
    ) {
        self.init(commands: Optional(commands), passing: environment, terminationGrace: terminationGrace)
    }

    private init(commands: [String: String]?, passing environment: [String], terminationGrace: Duration) {
        self.commands = commands
        self.passedEnvironment = environment
        self.terminationGrace = terminationGrace
        // A child that exits before reading its stdin must not kill us with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
    }

    public func prepare(_ context: Context) throws -> Context {
        if let max = context.maxOutputBytes, max < 0 || max > 64 << 20 {
            throw OptionsError("context.max_output_bytes must be between 0 and 67108864")
        }
        if let commands {
            let names = commands.keys.sorted().joined(separator: ", ")
            if context.argv != nil {
                throw OptionsError(
                    "context.argv is not accepted: name a registered command in context.command (\(names))")
            }
            if context.env != nil {
                throw OptionsError("context.env is not accepted: the server passes variables with --exec-env")
            }
            guard let name = context.command, commands[name] != nil else {
                throw OptionsError("context.command must name a registered command: \(names)")
            }
            return context
        }
        switch (context.command, context.argv) {
        case (let command?, nil) where !command.trimmingCharacters(in: .whitespaces).isEmpty: break
        case (nil, let argv?) where !argv.isEmpty && !argv[0].isEmpty: break
        default: throw OptionsError("exec needs exactly one of context.command (a shell line) or context.argv")
        }
        return context
    }

    public func process(_ item: JSONValue, context: Context, input: ItemInput) async throws -> JSONValue {
        var line = context.command ?? ""
        if let commands {
            guard let registered = commands[line] else {
                throw ItemError.fatal("exec_unregistered", "\(line) is not a registered command on this node")
            }
            line = registered
        }
        let executable = commands == nil ? context.argv?.first ?? "/bin/sh" : "/bin/sh"
        let arguments = commands == nil ? context.argv.map { Array($0.dropFirst()) } ?? ["-c", line] : ["-c", line]
        let parent = ProcessInfo.processInfo.environment
        var environment = ["PATH": parent["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"]
        for name in ["HOME", "LANG"] + passedEnvironment { environment[name] = parent[name] ?? environment[name] }
        for (key, value) in context.env ?? [:] where commands == nil { environment[key] = value }
        environment["TRANCHE_SEQ"] = String(input.seq)
        environment["TRANCHE_ATTEMPT"] = String(input.attempt)
        environment["TRANCHE_BATCH_ID"] = input.batchID.rawValue
        environment["TRANCHE_IDEMPOTENCY_KEY"] = input.idempotencyKey
        let run = try await ChildProcess.run(
            executable: executable, arguments: arguments, environment: environment,
            stdin: Data(input.payload.text.utf8), maxStdout: context.maxOutputBytes ?? 1 << 20,
            maxStderr: Self.stderrTailBytes, grace: terminationGrace)
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
