import Foundation
import Synchronization
import TrancheStore

/// The chunk sizes this node asks for when it claims from a batch without a
/// fixed `chunk_size`, learned from the chunks it ran (a pure rule; the
/// engine keeps one under a lock in ``ChunkSizer``).
///
/// A chunk should take about `target` seconds (the checkpoint interval):
/// long enough that the claim and the checkpoints cost little per item,
/// short enough that slow items spread over the workers and a lost lease
/// re-runs little. The size starts at ``initial``, grows at most fourfold
/// per chunk while chunks end sooner than that, drops at once to what
/// `target` seconds hold when they take longer, and halves while a fifth
/// or more of a chunk's items fail.
package struct ChunkSizing: Sendable, Hashable {
    /// What one finished chunk showed.
    package struct Observation: Sendable, Hashable {
        /// Items that reached an outcome.
        package var items: Int
        /// Of those, the ones that did not succeed (failed, skipped, dead).
        package var failures: Int
        /// Seconds from the lease to the last outcome.
        package var seconds: Double

        package init(items: Int, failures: Int, seconds: Double) {
            self.items = items
            self.failures = failures
            self.seconds = seconds
        }
    }

    /// The size of a batch's first chunks on this node.
    package static let initial = 100
    /// The most one chunk grows per observation.
    package static let growth = 4
    /// The share of failing items from which chunks halve.
    package static let failingShare = 0.2

    /// Sizes per batch.
    private(set) var sizes: [BatchID: Int] = [:]

    package init() {}

    /// The size to ask for after a chunk of `current` items showed `observation`.
    package static func next(after current: Int, _ observation: Observation, target: Double) -> Int {
        let current = current.clamped(to: 1...ChunkSizeRules.maximumClaim)
        guard observation.items > 0 else { return current }
        if Double(max(0, observation.failures)) >= failingShare * Double(observation.items) {
            return max(1, current / 2)
        }
        let seconds = observation.seconds.isNaN ? target : max(observation.seconds, 0.000_1)
        let fits = (Double(observation.items) / seconds * target.bounded(to: 0.001...3_600)).rounded(.down)
        let fitting = Int(saturating: fits)
        let next = fitting >= current ? min(fitting, current * growth) : fitting
        return next.clamped(to: 1...ChunkSizeRules.maximumClaim)
    }

    /// The size to ask of `batch`.
    package func size(of batch: BatchID) -> Int { sizes[batch] ?? Self.initial }

    /// Learns from a finished chunk of `batch`.
    package mutating func observe(_ batch: BatchID, _ observation: Observation, target: Double) {
        if sizes[batch] == nil, sizes.count >= 10_000 { sizes.removeAll() }
        sizes[batch] = Self.next(after: size(of: batch), observation, target: target)
    }

    /// Forgets an ended batch.
    package mutating func forget(_ batch: BatchID) { sizes[batch] = nil }
}

/// The node's ``ChunkSizing`` and the cluster's worker count, shared by the
/// claim loop and the chunks it runs.
final class ChunkSizer: Sendable {
    private struct State {
        var sizing = ChunkSizing()
        /// Workers of every live node, this one's when none is known.
        var clusterWorkers: Int?
        var countedAt: ContinuousClock.Instant?
    }

    private let state = Mutex(State())

    /// What a claim asks for; `localWorkers` when the cluster is not counted yet.
    func sizes(localWorkers: Int) -> ChunkSizes {
        state.withLock { state in
            ChunkSizes(
                initial: ChunkSizing.initial, perBatch: state.sizing.sizes,
                workers: max(localWorkers, state.clusterWorkers ?? localWorkers))
        }
    }

    /// Whether the cluster's workers were counted less than `seconds` ago.
    func counted(within seconds: Double, at now: ContinuousClock.Instant) -> Bool {
        state.withLock { state in
            guard let at = state.countedAt else { return false }
            return at.duration(to: now) < .seconds(bounded: seconds)
        }
    }

    /// Records the cluster's workers (nil: unknown), counted at `now`.
    func setClusterWorkers(_ workers: Int?, at now: ContinuousClock.Instant) {
        state.withLock { state in
            state.clusterWorkers = workers
            state.countedAt = now
        }
    }

    func observe(_ batch: BatchID, _ observation: ChunkSizing.Observation, target: Double) {
        state.withLock { $0.sizing.observe(batch, observation, target: target) }
    }

    func forget(_ batch: BatchID) {
        state.withLock { $0.sizing.forget(batch) }
    }
}

extension TrancheEngine {
    /// What this node's next claim asks of automatic chunks. The cluster's
    /// workers (every live node's) are counted again once a sweep interval.
    func chunkSizes() async -> ChunkSizes {
        let instant = monotonic.now
        if !chunkSizer.counted(within: max(1, configuration.sweepInterval), at: instant) {
            let nodes = try? await liveNodes()
            let workers = nodes.map { $0.reduce(0) { $0.adding(saturating: max(0, $1.workers)) } }
            chunkSizer.setClusterWorkers(workers.flatMap { $0 > 0 ? $0 : nil }, at: instant)
        }
        return chunkSizer.sizes(localWorkers: configuration.workers)
    }
}

extension TrancheEngine {
    /// Learns the next size of an automatic batch's chunks from one that
    /// finished on this node.
    func learnChunkSize(from run: ChunkRun, options: BatchOptions) {
        guard options.chunkSize == nil else { return }
        let tally = run.tally
        chunkSizer.observe(
            run.lease.batchID,
            ChunkSizing.Observation(
                items: tally.items, failures: tally.failures,
                seconds: run.began.duration(to: .now).seconds),
            target: configuration.checkpointInterval)
    }
}
