import Synchronization

/// A counting semaphore for tasks: `acquire` suspends instead of blocking a thread.
package final class AsyncSemaphore: Sendable {
    private struct State {
        var permits: Int
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Bool, Never>)] = []
        var nextID: UInt64 = 0
    }

    private let state: Mutex<State>
    private let whenFreed: (@Sendable () -> Void)?

    /// `whenFreed` is called after a ``release()`` that leaves a permit
    /// free where none was, with no task waiting for it.
    package init(permits: Int, whenFreed: (@Sendable () -> Void)? = nil) {
        state = Mutex(State(permits: permits))
        self.whenFreed = whenFreed
    }

    /// Permits free right now.
    package var available: Int { state.withLock { $0.permits } }

    /// Tasks waiting for a permit right now.
    package var waiting: Int { state.withLock { $0.waiters.count } }

    /// Waits for a permit. Returns false, without a permit, when the task was canceled.
    package func acquire() async -> Bool {
        await acquire(unless: nil)
    }

    /// Waits for a permit, or until `stop` fires. Returns false, without a
    /// permit, when `stop` fired first or the task was canceled. Cheaper
    /// than racing ``acquire()`` against ``OneShotEvent/wait()`` in a task
    /// group: no child task is made.
    package func acquire(unless stop: OneShotEvent?) async -> Bool {
        let id: UInt64? = state.withLock { state in
            if state.permits > 0 {
                state.permits -= 1
                return nil
            }
            state.nextID += 1
            return state.nextID
        }
        guard let id else { return true }
        // A `stop` that fires once the waiter is queued removes it; one that
        // fired before is seen under the lock that queues it.
        let handler = stop?.onFire { [self] in self.abandon(id) }
        if stop != nil && handler == nil { return false }
        defer { if let handler { stop?.removeHandler(handler) } }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let granted = state.withLock { state -> Bool? in
                    if Task.isCancelled || stop?.hasFired == true { return false }
                    if state.permits > 0 {
                        state.permits -= 1
                        return true
                    }
                    state.waiters.append((id, continuation))
                    return nil
                }
                if let granted { continuation.resume(returning: granted) }
            }
        } onCancel: {
            abandon(id)
        }
    }

    /// Resumes waiter `id`, if still queued, without a permit.
    private func abandon(_ id: UInt64) {
        let waiter = state.withLock { state in
            state.waiters.firstIndex { $0.id == id }.map { state.waiters.remove(at: $0).continuation }
        }
        waiter?.resume(returning: false)
    }

    package func release() {
        let (waiter, freed) = state.withLock { state -> (CheckedContinuation<Bool, Never>?, Bool) in
            // Below zero after a shrink: the permit is not reissued.
            if state.waiters.isEmpty || state.permits < 0 {
                state.permits += 1
                return (nil, state.permits == 1)
            }
            return (state.waiters.removeFirst().continuation, false)
        }
        waiter?.resume(returning: true)
        if freed { whenFreed?() }
    }

    /// Adds `delta` permits, or takes them away when negative: permits in
    /// use are not revoked, they are not reissued until the count is back under the new total.
    package func adjust(by delta: Int) {
        let woken = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.permits = state.permits.adding(saturating: delta)
            var woken: [CheckedContinuation<Bool, Never>] = []
            while state.permits > 0, !state.waiters.isEmpty {
                state.permits -= 1
                woken.append(state.waiters.removeFirst().continuation)
            }
            return woken
        }
        for waiter in woken { waiter.resume(returning: true) }
    }
}

/// An event that happens once; every waiter, before or after, sees it.
package final class OneShotEvent: Sendable {
    private struct State {
        var fired = false
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var handlers: [UInt64: @Sendable () -> Void] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    package init() {}

    package var hasFired: Bool { state.withLock { $0.fired } }

    package func fire() {
        let (waiters, handlers) = state.withLock { state in
            guard !state.fired else { return ([CheckedContinuation<Void, Never>](), [@Sendable () -> Void]()) }
            state.fired = true
            defer {
                state.waiters = [:]
                state.handlers = [:]
            }
            return (Array(state.waiters.values), Array(state.handlers.values))
        }
        for waiter in waiters { waiter.resume() }
        for handler in handlers { handler() }
    }

    /// Calls `action` once when the event fires, unless removed first
    /// (``removeHandler(_:)``). Returns the handler's id, or nil without
    /// keeping `action` when the event already fired.
    package func onFire(_ action: @escaping @Sendable () -> Void) -> UInt64? {
        state.withLock { state in
            guard !state.fired else { return nil }
            state.nextID += 1
            state.handlers[state.nextID] = action
            return state.nextID
        }
    }

    /// Forgets a handler ``onFire(_:)`` kept.
    package func removeHandler(_ id: UInt64) {
        _ = state.withLock { $0.handlers.removeValue(forKey: id) }
    }

    /// Returns when the event fired or the task was canceled.
    package func wait() async {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> Bool in
                    if state.fired || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}

/// A wake-up call for a sleeping loop: a `signal` before or during `wait`
/// is never lost.
package final class Wakeup: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    package init() {}

    package func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Sleeps until a signal or `timeout` seconds, whichever comes first.
    package func wait(timeout: Double) async {
        let consumed = state.withLock { state -> Bool in
            if state.pending {
                state.pending = false
                return true
            }
            return false
        }
        if consumed { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(for: .seconds(bounded: timeout))
            }
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let resumeNow = self.state.withLock { state -> Bool in
                            if state.pending || Task.isCancelled {
                                state.pending = false
                                return true
                            }
                            state.waiter = continuation
                            return false
                        }
                        if resumeNow { continuation.resume() }
                    }
                } onCancel: {
                    let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                        defer { state.waiter = nil }
                        return state.waiter
                    }
                    waiter?.resume()
                }
            }
            await group.next()
            group.cancelAll()
        }
    }
}
