import Foundation
import Logging
import Synchronization
import TrancheStore

/// What a node keeps about a batch it runs: its options, its bound strategy
/// and the limits its items pass.
struct BatchBinding: Sendable {
    var options: BatchOptions
    var bound: BoundStrategy
    var pacer: Pacer
}

/// The shared state of one leased chunk while it runs.
final class ChunkRun: Sendable {
    private struct State {
        var outcomes: [ItemOutcome] = []
        var failBatch: String?
        var stopStarting = false
        var leaseLost = false
        var outstanding = 0
        var feederDone = false
    }

    let lease: ChunkLease
    private let state = Mutex(State())
    /// Every started item has finished and no more will start.
    let finished = OneShotEvent()
    /// Running items must stop now (lease lost, drain grace over).
    let abort = OneShotEvent()

    init(lease: ChunkLease) {
        self.lease = lease
    }

    var shouldStopStarting: Bool { state.withLock { $0.stopStarting || $0.leaseLost } }
    var leaseLost: Bool { state.withLock { $0.leaseLost } }

    func stopStarting() { state.withLock { $0.stopStarting = true } }

    func markLeaseLost() {
        state.withLock { $0.leaseLost = true }
        abort.fire()
    }

    func record(_ outcome: ItemOutcome, failBatch: String?) {
        state.withLock { state in
            state.outcomes.append(outcome)
            if let failBatch, state.failBatch == nil {
                state.failBatch = failBatch
                state.stopStarting = true
            }
        }
    }

    func takeOutcomes() -> (outcomes: [ItemOutcome], failBatch: String?) {
        state.withLock { state in
            defer { state.outcomes = [] }
            return (state.outcomes, state.failBatch)
        }
    }

    /// Puts back outcomes a failed checkpoint did not write.
    func restore(_ outcomes: [ItemOutcome]) {
        state.withLock { $0.outcomes.insert(contentsOf: outcomes, at: 0) }
    }

    func itemStarted() { state.withLock { $0.outstanding += 1 } }

    func itemFinished() {
        let done = state.withLock { state -> Bool in
            state.outstanding -= 1
            return state.feederDone && state.outstanding == 0
        }
        if done { finished.fire() }
    }

    func feederFinished() {
        let done = state.withLock { state -> Bool in
            state.feederDone = true
            return state.outstanding == 0
        }
        if done { finished.fire() }
    }
}

extension TrancheEngine {
    /// The claim loop: leases chunks while this node has free workers, and
    /// sleeps until woken (new work, a chunk finished, a retry due) otherwise.
    func schedule() async {
        let maxChunks = max(2, configuration.workers)
        await withDiscardingTaskGroup { group in
            while !draining.hasFired && !Task.isCancelled {
                if chunksInFlight.load(ordering: .relaxed) >= maxChunks || workerSlots.available == 0 {
                    await claimWakeup.wait(timeout: configuration.sweepInterval)
                    continue
                }
                let lease: ChunkLease?
                do {
                    lease = try await store.claimChunk(
                        owner: configuration.nodeID, leaseDuration: configuration.leaseDuration, now: Date())
                } catch {
                    logger.warning("claiming a chunk failed", metadata: ["error": "\(error)"])
                    await claimWakeup.wait(timeout: configuration.sweepInterval)
                    continue
                }
                if let lease {
                    EngineMetrics.runningChunks(chunksInFlight.add(1, ordering: .relaxed).newValue)
                    group.addTask {
                        await self.runChunk(lease)
                        EngineMetrics.runningChunks(self.chunksInFlight.subtract(1, ordering: .relaxed).newValue)
                        self.claimWakeup.signal()
                    }
                    eventWakeup.signal()
                    continue
                }
                var timeout = store is any WorkNotifying ? configuration.notifiedIdlePoll : configuration.sweepInterval
                if let due = try? await store.nextDueTime() {
                    timeout = min(timeout, max(0.002, due.timeIntervalSinceNow))
                }
                await claimWakeup.wait(timeout: timeout)
            }
        }
    }

