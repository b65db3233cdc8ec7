import Foundation
import Synchronization
import TrancheCore
import TrancheEngine
import TrancheStore

/// A live progress bar on a terminal, or a progress line every few seconds
/// otherwise, on stderr.
final class ProgressDisplay: Sendable {
    let quiet: Bool
    let interval: Double
    let terminal: Bool
    private let drawn = Mutex(false)

    init(quiet: Bool, interval: Double, terminal: Bool) {
        self.quiet = quiet
        self.interval = interval
        self.terminal = terminal
    }

    func run(engine: TrancheEngine, batchID: BatchID) async {
        guard !quiet else { return }
        var meter = ProgressMeter(window: 10)
        let clock = ContinuousClock()
        let started = clock.now
        let tick = terminal ? 0.2 : max(0.5, interval)
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(bounded: tick))
            if Task.isCancelled { break }
            guard let record = try? await engine.store.batch(batchID) else { continue }
            let counts = record.counts
            meter.record(done: counts.processed, at: started.duration(to: clock.now).seconds)
            let line = Self.line(
                record: record, rate: meter.rate, eta: meter.eta(remaining: counts.total - counts.terminal),
                width: terminal ? 24 : 0)
            if terminal {
                FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
                drawn.withLock { $0 = true }
            } else {
                FileHandle.standardError.write(Data("\(line)\n".utf8))
            }
        }
    }

    /// Leaves the terminal's line clean for the summary.
    func finish() {
        if drawn.withLock({ $0 }) { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }

    static func line(record: BatchRecord, rate: Double, eta: Double?, width: Int) -> String {
        let counts = record.counts
        let percent = counts.progress
        var parts: [String] = []
        if width > 0 {
            // A progress beyond 0…100 (a count that ran ahead) fills the bar, never past it.
            let filled = Int((percent.bounded(to: 0...100) / 100 * Double(width)).rounded(.down))
            parts.append(
                "[" + String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled) + "]")
        }
        parts.append(String(format: "%5.1f%%", percent))
        parts.append("\(format(counts.terminal))/\(format(counts.total))\(record.sealed ? "" : "+")")
        parts.append("✓\(format(counts.succeeded))")
        let bad = counts.skipped + counts.dead
        if bad > 0 { parts.append("✗\(format(bad))") }
        if counts.failed > 0 { parts.append("↻\(format(counts.failed))") }
        parts.append("\(format(Int64.saturating(rate)))/s")
        if record.sealed, let eta { parts.append("ETA \(formatDuration(eta))") }
        return parts.joined(separator: "  ")
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
