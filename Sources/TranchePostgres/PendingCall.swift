import Synchronization

/// A one-time event that tasks wait for: fired once, it stays fired.
final class Latch: Sendable {
    private struct State {
        var fired = false
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    var hasFired: Bool { state.withLock { $0.fired } }

    /// Fires the event: every waiter, present and future, goes on.
    func fire() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.fired else { return [] }
            state.fired = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the event fired, or once the waiting task is cancelled.
    func wait() async {
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let goOn = state.withLock { state -> Bool in
                    if state.fired || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if goOn { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}

/// One store call between its caller and the task of `run()` that carries it
/// out. Its result is set once, by whoever comes first: the call itself, its
/// deadline, the caller's cancellation or the store's shutdown.
final class PendingCall<T: Sendable>: Sendable {
    private struct State {
        var result: Result<T, any Error>?
        var caller: CheckedContinuation<T, any Error>?
        /// The pool generation the call started on; nil until it starts.
        var generation: Int?
    }

    private let state = Mutex(State())
    /// Fires when the result is set, to stop the call if someone else set it.
    let resolved = Latch()

    /// The pool generation the call runs on, or nil if it has not started.
    var generation: Int? { state.withLock { $0.generation } }

    /// Marks the call started on pool `generation`; false if it already has
    /// a result (its caller gave up) and must not run.
    func start(generation: Int) -> Bool {
        state.withLock { state in
            guard state.result == nil else { return false }
            state.generation = generation
            return true
        }
    }

    /// Sets the result unless one is set; returns whether this call set it.
    @discardableResult
    func resolve(_ result: Result<T, any Error>) -> Bool {
        let (set, caller) = state.withLock { state -> (Bool, CheckedContinuation<T, any Error>?) in
            guard state.result == nil else { return (false, nil) }
            state.result = result
            defer { state.caller = nil }
            return (true, state.caller)
        }
        caller?.resume(with: result)
        if set { resolved.fire() }
        return set
    }

    /// Waits for the result; the caller's cancellation resolves it as cancelled.
    func value() async throws -> T {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let result = state.withLock { state -> Result<T, any Error>? in
                    if state.result == nil { state.caller = continuation }
                    return state.result
                }
                if let result { continuation.resume(with: result) }
            }
        } onCancel: {
            resolve(.failure(CancellationError()))
        }
    }

    /// Runs `operation` unless the call already has a result, and stops it
    /// (by cancellation) as soon as someone else sets one.
    ///
    /// Returns once the call has a result, without waiting for `operation`
    /// to notice its cancellation: a query that ignores it (a connection
    /// that died mid-query) must not keep the store's `run()` from ending.
    func run(generation: Int, _ operation: @escaping @Sendable () async throws -> T) async {
        guard start(generation: generation) else { return }
        let work = Task {
            do {
                self.resolve(.success(try await operation()))
            } catch {
                self.resolve(.failure(error))
            }
        }
        await resolved.wait()
        work.cancel()
    }
}
