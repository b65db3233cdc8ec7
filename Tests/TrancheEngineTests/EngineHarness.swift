import Foundation
import Synchronization
import TrancheEngine
import TrancheSQLite
import TrancheTestSupport

/// An engine on a fresh SQLite file, with short intervals so tests run fast.
func makeEngine(
    _ strategies: [AnyBatchStrategy], workers: Int = 16,
    configure: (inout TrancheEngine.Configuration) -> Void = { _ in }
) throws -> TrancheEngine {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tranche-engine-\(UUID())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let store = try SQLiteBatchStore(path: directory.appendingPathComponent("engine.db").path)
    var configuration = TrancheEngine.Configuration()
    configuration.workers = workers
    configuration.sweepInterval = 0.05
    configuration.checkpointInterval = 0.1
    configuration.leaseDuration = 5
    configuration.drainGracePeriod = 2
    configure(&configuration)
    return TrancheEngine(store: store, strategies: strategies, configuration: configuration)
}

func items(_ count: Int, _ make: (Int) -> JSONValue = { ["n": .number(Double($0))] }) throws -> [JSONText] {
    try (0..<count).map { try JSONText(encoding: make($0)) }
}

func options(chunkSize: Int = 10, concurrency: Int = 8, maxAttempts: Int = 3) -> BatchOptions {
    var options = BatchOptions()
    options.chunkSize = chunkSize
    options.concurrency = concurrency
    options.maxAttempts = maxAttempts
    options.backoff = Backoff(base: 0.01, cap: 0.05)
    return options
}

/// Counts calls and the most items in flight at once.
final class Probe: Sendable {
    private let state = Mutex<(calls: [Int64: Int], inFlight: Int, maxInFlight: Int, starts: [Double])>(([:], 0, 0, []))
    let clock = ContinuousClock()
    let origin = ContinuousClock.now

    func enter(_ seq: Int64) -> Int {
        state.withLock { state in
            state.calls[seq, default: 0] += 1
            state.inFlight += 1
            state.maxInFlight = max(state.maxInFlight, state.inFlight)
            let elapsed = origin.duration(to: clock.now)
            state.starts.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
            return state.calls[seq]!
        }
    }

    func leave() { state.withLock { $0.inFlight -= 1 } }

    var maxInFlight: Int { state.withLock { $0.maxInFlight } }
    var calls: [Int64: Int] { state.withLock { $0.calls } }
    var starts: [Double] { state.withLock { $0.starts.sorted() } }
}

/// A typed test strategy: each item says how it behaves.
struct ScriptedStrategy: BatchStrategy {
    struct Context: Codable, Sendable {
        var delayMS: Int = 0
    }

    struct Item: Codable, Sendable {
        var n: Int
        /// "ok", "permanent", "fatal", "flaky:K" (fails K times), "retry" (always), "hang", "invalid".
        var kind: String?
    }

    struct Output: Codable, Sendable {
        var doubled: Int
    }

    let probe: Probe
    var type: String { "scripted" }

    func validate(_ item: Item, context: Context) throws {
        if item.kind == "invalid" { throw ItemError.permanent("invalid_item", "item \(item.n) is invalid") }
    }

    func process(_ item: Item, context: Context, input: ItemInput) async throws -> Output {
        let call = probe.enter(input.seq)
        defer { probe.leave() }
        if context.delayMS > 0 { try await Task.sleep(for: .milliseconds(context.delayMS)) }
        switch item.kind ?? "ok" {
        case "permanent": throw ItemError.permanent("bad_item", "item \(item.n) is bad")
        case "fatal": throw ItemError.fatal("auth", "credentials rejected")
        case "retry": throw ItemError.retryable("unavailable", "try later")
        case "hang": try await Task.sleep(for: .seconds(3600))
        case let kind where kind.hasPrefix("flaky:"):
            if call <= Int(kind.dropFirst(6))! { throw ItemError.retryable("flaky", "attempt \(call) failed") }
        default: break
        }
        return Output(doubled: item.n * 2)
    }
}
