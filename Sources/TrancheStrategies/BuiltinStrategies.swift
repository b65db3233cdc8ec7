import Foundation
public import TrancheEngine

/// The strategies that ship with Tranche.
public enum BuiltinStrategies {
    /// `noop`, `sleep` and `exec` (by default running any command line: for a
    /// process of your own); `http` when a configuration for it is given (by
    /// default calling any address, internal ones too, like `exec`).
    public static func all(
        http: HTTPStrategy.Configuration? = HTTPStrategy.Configuration(outbound: .unrestricted),
        exec: ExecStrategy = ExecStrategy()
    ) -> [AnyBatchStrategy] {
        var strategies = [noop, AnyBatchStrategy(SleepStrategy()), AnyBatchStrategy(exec)]
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
///
/// `ms` is an integer from 0 to ``maximumMilliseconds`` (one hour): a context
/// outside it is refused at submission, an item outside it is skipped.
public struct SleepStrategy: BatchStrategy {
    public struct Context: Codable, Sendable {
        public var ms: Int?
        public init(ms: Int? = nil) { self.ms = ms }

        enum CodingKeys: String, CodingKey, CaseIterable { case ms }

        /// Decodes `{ms?}`; an unknown key, a null, or a number that is no
        /// integer in range, is refused naming the field (and the limit).
        public init(from decoder: any Decoder) throws {
            let container = try decoder.contextContainer(keyedBy: CodingKeys.self)
            ms = try container.decodeUnlessNull(Double.self, forKey: .ms).map { value in
                guard let ms = SleepStrategy.milliseconds(value) else {
                    throw DecodingError.dataCorrupted(
                        .init(
                            codingPath: decoder.codingPath + [CodingKeys.ms],
                            debugDescription: SleepStrategy.limitMessage(.number(value))))
                }
                return ms
            }
        }
    }

    public typealias Item = JSONValue

    /// The time slept, echoed as output.
    public struct Output: Codable, Sendable {
        public var sleptMS: Int
        enum CodingKeys: String, CodingKey { case sleptMS = "slept_ms" }
    }

    /// The longest sleep, in milliseconds: one hour.
    public static let maximumMilliseconds = 3_600_000

    public var type: String { "sleep" }

    public init() {}

    /// `value` as whole milliseconds when it is an integer in `0...maximumMilliseconds`.
    static func milliseconds(_ value: Double) -> Int? {
        guard value >= 0, value <= Double(maximumMilliseconds), let ms = Int(exactly: value) else { return nil }
        return ms
    }

    static func limitMessage(_ value: JSONValue) -> String {
        "must be an integer between 0 and \(maximumMilliseconds), got \(value.templateText)"
    }

    public func prepare(_ context: Context) throws -> Context {
        if let ms = context.ms, !(0...Self.maximumMilliseconds).contains(ms) {
            throw OptionsError("context.ms must be between 0 and \(Self.maximumMilliseconds), got \(ms)")
        }
        return context
    }

    /// An item's `ms`, when present, must be a number in range; anything else
    /// (an object without `ms`, a string) sleeps the context's time.
    public func validate(_ item: JSONValue, context: Context) throws {
        guard let value = item["ms"] else { return }
        guard let number = value.doubleValue, Self.milliseconds(number) != nil else {
            throw ItemError.permanent("invalid_item", "'ms' " + Self.limitMessage(value))
        }
    }

    public func process(_ item: JSONValue, context: Context, input: ItemInput) async throws -> Output {
        // An item stored before the limit held is clamped, never trusted.
        let requested = item["ms"]?.doubleValue.map { Int(saturating: $0) } ?? context.ms ?? 0
        let ms = min(max(0, requested), Self.maximumMilliseconds)
        try await Task.sleep(for: .milliseconds(ms))
        return Output(sleptMS: ms)
    }
}
