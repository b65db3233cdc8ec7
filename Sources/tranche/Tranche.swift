import ArgumentParser
import Foundation

/// The `tranche` command line.
@main
struct Tranche: AsyncParsableCommand {
    /// The version of this build: what `tranche --version` prints and what
    /// `tranche serve` and `tranche worker` log when they start.
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "tranche",
        abstract: "Durable batch processing: chunks, bounded concurrency, retries, checkpoints.",
        version: version,
        subcommands: [
            ServeCommand.self, RunCommand.self, SubmitCommand.self, StatusCommand.self, WatchCommand.self,
            ListCommand.self, PauseCommand.self, ResumeCommand.self, CancelCommand.self, ConfirmCommand.self,
            RetryCommand.self, ResubmitCommand.self, ResultsCommand.self, ExportCommand.self, EventsCommand.self,
            KeysCommand.self, BenchCommand.self, WorkerCommand.self, NodesCommand.self, SetCommand.self,
            TenantsCommand.self, SchedulesCommand.self,
        ])

    /// Parses and runs. A usage error exits 1 (not ArgumentParser's 64), as
    /// documented, naming an unknown option before anything else; any other
    /// error is one line on stderr (see ``userMessage(for:)``), exit 1.
    static func main() async {
        // A closed pipe is an error to handle where we write, not a signal that kills us.
        signal(SIGPIPE, SIG_IGN)
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            guard exitCode(for: error) == .validationFailure else { exit(withError: error) }
            let arguments = Array(CommandLine.arguments.dropFirst())
            let message = UnknownOptions.message(for: arguments) ?? fullMessage(for: error)
            FileHandle.standardError.write(Data((message + "\n").utf8))
            Foundation.exit(ExitCodes.failure)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            switch exitCode(for: error) {
            case .success:
                // `--help` and `help`: ArgumentParser's help command prints by throwing.
                exit(withError: error)
            case .validationFailure:
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            default:
                printError(userMessage(for: error))
            }
            Foundation.exit(ExitCodes.failure)
        }
    }
}

/// Exit codes shared by every command.
enum ExitCodes {
    /// Every item succeeded.
    static let success: Int32 = 0
    /// A usage or infrastructure error.
    static let failure: Int32 = 1
    /// Finished with failed, skipped, dead or canceled items.
    static let partial: Int32 = 2
    /// Interrupted by a signal; run the same command again to resume.
    static let interrupted: Int32 = 130
}
