import Synchronization

/// A wait that passed its deadline; says what it waited for.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public var description: String
}

/// Runs `body`, and fails it (cancelled) when it takes more than `seconds`.
public func withDeadline<T: Sendable>(
    seconds: Double = 30, _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            return nil
        }
        defer { group.cancelAll() }
        guard let value = try await group.next() ?? nil else {
            throw DeadlineExceeded(description: "waited \(Int(seconds)) s for \(what)")
        }
        return value
    }
}

/// A one-time event for tests: fired once, waited for with a deadline.
public final class Flag: Sendable {
    private let fired = Mutex(false)

    public init() {}

    public var hasFired: Bool { fired.withLock { $0 } }

    public func fire() { fired.withLock { $0 = true } }

    /// Waits until the flag fires; throws ``DeadlineExceeded`` naming `what` after `seconds`.
    public func wait(for what: String, seconds: Double = 30) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while !hasFired {
            guard ContinuousClock.now < deadline else {
                throw DeadlineExceeded(description: "waited \(Int(seconds)) s for \(what)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}
