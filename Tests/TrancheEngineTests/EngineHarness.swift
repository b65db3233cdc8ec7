import Foundation
import Synchronization
import Testing
import TrancheEngine
import TranchePostgres
import TrancheSQLite
import TrancheTestSupport

/// The stores the engine tests run on, each case once per store.
enum EngineStore: String, CaseIterable, CustomStringConvertible, Sendable {
    case sqlite, postgres

    static let all = allCases

    var description: String { rawValue }

    /// Runs `body` with a place for a fresh, empty store: a SQLite file in
    /// the test's temporary directory, or a new database on the test
    /// PostgreSQL cluster. The directory is removed afterwards.
    func withSite<T>(isolation: isolated (any Actor)? = #isolation, _ body: (StoreSite) async throws -> T)
        async throws -> T
    {
        try await withTemporaryDirectory("tranche-engine") { directory in
            let location =
                switch self {
                case .sqlite: directory.appendingPathComponent("engine.db").path
                case .postgres: try await TestPostgres.freshDatabaseURL()
                }
            return try await body(StoreSite(store: self, location: location))
        }
    }
}

/// Where one test's store lives; it can be opened again (another node, a restart).
struct StoreSite: Sendable {
    var store: EngineStore
    /// The SQLite file's path or the PostgreSQL database's URL.
    var location: String

