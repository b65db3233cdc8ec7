public import Foundation

/// The JSON shape of items, item errors and timestamps, shared by the API,
/// exports, `tranche run --failed-out` and the API client: one
/// representation everywhere.
public enum WireFormat {
    nonisolated(unsafe) private static let dateFormatter: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()

    nonisolated(unsafe) private static let wholeSecondsFormatter: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter
    }()

    /// An ISO 8601 timestamp with milliseconds: `2026-01-02T03:04:05.678Z`.
    public static func timestamp(_ date: Date) -> String {
        dateFormatter.string(from: date)
    }

    /// Reads a timestamp in the API's form (fractional seconds optional).
    public static func date(fromTimestamp text: String) -> Date? {
        dateFormatter.date(from: text) ?? wholeSecondsFormatter.date(from: text)
    }

    /// An item as the API and exports show it.
    public static func item(_ item: ItemRecord, includingPayload: Bool) -> ItemView {
        ItemView(item, includingPayload: includingPayload)
    }
}

/// An item's outcome on the wire: `{seq, status, attempts, output, error,
/// updated_at}`, with `next_attempt_at` while it waits for a retry and the
/// item's own JSON under `item` when asked.
public struct ItemView: Codable, Sendable, Hashable {
    public var seq: Int64
    /// The item status's wire name (`succeeded`, `dead`, …).
    public var status: String
    public var attempts: Int
    /// The strategy's output; null when none.
    public var output: JSONValue
    public var error: ItemErrorView?
    public var updatedAt: Date?
    /// The item's own JSON, present only when asked for.
    public var item: JSONValue?
    public var nextAttemptAt: Date?

    /// The view of a stored item.
    public init(_ record: ItemRecord, includingPayload: Bool) {
        seq = record.seq
        status = record.status.name
        attempts = record.attempts
        output = (try? record.output?.value()) ?? .null
        error = record.error.map(ItemErrorView.init)
        updatedAt = record.updatedAt
        item = includingPayload ? (try? record.payload?.value()) ?? .null : nil
        nextAttemptAt = record.nextAttemptAt
    }

    enum CodingKeys: String, CodingKey {
        case seq, status, attempts, output, error, item
        case updatedAt = "updated_at"
        case nextAttemptAt = "next_attempt_at"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        seq = try container.decode(Int64.self, forKey: .seq)
        status = try container.decode(String.self, forKey: .status)
        attempts = try container.decode(Int.self, forKey: .attempts)
        output = try container.decodeIfPresent(JSONValue.self, forKey: .output) ?? .null
        error = try container.decodeIfPresent(ItemErrorView.self, forKey: .error)
        updatedAt = try container.decodeTimestampIfPresent(forKey: .updatedAt)
        item = try container.decodeIfPresent(JSONValue.self, forKey: .item)
        nextAttemptAt = try container.decodeTimestampIfPresent(forKey: .nextAttemptAt)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(seq, forKey: .seq)
        try container.encode(status, forKey: .status)
        try container.encode(attempts, forKey: .attempts)
        try container.encode(output, forKey: .output)
        try container.encodeNullable(error, forKey: .error)
        try container.encodeTimestamp(updatedAt, forKey: .updatedAt)
        try container.encodeIfPresent(item, forKey: .item)
        if let nextAttemptAt { try container.encodeTimestamp(nextAttemptAt, forKey: .nextAttemptAt) }
    }
}

/// An item's error on the wire: `{code, message, category}`.
public struct ItemErrorView: Codable, Sendable, Hashable {
    public var code: String
    public var message: String
    public var category: ErrorCategory

    public init(_ error: ItemError) {
        code = error.code
        message = error.message
        category = error.category
    }
}

extension KeyedEncodingContainer {
    /// Encodes `value`, or null when it is nil: the key is always written.
    package mutating func encodeNullable<T: Encodable>(_ value: T?, forKey key: Key) throws {
        if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
    }

    /// Writes a timestamp in the API's form, or null.
    package mutating func encodeTimestamp(_ date: Date?, forKey key: Key) throws {
        try encodeNullable(date.map(WireFormat.timestamp), forKey: key)
    }
}

extension KeyedDecodingContainer {
    /// Reads a timestamp in the API's form; nil when absent or null.
    package func decodeTimestampIfPresent(forKey key: Key) throws -> Date? {
        guard let text = try decodeIfPresent(String.self, forKey: key) else { return nil }
        guard let date = WireFormat.date(fromTimestamp: text) else {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: self, debugDescription: "'\(text)' is not an ISO 8601 timestamp")
        }
        return date
    }

    /// Reads a timestamp in the API's form that must be there.
    package func decodeTimestamp(forKey key: Key) throws -> Date {
        guard let date = try decodeTimestampIfPresent(forKey: key) else {
            throw DecodingError.valueNotFound(
                Date.self, .init(codingPath: codingPath + [key], debugDescription: "missing timestamp"))
        }
        return date
    }
}

extension Date {
    /// Milliseconds since 1970, as both stores keep times.
    package var milliseconds: Int64 { Int64.saturating(timeIntervalSince1970 * 1000) }

    /// Milliseconds since 1970 of the time `seconds` later (a lease's or a
    /// term's end), held within Int64 whatever `seconds` holds (NaN is 0).
    package func milliseconds(after seconds: Double) -> Int64 {
        milliseconds.adding(saturating: Int64.saturating(seconds * 1000))
    }

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
