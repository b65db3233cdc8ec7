import Foundation

/// A JSON document held as a tree, for the small structured values Tranche
/// reads itself: a batch's `context`, templates, reports.
///
/// Item payloads and outputs are not parsed into this tree on the hot path;
/// they travel as ``JSONText``. Numbers keep their text (``JSONNumber``), so
/// `9007199254740993` or `1e400` comes out as it went in.
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// A number from a `Double` (`3.0` is written `3`); a value JSON cannot
    /// hold (infinite, NaN) is `null`.
    public static func number(_ value: Double) -> JSONValue {
        JSONNumber(value).map { .number($0) } ?? .null
    }

    /// Reads a value from any decoder. Through `JSONDecoder`, integers of 64
    /// bits are kept exactly and other numbers become the nearest `Double`;
    /// ``JSONText/value()`` keeps every number's text.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .number(JSONNumber(value))
        } else if let value = try? container.decode(UInt64.self) {
            self = .number(JSONNumber(value))
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        if let encoder = encoder as? JSONTreeEncoder {
            encoder.store(self)
            return
        }
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value): try value.encode(to: encoder)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// The value at `key` when this is an object.
    public subscript(key: String) -> JSONValue? {
        if case .object(let object) = self { return object[key] }
        return nil
    }

    /// The string, when this is a string.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The number as the nearest `Double`, when this is a number.
    public var doubleValue: Double? {
        if case .number(let value) = self { return value.doubleValue }
        return nil
    }

    /// Text for substitution into templates: strings bare, everything else as JSON.
    public var templateText: String {
        switch self {
        case .string(let value): return value
        case .null: return ""
        default: return jsonText
        }
    }

    /// The value as compact JSON, object keys sorted by their UTF-8 bytes
    /// (as `JSONEncoder`'s `.sortedKeys` does), numbers as their text.
    public var jsonText: String {
        var text = ""
        write(to: &text)
        return text
    }

    func write(to text: inout String) {
        switch self {
        case .null: text += "null"
        case .bool(let value): text += value ? "true" : "false"
        case .number(let value): text += value.text
        case .string(let value): Self.writeString(value, to: &text)
        case .array(let elements):
            text += "["
            for (offset, element) in elements.enumerated() {
                if offset > 0 { text += "," }
                element.write(to: &text)
            }
            text += "]"
        case .object(let members):
            text += "{"
            let keys = members.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            for (offset, key) in keys.enumerated() {
                if offset > 0 { text += "," }
                Self.writeString(key, to: &text)
                text += ":"
                members[key]?.write(to: &text)
            }
            text += "}"
        }
    }

    /// A JSON string: quotes, backslashes and control characters escaped,
    /// everything else (slashes, non-ASCII) as is.
    static func writeString(_ value: String, to text: inout String) {
        text += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case "\u{08}": text += "\\b"
            case "\u{0C}": text += "\\f"
            case "\u{00}"..."\u{1F}":
                let hex = String(scalar.value, radix: 16)
                text += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: text.unicodeScalars.append(scalar)
            }
        }
        text += "\""
    }
}

/// A JSON number kept as its text, so that no number changes on its way
/// through Tranche: `9007199254740993` is not rounded to a `Double`, and
/// `1e400` is not turned into infinity or `null`.
public struct JSONNumber: Sendable, Hashable, CustomStringConvertible, Codable {
    /// The number as JSON text (RFC 8259 grammar).
    public let text: String

    /// The number `text` spells, or nil when it is not a JSON number.
    public init?(_ text: String) {
        guard case .number(let number)? = try? JSONSyntax.parse(text), number.text == text else { return nil }
        self = number
    }

    /// Wraps text the caller has checked against the JSON number grammar.
    init(unchecked text: String) {
        self.text = text
    }

    /// An integer, exactly.
    public init(_ value: some BinaryInteger) {
        text = String(value)
    }

    /// A `Double` as `JSONEncoder` writes it (`3` for `3.0`, `1e+300`); nil
    /// when infinite or NaN, which JSON cannot hold.
    public init?(_ value: Double) {
        guard value.isFinite else { return nil }
        var text = value.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        self.text = text
    }

