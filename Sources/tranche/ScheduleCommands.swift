import ArgumentParser
import Foundation
import TrancheHTTP
import TrancheStore

/// `tranche schedules list|create|pause|resume|delete`: a server's recurring
/// batches (`/v1/schedules`), for the caller's tenant.
struct SchedulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedules", abstract: "Create, list, pause, resume and delete recurring batches.",
        subcommands: [List.self, Create.self, Pause.self, Resume.self, Delete.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List schedules, oldest first.")
        @OptionGroup var client: ClientOptions

        func run() async throws {
            let reply: APIClient.Reply<ScheduleList> = try await client.client.call(.GET, "/v1/schedules")
            if client.json { return printJSON(reply.data) }
            print(SchedulesCommand.header)
            for schedule in reply.value.schedules { print(SchedulesCommand.row(schedule)) }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a schedule: the batch every run submits, and --cron or --every.",
            discussion: """
                The items are read whole (at most the server's inline limit) and every run gets them.
                A tick missed while no node ran runs once when one is back (--catch-up one) or is
                skipped (--catch-up skip); a tick that comes while the last run is still going is
                skipped unless --overlap. Prints the schedule.
                """)
        @OptionGroup var client: ClientOptions
        @Option(help: "The strategy of every run.") var type: String
        @Option(help: "The strategy's context, a JSON object.") var context: String = "{}"
        @Option(help: "NDJSON items, or - for stdin.") var items: String
        @Option(name: .customLong("option"), help: "An option as key=value (e.g. chunk_size=500), repeatable.")
        var options: [String] = []
        @Flag(help: "Each run validates and reports, and runs nothing.") var dryRun = false
        @Option(help: "Each run's priority: higher runs first, -1000000 to 1000000.") var priority = 0
        @Option(help: "A five-field cron expression, e.g. '0 3 * * *'.") var cron: String?
        @Option(help: "The IANA time zone the cron expression is read in (default UTC).") var timeZone: String?
        @Option(help: "An interval instead of --cron: 30s, 5m, 2h or 1d (1s to 366d).") var every: String?
        @Option(help: "A tick missed while no node ran: one (default) or skip.") var catchUp: String?
        @Flag(help: "Start a run even while the last one is still going.") var overlap = false
        @Flag(help: "Create it paused.") var paused = false

        func validate() throws {
            guard (cron == nil) != (every == nil) else { throw ValidationError("give one of --cron and --every") }
        }

        func run() async throws {
            let batch = try batchRequest(
                type: type, context: context, options: options, dryRun: dryRun, priority: priority, mode: nil,
                items: try readItems())
            let request = CreateScheduleRequest(
                batch: batch, cron: cron, timeZone: timeZone, every: every, catchUp: catchUp,
                overlap: overlap ? true : nil, paused: paused ? true : nil)
            let reply: APIClient.Reply<ScheduleView> = try await client.client.call(
                .POST, "/v1/schedules", body: try APIClient.body(request))
            if client.json { return printJSON(reply.data) }
            print(SchedulesCommand.header)
            print(SchedulesCommand.row(reply.value))
        }

        /// The NDJSON items, each line checked as JSON (blank lines skipped).
        func readItems() throws -> [JSONValue] {
            let data: Data
            do {
                data =
                    items == "-"
                    ? FileHandle.standardInput.readDataToEndOfFile()
                    : try Data(contentsOf: URL(fileURLWithPath: items))
            } catch {
                throw CLIError("cannot read \(items): \(error.localizedDescription)")
            }
            var values: [JSONValue] = []
            for (index, line) in data.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
                let text = String(decoding: line, as: UTF8.self)
                guard !text.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) else { continue }
                do {
                    values.append(try JSONText(validating: text).value())
                } catch {
                    throw CLIError("\(items) line \(index + 1) is not valid JSON")
                }
            }
            return values
        }
    }

    /// `pause`, `resume`: the schedule as it is after.
    struct Action: ParsableArguments {
        @OptionGroup var client: ClientOptions
        @Argument(help: "The schedule's id.") var id: String

        func perform(_ action: String) async throws {
            let reply: APIClient.Reply<ScheduleView> = try await client.client.call(
                .POST, "/v1/schedules/\(id)/\(action)")
            if client.json { return printJSON(reply.data) }
            print(SchedulesCommand.header)
            print(SchedulesCommand.row(reply.value))
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pause a schedule: no run until it is resumed.")
        @OptionGroup var action: Action
        func run() async throws { try await action.perform("pause") }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Resume a schedule at its next tick from now (ticks missed while paused do not run).")
        @OptionGroup var action: Action
        func run() async throws { try await action.perform("resume") }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a schedule; the batches it made stay.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The schedule's id.") var id: String

        func run() async throws {
            let api = client.client
            let response = try await api.execute(api.request(.DELETE, "/v1/schedules/\(id)"), timeout: .seconds(60))
            guard response.status == .noContent else {
                throw api.problem(
                    Data(try await response.body.collect(upTo: 1 << 20).readableBytesView), response.status)
            }
            print("deleted \(id)")
        }
    }

    static let header = "ID\tWHEN\tNEXT_RUN\tPAUSED\tRUNS\tSKIPPED\tTYPE\tLAST_BATCH"

    /// One tab-separated line; `-` for no value.
    static func row(_ schedule: ScheduleView) -> String {
        let when =
            schedule.cron.map { "cron '\($0)' \(schedule.timeZone)" }
            ?? schedule.every.map { "every \(formatDuration($0))" } ?? "-"
        let fields = [
            schedule.id, when, schedule.nextRunAt.map(timestamp) ?? "-", schedule.paused ? "yes" : "no",
            "\(schedule.runs)", "\(schedule.skipped)", schedule.batch.type, schedule.lastBatchID ?? "-",
        ]
        return fields.joined(separator: "\t")
    }
}
