import ArgumentParser
import Foundation
import TrancheHTTP
import TrancheStore

/// `--server` and `--token`, or `TRANCHE_URL` and `TRANCHE_TOKEN`.
struct ClientOptions: ParsableArguments {
    @Option(help: "Server URL (default $TRANCHE_URL or http://127.0.0.1:8080).")
    var server: String?

    @Option(help: "API key (default $TRANCHE_TOKEN).")
    var token: String?

    @Flag(help: "Print JSON for scripts.")
    var json = false

    var client: APIClient {
        let environment = ProcessInfo.processInfo.environment
        return APIClient(
            base: (server ?? environment["TRANCHE_URL"] ?? "http://127.0.0.1:8080").trimmingCharacters(
                in: CharacterSet(charactersIn: "/")),
            token: token ?? environment["TRANCHE_TOKEN"])
    }
}

/// The exit status for a batch, as `tranche run` reports it.
func exitStatus(for batch: BatchView) -> Int32 {
    guard batch.status.isEnded else { return ExitCodes.success }
    return batch.status == .completed && batch.counts.succeeded == batch.counts.total
        ? ExitCodes.success : ExitCodes.partial
}

func describe(_ batch: BatchView) -> String {
    let counts = batch.counts
    var lines = [
        "\(batch.id)  \(batch.type)  \(batch.status)",
        "  \(format(counts.total)) items — \(format(counts.succeeded)) succeeded, \(format(counts.failed)) failed, "
            + "\(format(counts.skipped)) skipped, \(format(counts.dead)) dead, \(format(counts.canceled)) canceled, "
            + "\(format(counts.running)) running, \(format(counts.pending)) pending",
        (["  " + formatPercent(batch.progress)] + ProgressDisplay.throughputParts(ProgressFigures(view: batch)))
            .joined(separator: "  "),
    ]
    if let reason = batch.failureReason { lines.append("  reason: \(reason)") }
    if let parent = batch.parentID { lines.append("  parent: \(parent)") }
    if !batch.children.isEmpty { lines.append("  children: \(batch.children.map(\.rawValue).joined(separator: ", "))") }
    if let schedule = batch.scheduleID { lines.append("  schedule: \(schedule)") }
    if let pace = batch.pace.flatMap(describePace) { lines.append("  pace: \(pace)") }
    if batch.result != .null { lines.append("  result: \(batch.result.jsonText)") }
    for error in batch.errors {
        lines.append("  item \(error.seq): \(error.code): \(error.message)")
    }
    return lines.joined(separator: "\n")
}

/// A timestamp as the server wrote it (ISO 8601 with milliseconds).
func timestamp(_ date: Date) -> String {
    WireFormat.timestamp(Date(milliseconds: date.milliseconds))
}

func printJSON(_ data: Data) {
    writeStandardOutput(data + [0x0A])
}

/// Writes to stdout; when the reader went away (`| head`), stops quietly.
func writeStandardOutput(_ data: Data) {
    do {
        try FileHandle.standardOutput.write(contentsOf: data)
    } catch {
        Foundation.exit(ExitCodes.success)
    }
}

/// `tranche submit`.
struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Submit a batch to a server; items are streamed in blocks from a file or stdin.")

    @OptionGroup var client: ClientOptions
    @Option(help: "The strategy the server runs per item: noop, sleep, exec, http or any it registers.")
    var type: String
    @Option(help: "The strategy's context, a JSON object.") var context: String = "{}"
    @Option(help: "NDJSON items, or - for stdin (default: none).") var items: String?
    @Option(name: .customLong("option"), help: "An option as key=value (e.g. chunk_size=500), repeatable.")
    var options: [String] = []
    @Flag(help: "Validate and report; run nothing.") var dryRun = false
    @Option(help: "The batch's priority: higher runs first, -1000000 to 1000000.") var priority = 0
    @Flag(help: "Wait for the end with a live progress line.") var wait = false

    func run() async throws {
        let api = client.client
        // Everything that can be refused here is checked before the batch
        // exists: the request, then the items file, opened before creation.
        let request = try request()
        let reader = try items.map { try InputReader(path: $0, offset: 0, lineNumber: 0) }
        let created = try await api.openBatch(request)
        let id = created.id.rawValue
        let sealed: APIClient.Reply<BatchView>
        do {
            if let reader { try await upload(reader, to: id, with: api) }
            sealed = try await api.perform("seal", on: id)
        } catch {
            // A half-uploaded batch is no use to anyone: cancel it (if the
            // server still answers) rather than leave it open, and say so.
            let canceled = (try? await api.perform("cancel", on: id)) != nil
            throw CLIError(
                "\(userMessage(for: error)) (batch \(id) \(canceled ? "was canceled" : "is left open, unsealed"))")
        }
        guard wait else {
            if client.json { printJSON(sealed.data) } else { print(id) }
            return
        }
        let final = try await watch(api: api, id: id, quiet: client.json)
        if client.json { printJSON(final.data) } else { print(describe(final.value)) }
        throw ExitCode(exitStatus(for: final.value))
    }

    /// The batch to open: `--type`, `--context`, the `--option`s (checked
    /// here by the server's own decoder, with its message), `--dry-run`, `--priority`.
    func request() throws -> CreateBatchRequest {
        try batchRequest(
            type: type, context: context, options: options, dryRun: dryRun, priority: priority, mode: "async")
    }

    /// Streams the NDJSON items to the open batch in blocks of 5,000 lines
    /// (blank lines skipped), each at its `start_seq`.
    func upload(_ reader: InputReader, to id: String, with api: APIClient) async throws {
        var seq = 0
        var block: [String] = []
        var more = true
        while more {
            more = try await reader.nextLines { line, _ in
                if !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) {
                    block.append(String(decoding: line, as: UTF8.self))
                }
            }
            if block.count >= 5_000 || (!more && !block.isEmpty) {
                _ = try await api.appendLines(block, to: id, startSeq: seq)
                seq += block.count
                block.removeAll(keepingCapacity: true)
            }
        }
    }
}

