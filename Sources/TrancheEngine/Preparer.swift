import Foundation
import Logging
import TrancheStore

// Strategy `prepare` hooks: a batch of a type with the hook gets a pending
// prepare step when it is created, and the transaction that confirms it
// makes it `preparing`, which no chunk claim takes. A node leases the step
// (like a chunk), runs the hook while renewing the lease, and records the
// outcome only if its lease is still the current one: the batch then becomes
// `confirmed` (or fails). A node that dies holding the lease leaves it to
// expire; another node then runs the hook again. So `prepare` runs at least
// once and its completion is recorded exactly once.

extension TrancheEngine {
    /// The types whose strategy has a `prepare` hook on this node.
    var preparingTypes: [String] {
        strategies.values.filter { $0.prepareBatch != nil }.map(\.type).sorted()
    }

    /// Tells the store, once per engine, which types need preparing (and
    /// which of this node's types do not). Every create path of the engine
    /// calls it first; a caller that stores a batch from
    /// ``prepareBatch(_:items:)`` itself calls it before.
    public func registerPrepareTypes() async throws {
        guard let preparations = store as? any PrepareStore, !prepareTypesRegistered.withLock({ $0 }) else { return }
        let without = strategies.values.filter { $0.prepareBatch == nil }.map(\.type).sorted()
        try await preparations.registerPrepareTypes(preparingTypes, without: without)
        prepareTypesRegistered.withLock { $0 = true }
    }

    /// Until the drain: prepares batches of this node's hooked types as
    /// they are confirmed (woken by new work, and every `sweepInterval`).
    func prepareBatches() async {
        guard let preparations = store as? any PrepareStore else { return }
        while !draining.hasFired && !Task.isCancelled {
            do {
                try await registerPrepareTypes()
                guard !preparingTypes.isEmpty else { return }
                try await prepareRound(preparations)
            } catch let error where !Task.isCancelled {
                logger.warning("preparing failed", metadata: ["error": "\(error)"])
            } catch {
                return
            }
            await prepareWakeup.wait(timeout: configuration.sweepInterval)
        }
    }

    /// Prepares batches until none is left to claim (or the node drains).
    func prepareRound(_ preparations: any PrepareStore) async throws {
        while !draining.hasFired,
            let lease = try await preparations.claimPreparation(
                owner: configuration.nodeID, types: preparingTypes, leaseDuration: configuration.leaseDuration,
                now: now)
        {
            try await prepare(lease, in: preparations)
        }
    }

    /// Runs the hook for one leased batch, renewing the lease meanwhile, and
    /// records how it ended (fenced on the lease). A generating strategy's
    /// batch is sealed once the hook returns, before the completion.
    func prepare(_ lease: PreparationLease, in preparations: any PrepareStore) async throws {
        guard let hook = strategies[lease.type]?.prepareBatch, let record = try await store.batch(lease.batchID) else {
            _ = try await preparations.completePreparation(lease, .prepared(preview: nil), now: now)
            return
        }
        let open = !record.sealed && !lease.dryRun
        let batch = PreparingBatch(
            id: record.id, type: record.type, owner: record.owner, dryRun: lease.dryRun, isOpen: open,
            total: record.counts.total, cursor: record.cursor, attempt: lease.attempt
        ) { [self] startSeq, items, cursor in
            guard open else {
                throw StoreError(
                    .invalidAppend, "batch \(record.id) takes no items from prepare: it is sealed or a dry run")
            }
            return try await append(to: record.id, startSeq: startSeq, items: items, cursor: cursor).total
        }
        let outcome: PreparationOutcome
        do {
            let preview = try await whileRenewingLease(
                {
                    _ = try? await preparations.renewPreparation(
                        lease, leaseDuration: self.configuration.leaseDuration, now: self.now)
                },
                { try await hook(batch, record.context) })
            if open { _ = try await store.seal(record.id, at: now) }
            outcome = .prepared(preview: try preview.map { try JSONText(encoding: $0) })
        } catch is CancellationError {
            return  // The node stops: the lease expires and another node prepares.
        } catch {
            let reason = ItemError.sanitizing(error)
            outcome = .failed(reason: "\(reason.code): \(reason.message)")
        }
        if try await preparations.completePreparation(lease, outcome, now: now) {
            logger.debug("prepared a batch", metadata: ["batch_id": "\(lease.batchID)", "attempt": "\(lease.attempt)"])
            signalWork()
        } else {
            logger.debug("lost a prepare lease", metadata: ["batch_id": "\(lease.batchID)"])
        }
    }

    /// The batch's prepare step (its state and `preview`), nil when its
    /// strategy has no `prepare` hook or the store keeps none.
    public func preparation(of id: BatchID) async throws -> PreparationRecord? {
        guard let preparations = store as? any PrepareStore else { return nil }
        return try await preparations.preparation(of: id)
    }

    /// Refuses to confirm the dry run of a generating strategy: its items
    /// come from `prepare` on a real run, so it is submitted again instead.
    func checkConfirmable(dryRun record: BatchRecord) throws {
        guard strategies[record.type]?.generatesItems == true else { return }
        throw StoreError(
            .conflict,
            "batch \(record.id) is a dry run of '\(record.type)', whose items come from its prepare hook; "
                + "submit it again without dry_run")
    }

    /// Runs `body`, calling `renew` every third of the lease duration until it returns.
    func whileRenewingLease<T: Sendable>(
        _ renew: @escaping @Sendable () async -> Void, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let duration = configuration.leaseDuration
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(bounded: duration / 3))
                    await renew()
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
