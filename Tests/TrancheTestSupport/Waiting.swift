import Synchronization

/// A wait that passed its deadline; says what it waited for.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public var description: String
}

/// How long a test waits by default: generous, so that a wait fails only
/// when what it waits for never happens, not because the machine is busy
/// (a build beside the tests on 2 cores).
public let defaultDeadline: Double = 120

/// Runs `body`, and fails it (cancelled) when it takes more than `seconds`.
///
/// At the deadline this throws at once, without waiting for `body` to end:
/// a body that ignores its cancellation fails the test instead of hanging it.
public func withDeadline<T: Sendable>(
    seconds: Double = defaultDeadline, _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let (outcomes, outcome) = AsyncStream.makeStream(
        of: Result<T, any Error>.self, bufferingPolicy: .bufferingOldest(1))
    let work = Task {
        do {
            outcome.yield(.success(try await body()))
        } catch {
            outcome.yield(.failure(error))
        }
    }
    let timer = Task {
        try? await Task.sleep(for: .milliseconds(Int(min(max(seconds, 0), 1e6) * 1000)))
        outcome.yield(.failure(DeadlineExceeded(description: "waited \(Int(seconds)) s for \(what)")))
    }
    defer {
        work.cancel()
        timer.cancel()
        outcome.finish()
    }
    for await result in outcomes { return try result.get() }
    throw CancellationError()
}

/// A one-time event for tests: fired once, waited for with a deadline.
public final class Flag: Sendable {
    private let fired = Mutex(false)

    public init() {}

    public var hasFired: Bool { fired.withLock { $0 } }

    public func fire() { fired.withLock { $0 = true } }

    /// Waits until the flag fires; throws ``DeadlineExceeded`` naming `what` after `seconds`.
    public func wait(for what: String, seconds: Double = defaultDeadline) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while !hasFired {
            guard ContinuousClock.now < deadline else {
                throw DeadlineExceeded(description: "waited \(Int(seconds)) s for \(what)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// Waits until `condition` holds, polling every 10 ms; throws
/// ``DeadlineExceeded`` naming `what` after `seconds`.
public func waitUntil(
    _ what: String, seconds: Double = defaultDeadline, _ condition: @escaping @Sendable () async throws -> Bool
) async throws {
    try await withDeadline(seconds: seconds, what) {
        while try await !condition() { try await Task.sleep(for: .milliseconds(10)) }
    }
}
