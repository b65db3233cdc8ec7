/// A classified failure of one item, raised by a strategy.
///
/// `message` reaches the API and logs, so strategies put no secrets in it;
/// ``ItemError/sanitizing(_:)`` turns arbitrary errors into a safe one.
public struct ItemError: Error, Sendable, Hashable, Codable, CustomStringConvertible {
    /// A short machine-readable code, e.g. `http_503` or `exit_3`.
    public var code: String
    /// A human-readable explanation, bounded in length.
    public var message: String
    /// Whether the item is retried, skipped or fails the batch.
    public var category: ErrorCategory
    /// The earliest retry the strategy asks for (e.g. from `Retry-After`), in seconds.
    public var retryAfter: Double?

    /// The longest message kept.
    public static let maximumMessageLength = 2_000

    public init(code: String, message: String, category: ErrorCategory, retryAfter: Double? = nil) {
        self.code = code
        self.message =
            message.count > Self.maximumMessageLength
            ? String(message.prefix(Self.maximumMessageLength)) : message
        self.category = category
        self.retryAfter = retryAfter
    }

    /// A retryable error.
    public static func retryable(_ code: String, _ message: String, retryAfter: Double? = nil) -> ItemError {
        ItemError(code: code, message: message, category: .retryable, retryAfter: retryAfter)
    }

    /// A permanent error: the item is skipped.
    public static func permanent(_ code: String, _ message: String) -> ItemError {
        ItemError(code: code, message: message, category: .permanent)
    }

    /// A fatal error: the batch fails.
    public static func fatal(_ code: String, _ message: String) -> ItemError {
        ItemError(code: code, message: message, category: .fatal)
    }

    /// The item ran past its `itemTimeout`.
    public static func timedOut(after seconds: Double) -> ItemError {
        .retryable("timeout", "the item did not finish within \(formatSeconds(seconds))")
    }

    /// Classifies an error a strategy threw without classifying it: retryable,
    /// described by its type only, so that nothing it carries can leak.
    public static func sanitizing(_ error: any Error) -> ItemError {
        if let error = error as? ItemError { return error }
        if error is CancellationError { return .retryable("canceled", "the attempt was interrupted") }
        return .retryable("unhandled_error", "the strategy threw \(String(describing: type(of: error)))")
    }

    enum CodingKeys: String, CodingKey {
        case code, message, category
        case retryAfter = "retry_after"
    }

    public var description: String { "\(code): \(message)" }
}

func formatSeconds(_ seconds: Double) -> String {
    seconds < 1 ? "\(Int(saturating: seconds * 1000)) ms" : "\(seconds.shortText) s"
}
