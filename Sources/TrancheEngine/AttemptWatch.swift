import Synchronization
import TrancheCore

/// The running attempts of one chunk, each with its deadline: one sweeper
/// per chunk cancels an attempt whose item timeout passed, and an abort
/// cancels them all. So an attempt arms no timer of its own and races no
/// extra tasks (a sleep and an abort waiter per item cost a Dispatch timer
/// and three child tasks, a fifth of a fast item's CPU).
///
/// Whichever comes first decides an attempt: its end, its deadline or the
/// abort. The strategy's task is canceled on a timeout or an abort, and the
/// attempt still waits for it to return, as a task group would.
final class AttemptWatch: Sendable {
    /// Why an attempt ended before its strategy answered.
    enum Ending: Sendable {
        case timedOut
        case aborted
    }

    /// A running attempt's task. Used only under the lock while the attempt
    /// is registered, which it is only while its task runs inside
    /// `withUnsafeCurrentTask`, so the task is alive whenever it is canceled.
    private struct Running: @unchecked Sendable {
        var task: UnsafeCurrentTask
        var deadline: ContinuousClock.Instant
        var ending: Ending?
    }

    private struct State {
        var running: [UInt64: Running] = [:]
        var nextID: UInt64 = 0
        var aborted = false
        var closed = false
        /// When the sweeper wakes next; nil while it waits for a first deadline.
        var wakesAt: ContinuousClock.Instant?
    }

    private let state = Mutex(State())
    private let wakeup = Wakeup()

    init() {}

    /// Attempts registered now (for tests).
    var runningCount: Int { state.withLock { $0.running.count } }

    /// Runs `body` in a child task until it returns, its deadline passes or
    /// the watch aborts. The body's result, and why it ended early if it did
    /// (its result is then what the canceled body returned, to be dropped).
    /// An abort before the start runs nothing.
    func run<Result: Sendable>(
        until deadline: ContinuousClock.Instant, _ body: @escaping @Sendable () async -> Result
    ) async -> (result: Result?, ending: Ending?) {
        // A child task, so a timeout or an abort cancels the strategy's work
        // and not the caller, which still records and releases what it holds.
        async let outcome = watched(until: deadline, body)
        return await outcome
    }

    private func watched<Result: Sendable>(
        until deadline: ContinuousClock.Instant, _ body: @Sendable () async -> Result
    ) async -> (result: Result?, ending: Ending?) {
        await withUnsafeCurrentTask { task -> (Result?, Ending?) in
            guard let task else { return (await body(), nil) }
            let registered = state.withLock { state -> (id: UInt64, wake: Bool)? in
                if state.aborted { return nil }
                state.nextID += 1
                state.running[state.nextID] = Running(task: task, deadline: deadline)
                let wake = state.wakesAt.map { deadline < $0 } ?? true
                if wake { state.wakesAt = deadline }
                return (state.nextID, wake)
            }
            guard let registered else { return (nil, .aborted) }
            if registered.wake { wakeup.signal() }
            let result = await body()
            let ending = state.withLock { $0.running.removeValue(forKey: registered.id)?.ending }
            return (result, ending)
        }
    }

    /// Cancels every running attempt (their endings are `aborted`); attempts
    /// that would start later run nothing.
    func abortAll() {
        state.withLock { state in
            state.aborted = true
            for (id, running) in state.running where running.ending == nil {
                state.running[id]?.ending = .aborted
                running.task.cancel()
            }
        }
    }

    /// Ends the sweeper: the chunk has no attempt left and starts none.
    func close() {
        state.withLock { $0.closed = true }
        wakeup.signal()
    }

    /// Until ``close()`` or cancellation: sleeps until the earliest deadline
    /// of the running attempts (or until one with an earlier deadline
    /// starts), then cancels those past theirs.
    func sweep() async {
        while !Task.isCancelled {
            let wakesAt = state.withLock { state -> ContinuousClock.Instant?? in
                if state.closed { return .none }
                let now = ContinuousClock.now
                var next: ContinuousClock.Instant?
                for (id, running) in state.running where running.ending == nil {
                    if running.deadline <= now {
                        state.running[id]?.ending = .timedOut
                        running.task.cancel()
                    } else if next.map({ running.deadline < $0 }) ?? true {
                        next = running.deadline
                    }
                }
                state.wakesAt = next
                return .some(next)
            }
            guard let wakesAt else { return }
            // Without a deadline to wait for, the next start signals.
            let seconds = wakesAt.map { ContinuousClock.now.duration(to: $0).seconds } ?? 3_600
            await wakeup.wait(timeout: max(0, seconds))
        }
    }
}
