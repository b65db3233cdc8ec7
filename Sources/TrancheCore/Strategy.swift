/// One item handed to a strategy.
public struct ItemInput: Sendable, Hashable {
    public var batchID: BatchID
    /// The item's 0-based position in the batch.
    public var seq: Int64
    /// The item's JSON.
    public var payload: JSONText
    /// This attempt's number, 1-based.
    public var attempt: Int

    public init(batchID: BatchID, seq: Int64, payload: JSONText, attempt: Int) {
        self.batchID = batchID
        self.seq = seq
        self.payload = payload
        self.attempt = attempt
    }

    /// A stable key for receivers that deduplicate: the same for every attempt.
    public var idempotencyKey: String { "\(batchID.rawValue):\(seq)" }
}

/// The outcome of one attempt: an output, or a classified error.
public typealias ItemResult = Result<JSONText, ItemError>

/// The code behind a batch `type`, written with typed `Codable` values.
///
/// Conform to this to teach Tranche a new kind of work, then register it with
/// the engine. Tranche decodes the context once per batch and each item's
/// payload once per attempt; throw ``ItemError`` to classify failures (any
/// other error counts as retryable).
public protocol BatchStrategy: Sendable {
    /// The batch's settings, given at submission.
    associatedtype Context: Codable & Sendable
    /// One item.
    associatedtype Item: Codable & Sendable
    /// What one item produces, stored as the item's `output`.
    associatedtype Output: Codable & Sendable

    /// The name batches use to pick this strategy.
    var type: String { get }

    /// Validates and normalizes the context at submission; throw
    /// ``OptionsError`` for a clear 4xx answer.
    func prepare(_ context: Context) throws -> Context

    /// Checks one item at upload and in dry runs; throw a permanent
    /// ``ItemError`` to skip it.
    func validate(_ item: Item, context: Context) throws

    /// Does the work for one item.
    func process(_ item: Item, context: Context, input: ItemInput) async throws -> Output

    /// The context's top-level fields that hold secrets (tokens, passwords):
    /// stored and used as given, but shown as `"***"` wherever the batch is
    /// shown. None by default.
    func secretFields(of context: Context) -> Set<String>

    /// The batch hooks this strategy has; the engine calls only these. None by default.
    var hooks: BatchHooks { get }

    /// Runs once when a batch of this type ends (completed, failed or
    /// canceled; not a dry run), on one node, and again on another node only
    /// if the first died before it finished. What it returns becomes the
    /// batch's `result`; nil leaves it as it was. Declare
    /// ``BatchHooks/finalize`` in ``hooks`` for the engine to call it.
    func finalize(_ batch: EndedBatch, context: Context) async throws -> JSONValue?

    /// Runs once before any item of a batch of this type runs (after its
    /// confirmation), on one node, and again on another node only if the
    /// first died before it finished: make it safe to repeat. It may check
    /// the whole batch (throwing fails the batch with the error's message),
    /// return a preview (stored as the batch's `preview`; in a dry run that
    /// is all it does), or, with ``BatchHooks/generate``, append the batch's
    /// items itself through ``PreparingBatch/append(_:startSeq:cursor:)``.
    /// Declare ``BatchHooks/prepare`` in ``hooks`` for the engine to call it.
    func prepare(_ batch: PreparingBatch, context: Context) async throws -> JSONValue?
}

extension BatchStrategy {
    public func prepare(_ context: Context) throws -> Context { context }
    public func validate(_ item: Item, context: Context) throws {}
    public func secretFields(of context: Context) -> Set<String> { [] }
    public var hooks: BatchHooks { [] }
    public func finalize(_ batch: EndedBatch, context: Context) async throws -> JSONValue? { nil }
    public func prepare(_ batch: PreparingBatch, context: Context) async throws -> JSONValue? { nil }
}

/// The hooks a strategy has besides processing items.
public struct BatchHooks: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// ``BatchStrategy/finalize(_:context:)`` runs when a batch ends.
    public static let finalize = BatchHooks(rawValue: 1 << 0)
    /// ``BatchStrategy/prepare(_:context:)`` runs before any item does.
    public static let prepare = BatchHooks(rawValue: 1 << 1)
    /// `prepare` produces the batch's items: a batch of this type is created
    /// open, `prepare` appends to it, and the engine seals it afterwards.
    /// Implies ``prepare``.
    public static let generate = BatchHooks(rawValue: 1 << 2)
}

