import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TrancheCore

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

/// A small client of the HTTP API for the command line.
struct APIClient {
    var base: String
    var token: String?

    static let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: .init())

    /// Sends a request and returns the body of a 2xx answer; anything else is
    /// a `CLIError` with the server's `detail`.
    func send(_ method: HTTPMethod, _ path: String, body: String? = nil, contentType: String = "application/json")
        async throws -> Data
    {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await Self.http.execute(request, timeout: .seconds(300))
        } catch {
            throw CLIError("cannot reach \(base): \(error is HTTPClientError ? "connection failed" : "\(error)")")
        }
        let buffer = try await response.body.collect(upTo: 1 << 30)
        let data = Data(buffer.readableBytesView)
        guard (200..<300).contains(Int(response.status.code)) else {
            let problem = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
            throw CLIError((problem?["detail"] as? String) ?? "the server answered \(response.status.code)")
        }
        return data
    }

    func json(_ method: HTTPMethod, _ path: String, body: String? = nil) async throws -> [String: Any] {
        let data = try await send(method, path, body: body)
        return (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    /// Streams the body of a GET to stdout.
    func download(_ path: String) async throws {
        var request = HTTPClientRequest(url: base + path)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await Self.http.execute(request, timeout: .hours(24))
        guard response.status == .ok else {
            let buffer = try await response.body.collect(upTo: 1 << 20)
            let problem = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String: Any]
            throw CLIError((problem?["detail"] as? String) ?? "the server answered \(response.status.code)")
        }
        for try await part in response.body {
            writeStandardOutput(Data(part.readableBytesView))
        }
    }
}

/// The exit status for a batch's JSON, as `tranche run` reports it.
func exitStatus(for batch: [String: Any]) -> Int32 {
    let counts = batch["counts"] as? [String: Any] ?? [:]
    let status = batch["status"] as? String ?? ""
    guard ["completed", "failed", "canceled"].contains(status) else { return ExitCodes.success }
    return status == "completed" && (counts["succeeded"] as? Int) == (counts["total"] as? Int)
        ? ExitCodes.success : ExitCodes.partial
}