    /// Opens the store, runs `body` with it, and closes it.
    func withStore<T>(isolation: isolated (any Actor)? = #isolation, _ body: (any BatchStore) async throws -> T)
        async throws -> T
    {
        switch store {
        case .sqlite: try await body(try SQLiteBatchStore(path: location))
        case .postgres: try await TestPostgres.withStore(url: location) { try await body($0) }
        }
    }

    /// Opens the store, runs `body` while an engine runs on it, then drains
    /// the engine and closes the store.
    func withEngine<T: Sendable>(
        _ strategies: [AnyBatchStrategy], workers: Int = 16,
        configure: (inout TrancheEngine.Configuration) -> Void = { _ in },
        _ body: @Sendable (TrancheEngine) async throws -> T
    ) async throws -> T {
        try await withStore { store in
            let engine = makeEngine(store: store, strategies, workers: workers, configure: configure)
            return try await withRunning(engine, body)
        }
    }
}

extension EngineStore {
    /// Runs `body` while an engine runs on a fresh store of this kind.
    func withEngine<T: Sendable>(
        _ strategies: [AnyBatchStrategy], workers: Int = 16,
        configure: (inout TrancheEngine.Configuration) -> Void = { _ in },
        _ body: @Sendable (TrancheEngine) async throws -> T
    ) async throws -> T {
        try await withSite { site in
            try await site.withEngine(strategies, workers: workers, configure: configure, body)
        }
    }
}

/// An engine with short intervals so tests run fast, and leases long
/// enough (60 s) that no lease expires on a busy machine: an item runs
/// again only when a test means it to.
func makeEngine(
    store: any BatchStore, _ strategies: [AnyBatchStrategy], workers: Int = 16,
    configure: (inout TrancheEngine.Configuration) -> Void = { _ in }
) -> TrancheEngine {
    var configuration = TrancheEngine.Configuration()
    configuration.workers = workers
    configuration.sweepInterval = 0.05
    configuration.checkpointInterval = 0.1
    configuration.notifiedIdlePoll = 0.5
    configuration.leaseDuration = 60
    configuration.drainGracePeriod = 20
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

extension TrancheEngine {
    /// ``waitForEnd(_:)``, failing after `seconds`.
    func waitForEnd(_ id: BatchID, within seconds: Double = defaultDeadline) async throws -> BatchRecord {
        try await withDeadline(seconds: seconds, "batch \(id) to end") { try await self.waitForEnd(id) }
    }

    /// ``execute(_:items:)``, failing after `seconds`.
    func execute(within seconds: Double = defaultDeadline, _ submission: Submission, items: [JSONText]) async throws
        -> BatchReport
    {
        try await withDeadline(seconds: seconds, "a batch of \(items.count) items to run") {
            try await self.execute(submission, items: items)
        }
    }
}

/// Runs a one-item noop batch to its end: proof that the engine's scheduler
/// went through its claim rounds since the call began, so a batch that is
/// not ready to run (waiting for confirmation, a dry run) had its chance to
/// be claimed. Replaces a fixed sleep before asserting that nothing ran.
func passSchedulerRounds(_ engine: TrancheEngine) async throws {
    let probe = try await engine.submit(Submission(type: "noop"), items: try items(1))
    #expect(try await engine.waitForEnd(probe.id).status == .completed)
}

/// Waits for a progress event in `stream` whose status is `status`: a
/// chunk's checkpoint read that status (and its runner acted on it).
func waitForProgress(_ stream: AsyncStream<BatchEvent>, status: BatchStatus, _ what: String) async throws {
    try await withDeadline(what) {
        for await event in stream where event.type == .progress && event.data["status"]?.stringValue == status.rawValue
        {
            return
        }
        throw StreamEnded(description: "the event stream ended before \(what)")
    }
}

/// An event stream that ended before the event a test waited for.
struct StreamEnded: Error, CustomStringConvertible {
    var description: String
}

/// Counts calls and the most items in flight at once.
final class Probe: Sendable {
    private struct State {
        var calls: [Int64: Int] = [:]
        var inFlight = 0
        var maxInFlight = 0
        var starts: [Double] = []
        var canceled = 0
    }

    private let state = Mutex(State())
    let origin = ContinuousClock.now

    func enter(_ seq: Int64) -> Int {
        state.withLock { state in
            state.calls[seq, default: 0] += 1
            state.inFlight += 1
            state.maxInFlight = max(state.maxInFlight, state.inFlight)
            let elapsed = origin.duration(to: .now)
            state.starts.append(elapsed.seconds)
            return state.calls[seq]!
        }
    }

    func leave() { state.withLock { $0.inFlight -= 1 } }

    /// An item saw its task canceled.
    func sawCancellation() { state.withLock { $0.canceled += 1 } }

    var maxInFlight: Int { state.withLock { $0.maxInFlight } }
    var calls: [Int64: Int] { state.withLock { $0.calls } }
    var starts: [Double] { state.withLock { $0.starts.sorted() } }
    /// Attempts started, all items together.
    var started: Int { state.withLock { $0.starts.count } }
    var inFlight: Int { state.withLock { $0.inFlight } }
    /// Attempts whose task was canceled while they ran.
    var canceled: Int { state.withLock { $0.canceled } }

    /// Calls beyond `expected` per item, all items together: the runs
    /// at-least-once delivery allows when a lease expired (a busy machine),
    /// which a test bounds by the batch's `rescued` count instead of
    /// asserting exact call counts.
    func duplicates(expected: (Int64) -> Int = { _ in 1 }) -> Int {
        calls.reduce(0) { sum, entry in sum + max(0, entry.value - expected(entry.key)) }
    }

    /// Whether each of `seqs` ran at least `times` times.
    func ran(_ seqs: some Sequence<Int64>, atLeast times: Int = 1) -> Bool {
        let calls = self.calls
        return seqs.allSatisfy { calls[$0, default: 0] >= times }
    }
}

/// A typed test strategy: each item says how it behaves.
struct ScriptedStrategy: BatchStrategy {
    struct Context: Codable, Sendable {
        var delayMS: Int = 0
    }

    struct Item: Codable, Sendable {
        var n: Int
        /// "ok", "permanent", "fatal", "flaky:K" (fails K times), "retry" (always), "hang", "invalid",
        /// "later:K" (fails K times, asking to be retried after 60 s).
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
        case let kind where kind.hasPrefix("later:"):
            if call <= Int(kind.dropFirst(6))! {
                throw ItemError.retryable("busy", "attempt \(call) refused", retryAfter: 60)
            }
        default: break
        }
        return Output(doubled: item.n * 2)
    }
}

/// A test strategy whose items wait until the test opens the gate (or
/// their task is canceled), so a test knows which items are in flight.
struct GatedStrategy: BatchStrategy {
    struct Item: Codable, Sendable {
        var n: Int
    }

    let probe: Probe
    let gate: OneShotEvent
    var type: String { "gated" }

    func process(_ item: Item, context: JSONValue, input: ItemInput) async throws -> Int {
        _ = probe.enter(input.seq)
        defer { probe.leave() }
        await gate.wait()
        if Task.isCancelled {
            probe.sawCancellation()
            throw CancellationError()
        }
        return item.n
    }
}

/// A wall clock that stands still until the test moves it.
final class TestClock: Sendable {
    private let current: Mutex<Date>

    /// Starts at `start`: a whole second, so stored milliseconds compare equal.
    init(_ start: Date = Date(timeIntervalSince1970: 1_900_000_000)) {
        current = Mutex(start)
    }

    var now: Date { current.withLock { $0 } }

    func advance(by seconds: Double) {
        current.withLock { $0 = $0.addingTimeInterval(seconds) }
    }

    /// The clock for ``TrancheEngine/Configuration/clock``.
    var wallClock: WallClock { WallClock { self.now } }
}
