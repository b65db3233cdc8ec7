import Foundation

/// A JSON document held as a tree, for the small structured values Tranche
/// reads itself: a batch's `context`, templates, reports.
///
/// Item payloads and outputs are not parsed into this tree on the hot path;
/// they travel as ``JSONText``.
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
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
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 1e15 {
                try container.encode(Int64(value))
            } else {
                try container.encode(value)
            }
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

    /// The number, when this is a number.
    public var doubleValue: Double? {
        if case .number(let value) = self { return value }
        return nil
    }

    /// Text for substitution into templates: strings bare, everything else as JSON.
    public var templateText: String {
        switch self {
        case .string(let value): return value
        case .null: return ""
        default: return (try? JSONText(encoding: self).text) ?? ""
        }
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

    /// Encodes any `Encodable` value.
    public init(encoding value: some Encodable) throws {
        let data = try JSONText.encoder.encode(value)
        self.text = String(decoding: data, as: UTF8.self)
    }

    /// The JSON `null`.
    public static let null = JSONText(unchecked: "null")

    /// Decodes the text as `type`.
    public func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(text.utf8))
    }

    /// The text parsed as a ``JSONValue`` tree.
    public func value() throws -> JSONValue {
        try decode(JSONValue.self)
    }

    public var description: String { text }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
}

extension JSONText: Codable {
    public init(from decoder: any Decoder) throws {
        let value = try JSONValue(from: decoder)
        self = try JSONText(encoding: value)
    }

    public func encode(to encoder: any Encoder) throws {
        try value().encode(to: encoder)
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(nilLiteral: ()) { self = .null }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}
