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
    }

    private struct State {
        var subscribers: [UInt64: Subscriber] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    /// A stream of the events of `batchID` (or of every batch), from now on.
    func subscribe(batchID: BatchID?) -> AsyncStream<BatchEvent> {
        let (stream, continuation) = AsyncStream<BatchEvent>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            state.subscribers[state.nextID] = Subscriber(batchID: batchID, continuation: continuation)
            return state.nextID
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    var hasSubscribers: Bool { state.withLock { !$0.subscribers.isEmpty } }

    func publish(_ events: [BatchEvent]) {
        guard !events.isEmpty else { return }
        let subscribers = state.withLock { Array($0.subscribers.values) }
        for event in events {
            for subscriber in subscribers where subscriber.batchID == nil || subscriber.batchID == event.batchID {
                subscriber.continuation.yield(event)
            }
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