    func binding(for id: BatchID) async throws -> BatchBinding {
        if let binding = bindings.withLock({ $0[id] }) { return binding }
        guard let record = try await store.batch(id) else { throw StoreError(.batchNotFound, "no batch \(id)") }
        guard let strategy = strategies[record.type] else {
            throw EngineError(.unknownStrategy, "no strategy '\(record.type)' on node \(configuration.nodeID)")
        }
        let bound = try strategy.bind(context: record.context)
        let options = record.options
        var semaphores = [
            AsyncSemaphore(permits: min(options.concurrency, options.rateLimit?.maxConcurrent ?? Int.max))
        ]
        if let typeSemaphore = typeSemaphores[record.type] { semaphores.append(typeSemaphore) }
        semaphores.append(workerSlots)
        var buckets: [SharedBucket] = []
        if let rate = options.rateLimit?.rate { buckets.append(SharedBucket(rate: rate)) }
        if let typeBucket = typeBuckets[record.type] { buckets.append(typeBucket) }
        let binding = BatchBinding(
            options: options, bound: bound, pacer: Pacer(semaphores: semaphores, buckets: buckets))
        return bindings.withLock { bindings in
            if let existing = bindings[id] { return existing }
            if bindings.count > 10_000 { bindings.removeAll() }
            bindings[id] = binding
            return binding
        }
    }

    /// Runs one leased chunk: its items under their limits, a heartbeat that
    /// checkpoints outcomes, and a final checkpoint that ends the lease.
    func runChunk(_ lease: ChunkLease) async {
        let binding: BatchBinding
        do {
            binding = try await self.binding(for: lease.batchID)
        } catch {
            logger.error(
                "cannot run chunk", metadata: ["batch_id": "\(lease.batchID)", "error": "\(error)"])
            await finish(
                ChunkRun(lease: lease), failBatch: "the batch cannot run on this node: \(error)")
            return
        }
        let run = ChunkRun(lease: lease)
        await withDiscardingTaskGroup { group in
            group.addTask { await self.heartbeat(run) }
            group.addTask { await self.watchDrain(run) }
            if let processChunk = binding.bound.processChunk {
                await runWhole(run, binding: binding, processChunk: processChunk)
            } else {
                for item in lease.items {
                    if run.shouldStopStarting || draining.hasFired || Task.isCancelled { break }
                    guard await binding.pacer.admit(clock: clock) else { break }
                    if run.shouldStopStarting || draining.hasFired {
                        binding.pacer.release()
                        break
                    }
                    run.itemStarted()
                    group.addTask {
                        let result = await self.attempt(item, lease: lease, binding: binding, abort: run.abort)
                        binding.pacer.release()
                        if let result {
                            let (outcome, failBatch) = self.outcome(for: item, result: result, options: binding.options)
                            run.record(outcome, failBatch: failBatch)
                        }
                        run.itemFinished()
                    }
                }
            }
            run.feederFinished()
        }
        await finish(run, failBatch: nil)
    }

