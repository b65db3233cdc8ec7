import Foundation
import Synchronization
import TrancheCore
import TrancheEngine
import TrancheHTTP
import TrancheStore

/// What a progress line shows: the same whether it comes from a local
/// engine (`tranche run`) or from a server's answer (`tranche watch`,
/// `tranche submit --wait`). Rate and ETA are the store's, sampled by the
/// cluster (``ProgressEstimate``).
struct ProgressFigures: Sendable, Hashable {
    var status: BatchStatus
    var counts: BatchCounts
    var sealed: Bool
    var rate: Double
    var eta: Double?
    var etaLow: Double?
    var etaHigh: Double?
    var chunksDone: Int64?
    var chunksTotal: Int64?
    /// The batch's pace as a server reports it (`adaptive 18.0/s (retry_after)`), when it has one.
    var pace: String?

    init(record: BatchRecord, progress: BatchProgress) {
        status = record.status
        counts = record.counts
        sealed = record.sealed
        rate = progress.estimate.rate
        eta = progress.estimate.eta
        etaLow = progress.estimate.etaLow
        etaHigh = progress.estimate.etaHigh
        chunksDone = progress.chunksDone
        chunksTotal = progress.chunksTotal
    }

    init(view: BatchView) {
        status = view.status
        counts = view.counts
        sealed = view.sealed
        rate = view.rate
        eta = view.etaSeconds
        etaLow = view.etaLowSeconds
        etaHigh = view.etaHighSeconds
        chunksDone = view.chunksDone
        chunksTotal = view.chunksTotal
        pace = view.pace.flatMap(describePace)
    }
}

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

    /// Draws the progress of a local batch until cancelled: a bar five times
    /// a second on a terminal, a line every `interval` seconds otherwise.
    func run(engine: TrancheEngine, batchID: BatchID) async {
        guard !quiet else { return }
        let tick = terminal ? 0.2 : max(0.5, interval)
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(bounded: tick))
            if Task.isCancelled { break }
            guard let record = try? await engine.store.batch(batchID) else { continue }
            let progress = (try? await engine.progress(of: record)) ?? .unknown
            draw(ProgressFigures(record: record, progress: progress))
        }
    }

    /// Writes one progress line: over the last one on a terminal, on a line
    /// of its own otherwise.
    func draw(_ figures: ProgressFigures) {
        guard !quiet else { return }
        let line = Self.line(figures, width: terminal ? 24 : 0)
        if terminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
            drawn.withLock { $0 = true }
        } else {
            FileHandle.standardError.write(Data("\(line)\n".utf8))
        }
    }

    /// Leaves the terminal's line clean for the summary.
    func finish() {
        if drawn.withLock({ $0 }) { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }

    /// `[████░░░░]  62.0%  620/1,000  ✓600  ✗20  chunk 62 of 100  12.5/s  ETA 30.0s (26.0s–35.0s)`;
    /// the bar only when `width` is above 0, the status when the batch is not
    /// processing, rate and ETA until it ended.
    static func line(_ figures: ProgressFigures, width: Int) -> String {
        let counts = figures.counts
        let percent = counts.progress
        var parts: [String] = []
        if figures.status != .processing { parts.append(figures.status.rawValue) }
        if width > 0 {
            // A progress beyond 0…100 (a count that ran ahead) fills the bar, never past it.
            let filled = Int((percent.bounded(to: 0...100) / 100 * Double(width)).rounded(.down))
            parts.append(
                "[" + String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled) + "]")
        }
        parts.append(formatPercent(percent, width: 5))
        parts.append("\(format(counts.terminal))/\(format(counts.total))\(figures.sealed ? "" : "+")")
        parts.append("✓\(format(counts.succeeded))")
        let bad = counts.skipped.adding(saturating: counts.dead)
        if bad > 0 { parts.append("✗\(format(bad))") }
        if counts.failed > 0 { parts.append("↻\(format(counts.failed))") }
        return (parts + throughputParts(figures)).joined(separator: "  ")
    }

    /// `chunk 62 of 100`, `12.5/s`, `ETA 30.0s (26.0s–35.0s)`: the chunks
    /// when known; the rate and the ETA (when known) until the batch ended.
    static func throughputParts(_ figures: ProgressFigures) -> [String] {
        var parts: [String] = []
        if let done = figures.chunksDone, let total = figures.chunksTotal {
            parts.append("chunk \(format(done)) of \(format(total))")
        }
        guard !figures.status.isEnded else { return parts }
        parts.append("\(formatRate(figures.rate))/s")
        if figures.sealed, let eta = figures.eta {
            var text = "ETA \(formatDuration(eta))"
            if let low = figures.etaLow, low.isFinite, low < Duration.longestBoundedWait {
                text += " (\(formatDuration(low))–\(figures.etaHigh.map(formatDuration) ?? "?"))"
            }
            parts.append(text)
        }
        if let pace = figures.pace { parts.append("pace " + pace) }
        return parts
    }
}

/// A progress percentage held within 0…100 (a server's answer may hold
/// anything), one decimal, right-aligned to `width` characters.
func formatPercent(_ percent: Double, width: Int = 0) -> String {
    String(format: "%\(width).1f%%", percent.bounded(to: 0...100, nan: 0))
}

/// Items a second for a progress line: one decimal below 10 (a slow batch
/// shows `0.4/s`, not `0/s`), whole numbers above; anything else is `0`.
func formatRate(_ rate: Double) -> String {
    guard rate.isFinite, rate > 0 else { return "0" }
    if rate < 9.95 { return String(format: "%.1f", rate) }
    return format(Int64.saturating(rate.rounded()))
}
