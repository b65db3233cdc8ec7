import Foundation
import Metrics
import Synchronization
import TrancheCore
import TrancheStore

/// The limits one item passes before it starts: its batch's concurrency on
/// this node, its type's concurrency, the node's worker slots, and the rates
/// and `max_concurrent` caps of its batch, type and host, which hold across
/// the cluster when the store is a ``LimitStore``.
final class Pacer: Sendable {
    /// The batch's own permits on this node (its `concurrency`), resized by ``apply(_:)``.
    let batchPermits: AsyncSemaphore
    let semaphores: [AsyncSemaphore]
    /// The batch's rate (first), then its type's and its host's.
    let buckets: [SharedBucket]
    /// The host pace's bucket, passed only while the batch is adaptive.
    let paceBuckets: [SharedBucket]
    /// The batch's `max_concurrent` across the cluster (first), then its type's and its host's.
    let slots: [SharedSlots]
    /// The batch's pace (setting the rate of its bucket while it is adaptive), or nil for none.
    let pace: PaceController?
    /// Its host's pace, shared by every adaptive batch calling it on this node.
    let hostPace: PaceController?
    /// The batch's type, which decides its default pace.
    let type: String
    /// The longest an item waits out a `Retry-After` pause: its batch's
    /// backoff cap, which bounds every wait between its attempts.
    let longestPause: Double
    private let settings: Mutex<Settings>

    /// What ``apply(_:)`` last applied, and when the batch was last read.
    private struct Settings {
        var concurrency: Int
        var refreshedAt: ContinuousClock.Instant
        var stale = false
        var adaptive = false
    }

    init(
        concurrency: Int, batchPermits: AsyncSemaphore, semaphores: [AsyncSemaphore], buckets: [SharedBucket],
        slots: [SharedSlots], pace: PaceController? = nil, hostPace: PaceController? = nil,
        paceBuckets: [SharedBucket] = [], adaptive: Bool = false, type: String = "",
        longestPause: Double = BatchOptions.Limits.backoffCap.upperBound
    ) {
        self.longestPause = longestPause
        self.batchPermits = batchPermits
        self.semaphores = [batchPermits] + semaphores
        self.buckets = buckets
        self.paceBuckets = paceBuckets
        self.slots = slots
        self.pace = pace
        self.hostPace = hostPace
        self.type = type
        self.settings = Mutex(Settings(concurrency: concurrency, refreshedAt: .now, adaptive: adaptive && pace != nil))
    }

    /// True while the batch's pace adapts (`options.pace`, changed live by a `PATCH`).
    var isAdaptive: Bool { settings.withLock { $0.adaptive } }

    /// Waits until the item may start. Returns false (holding nothing) when
    /// the task was canceled.
    func admit(clock: ContinuousClock) async -> Bool {
        guard await acquireSemaphores(unless: nil) else { return false }
        for (index, slot) in slots.enumerated() {
            guard await slot.acquire() else {
                for taken in slots.prefix(index) { await taken.release() }
                releaseSemaphores(first: semaphores.count)
                return false
            }
        }
        let adaptive = isAdaptive
        for bucket in adaptive ? buckets + paceBuckets : buckets {
            let paused = adaptive ? await waitOutPause() : true
            guard paused, await bucket.take(clock: clock) else {
                await release()
                return false
            }
        }
        return true
    }

    /// Waits while a `Retry-After` pauses the batch or its host. False when canceled.
    private func waitOutPause() async -> Bool {
        let end = ContinuousClock.now + .seconds(bounded: longestPause)
        while let seconds = [pace, hostPace].compactMap({ $0?.pause(at: .now) }).max(), ContinuousClock.now < end {
            do {
                try await Task.sleep(for: min(.seconds(bounded: seconds), end - ContinuousClock.now))
            } catch {
                return false
            }
        }
        return true
    }

    /// An adaptive batch's refused item waits for the pace rather than
    /// for its own exponential backoff: its retry is due within a second
    /// (or its `Retry-After`); the pace spaces the batch's calls meanwhile.
    func retimed(_ outcome: ItemOutcome, after result: ItemResult, now: Date) -> ItemOutcome {
        guard isAdaptive, let due = outcome.nextAttemptAt,
            case .refused(let retryAfter, _) = PaceController.signal(result, latency: 0)
        else { return outcome }
        var retimed = outcome
        let wait = min(due.timeIntervalSince(now), max(1, retryAfter ?? 0))
        retimed.nextAttemptAt = now.addingTimeInterval(max(0, wait))
        return retimed
    }

