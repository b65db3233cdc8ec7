import Metrics
import TrancheStore

/// What the engine records through swift-metrics. The server picks the
/// backend (Prometheus); labels are bounded: strategy types and statuses,
/// never a batch id.
enum EngineMetrics {
    /// Counts a checkpoint's outcomes by type and status, and the retries among them.
    static func record(_ outcomes: [ItemOutcome], type: String) {
        guard !outcomes.isEmpty else { return }
        var byStatus: [ItemStatus: Int] = [:]
        var retries = 0
        for outcome in outcomes {
            byStatus[outcome.status, default: 0] += 1
            if outcome.attempt > 1 { retries += 1 }
        }
        for (status, count) in byStatus {
            Counter(label: "tranche_items_total", dimensions: [("type", type), ("outcome", status.name)])
                .increment(by: count)
        }
        if retries > 0 {
            Counter(label: "tranche_item_retries_total", dimensions: [("type", type)]).increment(by: retries)
        }
    }

    /// How long one attempt took.
    static func attempt(type: String, duration: Duration) {
        Timer(label: "tranche_item_duration_seconds", dimensions: [("type", type)]).recordInterval(duration)
    }

    static func leaseExpired(count: Int) {
        Counter(label: "tranche_lease_expirations_total").increment(by: count)
    }

    static func runningChunks(_ value: Int) {
        Gauge(label: "tranche_running_chunks").record(value)
    }
}

extension Timer {
    func recordInterval(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