func describe(_ batch: [String: Any]) -> String {
    let counts = batch["counts"] as? [String: Any] ?? [:]
    func count(_ key: String) -> Int64 { Int64(counts[key] as? Int ?? 0) }
    var lines = [
        "\(batch["id"] as? String ?? "?")  \(batch["type"] as? String ?? "?")  \(batch["status"] as? String ?? "?")",
        "  \(format(count("total"))) items — \(format(count("succeeded"))) succeeded, \(format(count("failed"))) failed, "
            + "\(format(count("skipped"))) skipped, \(format(count("dead"))) dead, \(format(count("canceled"))) canceled, "
            + "\(format(count("running"))) running, \(format(count("pending"))) pending",
        String(
            format: "  %.1f%%  %@/s  ETA %@", batch["progress"] as? Double ?? 0,
            format(Int64((batch["rate"] as? Double ?? 0).rounded())),
            (batch["eta_seconds"] as? Double).map(formatDuration) ?? "–"),
    ]
    if let reason = batch["failure_reason"] as? String { lines.append("  reason: \(reason)") }
    for error in batch["errors"] as? [[String: Any]] ?? [] {
        lines.append(
            "  item \(error["seq"] as? Int ?? -1): \(error["code"] as? String ?? ""): \(error["message"] as? String ?? "")"
        )
    }
    return lines.joined(separator: "\n")
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
    @Option(help: "The strategy.") var type: String
    @Option(help: "The strategy's context, a JSON object.") var context: String = "{}"
    @Option(help: "NDJSON items, or - for stdin.") var items: String?
    @Option(name: .customLong("option"), help: "An option as key=value (e.g. chunk_size=500), repeatable.")
    var options: [String] = []
    @Flag(help: "Validate and report; run nothing.") var dryRun = false
    @Option(help: "Higher runs first.") var priority = 0
    @Flag(help: "Wait for the end with a live progress line.") var wait = false

    func run() async throws {
        let api = client.client
        var optionValues: [String: JSONValue] = [:]
        for option in options {
            guard let equals = option.firstIndex(of: "=") else {
                throw CLIError("--option must be key=value, got '\(option)'")
            }
            let key = String(option[..<equals])
            let text = String(option[option.index(after: equals)...])
            optionValues[key] = (try? JSONText(validating: text).value()) ?? .string(text)
        }
        guard let contextValue = try? JSONText(validating: context).value(), case .object = contextValue else {
            throw CLIError("--context must be a JSON object")
        }
        let request: JSONValue = [
            "type": .string(type), "context": contextValue, "options": .object(optionValues),
            "dry_run": .bool(dryRun), "priority": .number(Double(priority)), "mode": "async",
        ]
        let created = try await api.json(.POST, "/v1/batches", body: try JSONText(encoding: request).text)
        guard let id = created["id"] as? String else { throw CLIError("the server did not return a batch id") }
        if let items {
            let reader = try InputReader(path: items, offset: 0, lineNumber: 0)
            var seq = 0
            var block: [String] = []
            func flush() async throws {
                guard !block.isEmpty else { return }
                _ = try await api.send(
                    .POST, "/v1/batches/\(id)/items?start_seq=\(seq)", body: block.joined(separator: "\n"),
                    contentType: "application/x-ndjson")
                seq += block.count
                block.removeAll(keepingCapacity: true)
            }
            var more = true
            while more {
                more = try await reader.nextLines { line, _ in
                    if !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) {
                        block.append(String(decoding: line, as: UTF8.self))
                    }
                }
                if block.count >= 5_000 { try await flush() }
            }
            try await flush()
        }
        let sealed = try await api.json(.POST, "/v1/batches/\(id)/seal")
        guard wait else {
            if client.json {
                printJSON(try JSONSerialization.data(withJSONObject: sealed, options: [.sortedKeys]))
            } else {
                print(id)
            }
            return
        }
        let final = try await watch(api: api, id: id, quiet: client.json)
        if client.json {
            printJSON(try JSONSerialization.data(withJSONObject: final, options: [.sortedKeys]))
        } else {
            print(describe(final))
        }
        throw ExitCode(exitStatus(for: final))
    }
}

/// Polls a batch with a live line on stderr until it ends; returns its final state.
func watch(api: APIClient, id: String, quiet: Bool) async throws -> [String: Any] {
    let terminal = isatty(STDERR_FILENO) == 1
    var last = ContinuousClock.now
    while true {
        let batch = try await api.json(.GET, "/v1/batches/\(id)")
        let status = batch["status"] as? String ?? ""
        let counts = batch["counts"] as? [String: Any] ?? [:]
        let ended = ["completed", "failed", "canceled"].contains(status) && (counts["running"] as? Int ?? 0) == 0
        let dryRunDone = batch["dry_run"] as? Bool == true && status == "pre_processed"
        if !quiet && (terminal || last.duration(to: .now) > .seconds(5) || ended) {
            let line = String(
                format: "%@  %5.1f%%  %@/%@  ✓%@  %@/s", status, batch["progress"] as? Double ?? 0,
                format(Int64(counts["processed"] as? Int ?? 0)), format(Int64(counts["total"] as? Int ?? 0)),
                format(Int64(counts["succeeded"] as? Int ?? 0)),
                format(Int64((batch["rate"] as? Double ?? 0).rounded())))
            FileHandle.standardError.write(Data((terminal ? "\r\u{1B}[K" + line : line + "\n").utf8))
            last = .now
        }
        if ended || dryRunDone {
            if terminal && !quiet { FileHandle.standardError.write(Data("\n".utf8)) }
            return batch
        }
        try await Task.sleep(for: .milliseconds(500))
    }
}

/// `tranche status ID`.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show a batch.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String

    func run() async throws {
        let data = try await client.client.send(.GET, "/v1/batches/\(id)")
        let batch = (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
        if client.json { printJSON(data) } else { print(describe(batch)) }
        throw ExitCode(exitStatus(for: batch))
    }
}

/// `tranche watch ID`.
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "watch", abstract: "Follow a batch until it ends.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String

    func run() async throws {
        let final = try await watch(api: client.client, id: id, quiet: client.json)
        if client.json {
            printJSON(try JSONSerialization.data(withJSONObject: final, options: [.sortedKeys]))
        } else {
            print(describe(final))
        }
        throw ExitCode(exitStatus(for: final))
    }
}