/// A batch as a strategy's ``BatchStrategy/prepare(_:context:)`` sees it,
/// with the means to append the items of a generating strategy.
public struct PreparingBatch: Sendable {
    public var id: BatchID
    public var type: String
    /// The tenant.
    public var owner: String
    /// True in a dry run: return a preview; nothing runs and nothing may be appended.
    public var dryRun: Bool
    /// True while items may still be appended (a generating strategy's batch
    /// on its real run). A resubmit of such a batch arrives with its items
    /// copied, sealed: there is nothing to generate then.
    public var isOpen: Bool
    /// The items stored so far: where a generator that ran before (on a node
    /// that died) got to, with ``cursor``.
    public var total: Int64
    /// The cursor saved with the last append, if any.
    public var cursor: JSONText?
    /// Which run of the hook this is (1 for the first).
    public var attempt: Int
    private let appendItems: @Sendable (Int64, [JSONText], JSONText?) async throws -> Int64

    public init(
        id: BatchID, type: String, owner: String, dryRun: Bool, isOpen: Bool, total: Int64, cursor: JSONText?,
        attempt: Int, append: @escaping @Sendable (Int64, [JSONText], JSONText?) async throws -> Int64
    ) {
        self.id = id
        self.type = type
        self.owner = owner
        self.dryRun = dryRun
        self.isOpen = isOpen
        self.total = total
        self.cursor = cursor
        self.attempt = attempt
        self.appendItems = append
    }

    /// Appends items at `startSeq` (validated like any upload) and saves
    /// `cursor` with them; returns the batch's item count after. Idempotent
    /// by `startSeq`: items already stored there are skipped, so a generator
    /// run again from the start adds no duplicate when it yields the same
    /// items in the same order.
    @discardableResult
    public func append<Item: Encodable>(_ items: [Item], startSeq: Int64, cursor: JSONText? = nil) async throws
        -> Int64
    {
        try await appendItems(startSeq, try items.map { try JSONText(encoding: $0) }, cursor)
    }
}

/// An ended batch as a strategy's ``BatchStrategy/finalize(_:context:)`` sees it.
public struct EndedBatch: Sendable, Hashable {
    public var id: BatchID
    public var type: String
    /// The tenant.
    public var owner: String
    /// `completed`, `failed` or `canceled`.
    public var status: BatchStatus
    public var counts: BatchCounts
    public var failureReason: String?
    /// The batch's summary: its counts, error groups with samples, and timings.
    public var summary: JSONValue

    public init(
        id: BatchID, type: String, owner: String, status: BatchStatus, counts: BatchCounts, failureReason: String?,
        summary: JSONValue
    ) {
        self.id = id
        self.type = type
        self.owner = owner
        self.status = status
        self.counts = counts
        self.failureReason = failureReason
        self.summary = summary
    }
}

/// A strategy with its types erased, as the engine runs it.
///
/// Built-in strategies that need no decoding per item (like `noop`) build
/// one directly and may process a whole chunk in one call.
public struct AnyBatchStrategy: Sendable {
    /// The name batches use to pick this strategy.
    public let type: String
    private let prepareContext: @Sendable (JSONText) throws -> JSONText
    private let bindContext: @Sendable (JSONText) throws -> BoundStrategy
    private let secretFieldsOf: @Sendable (JSONText) -> Set<String>?
    /// The strategy's `finalize` hook, given the batch and its stored
    /// context; nil when the strategy has none.
    public let finalize: (@Sendable (EndedBatch, JSONText) async throws -> JSONValue?)?
    /// The strategy's `prepare` hook, given the batch and its stored
    /// context; nil when the strategy has none.
    public let prepareBatch: (@Sendable (PreparingBatch, JSONText) async throws -> JSONValue?)?
    /// True when `prepare` appends the batch's items (``BatchHooks/generate``).
    public let generatesItems: Bool

