import Foundation
import Logging
import Synchronization
import TrancheStore

/// Items of a node's leased chunks that have not yet started. The node
/// keeps a reserve of them, as many as it has workers: when starting items
/// take the count below it (or a worker slot frees while it is below), the
/// claim loop is woken and leases the next chunk although every worker is
/// busy, so that the next items are at hand when the chunks in flight run
/// down (at concurrency 256, the tail of each chunk had cost a sixth of the
/// throughput). Items held back by a rate or a cap also count, so a node
/// does not lease more behind them.
final class UnstartedItems: Sendable {
    private let count = Atomic<Int>(0)
    /// The reserve: the node's workers.
    let reserve: Int
    private let whenLow: @Sendable () -> Void

    /// `whenLow` is called when items starting take the count below `reserve`.
    init(reserve: Int, whenLow: @escaping @Sendable () -> Void) {
        self.reserve = max(1, reserve)
        self.whenLow = whenLow
    }

    /// Fewer items wait to start than the reserve.
    var isLow: Bool { count.load(ordering: .relaxed) < reserve }

    func add(_ delta: Int) {
        let now = count.add(delta, ordering: .relaxed).newValue
        if delta < 0 && now < reserve && now &- delta >= reserve { whenLow() }
    }
}

/// What a node keeps about a batch it runs: its options, its bound strategy
/// and the limits its items pass.
struct BatchBinding: Sendable {
    var options: BatchOptions
    var bound: BoundStrategy
    var pacer: Pacer
}

extension TrancheEngine {
    /// The claim loop: leases chunks while this node has free workers or
    /// fewer items waiting to start than its reserve (``UnstartedItems``), and
    /// sleeps until woken (new work, a chunk finished, a worker freed, a
    /// retry due) otherwise.
    /// A full node still claims a chunk of a tenant it runs nothing of (up
    /// to as many extra chunks as chunk slots): that tenant's items then
    /// queue for the next free worker instead of waiting for a whole chunk
    /// of another tenant's to end.
    func schedule() async {
        let maxChunks = max(2, configuration.workers)
        await withDiscardingTaskGroup { group in
            while !draining.hasFired && !Task.isCancelled {
                let inFlight = chunksInFlight.load(ordering: .relaxed)
                let full = inFlight >= maxChunks || (workerSlots.available == 0 && !unstartedItems.isLow)
                if full && inFlight >= 2 * maxChunks {
                    await claimWakeup.wait(timeout: configuration.sweepInterval)
                    continue
                }
                var claim = ChunkClaim(owner: configuration.nodeID, leaseDuration: configuration.leaseDuration)
                if full { claim.excludingTenants = tenantsInFlight.withLock { Set($0.keys) } }
                claim.sizes = await chunkSizes()
                let lease: ChunkLease?
                do {
                    lease = try await store.claimChunk(claim, now: now)
                } catch let error where Task.isCancelled || draining.hasFired {
                    // The node is stopping: the claim's transaction rolled back.
                    logger.debug("claim stopped", metadata: ["error": "\(error)"])
                    continue
                } catch {
                    logger.warning("claiming a chunk failed", metadata: ["error": "\(error)"])
                    await claimWakeup.wait(timeout: configuration.sweepInterval)
                    continue
                }
                guard let lease else {
                    await claimWakeup.wait(timeout: full ? configuration.sweepInterval : await idleSleep())
                    continue
                }
                EngineMetrics.runningChunks(chunksInFlight.add(1, ordering: .relaxed).newValue)
                tenantsInFlight.withLock { $0[lease.tenant, default: 0] += 1 }
                // Counted before the next claim looks at the free workers.
                let run = ChunkRun(lease: lease, unstarted: unstartedItems)
                group.addTask {
                    await self.runChunk(run)
                    self.tenantsInFlight.withLock { tenants in
                        let left = tenants[lease.tenant, default: 1] - 1
                        tenants[lease.tenant] = left > 0 ? left : nil
                    }
                    EngineMetrics.runningChunks(self.chunksInFlight.subtract(1, ordering: .relaxed).newValue)
                    self.claimWakeup.signal()
                }
                eventWakeup.signal()
            }
        }
    }

    /// Items waiting for a free worker on this node (tests watch the queue).
    package var itemsWaitingForWorkers: Int { workerSlots.waiting }

    /// Seconds the claim loop sleeps when nothing is claimable: until the
    /// next retry is due, at most the sweep interval (or the slow poll behind
    /// a store's wake-ups).
    private func idleSleep() async -> Double {
        var timeout = store is any WorkNotifying ? configuration.notifiedIdlePoll : configuration.sweepInterval
        if let due = try? await store.nextDueTime() {
            timeout = min(timeout, max(0.002, due.timeIntervalSince(now)))
        }
        return timeout
    }

    /// Wakes the claim loop and the event pump whenever another process
    /// says there is work, until the claim loop stops.
    func listen(to notifying: any WorkNotifying) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in notifying.workNotifications() {
                    if self.stopped.hasFired { return }
                    self.signalWork()
                }
            }
            group.addTask { await self.stopped.wait() }
            await group.next()
            group.cancelAll()
        }
    }

    func signalWork() {
        claimWakeup.signal()
        eventWakeup.signal()
        prepareWakeup.signal()
    }

    /// The batch's options, strategy and limits on this node, made on first use.
    func binding(for id: BatchID) async throws -> BatchBinding {
        if let binding = bindings.withLock({ $0[id] }) { return binding }
        guard let record = try await store.batch(id) else { throw StoreError(.batchNotFound, "no batch \(id)") }
        guard let strategy = strategies[record.type] else {
            throw EngineError(.unknownStrategy, "no strategy '\(record.type)' on node \(configuration.nodeID)")
        }
        let bound = try strategy.bind(context: record.context)
        // Stored options were checked at submit, but a row may hold anything
        // (or limits may have moved since): the pacer holds them within the
        // limits, so a permit count or a rate can neither hang the batch nor trap.
        let binding = BatchBinding(options: record.options, bound: bound, pacer: await makePacer(for: record))
        return bindings.withLock { bindings in
            if let existing = bindings[id] { return existing }
            if bindings.count > 10_000 { bindings.removeAll() }
            bindings[id] = binding
            return binding
        }
    }

    /// Forgets an ended batch's binding.
    func unbind(_ id: BatchID) {
        _ = bindings.withLock { $0.removeValue(forKey: id) }
        chunkSizer.forget(id)
    }
}
