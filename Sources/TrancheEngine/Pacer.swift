import Synchronization
import TrancheCore

/// The limits one item passes before it starts: its batch's concurrency and
/// rate, its type's concurrency and rate, and the node's worker slots.
final class Pacer: Sendable {
    let semaphores: [AsyncSemaphore]
    let buckets: [SharedBucket]

    init(semaphores: [AsyncSemaphore], buckets: [SharedBucket]) {
        self.semaphores = semaphores
        self.buckets = buckets
    }

    /// Waits until the item may start. Returns false (holding nothing) when
    /// the task was canceled.
    func admit(clock: ContinuousClock) async -> Bool {
        for (index, semaphore) in semaphores.enumerated() {
            guard await semaphore.acquire() else {
                release(first: index)
                return false
            }
        }
        for bucket in buckets {
            let now = clock.now.secondsSinceReference
            let wait = bucket.reserve(now: now)
            if wait > 0 {
                do {
                    try await Task.sleep(for: .seconds(bounded: wait))
                } catch {
                    release()
                    return false
                }
            }
        }
        return true
    }

    /// Waits until the item may start, or until `stop` fires. Returns false
    /// (holding nothing) when `stop` fired first or the task was canceled.
    ///
    /// When every permit looks free and no rate applies, it admits without
    /// watching `stop` (no child tasks per item): such a wait, if a permit
    /// is taken meanwhile, lasts only until a running item ends.
    func admit(clock: ContinuousClock, unless stop: OneShotEvent) async -> Bool {
        if stop.hasFired { return false }
        let admitted: Bool
        if buckets.isEmpty && semaphores.allSatisfy({ $0.available > 0 }) {
            admitted = await admit(clock: clock)
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
            release()
            return false
        }
        return admitted
    }

    /// Releases what ``admit(clock:)`` took.
    func release() {
        release(first: semaphores.count)
    }

    private func release(first count: Int) {
        for semaphore in semaphores.prefix(count).reversed() { semaphore.release() }
    }
}

extension ContinuousClock.Instant {
    private static let reference = ContinuousClock.now

    /// Seconds since the process's first use of the clock.
    var secondsSinceReference: Double {
        let duration = Self.reference.duration(to: self)
        return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

/// A token bucket shared by the items of a batch or a type.
final class SharedBucket: Sendable {
    private let bucket: Mutex<TokenBucket>

    init(rate: Double) {
        bucket = Mutex(TokenBucket(rate: rate))
    }

    func reserve(now: Double) -> Double {
        bucket.withLock { $0.reserve(now: now) }
    }
}
