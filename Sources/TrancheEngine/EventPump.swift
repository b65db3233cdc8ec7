import Foundation
import Logging
import TrancheStore

extension TrancheEngine {
    /// Reads stored events in order and hands them to subscribers, until the
    /// claim loop stopped (then once more, so the last events get out).
    func pumpEvents(after firstID: Int64) async {
        var lastID = firstID
        while true {
            let stop = stopped.hasFired
            do {
                lastID = try await publishStoredEvents(after: lastID)
            } catch let error where !Task.isCancelled {
                logger.warning("reading events failed", metadata: ["error": "\(error)"])
            } catch {
                return
            }
            if stop || Task.isCancelled { return }
            await eventWakeup.wait(timeout: 1)
        }
    }

    /// Publishes the stored events after `lastID` (or after the oldest
    /// subscriber's cursor, if older); returns the newest event's id.
    private func publishStoredEvents(after lastID: Int64) async throws -> Int64 {
        var newest = lastID
        var from = min(lastID, hub.oldestCursor ?? lastID)
        while true {
            let events = try await store.allEvents(afterID: from, limit: 1_000)
            guard let last = events.last else { return newest }
            from = last.id
            newest = max(newest, last.id)
            for event in events where event.type == .completed || event.type == .failed || event.type == .canceled {
                unbind(event.batchID)
            }
            hub.publish(events)
        }
    }

    /// Publishes a chunk's progress (not stored), at most once per
    /// `progressInterval` per batch unless `force`.
    func publishProgress(_ id: BatchID, _ result: CheckpointResult, force: Bool = false) {
        guard hub.hasSubscribers else { return }
        let instant = monotonic.now
        let due = progressTimes.withLock { times -> Bool in
            if !force, let last = times[id],
                last.duration(to: instant) < .seconds(bounded: configuration.progressInterval)
            {
                return false
            }
            times[id] = instant
            return true
        }
        guard due else { return }
        let counts = (try? JSONText(encoding: result.counts).value()) ?? .null
        hub.publish([
            BatchEvent(
                id: 0, batchID: id, type: .progress, at: now,
                data: ["status": .string(result.batchStatus.rawValue), "counts": counts])
        ])
    }
}