    /// Tells the paces what an attempt's answer said.
    func observe(_ result: ItemResult, latency: Duration, wall: Date) async {
        guard isAdaptive else { return }
        let seconds = latency.seconds
        let signal = PaceController.signal(result, latency: seconds)
        let now = ContinuousClock.now
        await pace?.observe(signal, at: now, wall: wall)
        await hostPace?.observe(signal, at: now, wall: wall)
    }

    /// Waits until the item may start, or until `stop` fires. Returns false
    /// (holding nothing) when `stop` fired first or the task was canceled.
    ///
    /// When no rate or cluster cap applies, only the permits are waited
    /// for, each watching `stop` itself (no child tasks per item, which a
    /// chunk with more items than permits paid for each of them).
    func admit(clock: ContinuousClock, unless stop: OneShotEvent) async -> Bool {
        if stop.hasFired { return false }
        let admitted: Bool
        if buckets.allSatisfy(\.isUnlimited) && slots.allSatisfy(\.isUnlimited) && !isAdaptive {
            admitted = await acquireSemaphores(unless: stop)
        } else {
            admitted = await withTaskGroup(of: Bool?.self) { group in
                group.addTask { await self.admit(clock: clock) }
                group.addTask {
                    await stop.wait()
                    return nil
                }
                var admitted = false
                while let result = await group.next() {
                    if let result { admitted = result }
                    group.cancelAll()
                }
                return admitted
            }
        }
        if admitted && stop.hasFired {
            await release()
            return false
        }
        return admitted
    }

    /// Takes every permit in order; false (holding none) when `stop` fired
    /// first or the task was canceled.
    private func acquireSemaphores(unless stop: OneShotEvent?) async -> Bool {
        for (index, semaphore) in semaphores.enumerated() {
            guard await semaphore.acquire(unless: stop) else {
                releaseSemaphores(first: index)
                return false
            }
        }
        return true
    }

    /// Releases what ``admit(clock:)`` took.
    func release() async {
        releaseSemaphores(first: semaphores.count)
        for slot in slots { await slot.release() }
    }

    private func releaseSemaphores(first count: Int) {
        for semaphore in semaphores.prefix(count).reversed() { semaphore.release() }
    }

    /// Applies a batch's current options: its concurrency on this node, its
    /// pace, its rate and its `max_concurrent`. Items already running go on.
    func apply(_ options: BatchOptions) {
        let concurrency = Self.permits(options)
        let adaptive = pace != nil && options.paceMode(forType: type) == .adaptive
        let (delta, switched) = settings.withLock { settings in
            defer {
                settings.concurrency = concurrency
                settings.adaptive = adaptive
            }
            return (concurrency - settings.concurrency, settings.adaptive != adaptive)
        }
        if delta != 0 { batchPermits.adjust(by: delta) }
        let rate = options.rateLimit?.rate.map { $0.bounded(to: BatchOptions.Limits.rate) }
        if let pace, adaptive {
            pace.setCeiling(rate)
            if switched { pace.engage(true) }
        } else {
            // A fixed pace: the rate as given, with its second of burst.
            if switched { pace?.engage(false) }
            buckets.first?.setLimit(rate)
        }
        slots.first?.setLimit(options.rateLimit?.maxConcurrent?.clamped(to: BatchOptions.Limits.maxConcurrent))
    }

    /// True (once) when the batch's options should be read again: `interval`
    /// seconds passed since the last read, or ``markStale()`` was called.
    func claimRefresh(interval: Double) -> Bool {
        settings.withLock { settings in
            let now = ContinuousClock.now
            guard settings.stale || settings.refreshedAt.duration(to: now) >= .seconds(bounded: interval) else {
                return false
            }
            settings.stale = false
            settings.refreshedAt = now
            return true
        }
    }

    /// Makes the next ``needsRefresh(interval:)`` true (this node changed the settings).
    func markStale() {
        settings.withLock { $0.stale = true }
    }

