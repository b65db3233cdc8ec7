import ArgumentParser
import Foundation

/// The `tranche` command line.
@main
struct Tranche: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tranche",
        abstract: "Durable batch processing: chunks, bounded concurrency, retries, checkpoints.",
        subcommands: [
            ServeCommand.self, RunCommand.self, SubmitCommand.self, StatusCommand.self, WatchCommand.self,
            ListCommand.self, PauseCommand.self, ResumeCommand.self, CancelCommand.self, ConfirmCommand.self,
            RetryCommand.self, ResultsCommand.self, ExportCommand.self, EventsCommand.self, KeysCommand.self,
            BenchCommand.self, WorkerCommand.self, NodesCommand.self,
        ])

    /// Parses and runs; a usage error exits 1 (not ArgumentParser's 64), as documented.
    static func main() async {
        // A closed pipe is an error to handle where we write, not a signal that kills us.
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let error as CLIError {
            printError(error.message)
            Foundation.exit(ExitCodes.failure)
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(ExitCodes.failure)
            }
            exit(withError: error)
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
