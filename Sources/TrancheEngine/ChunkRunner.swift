import Foundation
import Logging
import Synchronization
import TrancheStore

/// The shared state of one leased chunk while it runs.
final class ChunkRun: Sendable {
    private struct State {
        var outcomes: [ItemOutcome] = []
        var failBatch: String?
        var leaseLost = false
        var outstanding = 0
        var feederDone = false
        /// Outcomes recorded, and those that did not succeed (for ``ChunkSizing``).
        var recorded = 0
        var unsuccessful = 0
        /// Items not yet admitted, counted in the node's ``UnstartedItems``.
        var toStart = 0
    }

    let lease: ChunkLease
    /// When the chunk was leased.
    let began = ContinuousClock.now
    private let state = Mutex(State())
    /// No more items may start: the batch was paused or ended, an item
    /// failed it, the lease was lost, or the node drains. Running items go on.
    let stopStarting = OneShotEvent()
    /// Every started item has finished and no more will start.
    let finished = OneShotEvent()
    /// Running items must stop now (batch ended, lease lost, drain grace
    /// over); their results are dropped. Fired by ``abortRunning()``.
    let abort = OneShotEvent()
    /// The running attempts and their deadlines.
    let attempts = AttemptWatch()
    /// The node's count of leased items not yet admitted.
    private let unstarted: UnstartedItems

    /// Counts the chunk's items in `unstarted` until they start.
    init(lease: ChunkLease, unstarted: UnstartedItems) {
        self.lease = lease
        self.unstarted = unstarted
        state.withLock { $0.toStart = lease.items.count }
        unstarted.add(lease.items.count)
    }

    var leaseLost: Bool { state.withLock { $0.leaseLost } }

    func markLeaseLost() {
        state.withLock { $0.leaseLost = true }
        stopStarting.fire()
        abortRunning()
    }

    /// Stops the running items now: their attempts are canceled and dropped.
    func abortRunning() {
        abort.fire()
        attempts.abortAll()
    }

    /// Acts on the batch's status as a checkpoint read it: a paused batch
    /// starts no more items (running ones finish and are written); an ended
    /// one also stops its running items, whose work no longer counts.
    func observe(_ status: BatchStatus) {
        if status == .paused || status.isEnded { stopStarting.fire() }
        if status.isEnded { abortRunning() }
    }

    func record(_ outcome: ItemOutcome, failBatch: String?) {
        let failsBatch = state.withLock { state -> Bool in
            state.outcomes.append(outcome)
            state.recorded += 1
            if outcome.status != .succeeded { state.unsuccessful += 1 }
            guard let failBatch, state.failBatch == nil else { return false }
            state.failBatch = failBatch
            return true
        }
        if failsBatch { stopStarting.fire() }
    }

    /// Items that reached an outcome so far, and those that did not succeed.
    var tally: (items: Int, failures: Int) { state.withLock { ($0.recorded, $0.unsuccessful) } }

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

    func itemStarted() {
        let counted = state.withLock { state -> Bool in
            state.outstanding += 1
            guard state.toStart > 0 else { return false }
            state.toStart -= 1
            return true
        }
        if counted { unstarted.add(-1) }
    }

    /// No more of the chunk's items wait to start (all started, the rest
    /// will not, or a chunk strategy holds one slot for them all).
    func noneToStart() {
        let left = state.withLock { state in
            defer { state.toStart = 0 }
            return state.toStart
        }
        if left > 0 { unstarted.add(-left) }
    }

    func itemFinished() {
        let done = state.withLock { state -> Bool in
            state.outstanding -= 1
            return state.feederDone && state.outstanding == 0
        }
        if done { finishRun() }
    }

    func feederFinished() {
        noneToStart()
        let done = state.withLock { state -> Bool in
            state.feederDone = true
            return state.outstanding == 0
        }
        if done { finishRun() }
    }

    private func finishRun() {
        attempts.close()
        finished.fire()
    }
}