    /// The batch's permits on one node: its concurrency, no more than its
    /// `max_concurrent`, held within the limits whatever a row holds.
    static func permits(_ options: BatchOptions) -> Int {
        min(options.concurrency, options.rateLimit?.maxConcurrent ?? Int.max).clamped(
            to: BatchOptions.Limits.concurrency)
    }
}

extension ContinuousClock.Instant {
    private static let reference = ContinuousClock.now

    /// Seconds since the process's first use of the clock.
    var secondsSinceReference: Double {
        Self.reference.duration(to: self).seconds
    }
}

/// Where a shared bucket or cap is kept across the cluster: the store and the
/// row's key, this node's name, the wall clock and how long slots are held.
struct LimitScope: Sendable {
    var store: any LimitStore
    var key: String
    var node: String
    var clock: WallClock
    var slotLease: Double
}

/// A token bucket shared by the items of a batch, a type or a host: in this
/// process, or in the store (``LimitScope``), drawn from in grants of about
/// 100 ms of the rate so that every node together keeps to it. No limit
/// (nil) admits at once.
final class SharedBucket: Sendable {
    private struct State {
        var limit: Double?
        var bucket: TokenBucket
        /// Tokens of the last grant not yet spent.
        var granted = 0
        /// Seconds of the rate the bucket holds: 1 for a rate given, a
        /// tenth for a pace, whose rate is meant to be kept, not made up.
        var burstSeconds = 1.0
        /// No draw from the store before then: the last one found the bucket empty.
        var drawAfter: ContinuousClock.Instant?

        func burst(_ rate: Double) -> Double { max(1, rate * burstSeconds) }
    }

    private let state: Mutex<State>
    private let scope: LimitScope?
    /// One draw from the store at a time: the waiters behind it spend its grant.
    private let drawing = AsyncSemaphore(permits: 1)

    init(rate: Double?, scope: LimitScope? = nil) {
        state = Mutex(State(limit: rate, bucket: TokenBucket(rate: rate ?? 1)))
        self.scope = scope
    }

    /// True when no rate applies now.
    var isUnlimited: Bool { state.withLock { $0.limit == nil } }

    /// The rate now, or nil.
    var limit: Double? { state.withLock { $0.limit } }

    /// Changes the rate (nil: none).
    func setLimit(_ rate: Double?) {
        state.withLock { state in
            guard state.limit != rate else { return }
            state.limit = rate
            state.drawAfter = nil
            if let rate {
                state.bucket.rate = rate
                state.bucket.burst = state.burst(rate)
            }
        }
    }

    /// Makes the bucket hold `seconds` of its rate (at least one token).
    func setBurst(seconds: Double) {
        state.withLock { state in
            state.burstSeconds = seconds.bounded(to: 0...1)
            if let rate = state.limit { state.bucket.burst = state.burst(rate) }
        }
    }

    /// Takes one token, waiting as long as the rate needs. False when canceled.
    func take(clock: ContinuousClock) async -> Bool {
        guard let scope else { return await takeLocally(clock: clock) }
        while true {
            if spendGrant() == nil { return true }
            guard await drawing.acquire() else { return false }
            guard let (rate, burst) = spendGrant() else {
                drawing.release()
                return true
            }
            // Waiters woken together draw once: the others wait for the bucket to refill.
            if let after = state.withLock({ $0.drawAfter }), ContinuousClock.now < after {
                drawing.release()
                do {
                    try await Task.sleep(until: after, clock: .continuous)
                } catch {
                    return false
                }
                continue
            }
            let want = max(1, Int(saturating: (min(rate / 10, burst)).rounded(.down)))
            let wait: Double
            do {
                let grant = try await scope.store.drawTokens(
                    key: scope.key, rate: rate, burst: burst, want: want, now: scope.clock.now())
                if grant.tokens > 0 {
                    state.withLock { $0.granted += grant.tokens - 1 }
                    drawing.release()
                    return true
                }
                wait = grant.wait
            } catch {
                // The store is failing: try again shortly (nothing else runs meanwhile either).
                wait = 0.2
            }
            let pause = Duration.seconds(bounded: min(1, wait))
            state.withLock { $0.drawAfter = ContinuousClock.now + pause }
            drawing.release()
            do {
                try await Task.sleep(for: pause)
            } catch {
                return false
            }
        }
    }

