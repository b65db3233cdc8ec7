import Foundation
public import Logging
public import ServiceLifecycle
import Synchronization
@_exported public import TrancheStore

/// The batch engine: accepts batches, runs them durably on the workers of
/// this node, and reports what happens.
///
/// Run it as a `Service` (its `run()` is the scheduler, the workers, the
/// maintenance loop and the event pump); a graceful shutdown drains it: no
/// new chunks, running items get a grace period, unfinished work is
/// released for the next start.
public final class TrancheEngine: Service, Sendable {
    /// Settings of one node. Every field has a documented default.
    public struct Configuration: Sendable {
        /// This node's name in leases. Default: `node-` and a random suffix.
        public var nodeID: String = "node-\(UInt32.random(in: 0...UInt32.max))"
        /// Items running at once on this node, all batches together. Default 16.
        public var workers: Int = 16
        /// Seconds a chunk's lease lasts without a heartbeat. Default 30.
        public var leaseDuration: Double = 30
        /// Seconds between a running chunk's checkpoints: its outcomes are
        /// written, its lease is extended, and it learns whether its batch
        /// was paused or ended (then it starts no more items). Default 1.
        public var checkpointInterval: Double = 1
        /// Seconds between maintenance sweeps, and the longest idle sleep. Default 1.
        public var sweepInterval: Double = 1
        /// Seconds running items get to finish on shutdown. Default 20.
        public var drainGracePeriod: Double = 20
        /// Rescues after which a chunk is split to isolate a poison item. Default 2.
        public var splitAfterRescues: Int = 2
        /// Seconds an ended batch's summary and history are kept after its
        /// items were pruned (at its `ttl`); then the batch is forgotten. Default 30 days.
        public var retention: Double = 30 * 86_400
        /// Limits per strategy type on this node (rate and max concurrent).
        public var typeLimits: [String: RateLimit] = [:]
        /// Limits per host called (lowercased name), shared by every batch
        /// calling it (`--host-limit`); across the cluster, like the type limits.
        public var hostLimits: [String: RateLimit] = [:]
        /// Release every lease at start: only for a process that owns its store alone.
        public var releaseLeasesAtStart: Bool = false
        /// Seconds between progress events of one batch. Default 0.5.
        public var progressInterval: Double = 0.5
        /// What this node is, as `GET /v1/nodes` shows it: `serve`, `worker` or `run`.
        public var role: String = "serve"
        /// Seconds a maintenance leader's term lasts; it renews every sweep,
        /// and a leader that stops renewing is replaced after this. Default 5.
        public var leaderTerm: Double = 5
        /// Longest idle sleep when the store sends wake-ups (PostgreSQL's
        /// `LISTEN/NOTIFY`); the slow poll behind them. Default 5.
        public var notifiedIdlePoll: Double = 5
        /// The wall clock every stored time comes from (submissions,
        /// transitions, claims, checkpoints, retries' due times, maintenance,
        /// events, node heartbeats). Default ``WallClock/system``. Timeouts
        /// and sleeps on this node use `ContinuousClock` instead.
        public var clock: WallClock = .system

        public init() {}

        /// The ranges ``validated()`` holds a node's main settings within,
        /// published so that a command line can refuse a flag outside them by name.
        public enum Limits {
            /// Items running at once on a node.
            public static let workers = 1...100_000
            /// Seconds a chunk's lease lasts without a checkpoint (up to a year).
            public static let leaseDuration = 2.0...31_536_000.0
            /// Seconds a draining node waits for its items to finish.
            public static let drainGracePeriod = 0.0...86_400.0
        }

