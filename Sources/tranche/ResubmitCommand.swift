import ArgumentParser
import Foundation
import TrancheEngine
import TrancheHTTP

/// `tranche resubmit ID [--status dead,skipped]`: some of an ended batch's
/// items, run again as a new batch linked to it.
struct ResubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resubmit",
        abstract: "Submit an ended batch's dead and skipped items again, as a new linked batch.",
        discussion: """
            The new batch has the batch's type, context and options, and the items' original
            payloads; its parent_id names the batch, whose children list it. Prints the new batch.
            """)
    @OptionGroup var client: ClientOptions
    @Argument(help: "The ended batch's id.") var id: String
    @Option(
        name: .customLong("status"),
        help: ArgumentHelp(
            "Item statuses to resubmit, comma-separated: failed, skipped, dead, canceled (default dead,skipped).",
            valueName: "statuses"))
    var statuses: String?

    func validate() throws {
        _ = try chosenStatuses()
    }

    /// The statuses `--status` names, checked here so that a typo fails before any request.
    func chosenStatuses() throws -> [String]? {
        guard let statuses else { return nil }
        let names = statuses.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let allowed = LinkRules.resubmittable.map(\.name)
        guard !names.isEmpty, names.allSatisfy(allowed.contains) else {
            throw ValidationError("--status takes some of \(allowed.joined(separator: ", ")), got '\(statuses)'")
        }
        return names
    }

    func run() async throws {
        let body = try APIClient.body(ResubmitRequest(statuses: try chosenStatuses()))
        let reply: APIClient.Reply<BatchView> = try await client.client.call(
            .POST, "/v1/batches/\(id)/resubmit", body: body)
        if client.json { printJSON(reply.data) } else { print(describe(reply.value)) }
    }
}
