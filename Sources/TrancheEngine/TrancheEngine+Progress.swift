import Foundation
public import TrancheStore

extension TrancheEngine {
    /// The progress of `records` (rate, ETA with its range, chunks done) from
    /// the samples the cluster stored, so every node, and one just started,
    /// answers the same. A store that keeps no samples gives
    /// ``BatchProgress/unknown`` for batches still running.
    public func progress(of records: [BatchRecord]) async throws -> [BatchID: BatchProgress] {
        let now = self.now
        let stored: [BatchID: StoredProgress]
        if let store = store as? any ProgressStore {
            let since = now.addingTimeInterval(-(ProgressEstimate.windows.last ?? ProgressEstimate.rateWindow))
            stored = try await store.progress(of: records.map(\.id), since: since)
        } else {
            stored = [:]
        }
        var result: [BatchID: BatchProgress] = [:]
        for record in records {
            result[record.id] = BatchProgress(record: record, stored: stored[record.id], now: now)
        }
        return result
    }

    /// The progress of one batch; see ``progress(of:)-(BatchRecord)``.
    public func progress(of record: BatchRecord) async throws -> BatchProgress {
        try await progress(of: [record])[record.id] ?? .unknown
    }

    /// Samples the progress of every batch in progress (at most one sample a
    /// batch per ``ProgressEstimate/minimumSampleInterval``) and prunes old
    /// samples: one statement each, on the leader's sweep, nothing on the
    /// checkpoint path.
    func sampleProgress() async throws {
        guard let store = store as? any ProgressStore else { return }
        _ = try await store.recordProgressSamples(
            at: now, minimumInterval: ProgressEstimate.minimumSampleInterval, retention: ProgressEstimate.retention)
    }
}