    /// The nearest `Double` (infinite beyond its range).
    public var doubleValue: Double {
        Double(text) ?? (text.hasPrefix("-") ? -.infinity : .infinity)
    }

    /// The number as an `Int64`, when it is an integer written without a
    /// fraction or exponent and fits.
    public var int64Value: Int64? { Int64(text) }

    public var description: String { text }

    /// Reads a number from any decoder; see ``JSONValue/init(from:)``.
    public init(from decoder: any Decoder) throws {
        guard case .number(let number) = try JSONValue(from: decoder) else {
            throw DecodingError.typeMismatch(
                JSONNumber.self, .init(codingPath: decoder.codingPath, debugDescription: "expected a number"))
        }
        self = number
    }

    /// Writes the text as is through ``JSONText/init(encoding:)``; other
    /// encoders get an `Int64` or `UInt64` when it is one, a `Decimal` when
    /// that holds it exactly, else the nearest `Double`.
    public func encode(to encoder: any Encoder) throws {
        if let encoder = encoder as? JSONTreeEncoder {
            encoder.store(.number(self))
            return
        }
        var container = encoder.singleValueContainer()
        if let value = Int64(text) {
            try container.encode(value)
        } else if let value = UInt64(text) {
            try container.encode(value)
        } else if let value = exactDecimal {
            try container.encode(value)
        } else {
            try container.encode(doubleValue)
        }
    }

    /// The number as a `Decimal` when one holds it exactly: at most 38
    /// significant digits and an exponent within `Decimal`'s range.
    var exactDecimal: Decimal? {
        let parts = text.lowercased().split(separator: "e", maxSplits: 1)
        guard let mantissa = parts.first else { return nil }
        // Far outside Decimal's range either way, and safe to add to.
        let unbounded = 1 << 20
        var exponent = parts.count == 2 ? Int(parts[1]).map { min(max($0, -unbounded), unbounded) } ?? unbounded : 0
        let split = mantissa.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let fraction = split.count == 2 ? split[1] : ""
        exponent -= fraction.count
        var digits = Substring((split.first ?? "").filter(\.isNumber) + fraction).drop { $0 == "0" }
        while digits.last == "0" {
            digits.removeLast()
            exponent += 1
        }
        guard digits.isEmpty || (digits.count <= 38 && (-128...127).contains(exponent)) else { return nil }
        return Decimal(string: text, locale: Locale(identifier: "en_US_POSIX"))
    }
}

/// JSON kept as its UTF-8 text: payloads, contexts and outputs move through
/// the store and the engine in this form and are decoded only by the code
/// that needs their fields.
public struct JSONText: Sendable, Hashable, CustomStringConvertible {
    /// The JSON text, already known to be well formed.
    public let text: String

    /// Wraps text that the caller has already validated.
    public init(unchecked text: String) {
        self.text = text
    }

    /// Validates `text` as one JSON value.
    public init(validating text: String) throws(JSONSyntaxError) {
        try JSONSyntax.validate(text)
        self.text = text
    }

    /// Encodes any `Encodable` value as compact JSON with sorted keys, as
    /// `JSONEncoder` would, except that ``JSONValue``, ``JSONNumber`` and
    /// ``JSONText`` inside it are written exactly (numbers as their text).
    public init(encoding value: some Encodable) throws {
        self.text = try JSONTreeEncoder.encode(value).jsonText
    }

    /// The JSON `null`.
    public static let null = JSONText(unchecked: "null")

    /// Decodes the text as `type`. A ``JSONValue`` is parsed with its
    /// numbers exact; other types go through `JSONDecoder`.
    public func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        if T.self == JSONValue.self, let value = try value() as? T { return value }
        return try JSONDecoder().decode(T.self, from: Data(text.utf8))
    }

    /// The text parsed as a ``JSONValue`` tree, every number kept exactly.
    public func value() throws -> JSONValue {
        try JSONSyntax.parse(text)
    }

    public var description: String { text }
}

extension JSONText: Codable {
    public init(from decoder: any Decoder) throws {
        self.init(unchecked: try JSONValue(from: decoder).jsonText)
    }

    public func encode(to encoder: any Encoder) throws {
        try value().encode(to: encoder)
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(JSONNumber(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(nilLiteral: ()) { self = .null }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}