/// A `POST /v1/batches` body from command-line flags (`tranche submit`,
/// `tranche schedules create`): `--option key=value` pairs are checked by
/// the server's own decoder, with its message.
func batchRequest(
    type: String, context: String, options: [String], dryRun: Bool, priority: Int, mode: String?,
    items: [JSONValue]? = nil
) throws -> CreateBatchRequest {
    var optionValues: [String: JSONValue] = [:]
    for option in options {
        guard let equals = option.firstIndex(of: "=") else {
            throw CLIError("--option must be key=value, got '\(option)'")
        }
        let key = String(option[..<equals])
        let text = String(option[option.index(after: equals)...])
        optionValues[key] = (try? JSONText(validating: text).value()) ?? .string(text)
    }
    var body: [String: JSONValue] = [
        "type": .string(type), "context": .object(try parseContext(context)), "options": .object(optionValues),
        "dry_run": .bool(dryRun), "priority": .number(Double(priority)),
    ]
    if let mode { body["mode"] = .string(mode) }
    do {
        var request = try JSONValue.object(body).decoded(as: CreateBatchRequest.self, userInfo: [.clientRequest: true])
        request.items = items
        return request
    } catch {
        throw CLIError(Problem.invalidRequest(error).detail)
    }
}

/// Polls a batch with a live line on stderr (the bar, rate and ETA of
/// `tranche run`) until it ends; returns its final state.
func watch(api: APIClient, id: String, quiet: Bool) async throws -> APIClient.Reply<BatchView> {
    let terminal = isatty(STDERR_FILENO) == 1
    let display = ProgressDisplay(quiet: quiet, interval: 5, terminal: terminal)
    var last = ContinuousClock.now
    while true {
        let reply = try await api.batch(id)
        let batch = reply.value
        let ended = batch.status.isEnded && batch.counts.running == 0
        let dryRunDone = batch.dryRun && batch.status == .preProcessed
        if terminal || last.duration(to: .now) > .seconds(bounded: display.interval) || ended {
            display.draw(ProgressFigures(view: batch))
            last = .now
        }
        if ended || dryRunDone {
            if terminal && !quiet { FileHandle.standardError.write(Data("\n".utf8)) }
            return reply
        }
        try await Task.sleep(for: .milliseconds(500))
    }
}

/// `tranche status ID`.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show a batch.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The batch's id.") var id: String

    func run() async throws {
        let reply = try await client.client.batch(id)
        if client.json { printJSON(reply.data) } else { print(describe(reply.value)) }
        throw ExitCode(exitStatus(for: reply.value))
    }
}

/// `tranche watch ID`.
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "watch", abstract: "Follow a batch until it ends.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The batch's id.") var id: String

    func run() async throws {
        let final = try await watch(api: client.client, id: id, quiet: client.json)
        if client.json { printJSON(final.data) } else { print(describe(final.value)) }
        throw ExitCode(exitStatus(for: final.value))
    }
}

/// `tranche ls`.
struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List batches, newest first.")
    @OptionGroup var client: ClientOptions
    @Option(help: "Only batches of this strategy.") var type: String?
    @Option(help: "Only batches in this status.") var status: Choice<BatchStatus>?
    @Option(help: "At most this many batches (the server takes 1 to 1000).") var limit = 20

    func run() async throws {
        let reply = try await client.client.batches(type: type, status: status?.value.rawValue, limit: limit)
        if client.json { return printJSON(reply.data) }
        for batch in reply.value.batches {
            print(
                "\(batch.id)  \(batch.type)  \(batch.status)  " + formatPercent(batch.progress)
                    + "  \(batch.counts.succeeded)/\(batch.counts.total)  \(timestamp(batch.createdAt))")
        }
    }
}