    /// Spends a token of the current grant: nil when one was spent (or no
    /// limit applies), otherwise the rate and burst to draw at.
    private func spendGrant() -> (Double, Double)? {
        state.withLock { state in
            guard let limit = state.limit else { return nil }
            if state.granted > 0 {
                state.granted -= 1
                return nil
            }
            return (limit, state.burst(limit))
        }
    }

    private func takeLocally(clock: ContinuousClock) async -> Bool {
        let wait = state.withLock { state -> Double in
            guard state.limit != nil else { return 0 }
            return state.bucket.reserve(now: clock.now.secondsSinceReference)
        }
        guard wait > 0 else { return true }
        do {
            try await Task.sleep(for: .seconds(bounded: wait))
            return true
        } catch {
            return false
        }
    }
}

/// A cap on items running at once across the cluster (`max_concurrent`):
/// slots counted in the store per node, held until an expiry that running
/// chunks renew, so a dead node's slots come back. Without a store or a
/// limit it admits at once.
final class SharedSlots: Sendable {
    private struct State {
        var limit: Int?
        var held = 0
    }

    private let state: Mutex<State>
    private let scope: LimitScope?

    init(limit: Int?, scope: LimitScope?) {
        state = Mutex(State(limit: limit))
        self.scope = scope
    }

    /// True when no cluster cap applies now.
    var isUnlimited: Bool { scope == nil || state.withLock { $0.limit == nil } }

    /// Changes the cap (nil: none).
    func setLimit(_ limit: Int?) {
        state.withLock { $0.limit = limit }
    }

    /// Takes a slot, waiting while the cluster holds all of them. False when canceled.
    func acquire() async -> Bool {
        guard let scope else { return true }
        var pause = 0.01
        while true {
            guard let limit = state.withLock({ $0.limit }) else { return true }
            let now = scope.clock.now()
            if let taken = try? await scope.store.acquireSlots(
                key: scope.key, node: scope.node, limit: limit, want: 1,
                expiresAt: now.addingTimeInterval(scope.slotLease), now: now), taken > 0
            {
                state.withLock { $0.held += 1 }
                return true
            }
            do {
                try await Task.sleep(for: .seconds(bounded: pause))
            } catch {
                return false
            }
            pause = min(0.25, pause * 2)
        }
    }

    /// Gives back a slot this node holds.
    func release() async {
        guard let scope else { return }
        let holds = state.withLock { state -> Bool in
            guard state.held > 0 else { return false }
            state.held -= 1
            return true
        }
        guard holds else { return }
        // A release that fails leaves the slot to expire with the node's other slots.
        try? await scope.store.releaseSlots(key: scope.key, node: scope.node, count: 1)
    }
}

/// The limits every batch on a node shares: per strategy type and per host
/// (`--host-limit`), held across the cluster when the store can.
final class SharedLimits: Sendable {
    let typeBuckets: [String: SharedBucket]
    let typeSlots: [String: SharedSlots]
    let hostBuckets: [String: SharedBucket]
    let hostSlots: [String: SharedSlots]
    private let store: (any LimitStore)?
    private let node: String
    private let clock: WallClock
    private let slotLease: Double
    private let renewedAt = Mutex<ContinuousClock.Instant?>(nil)
    private let hostPaces = Mutex<[String: PaceController]>([:])
    private let hostRates: [String: Double]