/// `tranche ls`.
struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List batches, newest first.")
    @OptionGroup var client: ClientOptions
    @Option var type: String?
    @Option var status: String?
    @Option var limit = 20

    func run() async throws {
        var query = "?limit=\(limit)"
        if let type { query += "&type=\(type.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? type)" }
        if let status { query += "&status=\(status)" }
        let data = try await client.client.send(.GET, "/v1/batches\(query)")
        if client.json { return printJSON(data) }
        let list =
            (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["batches"] as? [[String: Any]] ?? []
        for batch in list {
            let counts = batch["counts"] as? [String: Any] ?? [:]
            print(
                "\(batch["id"] as? String ?? "")  \(batch["type"] as? String ?? "")  \(batch["status"] as? String ?? "")  "
                    + String(format: "%.1f%%", batch["progress"] as? Double ?? 0)
                    + "  \(counts["succeeded"] as? Int ?? 0)/\(counts["total"] as? Int ?? 0)  \(batch["created_at"] as? String ?? "")"
            )
        }
    }
}

/// `tranche nodes`: the live nodes sharing the server's store.
struct NodesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodes", abstract: "List live nodes: role, workers, chunks held, leader.")
    @OptionGroup var client: ClientOptions

    func run() async throws {
        let data = try await client.client.send(.GET, "/v1/nodes")
        if client.json { return printJSON(data) }
        let list = (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["nodes"] as? [[String: Any]] ?? []
        print("NODE\tROLE\tWORKERS\tCHUNKS\tRUNNING\tLEADER\tHEARTBEAT")
        for node in list {
            let fields: [String] = [
                node["id"] as? String ?? "", node["role"] as? String ?? "", "\(node["workers"] as? Int ?? 0)",
                "\(node["chunks"] as? Int ?? 0)", "\(node["running_items"] as? Int ?? 0)",
                (node["leader"] as? Bool ?? false) ? "yes" : "no", node["heartbeat_at"] as? String ?? "",
            ]
            print(fields.joined(separator: "\t"))
        }
    }
}

/// `tranche pause|resume|cancel|confirm|retry ID`.
struct ActionCommand: ParsableArguments {
    @OptionGroup var client: ClientOptions
    @Argument var id: String

    static func make(_ action: String) -> CommandConfiguration {
        CommandConfiguration(
            commandName: action, abstract: "\(action.prefix(1).uppercased() + action.dropFirst()) a batch.")
    }

    func perform(_ action: String) async throws {
        let data = try await client.client.send(.POST, "/v1/batches/\(id)/\(action)")
        if client.json {
            printJSON(data)
        } else {
            print(describe((try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]))
        }
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
    @Argument var id: String
    @Option(help: "Only items in this status.") var status: String?

    func run() async throws {
        let status = self.status.map { "&status=\($0)" } ?? ""
        try await client.client.download("/v1/batches/\(id)/export?format=ndjson\(status)")
    }
}

/// `tranche export ID --format csv`.
struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Stream a batch's items to stdout.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Option(help: "ndjson, csv or json.") var format = "ndjson"
    @Option(help: "Only items in this status.") var status: String?

    func run() async throws {
        let status = self.status.map { "&status=\($0)" } ?? ""
        try await client.client.download("/v1/batches/\(id)/export?format=\(format)\(status)")
    }
}

/// `tranche events ID`.
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events", abstract: "Print a batch's history.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String

    func run() async throws {
        let data = try await client.client.send(.GET, "/v1/batches/\(id)/events")
        if client.json { return printJSON(data) }
        let events =
            (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["events"] as? [[String: Any]] ?? []
        for event in events {
            let detail =
                (try? JSONSerialization.data(withJSONObject: event["data"] ?? [:], options: [.sortedKeys]))
                .map { String(decoding: $0, as: UTF8.self) } ?? ""
            print("\(event["at"] as? String ?? "")  \(event["type"] as? String ?? "")  \(detail)")
        }
    }
}