/// `tranche nodes`: the live nodes sharing the server's store.
struct NodesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodes", abstract: "List live nodes: role, workers, chunks held, leader.")
    @OptionGroup var client: ClientOptions

    func run() async throws {
        let reply = try await client.client.nodes()
        if client.json { return printJSON(reply.data) }
        print("NODE\tROLE\tWORKERS\tCHUNKS\tRUNNING\tLEADER\tHEARTBEAT")
        for node in reply.value.nodes {
            let fields: [String] = [
                node.id, node.role, "\(node.workers)", "\(node.chunks)", "\(node.runningItems)",
                node.leader ? "yes" : "no", timestamp(node.heartbeatAt),
            ]
            print(fields.joined(separator: "\t"))
        }
    }
}

/// `tranche pause|resume|cancel|confirm|retry ID`.
struct ActionCommand: ParsableArguments {
    @OptionGroup var client: ClientOptions
    @Argument(help: "The batch's id.") var id: String

    static func make(_ action: String) -> CommandConfiguration {
        CommandConfiguration(
            commandName: action, abstract: "\(action.prefix(1).uppercased() + action.dropFirst()) a batch.")
    }

    func perform(_ action: String) async throws {
        let reply = try await client.client.perform(action, on: id)
        if client.json { printJSON(reply.data) } else { print(describe(reply.value)) }
    }
}

struct PauseCommand: AsyncParsableCommand {
    static let configuration = ActionCommand.make("pause")
    @OptionGroup var action: ActionCommand
    func run() async throws { try await action.perform("pause") }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = ActionCommand.make("resume")
    @OptionGroup var action: ActionCommand
    func run() async throws { try await action.perform("resume") }
}

struct CancelCommand: AsyncParsableCommand {
    static let configuration = ActionCommand.make("cancel")
    @OptionGroup var action: ActionCommand
    func run() async throws { try await action.perform("cancel") }
}

struct ConfirmCommand: AsyncParsableCommand {
    static let configuration = ActionCommand.make("confirm")
    @OptionGroup var action: ActionCommand
    func run() async throws { try await action.perform("confirm") }
}

struct RetryCommand: AsyncParsableCommand {
    static let configuration = ActionCommand.make("retry")
    @OptionGroup var action: ActionCommand
    func run() async throws { try await action.perform("retry") }
}

/// `tranche results ID [--status S]`: per-item results as NDJSON.
struct ResultsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "results", abstract: "Print per-item results (NDJSON).")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The batch's id.") var id: String
    @Option(help: "Only items in this status.") var status: Choice<ItemStatus>?

    func run() async throws {
        try await client.client.export(id, format: ExportFormat.ndjson.rawValue, status: status?.value.name)
    }
}

/// `tranche export ID --format csv`.
struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Stream a batch's items to stdout.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The batch's id.") var id: String
    @Option(help: "The output's format.") var format = ExportFormat.ndjson
    @Option(help: "Only items in this status.") var status: Choice<ItemStatus>?

    func run() async throws {
        try await client.client.export(id, format: format.rawValue, status: status?.value.name)
    }
}

/// `tranche export --format`: what `GET /v1/batches/{id}/export` writes.
enum ExportFormat: String, CaseIterable, ExpressibleByArgument {
    case ndjson, csv, json

    static var allValueDescriptions: [String: String] {
        ["ndjson": "one JSON object a line", "csv": "a header row, then a row an item", "json": "one JSON array"]
    }
}

/// `tranche events ID`.
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events", abstract: "Print a batch's history.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The batch's id.") var id: String

    func run() async throws {
        let reply = try await client.client.events(of: id)
        if client.json { return printJSON(reply.data) }
        for event in reply.value.events {
            let detail = (try? JSONText(encoding: event.data).text) ?? ""
            print("\(timestamp(event.at))  \(event.type)  \(detail)")
        }
    }
}

/// `--status` of `tranche ls`: a batch's status by its wire name.
extension BatchStatus: NamedChoices {
    init?(choiceName: String) { self.init(rawValue: choiceName) }
    static var choiceNames: [String] { allCases.map(\.rawValue) }
    var choiceName: String { rawValue }
}

/// `--status` of `tranche results` and `export`: an item's status by its wire name.
extension ItemStatus: NamedChoices {
    init?(choiceName: String) { self.init(name: choiceName) }
    static var choiceNames: [String] { allCases.map(\.name) }
    var choiceName: String { name }
}