    /// A chunk strategy: the whole chunk in one call, holding one worker slot.
    private func runWhole(
        _ run: ChunkRun, binding: BatchBinding, processChunk: @escaping @Sendable ([ItemInput]) async -> [ItemResult]
    ) async {
        let lease = run.lease
        guard await binding.pacer.admit(clock: clock) else { return }
        defer { binding.pacer.release() }
        let inputs = lease.items.map {
            ItemInput(batchID: lease.batchID, seq: $0.seq, payload: $0.payload, attempt: $0.attempts + 1)
        }
        let results: [ItemResult]? = await withTaskGroup(of: [ItemResult]?.self) { group in
            group.addTask { await processChunk(inputs) }
            group.addTask {
                await run.abort.wait()
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let results, results.count == lease.items.count else { return }
        for (item, result) in zip(lease.items, results) {
            let (outcome, failBatch) = outcome(for: item, result: result, options: binding.options)
            run.record(outcome, failBatch: failBatch)
        }
    }

    /// One attempt of one item, bounded by the item timeout; nil when the
    /// chunk was aborted (the item stays pending and runs again later).
    func attempt(_ item: LeasedItem, lease: ChunkLease, binding: BatchBinding, abort: OneShotEvent) async
        -> ItemResult?
    {
        enum Race: Sendable {
            case done(ItemResult)
            case timedOut
            case aborted
        }
        let input = ItemInput(batchID: lease.batchID, seq: item.seq, payload: item.payload, attempt: item.attempts + 1)
        let timeout = binding.options.itemTimeout
        let process = binding.bound.process
        let started = ContinuousClock.now
        defer { EngineMetrics.attempt(type: lease.type, duration: started.duration(to: .now)) }
        let first: Race = await withTaskGroup(of: Race.self) { group in
            group.addTask { .done(await process(input)) }
            group.addTask {
                do {
                    try await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
                    return .timedOut
                } catch {
                    return .aborted
                }
            }
            group.addTask {
                await abort.wait()
                return .aborted
            }
            let first = await group.next() ?? .aborted
            group.cancelAll()
            return first
        }
        switch first {
        case .done(let result): return result
        case .timedOut: return .failure(.timedOut(after: timeout))
        case .aborted: return nil
        }
    }

    /// Turns an attempt's result into the stored outcome, by the retry rules.
    func outcome(for item: LeasedItem, result: ItemResult, options: BatchOptions) -> (ItemOutcome, String?) {
        let attempt = item.attempts + 1
        switch result {
        case .success(let output):
            return (
                ItemOutcome(
                    seq: item.seq, previousStatus: item.status, attempt: attempt, status: .succeeded,
                    output: output.text == "null" ? nil : output),
                nil
            )
        case .failure(let error):
            let disposition = ItemDisposition.after(
                attempt: attempt, error: error, options: options, random: Double.random(in: 0..<1))
            var nextAttemptAt: Date?
            if case .retry(let delay) = disposition { nextAttemptAt = Date(timeIntervalSinceNow: delay) }
            let failBatch =
                disposition == .fatal ? "fatal error on item \(item.seq): \(error.code): \(error.message)" : nil
            return (
                ItemOutcome(
                    seq: item.seq, previousStatus: item.status, attempt: attempt, status: disposition.status,
                    error: error, nextAttemptAt: nextAttemptAt),
                failBatch
            )
        }
    }

    /// Every `checkpointInterval`: writes the outcomes so far and extends the
    /// lease; learns whether the batch ended or the lease was lost.
    func heartbeat(_ run: ChunkRun) async {
        while !Task.isCancelled {
            await sleep(configuration.checkpointInterval, orUntil: run.finished)
            if run.finished.hasFired || Task.isCancelled { return }
            let (outcomes, failBatch) = run.takeOutcomes()
            do {
                let result = try await store.checkpoint(
                    run.lease, outcomes: outcomes, finish: false, failBatch: failBatch,
                    leaseDuration: configuration.leaseDuration, now: Date())
                if result.batchStatus.isEnded { run.stopStarting() }
                EngineMetrics.record(outcomes, type: run.lease.type)
                publishProgress(run.lease.batchID, result)
            } catch let error as StoreError where error.code == .leaseLost {
                logger.warning(
                    "lease lost; abandoning chunk",
                    metadata: ["batch_id": "\(run.lease.batchID)", "chunk": "\(run.lease.chunkID)"])
                run.markLeaseLost()
                return
            } catch {
                run.restore(outcomes)
                logger.warning("checkpoint failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// On drain: lets running items finish within the grace period, then aborts them.
    func watchDrain(_ run: ChunkRun) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.draining.wait() }
            group.addTask { await run.finished.wait() }
            await group.next()
            group.cancelAll()
        }
        guard !run.finished.hasFired else { return }
        await sleep(configuration.drainGracePeriod, orUntil: run.finished)
        if !run.finished.hasFired { run.abort.fire() }
    }

    /// The final checkpoint: writes what is left and ends the lease. Items
    /// that did not run stay pending, to be leased again.
    func finish(_ run: ChunkRun, failBatch extraFailure: String?) async {
        guard !run.leaseLost else { return }
        let (outcomes, failBatch) = run.takeOutcomes()
        // Tries while the lease may still hold: a database restart loses nothing.
        let deadline = ContinuousClock.now + .milliseconds(Int(configuration.leaseDuration * 1000))
        var attempt = 0
        while ContinuousClock.now < deadline {
            attempt += 1
            do {
                let result = try await store.checkpoint(
                    run.lease, outcomes: outcomes, finish: true, failBatch: failBatch ?? extraFailure,
                    leaseDuration: configuration.leaseDuration, now: Date())
                EngineMetrics.record(outcomes, type: run.lease.type)
                publishProgress(run.lease.batchID, result, force: result.batchStatus.isEnded)
                if result.batchStatus.isEnded { _ = bindings.withLock { $0.removeValue(forKey: run.lease.batchID) } }
                eventWakeup.signal()
                return
            } catch let error as StoreError where error.code == .leaseLost {
                logger.warning("lease lost before the final checkpoint", metadata: ["chunk": "\(run.lease.chunkID)"])
                return
            } catch _ where Task.isCancelled {
                // Canceled, not drained: the lease expires and the chunk is rescued.
                return
            } catch {
                logger.warning("final checkpoint failed", metadata: ["error": "\(error)", "attempt": "\(attempt)"])
                try? await Task.sleep(for: .milliseconds(min(2_000, 200 * attempt)))
            }
        }
        // The lease expires and the chunk is rescued: its items run again.
    }

    func publishProgress(_ id: BatchID, _ result: CheckpointResult, force: Bool = false) {
        let now = clock.now
        meters.withLock { meters in
            if meters[id] == nil, meters.count > 10_000 { meters.removeAll() }
            meters[id, default: ProgressMeter(window: 10)].record(
                done: result.counts.processed, at: now.secondsSinceReference)
        }
        guard hub.hasSubscribers else { return }
        let due = progressTimes.withLock { times -> Bool in
            if !force, let last = times[id],
                last.duration(to: now) < .milliseconds(Int(configuration.progressInterval * 1000))
            {
                return false
            }
            times[id] = now
            return true
        }
        guard due else { return }
        let counts = (try? JSONText(encoding: result.counts).value()) ?? .null
        hub.publish([
            BatchEvent(
                id: 0, batchID: id, type: .progress, at: Date(),
                data: ["status": .string(result.batchStatus.rawValue), "counts": counts])
        ])
    }

    /// Sleeps `seconds` or until `event` fires.
    func sleep(_ seconds: Double, orUntil event: OneShotEvent) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: .milliseconds(Int(seconds * 1000))) }
            group.addTask { await event.wait() }
            await group.next()
            group.cancelAll()
        }
    }

    /// The maintenance loop: rescues expired leases, enforces deadlines,
    /// finishes batches and prunes, every `sweepInterval`, until the drain.
    func maintain() async {
        let host = ProcessInfo.processInfo.hostName
        let pid = Int(ProcessInfo.processInfo.processIdentifier)
        while !draining.hasFired && !Task.isCancelled {
            do {
                try await store.recordHeartbeat(
                    NodeRecord(
                        id: configuration.nodeID, role: configuration.role, host: host, pid: pid,
                        workers: configuration.workers, startedAt: startedAt, heartbeatAt: Date()))
                // Only the leader sweeps; the others stand by to take over.
                guard
                    try await store.acquireLeadership(
                        node: configuration.nodeID, for: configuration.leaderTerm, now: Date())
                else {
                    await sleep(configuration.sweepInterval, orUntil: draining)
                    continue
                }
                let rescued = try await store.rescueExpiredLeases(
                    now: Date(), splitAfter: configuration.splitAfterRescues)
                if !rescued.isEmpty { EngineMetrics.leaseExpired(count: rescued.count) }
                for chunk in rescued {
                    logger.info(
                        "rescued an expired lease",
                        metadata: [
                            "batch_id": "\(chunk.batchID)", "first_seq": "\(chunk.firstSeq)",
                            "unfinished": "\(chunk.unfinished)", "split": "\(chunk.split)",
                        ])
                }
                let events = try await store.enforceDeadlines(now: Date())
                _ = try await store.prune(now: Date(), limit: 5_000)
                if !rescued.isEmpty || !events.isEmpty { signalWork() }
            } catch let error where !Task.isCancelled {
                logger.warning("maintenance failed", metadata: ["error": "\(error)"])
            } catch {
                return
            }
            await sleep(configuration.sweepInterval, orUntil: draining)
        }
    }

    /// Reads stored events in order and hands them to subscribers.
    func pumpEvents(after firstID: Int64) async {
        var lastID = firstID
        while true {
            let stop = stopped.hasFired
            do {
                var from = min(lastID, hub.oldestCursor ?? lastID)
                while true {
                    let events = try await store.allEvents(afterID: from, limit: 1_000)
                    guard let last = events.last else { break }
                    from = last.id
                    lastID = max(lastID, last.id)
                    for event in events
                    where event.type == .completed || event.type == .failed || event.type == .canceled {
                        _ = bindings.withLock { $0.removeValue(forKey: event.batchID) }
                    }
                    hub.publish(events)
                }
            } catch let error where !Task.isCancelled {
                logger.warning("reading events failed", metadata: ["error": "\(error)"])
            } catch {
                return
            }
            if stop || Task.isCancelled { return }
            await eventWakeup.wait(timeout: 1)
        }
    }
}