    init(configuration: TrancheEngine.Configuration, store: any BatchStore) {
        let limits = store as? any LimitStore
        let node = configuration.nodeID
        let clock = configuration.clock
        let lease = configuration.leaseDuration
        func scope(_ key: String) -> LimitScope? {
            limits.map { LimitScope(store: $0, key: key, node: node, clock: clock, slotLease: lease) }
        }
        typeBuckets = Dictionary(
            uniqueKeysWithValues: configuration.typeLimits.compactMap { type, limit in
                limit.rate.map { (type, SharedBucket(rate: $0, scope: scope(LimitKey.type(type)))) }
            })
        typeSlots = Dictionary(
            uniqueKeysWithValues: configuration.typeLimits.compactMap { type, limit in
                limit.maxConcurrent.map { (type, SharedSlots(limit: $0, scope: scope(LimitKey.type(type)))) }
            })
        hostBuckets = Dictionary(
            uniqueKeysWithValues: configuration.hostLimits.compactMap { host, limit in
                limit.rate.map { (host, SharedBucket(rate: $0, scope: scope(LimitKey.host(host)))) }
            })
        hostSlots = Dictionary(
            uniqueKeysWithValues: configuration.hostLimits.compactMap { host, limit in
                limit.maxConcurrent.map { (host, SharedSlots(limit: $0, scope: scope(LimitKey.host(host)))) }
            })
        self.hostRates = configuration.hostLimits.compactMapValues(\.rate)
        self.store = limits
        self.node = node
        self.clock = clock
        self.slotLease = lease
    }

    /// Where a batch's own bucket and cap live.
    func scope(batch id: BatchID) -> LimitScope? {
        store.map { LimitScope(store: $0, key: LimitKey.batch(id), node: node, clock: clock, slotLease: slotLease) }
    }

    /// The pace of `host` on this node, shared by its adaptive batches; it
    /// sets the rate of the host's bucket (under its `--host-limit`, if any).
    func hostPace(_ host: String, type: String) -> PaceController {
        hostPaces.withLock { paces in
            if let pace = paces[host] { return pace }
            let key = LimitKey.host(host)
            let bucket =
                hostBuckets[host]
                ?? SharedBucket(
                    rate: nil,
                    scope: store.map {
                        LimitScope(store: $0, key: key, node: node, clock: clock, slotLease: slotLease)
                    })
            let pace = PaceController(
                key: key, bucket: bucket, ceiling: hostRates[host], type: type, store: store)
            if paces.count < 10_000 { paces[host] = pace }
            return pace
        }
    }

    /// Saves the host paces that changed.
    func saveHostPaces() async {
        guard let store else { return }
        for pace in hostPaces.withLock({ Array($0.values) }) {
            await pace.save(to: store, now: clock.now())
        }
    }

    /// Extends this node's slots, at most once a second: its items still run.
    func renewSlots() async {
        guard let store else { return }
        let due = renewedAt.withLock { renewedAt in
            let now = ContinuousClock.now
            if let last = renewedAt, last.duration(to: now) < .seconds(1) { return false }
            renewedAt = now
            return true
        }
        guard due else { return }
        try? await store.renewSlots(node: node, expiresAt: clock.now().addingTimeInterval(slotLease))
    }
}

extension TrancheEngine {
    /// The limits a batch's items pass on this node, from its stored options;
    /// an adaptive batch starts from the pace stored for it, if any.
    func makePacer(for record: BatchRecord) async -> Pacer {
        let options = record.options
        let concurrency = Pacer.permits(options)
        var semaphores: [AsyncSemaphore] = []
        if let typeSemaphore = typeSemaphores[record.type] { semaphores.append(typeSemaphore) }
        semaphores.append(workerSlots)
        let scope = sharedLimits.scope(batch: record.id)
        var buckets = [
            SharedBucket(rate: options.rateLimit?.rate.map { $0.bounded(to: BatchOptions.Limits.rate) }, scope: scope)
        ]
        var slots = [
            SharedSlots(
                limit: options.rateLimit?.maxConcurrent?.clamped(to: BatchOptions.Limits.maxConcurrent), scope: scope)
        ]
        if let bucket = sharedLimits.typeBuckets[record.type] { buckets.append(bucket) }
        if let cap = sharedLimits.typeSlots[record.type] { slots.append(cap) }
        let adaptive = options.paceMode(forType: record.type) == .adaptive
        // Every batch has a pace, engaged while it is adaptive: a PATCH may switch it.
        let pace = PaceController(
            key: LimitKey.batch(record.id), bucket: buckets[0], ceiling: buckets[0].limit, type: record.type,
            store: store as? any LimitStore, engaged: adaptive)
        var hostPace: PaceController?
        var paceBuckets: [SharedBucket] = []
        if let host = Self.host(of: record) {
            // The host's pace is that of the batches adaptive from the start (a
            // fixed batch must not set the rate of the host's --host-limit bucket).
            if adaptive {
                let shared = sharedLimits.hostPace(host, type: record.type)
                hostPace = shared
                if sharedLimits.hostBuckets[host] == nil { paceBuckets.append(shared.bucket) }
            }
            if let bucket = sharedLimits.hostBuckets[host] { buckets.append(bucket) }
            if let cap = sharedLimits.hostSlots[host] { slots.append(cap) }
        }
        if adaptive, let store = store as? any LimitStore { await pace.load(from: store) }
        return Pacer(
            concurrency: concurrency, batchPermits: AsyncSemaphore(permits: concurrency), semaphores: semaphores,
            buckets: buckets, slots: slots, pace: pace, hostPace: hostPace, paceBuckets: paceBuckets,
            adaptive: adaptive, type: record.type, longestPause: options.backoff.effectiveCap)
    }

