public import Foundation

/// The JSON shape of items, item errors and timestamps, shared by the API,
/// exports and `tranche run --failed-out`: one representation everywhere.
public enum WireFormat {
    nonisolated(unsafe) private static let dateFormatter: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()

    /// An ISO 8601 timestamp with milliseconds, or null.
    public static func date(_ date: Date?) -> JSONValue {
        date.map { .string(dateFormatter.string(from: $0)) } ?? .null
    }

    /// `{code, message, category}`.
    public static func error(_ error: ItemError) -> JSONValue {
        ["code": .string(error.code), "message": .string(error.message), "category": .string(error.category.rawValue)]
    }

    /// `{seq, status, attempts, output, error, updated_at}`, with the item's
    /// own JSON under `item` when asked.
    public static func item(_ item: ItemRecord, includingPayload: Bool) -> JSONValue {
        var view: [String: JSONValue] = [
            "seq": .number(Double(item.seq)),
            "status": .string(item.status.name),
            "attempts": .number(Double(item.attempts)),
            "output": (try? item.output?.value()) ?? .null,
            "error": item.error.map(error) ?? .null,
            "updated_at": date(item.updatedAt),
        ]
        if includingPayload { view["item"] = (try? item.payload?.value()) ?? .null }
        if let next = item.nextAttemptAt { view["next_attempt_at"] = date(next) }
        return .object(view)
    }
}

extension Date {
    /// Milliseconds since 1970, as both stores keep times.
    package var milliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }

    package init(milliseconds: Int64) {
        self.init(timeIntervalSince1970: Double(milliseconds) / 1000)
    }
}

extension String {
    /// Text both stores keep whole: PostgreSQL's `text` refuses NUL and
    /// SQLite's text ends at it, and a strategy's message may carry one (a
    /// command's stderr). NUL becomes U+FFFD.
    package var storable: String {
        utf8.contains(0) ? replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : self
    }
}
