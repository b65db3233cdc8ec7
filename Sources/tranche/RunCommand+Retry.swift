import Foundation
import TrancheEngine
import TrancheSQLite

// `tranche run --retry-failed STATE_FILE`: the failures of a local run, run
// again as a new batch linked to it, inside the same state file.
extension RunCommand {
    /// Resubmits the last run's dead and skipped items (and, when it failed,
    /// those its failure canceled) as a linked batch and runs it; a linked
    /// batch left unfinished by an interrupted retry is resumed instead.
    func executeRetry(statePath: String) async throws -> Int32 {
        guard FileManager.default.fileExists(atPath: statePath) else {
            throw CLIError("state file \(statePath) does not exist")
        }
        let lock = try StateLock(path: statePath + ".lock")
        defer { lock.release() }
        let store = try DatabaseOptions.openSQLite(path: statePath, durability: durability)
        guard let last = try await store.batches(BatchQuery(limit: 1)).first else {
            throw CLIError("state file \(statePath) holds no run")
        }
        let engine = localEngine(store: store, workers: last.options.concurrency)
        if !last.status.isEnded {
            guard try await store.links(of: last.id).parentID != nil else {
                throw CLIError(
                    "the run in \(statePath) has not ended; finish it with the same tranche run command first")
            }
            return try await runToEnd(engine: engine, store: store, record: last, statePath: statePath, resumed: true)
        }
        let statuses = Self.statusesToRetry(after: last)
        guard statuses.contains(where: { last.counts[$0] > 0 }) else {
            printError("nothing to retry: the last run in \(statePath) has no \(Self.names(statuses)) item")
            return ExitCodes.success
        }
        guard case .created(let child) = try await engine.resubmit(last.id, statuses: statuses) else {
            throw CLIError("the retry was not stored")
        }
        if !json { printError("retrying \(format(child.counts.total)) items of \(last.id) as \(child.id)") }
        return try await runToEnd(engine: engine, store: store, record: child, statePath: statePath, resumed: false)
    }

    /// What a retry of `run` takes: dead and skipped items, and the items
    /// its failure canceled (as `tranche retry` does for a failed batch).
    static func statusesToRetry(after run: BatchRecord) -> Set<ItemStatus> {
        run.status == .failed ? LinkRules.defaultResubmit.union([.canceled]) : LinkRules.defaultResubmit
    }

    static func names(_ statuses: Set<ItemStatus>) -> String {
        statuses.map(\.name).sorted().joined(separator: ", ")
    }
}