    /// The host every item of a batch calls: an `http` batch's URL host when
    /// it is no template; nil otherwise.
    static func host(of record: BatchRecord) -> String? {
        guard record.type == "http", let url = (try? record.context.value())?["url"]?.stringValue,
            let host = URL(string: url)?.host, !host.isEmpty, !host.contains("{")
        else { return nil }
        return host.lowercased()
    }

    /// Reads a running batch's options again when a second has passed (or
    /// this node changed them) and applies them: a `PATCH` reaches every
    /// node within about a second. Also renews this node's cluster slots.
    func refreshSettings(of id: BatchID) async {
        await sharedLimits.renewSlots()
        guard let binding = bindings.withLock({ $0[id] }), binding.pacer.claimRefresh(interval: 1) else { return }
        if let limits = store as? any LimitStore, binding.pacer.isAdaptive {
            await binding.pacer.pace?.save(to: limits, now: now)
            await sharedLimits.saveHostPaces()
        }
        guard let record = try? await store.batch(id) else { return }
        binding.pacer.apply(record.options)
    }

    /// Saves what a batch's pace (and its host's) learned since the last
    /// save: at a chunk's end, so that refusals counted late are not lost.
    /// Also reads the batch's settings when they are due: chunks shorter
    /// than a checkpoint interval would otherwise never see a `PATCH`.
    func savePace(of id: BatchID) async {
        await refreshSettings(of: id)
        guard let limits = store as? any LimitStore, let binding = bindings.withLock({ $0[id] }),
            binding.pacer.isAdaptive
        else { return }
        await binding.pacer.pace?.save(to: limits, now: now)
        await sharedLimits.saveHostPaces()
    }

    /// Marks a batch's settings as changed, so this node applies them at its next checkpoint.
    public func signalSettingsChanged(_ id: BatchID) {
        bindings.withLock { $0[id] }?.pacer.markStale()
    }
}

/// An adaptive pace on this node for a batch or a host: the AIMD controller
/// (``AdaptivePace``) and the bucket whose rate it sets. With a
/// ``LimitStore`` the pace is the cluster's: every step (and, twice a second,
/// nothing but the refusals counted) is merged into the stored pace
/// (``PaceRules``), which the node adopts, so two nodes cutting at once cut
/// once and the rate grows one step at a time for all of them.
final class PaceController: Sendable {
    private struct State {
        var pace: AdaptivePace
        var unsavedThrottled: Int64 = 0
        /// A step not merged yet.
        var pending: AdaptivePace.Step?
        var share = false
        var syncing = false
        var lastSync: ContinuousClock.Instant?
        /// The `changed_at` of the stored pace last adopted.
        var known: Date?
        var changedAt: Date?
        var saved: PaceRecord?
    }

    /// `batch:ID` or `host:NAME`.
    let key: String
    let bucket: SharedBucket
    /// A strategy type, as a bounded metrics label.
    let type: String
    private let store: (any LimitStore)?
    private let state: Mutex<State>

    init(
        key: String, bucket: SharedBucket, ceiling: Double?, type: String, store: (any LimitStore)? = nil,
        engaged: Bool = true
    ) {
        var configuration = AdaptivePace.Configuration()
        configuration.ceiling = ceiling
        let pace = AdaptivePace(configuration)
        self.key = key
        self.bucket = bucket
        self.type = type
        self.store = store
        self.state = Mutex(State(pace: pace))
        if engaged { engage(true) }
    }

