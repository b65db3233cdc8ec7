import ArgumentParser
import Foundation
import TrancheCore
import TrancheHTTP

/// `tranche set ID --rate 10/s --concurrency N --priority N --pace adaptive`:
/// changes a live batch's settings (`PATCH /v1/batches/{id}`); every node applies them within about a second.
struct SetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Change a running batch's priority, concurrency, rate limit or pace.",
        discussion: "Every node running the batch applies the change within about a second.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The batch's id.") var id: String
    @Option(help: "Items a second across the cluster: 50/s, 600/m, 1000/h, or 'none'.") var rate: String?
    @Option(name: .customLong("max-concurrent"), help: "Items running at once across the cluster, or 'none'.")
    var maxConcurrent: String?
    @Option(help: "Items of the batch running at once on one node.") var concurrency: Int?
    @Option(help: "The batch's priority (higher runs first).") var priority: Int?
    @Option(help: "fixed (the rate given) or adaptive (slows down on 429, 503 and rising latency).")
    var pace: String?

    func validate() throws {
        if rate == nil, maxConcurrent == nil, concurrency == nil, priority == nil, pace == nil {
            throw ValidationError("give at least one of --rate, --max-concurrent, --concurrency, --priority, --pace")
        }
        if let pace, !PaceMode.all.map(\.rawValue).contains(pace) {
            throw ValidationError(
                "--pace must be one of \(PaceMode.all.map(\.rawValue).joined(separator: ", ")), got '\(pace)'")
        }
    }

    /// The PATCH body: a JSON merge patch with the fields given.
    func body() throws -> JSONValue {
        var options: [String: JSONValue] = [:]
        var limit: [String: JSONValue] = [:]
        if let rate {
            if rate == "none" {
                limit["rate"] = JSONValue.null
            } else {
                do {
                    guard let value = try RateLimit.parse(rate).rate else { throw OptionsError("no rate") }
                    limit["rate"] = .number(value)
                } catch {
                    throw ValidationError("--rate: \(error)")
                }
            }
        }
        if let maxConcurrent {
            if maxConcurrent == "none" {
                limit["max_concurrent"] = JSONValue.null
            } else if let value = Int(maxConcurrent), BatchOptions.Limits.maxConcurrent.contains(value) {
                limit["max_concurrent"] = .number(Double(value))
            } else {
                let range = BatchOptions.Limits.maxConcurrent
                throw ValidationError(
                    "--max-concurrent must be 'none' or between \(range.lowerBound) and \(range.upperBound), got '\(maxConcurrent)'"
                )
            }
        }
        if !limit.isEmpty { options["rate_limit"] = .object(limit) }
        if let concurrency { options["concurrency"] = .number(Double(concurrency)) }
        if let pace { options["pace"] = .string(pace) }
        var body: [String: JSONValue] = [:]
        if !options.isEmpty { body["options"] = .object(options) }
        if let priority { body["priority"] = .number(Double(priority)) }
        return .object(body)
    }

    func run() async throws {
        let reply: APIClient.Reply<BatchView> = try await client.client.call(
            .PATCH, "/v1/batches/\(id)", body: Data(try body().jsonText.utf8))
        if client.json { printJSON(reply.data) } else { print(describe(reply.value)) }
    }
}

/// A batch's pace for `tranche status` and `watch`: `adaptive 14.2/s
/// (refused), 31 throttled`; nil for a fixed pace without a rate.
func describePace(_ pace: PaceView) -> String? {
    guard pace.mode == .adaptive || pace.rate != nil else { return nil }
    var text = pace.mode.rawValue + " " + (pace.rate.map { String(format: "%.1f/s", $0) } ?? "no rate yet")
    if let reason = pace.reason, pace.mode == .adaptive { text += " (\(reason))" }
    if pace.throttled > 0 { text += ", \(pace.throttled) throttled" }
    if let until = pace.pausedUntil, until > Date() { text += ", paused until \(timestamp(until))" }
    return text
}