        /// These settings with every number held where the engine can use it,
        /// whatever a flag or a library caller set (NaN is the default): no
        /// sleep, lease or deadline can trap, and a chunk checkpoints at least
        /// twice per lease. A type's rate that is no positive number (0, below
        /// zero, NaN) is no rate limit: one that lets nothing run would hang
        /// its batches. The engine runs with this.
        public func validated() -> Configuration {
            let defaults = Configuration()
            let day: Double = 86_400
            var valid = self
            valid.workers = workers.clamped(to: Limits.workers)
            valid.leaseDuration = leaseDuration.bounded(to: Limits.leaseDuration, nan: defaults.leaseDuration)
            valid.checkpointInterval = checkpointInterval.bounded(
                to: 0.01...(valid.leaseDuration / 2), nan: min(defaults.checkpointInterval, valid.leaseDuration / 2))
            valid.sweepInterval = sweepInterval.bounded(to: 0.01...3_600, nan: defaults.sweepInterval)
            valid.drainGracePeriod = drainGracePeriod.bounded(
                to: Limits.drainGracePeriod, nan: defaults.drainGracePeriod)
            valid.splitAfterRescues = splitAfterRescues.clamped(to: 1...1_000_000)
            valid.retention = retention.bounded(to: 0...BatchRules.maximumRetention, nan: defaults.retention)
            func held(_ limit: RateLimit) -> RateLimit {
                RateLimit(
                    rate: limit.rate.flatMap { $0 > 0 ? $0.bounded(to: BatchOptions.Limits.rate) : nil },
                    maxConcurrent: limit.maxConcurrent?.clamped(to: BatchOptions.Limits.maxConcurrent))
            }
            valid.typeLimits = typeLimits.mapValues(held)
            valid.hostLimits = Dictionary(
                hostLimits.map { ($0.key.lowercased(), held($0.value)) }, uniquingKeysWith: { _, last in last })
            valid.progressInterval = progressInterval.bounded(to: 0...3_600, nan: defaults.progressInterval)
            valid.leaderTerm = leaderTerm.bounded(to: 0.1...day, nan: defaults.leaderTerm)
            valid.notifiedIdlePoll = notifiedIdlePoll.bounded(to: 0.01...3_600, nan: defaults.notifiedIdlePoll)
            return valid
        }
    }

    /// Where batches live.
    public let store: any BatchStore
    public let configuration: Configuration
    let strategies: [String: AnyBatchStrategy]
    let logger: Logger
    let hub = EventHub()
    let claimWakeup: Wakeup
    let eventWakeup = Wakeup()
    let draining = OneShotEvent()
    let stopped = OneShotEvent()
    let workerSlots: AsyncSemaphore
    let unstartedItems: UnstartedItems
    let typeSemaphores: [String: AsyncSemaphore]
    let sharedLimits: SharedLimits
    let bindings = Mutex<[BatchID: BatchBinding]>([:])
    let progressTimes = Mutex<[BatchID: ContinuousClock.Instant]>([:])
    /// Wakes the preparer (a batch was created or confirmed).
    let prepareWakeup = Wakeup()
    /// Whether this node's `prepare` types are registered with the store.
    let prepareTypesRegistered = Mutex(false)
    let chunksInFlight = Atomic<Int>(0)
    /// The sizes this node asks of automatic chunks.
    let chunkSizer = ChunkSizer()
    /// Chunks in flight on this node per tenant: a full node claims one more
    /// chunk only for a tenant it is not running.
    let tenantsInFlight = Mutex<[String: Int]>([:])
    /// Measures local durations (rates, throttling, rate limits).
    let monotonic = ContinuousClock()
    /// When this engine was made, by ``Configuration/clock``.
    let startedAt: Date