    /// Builds an erased strategy from its two steps: `prepare` validates and
    /// normalizes a context; `bind` makes a runner for a prepared context.
    /// `secretFields` names a context's secret top-level fields (see
    /// ``BatchStrategy/secretFields(of:)``); nil when the context cannot be
    /// read, which hides every field.
    public init(
        type: String,
        prepare: @escaping @Sendable (JSONText) throws -> JSONText,
        bind: @escaping @Sendable (JSONText) throws -> BoundStrategy,
        secretFields: @escaping @Sendable (JSONText) -> Set<String>? = { _ in [] },
        finalize: (@Sendable (EndedBatch, JSONText) async throws -> JSONValue?)? = nil,
        prepareBatch: (@Sendable (PreparingBatch, JSONText) async throws -> JSONValue?)? = nil,
        generatesItems: Bool = false
    ) {
        self.type = type
        self.prepareContext = prepare
        self.bindContext = bind
        self.secretFieldsOf = secretFields
        self.finalize = finalize
        self.prepareBatch = prepareBatch
        self.generatesItems = generatesItems && prepareBatch != nil
    }

    /// Erases a typed strategy.
    public init<S: BatchStrategy>(_ strategy: S) {
        self.type = strategy.type
        if strategy.hooks.contains(.finalize) {
            self.finalize = { @Sendable batch, text in
                let context = try text.decode(S.Context.self)
                return try await strategy.finalize(batch, context: context)
            }
        } else {
            self.finalize = nil
        }
        if !strategy.hooks.isDisjoint(with: [.prepare, .generate]) {
            self.prepareBatch = { @Sendable batch, text in
                let context = try text.decode(S.Context.self)
                return try await strategy.prepare(batch, context: context)
            }
        } else {
            self.prepareBatch = nil
        }
        self.generatesItems = strategy.hooks.contains(.generate)
        self.secretFieldsOf = { text in
            (try? text.decode(S.Context.self)).map { strategy.secretFields(of: $0) }
        }
        self.prepareContext = { text in
            let context: S.Context
            do {
                context = try text.decode(S.Context.self)
            } catch {
                throw OptionsError("context is not valid for '\(strategy.type)': \(describeDecodingError(error))")
            }
            return try JSONText(encoding: try strategy.prepare(context))
        }
        self.bindContext = { text in
            let context = try text.decode(S.Context.self)
            return BoundStrategy(
                validate: { input in
                    do {
                        let item = try input.payload.decode(S.Item.self)
                        try strategy.validate(item, context: context)
                        return nil
                    } catch let error as ItemError {
                        return error
                    } catch {
                        return .permanent("invalid_item", describeDecodingError(error))
                    }
                },
                process: { input in
                    let item: S.Item
                    do {
                        item = try input.payload.decode(S.Item.self)
                    } catch {
                        return .failure(.permanent("invalid_item", describeDecodingError(error)))
                    }
                    do {
                        let output = try await strategy.process(item, context: context, input: input)
                        return .success(try JSONText(encoding: output))
                    } catch {
                        return .failure(.sanitizing(error))
                    }
                }
            )
        }
    }

    /// Validates and normalizes a submitted context.
    public func prepare(context: JSONText) throws -> JSONText {
        try prepareContext(context)
    }

    /// A runner for a prepared context.
    public func bind(context: JSONText) throws -> BoundStrategy {
        try bindContext(context)
    }

    /// The context as it may be shown (API, exports, events, dashboard):
    /// each secret field's value is `"***"`. A context this strategy cannot
    /// read shows every field as `"***"`.
    public func publicContext(_ context: JSONText) -> JSONValue {
        Self.publicContext(context, secretFields: secretFieldsOf(context))
    }

    /// `context` with the values of `secretFields` replaced by `"***"`; every
    /// top-level field when `secretFields` is nil (a strategy this node does
    /// not know, or a context it cannot read). Null when it is not JSON.
    public static func publicContext(_ context: JSONText, secretFields: Set<String>?) -> JSONValue {
        guard let value = try? context.value() else { return .null }
        guard case .object(var fields) = value else { return secretFields == nil ? .string("***") : value }
        for key in fields.keys where secretFields?.contains(key) ?? true {
            fields[key] = .string("***")
        }
        return .object(fields)
    }
}

