import Foundation
import TrancheStore

/// Why the engine refused a request, with a message fit for a 4xx answer.
public struct EngineError: Error, Sendable, Hashable, CustomStringConvertible {
    /// An extensible code.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        /// No strategy is registered under the batch's type.
        public static let unknownStrategy = Code(rawValue: "unknown_strategy")
        /// The options or the context are invalid.
        public static let invalidSubmission = Code(rawValue: "invalid_submission")
        public var description: String { rawValue }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// What to run: the batch's strategy, settings and context, without its items.
public struct Submission: Sendable {
    /// The strategy's name.
    public var type: String
    /// The strategy's settings, as JSON.
    public var context: JSONText
    public var options: BatchOptions
    /// Validate everything and report, run nothing.
    public var dryRun: Bool
    /// Higher runs first.
    public var priority: Int
    /// The tenant.
    public var owner: String
    /// What runs on the succeeded items' outputs once the batch completes
    /// (its context as given: ``TrancheEngine`` prepares and checks it).
    public var then: Successor? = nil

    public init(
        type: String, context: JSONText = JSONText(unchecked: "{}"), options: BatchOptions = BatchOptions(),
        dryRun: Bool = false, priority: Int = 0, owner: String = "local"
    ) {
        self.type = type
        self.context = context
        self.options = options
        self.dryRun = dryRun
        self.priority = priority
        self.owner = owner
    }

    /// A submission whose context is any `Encodable` value.
    public init(
        type: String, context: some Encodable, options: BatchOptions = BatchOptions(), dryRun: Bool = false,
        priority: Int = 0, owner: String = "local"
    ) throws {
        self.init(
            type: type, context: try JSONText(encoding: context), options: options, dryRun: dryRun,
            priority: priority, owner: owner)
    }
}

/// A finished batch with its per-item outcomes: the answer of a synchronous run.
public struct BatchReport: Sendable {
    public var batch: BatchRecord
    /// Every item, in order (at most the limit asked for).
    public var items: [ItemRecord]
    public var errors: [ErrorGroup]
}
