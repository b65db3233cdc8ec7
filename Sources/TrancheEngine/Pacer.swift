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
        var held: [AsyncSemaphore] = []
        for semaphore in semaphores {
            guard await semaphore.acquire() else {
                held.reversed().forEach { $0.release() }
                return false
            }
            held.append(semaphore)
        }
        for bucket in buckets {
            let now = clock.now.secondsSinceReference
            let wait = bucket.reserve(now: now)
            if wait > 0 {
                do {
                    try await Task.sleep(for: .milliseconds(Int((wait * 1000).rounded(.up))))
                } catch {
                    held.reversed().forEach { $0.release() }
                    return false
                }
            }
        }
        return true
    }

    func release() {
        semaphores.reversed().forEach { $0.release() }
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
