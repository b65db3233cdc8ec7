import Foundation
import Logging
import TrancheStore

// The runner both hooks share (Preparer.swift, Finalizer.swift): a node
// claims a batch's step, runs the hook while renewing the lease, and
// records how it ended only if its lease is still the current one. A node
// that dies holding the lease leaves it to expire; another node then runs
// the hook again. So a hook runs at least once and its completion is
// recorded exactly once.

extension TrancheEngine {
    /// Until the drain, or until `round` returns false: runs `round`, then
    /// `wait`s. A round that fails is logged (as `failure`) and tried again
    /// after the wait.
    func repeatUntilDrained(
        _ failure: Logger.Message, round: () async throws -> Bool, wait: () async -> Void
    ) async {
        while !draining.hasFired && !Task.isCancelled {
            do {
                guard try await round() else { return }
            } catch let error where !Task.isCancelled {
                logger.warning(failure, metadata: ["error": "\(error)"])
            } catch {
                return
            }
            await wait()
        }
    }

    /// Runs `step` for batches of `types` until none is left to claim (or the
    /// node drains), one at a time: `hook` runs with the lease renewed every
    /// third of its duration, and `complete` records what it returned, or
    /// `failure(error)` when it threw. A hook canceled because the node
    /// stops records nothing: its lease expires and another node runs it.
    func runLeasedSteps<Step: LeasedStep, Outcome: Sendable>(
        _ step: Step, in steps: any LeasedStepStore, types: [String],
        hook: (StepLease<Step>) async throws -> (@Sendable () async throws -> Outcome),
        failure: (any Error) -> Outcome,
        complete: (StepLease<Step>, Outcome) async throws -> Bool
    ) async throws {
        while !draining.hasFired,
            let lease = try await steps.claimStep(
                step, owner: configuration.nodeID, types: types, leaseDuration: configuration.leaseDuration,
                now: now)
        {
            let body = try await hook(lease)
            let outcome: Outcome
            do {
                outcome = try await whileRenewing(lease, in: steps, body)
            } catch is CancellationError {
                return
            } catch {
                outcome = failure(error)
            }
            let metadata: Logger.Metadata = [
                "step": "\(step.kind)", "batch_id": "\(lease.batchID)", "attempt": "\(lease.attempt)",
            ]
            if try await complete(lease, outcome) {
                logger.debug("completed a batch's step", metadata: metadata)
            } else {
                logger.debug("lost a step's lease", metadata: metadata)
            }
        }
    }

    /// Runs `body`, renewing `lease` every third of the lease duration until it returns.
    func whileRenewing<Step: LeasedStep, T: Sendable>(
        _ lease: StepLease<Step>, in steps: any LeasedStepStore, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let duration = configuration.leaseDuration
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(bounded: duration / 3))
                    _ = try? await steps.renewStep(lease, leaseDuration: duration, now: self.now)
                }
                return nil
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let value = next { return value }
            }
            throw CancellationError()
        }
    }
}
