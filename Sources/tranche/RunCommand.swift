import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TrancheEngine
import TrancheSQLite
import TrancheStrategies

#if canImport(Glibc)
    import Glibc
#endif

/// `--failure-policy`: one of the policies ``FailurePolicy/all`` lists.
extension FailurePolicy: NamedChoices {
    init?(choiceName: String) {
        guard let policy = Self.all.first(where: { $0.rawValue == choiceName }) else { return nil }
        self = policy
    }
    static var choiceNames: [String] { all.map(\.rawValue) }
    var choiceName: String { rawValue }
}

/// `tranche run`: a one-shot local batch with a live progress bar and
/// checkpoint/resume in a local SQLite file.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a command or an HTTP request for every input line, durably.",
        usage: """
            tranche run [<options>] --input <input>
            tranche run --retry-failed <state-file> [--exec-env <name> ...] [--json] [--failed-out <file>]
            """,
        discussion: """
            Each NDJSON line of the input is one item (with --lines, each line is a string item).
            Progress is checkpointed in a state file: run the same command again after an
            interruption and it resumes where it stopped. Exit status: 0 when every item
            succeeded, 2 when some failed, were skipped or dead, 1 on an error, 130 when
            interrupted. --retry-failed runs a finished run's failures again, as a new
            batch linked to it in the same state file.
            """)

    @Option(name: [.customShort("i"), .customLong("input")], help: "NDJSON input file, or - for stdin.")
    var inputFile: String?

    @Option(
        help: ArgumentHelp(
            "Run again, as a new linked batch in this state file, the dead and skipped items (and those a failure canceled) of its last run.",
            valueName: "state-file"))
    var retryFailed: String?

    /// The input file (`-`: stdin).
    var input: String { inputFile ?? "-" }

    @Option(help: "Shell command run per item (item JSON on stdin). Shorthand for --type exec.")
    var exec: String?

    @Option(
        help: ArgumentHelp(
            "A variable of this environment passed on to exec commands (repeatable).", valueName: "name"))
    var execEnv: [String] = []

    @Option(help: "URL template requested per item, e.g. https://api/users/{{id}}. Shorthand for --type http.")
    var url: String?

    @Option(help: "HTTP method for --url (default POST).")
    var method: String?

    @Option(name: .customLong("header"), help: "HTTP header for --url, 'Name: value' (repeatable).")
    var headers: [String] = []

    @Option(help: "Body template for --url (default: the item's JSON).")
    var body: String?

    @Option(help: "Any registered strategy: noop, sleep, exec, http.")
    var type: String?

    @Option(help: "The strategy's context as a JSON object.")
    var context: String?

    @Option(help: "State file (default: named after the input and the command, in this directory).")
    var state: String?

    @Option(help: "Items per chunk (default: automatic, sized from how fast items run).")
    var chunkSize: Int?

    @Option(help: "Items running at once (default 8).")
    var concurrency: Int?

    @Option(help: "Attempts per item before it is dead (default 5).")
    var maxAttempts: Int?

    @Option(
        help: ArgumentHelp(
            "fixed keeps to --rate; adaptive (the default for --url) slows down on 429, 503 and Retry-After "
                + "and climbs while calls succeed, never above --rate."))
    var pace: String?

    @Option(help: "Rate limit: 50/s, 600/m or 1000/h.")
    var rate: String?

    @Option(help: "Seconds one attempt may take (default 60).")
    var itemTimeout: Double?

    @Option(help: "Seconds the run may process before it fails (default: no limit).")
    var batchTimeout: Double?

    @Option(help: "What skipped or dead items do to the run (default continue).")
    var failurePolicy: Choice<FailurePolicy>?

    @Option(
        name: .customLong("http-ca-file"),
        help: ArgumentHelp(
            "A PEM file of CA certificates --url trusts for https, besides the system's roots (internal APIs "
                + "signed by a private CA).",
            valueName: "path"))
    var httpCAFile: String?

    @Option(help: "Write every item that did not succeed, with its error, to this NDJSON file.")
    var failedOut: String?

    @Flag(help: "Take each input line as a string item instead of NDJSON.")
    var lines = false

    @Flag(help: "Print the summary as one JSON object.")
    var json = false

    @Option(help: "How hard a commit to the state file tries to reach the disk.")
    var durability = DurabilityMode.full

    @Option(help: "Seconds between progress lines when not on a terminal, 0.5 to 86400.")
    var progressInterval: Double = 5

    @Flag(help: "Print no progress.")
    var quiet = false

    func validate() throws {
        guard (inputFile == nil) != (retryFailed == nil) else {
            throw ValidationError("give exactly one of --input or --retry-failed")
        }
        if retryFailed != nil, exec != nil || url != nil || type != nil || context != nil || state != nil {
            throw ValidationError(
                "--retry-failed takes the command and the state file from its argument: drop --exec, --url, --type, --context and --state"
            )
        }
        try requireSeconds(progressInterval, in: 0.5...86_400, flag: "--progress-interval")
        try NodeOptions.requireVariableNames(execEnv, flag: "--exec-env")
        _ = try NodeOptions.trust(caFile: httpCAFile)
    }

    func run() async throws {
        throw ExitCode(try await execute())
    }

    /// The batch timeout of a run without `--batch-timeout`: 365 days, as
    /// good as none. A local run may take days or be resumed much later, so
    /// the server's default (4 h) does not fit it; `BatchOptions.batchTimeout`
    /// is a finite number of seconds, and 365 days is the most a batch accepts.
    static let unlimitedBatchTimeout: Double = 365 * 24 * 3600

    /// The submission this command line describes.
    func submission() throws -> Submission {
        var options = BatchOptions()
        options.batchTimeout = batchTimeout ?? Self.unlimitedBatchTimeout
        if let chunkSize { options.chunkSize = chunkSize }
        if let concurrency { options.concurrency = concurrency }
        if let maxAttempts { options.maxAttempts = maxAttempts }
        if let itemTimeout { options.itemTimeout = itemTimeout }
        if let rate { options.rateLimit = try RateLimit.parse(rate) }
        if let pace { options.pace = PaceMode(rawValue: pace) }
        if let failurePolicy { options.failurePolicy = failurePolicy.value }
        try options.validate()
        let chosen = [exec != nil, url != nil, type != nil].filter { $0 }.count
        guard chosen == 1 else { throw CLIError("give exactly one of --exec, --url or --type") }
        var fields = try context.map(parseContext) ?? [:]
        let strategy: String
        if let exec {
            strategy = "exec"
            fields["command"] = .string(exec)
        } else if let url {
            strategy = "http"
            fields["url"] = .string(url)
            if let method { fields["method"] = .string(method) }
            if let body { fields["body"] = .string(body) }
            if !headers.isEmpty {
                var map: [String: JSONValue] = [:]
                for header in headers {
                    guard let colon = header.firstIndex(of: ":") else {
                        throw CLIError("--header must look like 'Name: value', got '\(header)'")
                    }
                    map[String(header[..<colon]).trimmingCharacters(in: .whitespaces)] = .string(
                        String(header[header.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
                }
                fields["headers"] = .object(map)
            }
        } else if let type {
            strategy = type
        } else {
            throw CLIError("give exactly one of --exec, --url or --type")
        }
        return Submission(
            type: strategy, context: try JSONText(encoding: JSONValue.object(fields)), options: options)
    }

    /// The default state file: the input's name and a hash of the input's
    /// path and the command, so the same command finds it again.
    func defaultStatePath(for submission: Submission) -> String {
        let absolute = input == "-" ? "-" : URL(fileURLWithPath: input).standardizedFileURL.path
        let key = [absolute, submission.type, submission.context.text, lines ? "lines" : "ndjson"]
            .joined(separator: "\u{0}")
        let hash = String(InputFingerprint.fnv1a(Array(key.utf8)), radix: 16)
        let name = input == "-" ? "stdin" : URL(fileURLWithPath: input).lastPathComponent
        return "\(name).\(hash.prefix(8)).tranche.db"
    }

    func execute() async throws -> Int32 {
        if let retryFailed { return try await executeRetry(statePath: retryFailed) }
        let submission = try submission()
        if input != "-" {
            guard FileManager.default.fileExists(atPath: input) else { throw CLIError("input \(input) does not exist") }
            // Readable, and not a directory, before a state file is made for it.
            _ = try InputReader(path: input, offset: 0, lineNumber: 0)
        }
        let statePath = state ?? defaultStatePath(for: submission)
        let lock = try StateLock(path: statePath + ".lock")
        defer { lock.release() }
        let store = try DatabaseOptions.openSQLite(path: statePath, durability: durability)
        let engine = localEngine(store: store, workers: submission.options.concurrency)

        let record: BatchRecord
        var resumed = false
        if let existing = try await store.batches(BatchQuery(limit: 1)).first {
            guard existing.type == submission.type, existing.context == (try engine.preparedContext(of: submission))
            else {
                throw CLIError(
                    "state file \(statePath) was made for a different command; give another --state or delete it")
            }
            try checkInput(existing, statePath: statePath)
            record = existing
            resumed = true
        } else {
            record = try await engine.open(submission)
        }
        return try await runToEnd(engine: engine, store: store, record: record, statePath: statePath, resumed: resumed)
    }

    /// The engine of a local run: one node owning its state file.
    func localEngine(store: SQLiteBatchStore, workers: Int) -> TrancheEngine {
        var engineConfiguration = TrancheEngine.Configuration()
        engineConfiguration.nodeID = "run-\(getpid())"
        engineConfiguration.workers = workers
        engineConfiguration.releaseLeasesAtStart = true
        engineConfiguration.drainGracePeriod = 5
        // A local run calls any address; --http-ca-file was read by validate().
        var outbound = OutboundPolicy.unrestricted
        outbound.trust = (try? NodeOptions.trust(caFile: httpCAFile)) ?? .system
        return TrancheEngine(
            store: store,
            strategies: BuiltinStrategies.all(
                http: HTTPStrategy.Configuration(outbound: outbound), exec: ExecStrategy(passing: execEnv)),
            configuration: engineConfiguration, logger: Self.logger)
    }

    /// A local run logs errors only: its output is the progress and the summary.
    static var logger: Logger {
        var logger = Logger(label: "tranche.run")
        logger.logLevel = .error
        return logger
    }

    /// Runs `record` (reading the input while it is open) until it ends or
    /// a signal interrupts it, then prints the summary; returns the exit status.
    func runToEnd(
        engine: TrancheEngine, store: SQLiteBatchStore, record: BatchRecord, statePath: String, resumed: Bool
    ) async throws -> Int32 {
        var record = record
        let logger = Self.logger
        let processedAtStart = record.counts.processed
        let started = ContinuousClock.now

        var interrupted = false
        if !record.status.isEnded {
            let controller = RunController(
                engine: engine, batchID: record.id, input: input, lines: lines, resumeFrom: record,
                display: ProgressDisplay(
                    quiet: quiet, interval: progressInterval, terminal: isatty(STDERR_FILENO) == 1))
            let group = ServiceGroup(
                configuration: .init(
                    services: [
                        .init(service: engine),
                        .init(
                            service: controller, successTerminationBehavior: .gracefullyShutdownGroup,
                            failureTerminationBehavior: .gracefullyShutdownGroup),
                    ],
                    gracefulShutdownSignals: [.sigint, .sigterm],
                    logger: logger))
            let secondSignal = exitOnSecondSignal()
            defer { for source in secondSignal { source.cancel() } }
            do {
                try await group.run()
            } catch let error as CLIError {
                throw error
            } catch {
                if !controller.wasInterrupted { throw CLIError("the run stopped: \(error)") }
            }
            if let failure = controller.failure { throw failure }
            interrupted = controller.wasInterrupted
            record = try await store.batch(record.id) ?? record
        }
        let seconds = started.duration(to: .now).seconds
        if let failedOut, record.status.isEnded {
            try await writeFailed(store: store, batchID: record.id, to: failedOut)
        }
        let summary = RunSummary(
            record: record, state: statePath, resumed: resumed, interrupted: interrupted, seconds: seconds,
            processedNow: record.counts.processed - processedAtStart)
        if json {
            print(summary.json())
        } else {
            print(summary.text())
        }
        if interrupted {
            if !json { printError("interrupted; run the same command again to resume") }
            return ExitCodes.interrupted
        }
        return record.counts.succeeded == record.counts.total && record.status == .completed
            ? ExitCodes.success : ExitCodes.partial
    }

    /// Refuses to resume when the input differs from the one the state file read.
    func checkInput(_ record: BatchRecord, statePath: String) throws {
        guard let cursorText = record.cursor, let cursor = try? cursorText.decode(RunCursor.self) else { return }
        guard input != "-", let saved = cursor.fingerprint else { return }
        let size = (try? FileManager.default.attributesOfItem(atPath: input)[.size] as? Int64) ?? 0
        let now = InputFingerprint.of(path: input, upTo: cursor.offset)
        if size < cursor.offset || now != saved || (cursor.done && size != cursor.offset) {
            throw CLIError(
                "the input \(input) changed since \(statePath) was made; delete the state file to start over or give another --state"
            )
        }
    }

    func writeFailed(store: SQLiteBatchStore, batchID: BatchID, to path: String) async throws {
        guard FileManager.default.createFile(atPath: path, contents: nil),
            let handle = FileHandle(forWritingAtPath: path)
        else { throw CLIError("cannot write \(path)") }
        defer { try? handle.close() }
        for status in [ItemStatus.failed, .skipped, .dead, .canceled] {
            var after: Int64? = nil
            while true {
                let page = try await store.items(of: batchID, status: status, afterSeq: after, limit: 1_000)
                var text = ""
                for item in page {
                    text += try JSONText(encoding: WireFormat.item(item, includingPayload: true)).text + "\n"
                }
                try handle.write(contentsOf: Data(text.utf8))
                guard page.count == 1_000, let last = page.last else { break }
                after = last.seq
            }
        }
    }
}

/// The first SIGINT or SIGTERM drains (the service group handles it); a
/// second one exits at once, leaving leases to be released at the next start.
/// With `bound`, a process still running that long after the first signal
/// exits too (status 1): something ignored cancellation, such as a database
/// call that is never answered.
func exitOnSecondSignal(orAfter bound: Duration? = nil) -> [any DispatchSourceSignal] {
    let count = Mutex(0)
    return [SIGINT, SIGTERM].map { number in
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler {
            let seen = count.withLock { value -> Int in
                value += 1
                return value
            }
            if seen >= 2 {
                printError("interrupted twice; exiting now (the next run resumes)")
                _exit(ExitCodes.interrupted)
            }
            if seen == 1, let bound {
                let seconds = bound.seconds
                DispatchQueue.global().asyncAfter(deadline: .now() + seconds) {
                    printError("the shutdown did not finish within \(Int(saturating: seconds)) s; exiting now")
                    _exit(ExitCodes.failure)
                }
            }
        }
        source.resume()
        return source
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("tranche: \(message)\n".utf8))
}

/// An exclusive lock on the state file, so two runs never share it.
struct StateLock {
    let descriptor: Int32

    init(path: String) throws {
        descriptor = open(path, O_RDWR | O_CREAT, 0o644)
        guard descriptor >= 0 else { throw CLIError("cannot create \(path): \(String(cString: strerror(errno)))") }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            throw CLIError("another tranche run is using this state file (\(path) is locked)")
        }
    }

    func release() {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}

/// The end-of-run report.
struct RunSummary {
    var record: BatchRecord
    var state: String
    var resumed: Bool
    var interrupted: Bool
    var seconds: Double
    var processedNow: Int64

    var rate: Double { seconds > 0 ? Double(processedNow) / seconds : 0 }

    func json() -> String {
        let counts = record.counts
        let value: JSONValue = [
            "batch_id": .string(record.id.rawValue),
            "status": .string(interrupted ? "interrupted" : record.status.rawValue),
            "total": .number(Double(counts.total)),
            "succeeded": .number(Double(counts.succeeded)),
            "failed": .number(Double(counts.failed)),
            "skipped": .number(Double(counts.skipped)),
            "dead": .number(Double(counts.dead)),
            "canceled": .number(Double(counts.canceled)),
            "retried": .number(Double(counts.retried)),
            "rescued": .number(Double(counts.rescued)),
            "processed_this_run": .number(Double(processedNow)),
            "duration_seconds": .number((seconds * 1000).rounded() / 1000),
            "items_per_second": .number(rate.rounded()),
            "resumed": .bool(resumed),
            "state": .string(state),
            "failure_reason": record.failureReason.map(JSONValue.string) ?? .null,
        ]
        return (try? JSONText(encoding: value).text) ?? "{}"
    }

    func text() -> String {
        let counts = record.counts
        var lines = [
            "\(interrupted ? "interrupted" : record.status.rawValue): \(format(counts.total)) items — "
                + "\(format(counts.succeeded)) succeeded, \(format(counts.failed)) failed, "
                + "\(format(counts.skipped)) skipped, \(format(counts.dead)) dead"
                + (counts.canceled > 0 ? ", \(format(counts.canceled)) canceled" : ""),
            "  \(format(processedNow)) processed in \(formatDuration(seconds)) (\(format(Int64.saturating(rate))) items/s)"
                + (counts.retried > 0 ? ", \(format(counts.retried)) retries" : "")
                + (counts.rescued > 0 ? ", \(format(counts.rescued)) re-run after a crash" : ""),
            "  state: \(state)\(resumed ? " (resumed)" : "")",
        ]
        if let reason = record.failureReason { lines.append("  reason: \(reason)") }
        return lines.joined(separator: "\n")
    }
}

func format(_ number: Int64) -> String {
    let digits = String(number.magnitude)
    var out = ""
    for (index, character) in digits.enumerated() {
        if index > 0, (digits.count - index) % 3 == 0 { out.append(",") }
        out.append(character)
    }
    return (number < 0 ? "-" : "") + out
}

/// A duration for a progress line or a summary: `12.5s`, `4:05`, `1:02:03`;
/// any number (an ETA from a server, say) without trapping: past 100 years,
/// or not a number, it is `–`.
func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds < Duration.longestBoundedWait else { return "–" }
    if seconds < 60 { return String(format: "%.1fs", seconds) }
    let total = Int(seconds)
    if total < 3600 { return String(format: "%d:%02d", total / 60, total % 60) }
    return String(format: "%d:%02d:%02d", total / 3600, total / 60 % 60, total % 60)
}