    /// Sets the bucket's rate from the pace (a tenth of a second of burst),
    /// or leaves the bucket to a fixed rate (a second of it), which the caller sets.
    func engage(_ on: Bool) {
        if on {
            let rate = state.withLock { $0.pace.rate }
            bucket.setBurst(seconds: 0.1)
            bucket.setLimit(rate)
        } else {
            bucket.setBurst(seconds: 1)
        }
    }

    /// What an answer says about the far side: a refusal (`429`, `503`, a
    /// `Retry-After`, a timeout, a failed connection) or an answer and its latency.
    static func signal(_ result: ItemResult, latency: Double) -> AdaptivePace.Signal {
        if case .failure(let error) = result {
            switch error.code {
            case "http_429", "http_503": return .refused(retryAfter: error.retryAfter, latency: latency)
            case "timeout", "connection_error": return .refused(retryAfter: nil, latency: latency)
            default:
                if error.code.hasPrefix("http_"), let retryAfter = error.retryAfter {
                    return .refused(retryAfter: retryAfter, latency: latency)
                }
            }
        }
        return .answered(latency: latency)
    }

    /// Takes one answer; a changed rate reaches the bucket at once, and the
    /// cluster's pace soon after (this call merges it when it is due).
    func observe(_ signal: AdaptivePace.Signal, at now: ContinuousClock.Instant, wall: Date) async {
        let (rate, sync) = state.withLock { state -> (Double??, Bool) in
            let changed = state.pace.record(signal, at: now.secondsSinceReference)
            if case .refused = signal { state.unsavedThrottled += 1 }
            guard changed else { return (.none, Self.syncDue(&state, now: now, hasStore: store != nil)) }
            state.changedAt = wall
            if let step = state.pace.lastStep { state.pending = Self.combined(state.pending, step) }
            return (.some(state.pace.rate), Self.syncDue(&state, now: now, hasStore: store != nil))
        }
        if case .refused = signal {
            Counter(label: "tranche_throttled_total", dimensions: [("type", type)]).increment()
        }
        if let rate {
            bucket.setLimit(rate)
            if let rate { Gauge(label: "tranche_pace_rate", dimensions: [("type", type)]).record(rate) }
        }
        if sync { await merge(now: wall) }
    }

    /// True (and marked as syncing) when this node should merge now: a cut
    /// at once, a step after a tenth of a second, refusals or nothing twice a second.
    private static func syncDue(_ state: inout State, now: ContinuousClock.Instant, hasStore: Bool) -> Bool {
        guard hasStore, !state.syncing else { return false }
        let since = state.lastSync.map { $0.duration(to: now) } ?? .seconds(1_000)
        let due: Bool
        switch state.pending {
        case .cut: due = true
        case .grew: due = since >= .milliseconds(100)
        case nil: due = state.share || since >= .milliseconds(500)
        }
        if due { state.syncing = true }
        return due
    }

    /// Two steps not merged yet as one: a cut wins, growth adds up.
    private static func combined(_ pending: AdaptivePace.Step?, _ step: AdaptivePace.Step) -> AdaptivePace.Step {
        switch (pending, step) {
        case (.cut, .grew): pending ?? step
        case (.grew(let from, _, _), .grew(_, let to, let interval)): .grew(from: from, to: to, interval: interval)
        default: step
        }
    }

    /// Merges this node's step (or none) into the stored pace and adopts the
    /// result; again (a few times at most) while steps or refusals came
    /// meanwhile. What is still left after the last round waits for the next
    /// answer or ``save(to:now:)``, which find the node not syncing.
    private func merge(now wall: Date) async {
        for round in 1...4 {
            guard await mergeOnce(now: wall) else { return }
            let again = state.withLock { state in
                guard round < 4, !state.syncing,
                    state.pending != nil || state.share || state.unsavedThrottled > 0
                else { return false }
                state.syncing = true
                return true
            }
            guard again else { return }
        }
    }