    /// Creates an engine over `store` that can run `strategies`.
    public init(
        store: any BatchStore,
        strategies: [AnyBatchStrategy],
        configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "tranche.engine")
    ) {
        let configuration = configuration.validated()
        self.store = store
        self.configuration = configuration
        self.strategies = Dictionary(strategies.map { ($0.type, $0) }, uniquingKeysWith: { _, last in last })
        self.logger = logger
        self.startedAt = configuration.clock.now()
        // The claim loop wakes when fewer leased items wait to start than
        // the node's reserve, and when a worker slot frees while they do
        // (``UnstartedItems``).
        let claimWakeup = Wakeup()
        let unstartedItems = UnstartedItems(reserve: configuration.workers) { claimWakeup.signal() }
        self.claimWakeup = claimWakeup
        self.unstartedItems = unstartedItems
        self.workerSlots = AsyncSemaphore(permits: max(1, configuration.workers)) {
            if unstartedItems.isLow { claimWakeup.signal() }
        }
        self.typeSemaphores = configuration.typeLimits.compactMapValues { limit in
            limit.maxConcurrent.map { AsyncSemaphore(permits: $0) }
        }
        self.sharedLimits = SharedLimits(configuration: configuration, store: store)
    }

    /// The registered strategy types.
    public var strategyTypes: [String] { strategies.keys.sorted() }

    /// The current time by ``Configuration/clock``.
    var now: Date { configuration.clock.now() }

    // MARK: - Submitting

    /// Stores a batch with all its items in one transaction (whole or not at
    /// all) and queues it; a dry run is validated and reported instead.
    public func submit(_ submission: Submission, items: [JSONText]) async throws -> BatchRecord {
        let (prepared, bound) = try prepare(submission)
        try await registerPrepareTypes()
        let newItems = items.enumerated().map { offset, payload in
            NewItem(
                payload: payload,
                rejection: bound.validate(
                    ItemInput(batchID: prepared.id, seq: Int64(offset), payload: payload, attempt: 1)))
        }
        var record = try await store.createBatch(prepared, items: newItems)
        if submission.dryRun {
            record = try await reportDryRun(record)
        }
        signalWork()
        return record
    }

    /// Stores a batch that stays open for ``append(to:startSeq:items:cursor:)``
    /// until ``seal(_:)``; its items may start running as they arrive.
    public func open(_ submission: Submission) async throws -> BatchRecord {
        var (prepared, _) = try prepare(submission)
        prepared.sealed = false
        try await registerPrepareTypes()
        let record = try await store.createBatch(prepared, items: [])
        signalWork()
        return record
    }

    /// Appends items to an open batch, validating each. Idempotent by
    /// `startSeq`. `cursor` is saved with the items (a position in the input).
    public func append(to id: BatchID, startSeq: Int64, items: [JSONText], cursor: JSONText? = nil) async throws
        -> AppendResult
    {
        try await append(
            to: id, startSeq: startSeq, items: items.map { NewItem(payload: $0) }, cursor: cursor)
    }

    /// Appends items some of which were already refused by the caller (for
    /// example malformed input lines); the others are validated.
    public func append(to id: BatchID, startSeq: Int64, items: [NewItem], cursor: JSONText? = nil) async throws
        -> AppendResult
    {
        let binding = try await binding(for: id)
        let checked = items.enumerated().map { offset, item in
            guard item.rejection == nil else { return item }
            return NewItem(
                payload: item.payload,
                rejection: binding.bound.validate(
                    ItemInput(
                        batchID: id, seq: startSeq.adding(saturating: Int64(offset)), payload: item.payload, attempt: 1)
                ))
        }
        let result = try await store.appendItems(
            to: id, startSeq: startSeq, items: checked, cursor: cursor, at: now)
        signalWork()
        return result
    }

    /// Ends an open batch's upload.
    public func seal(_ id: BatchID) async throws -> BatchRecord {
        var record = try await store.seal(id, at: now)
        if record.dryRun, record.status == .preProcessed, record.result == nil {
            record = try await reportDryRun(record)
        }
        signalWork()
        return record
    }

    /// Submits `items` (any sequence of `Encodable` values), streaming them
    /// into the store in blocks so that memory stays bounded. A sequence of
    /// at most `inlineLimit` items is stored in one transaction.
    public func submit<Item: Encodable>(
        _ submission: Submission, items: some Sequence<Item>, inlineLimit: Int = 10_000
    ) async throws -> BatchRecord {
        var buffer: [JSONText] = []
        var iterator = items.makeIterator()
        while buffer.count <= inlineLimit, let item = iterator.next() {
            buffer.append(try JSONText(encoding: item))
        }
        if buffer.count <= inlineLimit {
            return try await submit(submission, items: buffer)
        }
        let record = try await open(submission)
        var seq: Int64 = 0
        while !buffer.isEmpty {
            _ = try await append(to: record.id, startSeq: seq, items: buffer)
            seq += Int64(buffer.count)
            buffer.removeAll(keepingCapacity: true)
            while buffer.count < 1_000, let item = iterator.next() {
                buffer.append(try JSONText(encoding: item))
            }
        }
        return try await seal(record.id)
    }

    // MARK: - Controlling

    /// Pauses the batch: no new chunks are leased, and a chunk in flight
    /// starts no more items after its next checkpoint (its running items
    /// finish and are written; the rest wait for ``resume(_:)``).
    @discardableResult
    public func pause(_ id: BatchID) async throws -> BatchRecord {
        try await transition(id, .pause)
    }

    /// Lets a paused batch run again.
    @discardableResult
    public func resume(_ id: BatchID) async throws -> BatchRecord {
        try await transition(id, .resume)
    }

    /// Cancels the batch: items not in flight become `canceled`; a chunk in
    /// flight learns it at its next checkpoint, cancels its running items'
    /// tasks, and their items become `canceled` too.
    @discardableResult
    public func cancel(_ id: BatchID) async throws -> BatchRecord {
        try await transition(id, .cancel)
    }

    /// Confirms a batch that waits for confirmation; a reported dry run
    /// becomes a real run of its stored items (``confirmDryRun(_:)``).
    @discardableResult
    public func confirm(_ id: BatchID) async throws -> BatchRecord {
        let record = try await store.batch(id)
        if let record, record.dryRun {
            try checkConfirmable(dryRun: record)
            return try await confirmDryRun(record)
        }
        return try await transition(id, .confirm)
    }

    /// Runs items in `statuses` again (by default failed, skipped and dead;
    /// for a batch that failed, also the items its failure canceled).
    @discardableResult
    public func retry(_ id: BatchID, statuses: Set<ItemStatus>? = nil) async throws -> (BatchRecord, Int64) {
        guard let record = try await store.batch(id) else { throw StoreError(.batchNotFound, "no batch \(id)") }
        var chosen = statuses ?? [.failed, .skipped, .dead]
        if statuses == nil, record.status == .failed { chosen.insert(.canceled) }
        let result = try await store.retry(id, statuses: chosen, at: now)
        signalWork()
        return result
    }

    private func transition(_ id: BatchID, _ action: LifecycleAction) async throws -> BatchRecord {
        let record = try await store.transition(id, action, reason: nil, at: now)
        signalWork()
        return record
    }

    // MARK: - Observing

    /// Events of one batch (or all batches) while the engine runs: every
    /// stored event after `after` (default: from now on) once, in order,
    /// then live ones, and throttled progress. A client that reconnects with
    /// the id of the last event it saw misses nothing.
    public func events(of id: BatchID? = nil, after: Int64? = nil) async throws -> AsyncStream<BatchEvent> {
        var cursor = after
        if cursor == nil { cursor = try await store.latestEventID() }
        let stream = hub.subscribe(batchID: id, after: cursor ?? 0)
        eventWakeup.signal()
        return stream
    }

    /// Waits until the batch ends (completed, failed or canceled) and its
    /// items in flight have finished, and returns it with its final counts.
    public func waitForEnd(_ id: BatchID) async throws -> BatchRecord {
        while true {
            // Subscribe before reading, so an end between the two is not missed.
            let events = try await self.events(of: id)
            guard let record = try await store.batch(id) else {
                throw StoreError(.batchNotFound, "no batch \(id)")
            }
            if (record.status.isEnded && record.counts.running == 0)
                || (record.dryRun && record.status == .preProcessed)
            {
                return record
            }
            try Task.checkCancellation()
            await firstEvent(of: events, within: 1)
        }
    }

    /// Submits a batch and waits for its end: the synchronous path for small
    /// batches. Returns every item's outcome.
    public func execute(_ submission: Submission, items: [JSONText]) async throws -> BatchReport {
        let record = try await submit(submission, items: items)
        let ended = try await waitForEnd(record.id)
        var all: [ItemRecord] = []
        var after: Int64? = nil
        while true {
            let page = try await store.items(of: record.id, status: nil, afterSeq: after, limit: 1_000)
            all += page
            guard page.count == 1_000, let last = page.last else { break }
            after = last.seq
        }
        let errors = try await store.errorGroups(of: record.id, samples: 5)
        return BatchReport(batch: ended, items: all, errors: errors)
    }

    // MARK: - Running

    /// Runs the scheduler, the workers, maintenance and the event pump until
    /// a graceful shutdown (or ``drain()``), then releases what is left.
    public func run() async throws {
        if configuration.releaseLeasesAtStart {
            let released = try await store.releaseAllLeases(now: now)
            if !released.isEmpty {
                logger.info("released leases left by an earlier run", metadata: ["chunks": "\(released.count)"])
            }
        }
        let firstEventID = try await store.latestEventID()
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.pumpEvents(after: firstEventID) }
                group.addTask { await self.maintain() }
                group.addTask { await self.finalizeEndedBatches() }
                group.addTask { await self.prepareBatches() }
                if let notifying = store as? any WorkNotifying {
                    group.addTask { await self.listen(to: notifying) }
                }
                await self.schedule()
                self.stopped.fire()
                self.eventWakeup.signal()
            }
        } onGracefulShutdown: {
            self.drain()
        }
        try? await store.resignLeadership(node: configuration.nodeID)
        try? await store.removeNode(id: configuration.nodeID)
        hub.finishAll()
    }

    /// Nodes sharing this store that were heard from within three leader
    /// terms, with the chunks they hold.
    public func liveNodes() async throws -> [NodeRecord] {
        let now = self.now
        return try await store.nodes(since: now.addingTimeInterval(-3 * configuration.leaderTerm), now: now)
    }

    /// Starts a graceful drain: no new chunks; running items get
    /// `drainGracePeriod`; then `run()` returns.
    public func drain() {
        draining.fire()
        claimWakeup.signal()
    }

    /// The context as the strategy normalizes it, to compare a submission with a stored batch.
    public func preparedContext(of submission: Submission) throws -> JSONText {
        try prepare(submission).0.context
    }

    /// The batch's context as it may be shown: its strategy's secret fields
    /// as `"***"` (every field when this node does not know the strategy).
    public func publicContext(of record: BatchRecord) -> JSONValue {
        guard let strategy = strategies[record.type] else {
            return AnyBatchStrategy.publicContext(record.context, secretFields: nil)
        }
        return strategy.publicContext(record.context)
    }

    func prepare(_ submission: Submission) throws -> (NewBatch, BoundStrategy) {
        guard let strategy = strategies[submission.type] else {
            throw EngineError(
                .unknownStrategy,
                "unknown strategy '\(submission.type)'; known: \(strategyTypes.joined(separator: ", "))")
        }
        do {
            try submission.options.validate()
        } catch {
            throw EngineError(.invalidSubmission, error.message)
        }
        let context: JSONText
        let bound: BoundStrategy
        do {
            context = try strategy.prepare(context: submission.context)
            bound = try strategy.bind(context: context)
        } catch let error as OptionsError {
            throw EngineError(.invalidSubmission, error.message)
        } catch {
            throw EngineError(.invalidSubmission, "context is not valid for '\(submission.type)'")
        }
        var batch = NewBatch(
            type: submission.type, owner: submission.owner, context: context, options: submission.options,
            dryRun: submission.dryRun, priority: submission.priority,
            sealed: !(strategy.generatesItems && !submission.dryRun), createdAt: now)
        batch.then = try submission.then.map(preparedSuccessor)
        return (batch, bound)
    }

    /// Writes a dry run's report: what would fail and how long it would take.
    func reportDryRun(_ record: BatchRecord) async throws -> BatchRecord {
        let errors = try await store.errorGroups(of: record.id, samples: 5)
        let invalid = record.counts.skipped
        var estimate: Double?
        var basis = "unknown"
        if let rate = record.options.rateLimit?.rate {
            estimate = Double(record.counts.total - invalid) / rate
            basis = "rate_limit"
        }
        // The tenant's own history only: another tenant's batches say nothing
        // about this one's receiver, and must not leak their pace.
        let history = try await store.batches(
            BatchQuery(owner: record.owner, type: record.type, status: .completed, limit: 1))
        if let last = history.first, let start = last.startedAt, let end = last.completedAt, end > start,
            last.counts.processed > 0
        {
            let observed = Double(last.counts.processed) / end.timeIntervalSince(start)
            let fromHistory = Double(record.counts.total - invalid) / observed
            estimate = max(estimate ?? 0, fromHistory)
            basis = estimate == fromHistory ? "history" : basis
        }
        let report: JSONValue = [
            "dry_run": true,
            "total": .number(Double(record.counts.total)),
            "valid": .number(Double(record.counts.total - invalid)),
            "invalid": .number(Double(invalid)),
            "estimated_seconds": estimate.map { .number(($0 * 10).rounded() / 10) } ?? .null,
            "estimate_basis": .string(basis),
            "errors": .array(
                errors.map { group in
                    [
                        "code": .string(group.code), "count": .number(Double(group.count)),
                        "samples": .array(
                            group.samples.map { ["seq": .number(Double($0.seq)), "message": .string($0.message)] }),
                    ]
                }),
        ]
        try await store.setResult(record.id, result: try JSONText(encoding: report))
        return try await store.batch(record.id) ?? record
    }

    /// Sleeps `seconds` or until `event` fires.
    func sleep(_ seconds: Double, orUntil event: OneShotEvent) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: .seconds(bounded: seconds)) }
            group.addTask { await event.wait() }
            await group.next()
            group.cancelAll()
        }
    }

    /// Waits up to `seconds` for the next event of `stream`.
    func firstEvent(of stream: AsyncStream<BatchEvent>, within seconds: Double) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await event in stream where event.type != .progress { return }
            }
            group.addTask { try? await Task.sleep(for: .seconds(bounded: seconds)) }
            await group.next()
            group.cancelAll()
        }
    }
}
