import Foundation
import Synchronization
import TrancheStore

/// Fans batch events out to in-process subscribers.
///
/// Stored events are read back from the store in order (so events written by
/// any process reach every subscriber); progress events are published
/// directly and are not stored.
final class EventHub: Sendable {
    private struct Subscriber {
        var batchID: BatchID?
        var continuation: AsyncStream<BatchEvent>.Continuation
        /// The last stored event this subscriber was given (or was created after).
        var cursor: Int64
    }

    private struct State {
        var subscribers: [UInt64: Subscriber] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    /// A stream of the events of `batchID` (or of every batch) stored after
    /// event `after`, and of live progress.
    func subscribe(batchID: BatchID?, after: Int64) -> AsyncStream<BatchEvent> {
        let (stream, continuation) = AsyncStream<BatchEvent>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            state.subscribers[state.nextID] = Subscriber(batchID: batchID, continuation: continuation, cursor: after)
            return state.nextID
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    var hasSubscribers: Bool { state.withLock { !$0.subscribers.isEmpty } }

    /// The oldest point any subscriber still needs events after.
    var oldestCursor: Int64? { state.withLock { $0.subscribers.values.map(\.cursor).min() } }

    /// Delivers events; a stored event reaches each subscriber once, and only
    /// if it is newer than the subscriber's cursor.
    ///
    /// Events are yielded outside the lock: a yield resumes the waiting task,
    /// and a task being canceled at that moment ends its stream, whose
    /// termination handler takes this lock.
    func publish(_ events: [BatchEvent]) {
        guard !events.isEmpty else { return }
        let newest = events.last(where: { $0.id > 0 })?.id
        let deliveries = state.withLock { state in
            var deliveries: [(AsyncStream<BatchEvent>.Continuation, [BatchEvent])] = []
            for key in state.subscribers.keys {
                var subscriber = state.subscribers[key]!
                let due = events.filter { event in
                    (subscriber.batchID == nil || subscriber.batchID == event.batchID)
                        && (event.id == 0 || event.id > subscriber.cursor)
                }
                if !due.isEmpty { deliveries.append((subscriber.continuation, due)) }
                if let newest { subscriber.cursor = max(subscriber.cursor, newest) }
                state.subscribers[key] = subscriber
            }
            return deliveries
        }
        for (continuation, due) in deliveries {
            for event in due { continuation.yield(event) }
        }
    }

    func finishAll() {
        let subscribers = state.withLock { state -> [Subscriber] in
            defer { state.subscribers = [:] }
            return Array(state.subscribers.values)
        }
        for subscriber in subscribers { subscriber.continuation.finish() }
    }
}