    /// One merge; false when the store failed.
    private func mergeOnce(now wall: Date) async -> Bool {
        guard let store else { return false }
        let mono = ContinuousClock.now
        let (change, throttled) = state.withLock { state -> (PaceChange, Int64) in
            let pace = state.pace
            let pause = pace.pause(at: mono.secondsSinceReference)
            let kind: PaceChange.Kind
            var known = state.known
            if state.share {
                // This node was still starting when another cut: its share of the first estimate.
                kind = .cut(
                    factor: pace.configuration.decrease,
                    from: max(1, pace.answeredRate(at: mono.secondsSinceReference)),
                    measured: true)
                known = nil
            } else {
                switch state.pending {
                case .cut(let factor, let from, let measured):
                    kind = .cut(factor: factor, from: from, measured: measured)
                case .grew(let from, let to, let interval): kind = .grow(from: from, to: to, interval: interval)
                case nil: kind = .keep(rate: pace.rate ?? pace.bounds.lowerBound)
                }
            }
            defer {
                state.pending = nil
                state.share = false
                state.unsavedThrottled = 0
            }
            return (
                PaceChange(
                    key: key, kind: kind, reason: pace.reason.rawValue, known: known,
                    pausedUntil: pause > 0 ? wall.addingTimeInterval(pause) : nil, bounds: pace.bounds),
                state.unsavedThrottled
            )
        }
        do {
            let row = try await store.mergePace(change, throttledDelta: throttled, now: wall)
            let rate = state.withLock { state -> Double? in
                let wasStarting = state.pace.slowStart
                let now = ContinuousClock.now.secondsSinceReference
                state.pace.adopt(
                    rate: row.rate, reason: AdaptivePace.Reason(rawValue: row.reason),
                    cutAgo: row.cutAt.map { wall.timeIntervalSince($0) },
                    pause: row.pausedUntil.map { $0.timeIntervalSince(wall) } ?? 0, at: now)
                if wasStarting, row.estimated { state.share = true }
                state.saved = row
                state.known = row.changedAt
                state.changedAt = row.changedAt
                state.syncing = false
                state.lastSync = ContinuousClock.now
                return state.pace.rate
            }
            bucket.setLimit(rate)
            return true
        } catch {
            state.withLock { state in
                state.unsavedThrottled += throttled
                state.syncing = false
                state.lastSync = ContinuousClock.now
            }
            return false
        }
    }

    /// A new fixed limit (a `PATCH` of `rate_limit.rate`): the pace stays under it.
    func setCeiling(_ ceiling: Double?) {
        let rate = state.withLock { state -> Double?? in
            guard state.pace.configuration.ceiling != ceiling else { return .none }
            state.pace = state.pace.withCeiling(ceiling)
            return .some(state.pace.rate)
        }
        if let rate { bucket.setLimit(rate) }
    }

    /// How long calls wait now (a `Retry-After`), or nil.
    func pause(at now: ContinuousClock.Instant) -> Double? {
        let seconds = state.withLock { $0.pace.pause(at: now.secondsSinceReference) }
        return seconds > 0 ? seconds : nil
    }

    /// The pace as this node knows it, with the stored throttled count.
    var snapshot: PaceRecord? {
        state.withLock { state in
            guard let rate = state.pace.rate else { return state.saved }
            return PaceRecord(
                key: key, rate: rate, reason: state.pace.reason.rawValue,
                changedAt: state.changedAt ?? state.saved?.changedAt ?? Date(),
                throttled: (state.saved?.throttled ?? 0) + state.unsavedThrottled)
        }
    }

    /// Starts from the pace stored for this key, if any (another node's, or before a restart).
    func load(from store: any LimitStore) async {
        guard let stored = try? await store.pace(key: key) else { return }
        let rate = state.withLock { state -> Double? in
            state.saved = stored
            state.known = stored.changedAt
            state.pace.resume(from: stored.rate, reason: AdaptivePace.Reason(rawValue: stored.reason))
            return state.pace.rate
        }
        bucket.setLimit(rate)
    }

    /// Merges what is left to merge (a step, refusals counted) into the
    /// stored pace, unless a merge is under way.
    func save(to store: any LimitStore, now: Date) async {
        let due = state.withLock { state -> Bool in
            guard !state.syncing, state.pending != nil || state.unsavedThrottled > 0 || state.saved == nil
            else { return false }
            state.syncing = true
            return true
        }
        if due { await merge(now: now) }
    }
}