/// A bounded, documented excerpt of text from outside (a response body, a
/// process's stderr) for an item's error message: at most
/// ``maxBytes`` bytes of UTF-8, cut at a character boundary, followed by
/// `…(N bytes more)` when the text was longer.
public enum ErrorExcerpt {
    /// The most bytes of outside text an error message carries.
    public static let maxBytes = 512

    /// The first ``maxBytes`` bytes of `text`; `totalBytes` is the size of
    /// the whole original when `text` is already a cut of it.
    public static func head(of text: String, totalBytes: Int? = nil) -> String {
        let bytes = Array(text.utf8)
        let total = max(totalBytes ?? bytes.count, bytes.count)
        guard total > maxBytes else { return text }
        var end = min(maxBytes, bytes.count)
        // Back off to the start of a UTF-8 sequence (not a continuation byte).
        while end > 0, end < bytes.count, bytes[end] & 0b1100_0000 == 0b1000_0000 { end -= 1 }
        return String(decoding: bytes[..<end], as: UTF8.self) + "…(\(total - end) bytes more)"
    }

    /// The last ``maxBytes`` bytes of `text` (stderr ends with the reason),
    /// after `(N bytes before)…` when the text was longer; `totalBytes` as in
    /// ``head(of:totalBytes:)``.
    public static func tail(of text: String, totalBytes: Int? = nil) -> String {
        let bytes = Array(text.utf8)
        let total = max(totalBytes ?? bytes.count, bytes.count)
        guard total > maxBytes else { return text }
        var start = bytes.count - min(maxBytes, bytes.count)
        while start < bytes.count, bytes[start] & 0b1100_0000 == 0b1000_0000 { start += 1 }
        return "(\(total - (bytes.count - start)) bytes before)…" + String(decoding: bytes[start...], as: UTF8.self)
    }
}

/// A strategy bound to one batch's context: what workers call.
public struct BoundStrategy: Sendable {
    /// Checks one item; nil when it is fine.
    public let validate: @Sendable (ItemInput) -> ItemError?
    /// Runs one item.
    public let process: @Sendable (ItemInput) async -> ItemResult
    /// Runs a whole chunk in one call, when the strategy can (bulk writes,
    /// no-ops); results in the order of the inputs.
    public let processChunk: (@Sendable ([ItemInput]) async -> [ItemResult])?

    public init(
        validate: @escaping @Sendable (ItemInput) -> ItemError? = { _ in nil },
        process: @escaping @Sendable (ItemInput) async -> ItemResult,
        processChunk: (@Sendable ([ItemInput]) async -> [ItemResult])? = nil
    ) {
        self.validate = validate
        self.process = process
        self.processChunk = processChunk
    }
}

/// A short, safe description of a decoding failure: the path and the problem,
/// never the data.
public func describeDecodingError(_ error: any Error) -> String {
    guard let error = error as? DecodingError else { return "it could not be decoded" }
    func path(_ context: DecodingError.Context) -> String {
        let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
        return keys.isEmpty ? "the value" : "'\(keys.joined(separator: "."))'"
    }
    switch error {
    case .typeMismatch(let type, let context):
        return "\(path(context)) should be \(typeName(type))"
    case .valueNotFound(let type, let context):
        return "\(path(context)) should be \(typeName(type)), found null"
    case .keyNotFound(let key, let context):
        let parent = context.codingPath.isEmpty ? "" : " in \(path(context))"
        return "missing field '\(key.stringValue)'\(parent)"
    case .dataCorrupted(let context):
        return "\(path(context)): \(context.debugDescription)"
    @unknown default:
        return "it could not be decoded"
    }
}

private func typeName(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: return "a string"
    case is Int.Type, is Int64.Type, is Double.Type: return "a number"
    case is Bool.Type: return "a boolean"
    default:
        let name = String(describing: type)
        if name.hasPrefix("Array") { return "an array" }
        if name.hasPrefix("Dictionary") { return "an object" }
        return "a \(name)"
    }
}
