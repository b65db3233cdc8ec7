import Foundation
import Logging
import TrancheStore

extension TrancheEngine {
    /// The maintenance loop, every `sweepInterval` until the drain: this
    /// node's heartbeat, then, on the elected leader only, a sweep.
    func maintain() async {
        let host = ProcessInfo.processInfo.hostName
        let pid = Int(ProcessInfo.processInfo.processIdentifier)
        while !draining.hasFired && !Task.isCancelled {
            do {
                try await store.recordHeartbeat(
                    NodeRecord(
                        id: configuration.nodeID, role: configuration.role, host: host, pid: pid,
                        workers: configuration.workers, startedAt: startedAt, heartbeatAt: now))
                // Only the leader sweeps; the others stand by to take over.
                if try await store.acquireLeadership(
                    node: configuration.nodeID, for: configuration.leaderTerm, now: now)
                {
                    try await sweep()
                }
            } catch let error where !Task.isCancelled {
                logger.warning("maintenance failed", metadata: ["error": "\(error)"])
            } catch {
                return
            }
            await sleep(configuration.sweepInterval, orUntil: draining)
        }
    }

    /// One sweep: rescues expired leases, enforces deadlines (batch timeouts,
    /// batches whose items are all done), prunes expired batches and samples
    /// the progress of batches in progress. Each
    /// step runs even when another failed (a damaged row makes one step
    /// fail on every sweep; it must not stop the others); the first failure
    /// is thrown at the end.
    func sweep() async throws {
        var firstFailure: (any Error)?
        func step<T>(_ body: () async throws -> T) async -> T? {
            do {
                return try await body()
            } catch {
                firstFailure = firstFailure ?? error
                return nil
            }
        }
        let rescued =
            await step {
                try await store.rescueExpiredLeases(now: now, splitAfter: configuration.splitAfterRescues)
            } ?? []
        if !rescued.isEmpty { EngineMetrics.leaseExpired(count: rescued.count) }
        for chunk in rescued {
            logger.info(
                "rescued an expired lease",
                metadata: [
                    "batch_id": "\(chunk.batchID)", "first_seq": "\(chunk.firstSeq)",
                    "unfinished": "\(chunk.unfinished)", "split": "\(chunk.split)",
                ])
        }
        let events = await step { try await store.enforceDeadlines(now: now) } ?? []
        _ = await step { try await store.prune(now: now, retention: configuration.retention, limit: 5_000) }
        _ = await step { try await sampleProgress() }
        _ = await step { try await fireDueSchedules() }
        if !rescued.isEmpty || !events.isEmpty { signalWork() }
        if let firstFailure { throw firstFailure }
    }
}