extension TrancheEngine {
    /// Runs one leased chunk: its items under their limits, a heartbeat that
    /// checkpoints outcomes, and a final checkpoint that ends the lease.
    func runChunk(_ run: ChunkRun) async {
        defer { run.noneToStart() }
        let lease = run.lease
        let binding: BatchBinding
        do {
            binding = try await self.binding(for: lease.batchID)
        } catch let error where error is CancellationError || Task.isCancelled {
            // The engine is stopping, not failing: the batch goes on, the
            // chunk's items stay pending for the next claim.
            logger.debug("chunk not started: the engine stopped", metadata: ["batch_id": "\(lease.batchID)"])
            await finish(run, failBatch: nil)
            return
        } catch {
            logger.error(
                "cannot run chunk", metadata: ["batch_id": "\(lease.batchID)", "error": "\(error)"])
            await finish(run, failBatch: "the batch cannot run on this node: \(error)")
            return
        }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.heartbeat(run) }
            group.addTask { await self.watchDrain(run) }
            if let processChunk = binding.bound.processChunk {
                await runWhole(run, binding: binding, processChunk: processChunk)
            } else {
                group.addTask { await run.attempts.sweep() }
                await startItems(run, binding: binding, in: &group)
            }
            run.feederFinished()
        }
        await finish(run, failBatch: nil)
        learnChunkSize(from: run, options: binding.options)
    }

    /// Starts the chunk's items one by one as their limits admit them, until
    /// all started or the chunk stops starting.
    private func startItems(_ run: ChunkRun, binding: BatchBinding, in group: inout DiscardingTaskGroup) async {
        let lease = run.lease
        for item in lease.items {
            if run.stopStarting.hasFired || draining.hasFired || Task.isCancelled { return }
            guard await binding.pacer.admit(clock: monotonic, unless: run.stopStarting) else { return }
            if draining.hasFired {
                await binding.pacer.release()
                return
            }
            run.itemStarted()
            group.addTask {
                let began = ContinuousClock.now
                let result = await self.attempt(item, lease: lease, binding: binding, attempts: run.attempts)
                if let result {
                    await binding.pacer.observe(result, latency: began.duration(to: .now), wall: self.now)
                    let (outcome, failBatch) = self.outcome(for: item, result: result, options: binding.options)
                    run.record(binding.pacer.retimed(outcome, after: result, now: self.now), failBatch: failBatch)
                }
                // After the record: an item that fails the batch stops the next one from starting.
                await binding.pacer.release()
                run.itemFinished()
            }
        }
    }

    /// A chunk strategy: the whole chunk in one call, holding one worker slot.
    private func runWhole(
        _ run: ChunkRun, binding: BatchBinding, processChunk: @escaping @Sendable ([ItemInput]) async -> [ItemResult]
    ) async {
        let lease = run.lease
        guard await binding.pacer.admit(clock: monotonic, unless: run.stopStarting) else { return }
        run.noneToStart()
        let inputs = lease.items.map {
            ItemInput(batchID: lease.batchID, seq: $0.seq, payload: $0.payload, attempt: $0.nextAttempt)
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
        await binding.pacer.release()
        guard let results, results.count == lease.items.count else { return }
        for (item, result) in zip(lease.items, results) {
            let (outcome, failBatch) = outcome(for: item, result: result, options: binding.options)
            run.record(outcome, failBatch: failBatch)
        }
    }

    /// One attempt of one item, bounded by the item timeout; nil when the
    /// chunk was aborted (the item is not written: it runs again later, or
    /// its ended batch cancels it). An attempt that times out or is aborted
    /// has its task canceled; the chunk's ``AttemptWatch`` does both.
    func attempt(_ item: LeasedItem, lease: ChunkLease, binding: BatchBinding, attempts: AttemptWatch) async
        -> ItemResult?
    {
        let input = ItemInput(batchID: lease.batchID, seq: item.seq, payload: item.payload, attempt: item.nextAttempt)
        let timeout = binding.options.itemTimeout
        let process = binding.bound.process
        let started = ContinuousClock.now
        defer { EngineMetrics.attempt(type: lease.type, duration: started.duration(to: .now)) }
        let (result, ending) = await attempts.run(until: started + .seconds(bounded: timeout)) {
            await process(input)
        }
        switch ending {
        case .timedOut: return .failure(.timedOut(after: timeout))
        case .aborted: return nil
        // The item's own task canceled (the engine stops): dropped like an abort.
        case nil: return Task.isCancelled ? nil : result
        }
    }

    /// Turns an attempt's result into the stored outcome, by the retry rules.
    func outcome(for item: LeasedItem, result: ItemResult, options: BatchOptions) -> (ItemOutcome, String?) {
        let attempt = item.nextAttempt
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
            if case .retry(let delay) = disposition { nextAttemptAt = now.addingTimeInterval(delay) }
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

    /// Every `checkpointInterval` until the chunk finishes: a checkpoint.
    func heartbeat(_ run: ChunkRun) async {
        while !Task.isCancelled {
            await sleep(configuration.checkpointInterval, orUntil: run.finished)
            if run.finished.hasFired || Task.isCancelled { return }
            guard await checkpoint(run) else { return }
        }
    }

    /// Writes the outcomes so far and extends the lease; learns whether the
    /// batch was paused or ended. False when the lease was lost.
    private func checkpoint(_ run: ChunkRun) async -> Bool {
        let (outcomes, failBatch) = run.takeOutcomes()
        do {
            let result = try await store.checkpoint(
                run.lease, outcomes: outcomes, finish: false, failBatch: failBatch,
                leaseDuration: configuration.leaseDuration, now: now)
            run.observe(result.batchStatus)
            EngineMetrics.record(outcomes, type: run.lease.type)
            publishProgress(run.lease.batchID, result)
            await refreshSettings(of: run.lease.batchID)
            return true
        } catch let error as StoreError where error.code == .leaseLost {
            logger.warning(
                "lease lost; abandoning chunk",
                metadata: ["batch_id": "\(run.lease.batchID)", "chunk": "\(run.lease.chunkID)"])
            run.markLeaseLost()
            return false
        } catch {
            run.restore(outcomes)
            logger.warning("checkpoint failed", metadata: ["error": "\(error)"])
            return true
        }
    }

    /// On drain: starts no more items, lets running ones finish within the
    /// grace period, then aborts them.
    func watchDrain(_ run: ChunkRun) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.draining.wait() }
            group.addTask { await run.finished.wait() }
            await group.next()
            group.cancelAll()
        }
        guard !run.finished.hasFired else { return }
        run.stopStarting.fire()
        await sleep(configuration.drainGracePeriod, orUntil: run.finished)
        if !run.finished.hasFired { run.abortRunning() }
    }

    /// The final checkpoint: writes what is left and ends the lease. Items
    /// that did not run stay pending, to be leased again (or are canceled
    /// with their ended batch).
    func finish(_ run: ChunkRun, failBatch extraFailure: String?) async {
        guard !run.leaseLost else { return }
        let (outcomes, failBatch) = run.takeOutcomes()
        // Tries while the lease may still hold: a database restart loses nothing.
        let deadline = ContinuousClock.now + .seconds(bounded: configuration.leaseDuration)
        var attempt = 0
        while ContinuousClock.now < deadline {
            attempt += 1
            do {
                let result = try await store.checkpoint(
                    run.lease, outcomes: outcomes, finish: true, failBatch: failBatch ?? extraFailure,
                    leaseDuration: configuration.leaseDuration, now: now)
                EngineMetrics.record(outcomes, type: run.lease.type)
                publishProgress(run.lease.batchID, result, force: result.batchStatus.isEnded)
                await savePace(of: run.lease.batchID)
                if result.batchStatus.isEnded { unbind(run.lease.batchID) }
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
}
