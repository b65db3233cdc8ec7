import Foundation
public import TrancheEngine

/// The strategies that ship with Tranche.
public enum BuiltinStrategies {
    /// `noop`, `sleep` and `exec`; `http` when a configuration for it is given.
    public static func all(http: HTTPStrategy.Configuration? = HTTPStrategy.Configuration()) -> [AnyBatchStrategy] {
        var strategies = [noop, AnyBatchStrategy(SleepStrategy()), AnyBatchStrategy(ExecStrategy())]
        if let http { strategies.append(AnyBatchStrategy(HTTPStrategy(configuration: http))) }
        return strategies
    }

    /// Does nothing and succeeds, a whole chunk at a time: for benchmarks and tests.
    public static let noop = AnyBatchStrategy(
        type: "noop",
        prepare: { context in
            guard case .object = try? context.value() else { throw OptionsError("context must be a JSON object") }
            return context
        },
        bind: { _ in
            BoundStrategy(
                process: { _ in .success(.null) },
                processChunk: { inputs in Array(repeating: .success(.null), count: inputs.count) })
        })
}

/// Sleeps for `ms` milliseconds per item: the item's `ms` field when it has
/// one, else the context's. For tests and benchmarks of slow work.
public struct SleepStrategy: BatchStrategy {
    public struct Context: Codable, Sendable {
        public var ms: Int?
        public init(ms: Int? = nil) { self.ms = ms }
    }

    public typealias Item = JSONValue

    /// The time slept, echoed as output.
    public struct Output: Codable, Sendable {
        public var sleptMS: Int
        enum CodingKeys: String, CodingKey { case sleptMS = "slept_ms" }
    }

    public var type: String { "sleep" }

    public init() {}

    public func prepare(_ context: Context) throws -> Context {
        if let ms = context.ms, ms < 0 || ms > 3_600_000 {
            throw OptionsError("context.ms must be between 0 and 3600000, got \(ms)")
        }
        return context
    }

    public func process(_ item: JSONValue, context: Context, input: ItemInput) async throws -> Output {
        let ms = item["ms"]?.doubleValue.map { Int($0) } ?? context.ms ?? 0
        try await Task.sleep(for: .milliseconds(max(0, ms)))
        return Output(sleptMS: ms)
    }
}
