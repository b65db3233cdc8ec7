/// Where and why a text is not well-formed JSON.
public struct JSONSyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Byte offset of the first offending byte.
    public var offset: Int
    /// What was expected there.
    public var reason: String
    /// Whether the text is not UTF-8 at `offset`: a fault of the bytes'
    /// encoding rather than of the JSON they spell.
    public var isInvalidUTF8: Bool

    public init(offset: Int, reason: String, isInvalidUTF8: Bool = false) {
        self.offset = offset
        self.reason = reason
        self.isInvalidUTF8 = isInvalidUTF8
    }

    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

/// A fast validating scanner for RFC 8259 JSON.
///
/// Input lines are checked here before they are stored, so that a malformed
/// line is reported with its position instead of failing later in a worker.
/// It allocates nothing and never builds a tree, which keeps ingest at
/// hundreds of thousands of items a second.
public enum JSONSyntax {
    /// Throws when `bytes` is not exactly one JSON value (surrounding
    /// whitespace allowed) or not valid UTF-8.
    public static func validate(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONSyntaxError) {
        var scanner = Scanner(bytes: bytes, building: false)
        _ = try scanner.document()
    }

    /// Throws when `bytes` is not exactly one JSON value or not valid
    /// UTF-8: for bytes as they arrived, before they become a `String`
    /// (which would turn invalid UTF-8 into U+FFFD without a word).
    public static func validate(_ bytes: some Collection<UInt8>) throws(JSONSyntaxError) {
        _ = try scan(bytes, building: false)
    }

    /// Validates the UTF-8 of `text`.
    public static func validate(_ text: String) throws(JSONSyntaxError) {
        _ = try scan(text.utf8, building: false)
    }

    /// Parses `bytes` into a tree whose numbers keep their text exactly
    /// (see ``JSONNumber``), with the checks of ``validate(_:)-(UnsafeBufferPointer<UInt8>)``.
    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONSyntaxError) -> JSONValue {
        try scan(bytes, building: true)
    }

    /// Parses `text`; see ``parse(_:)-(Collection<UInt8>)``.
    public static func parse(_ text: String) throws(JSONSyntaxError) -> JSONValue {
        try scan(text.utf8, building: true)
    }

    /// The offset of the first byte of `bytes` that is not UTF-8, or nil
    /// when they all are.
    public static func firstInvalidUTF8(in bytes: some Collection<UInt8>) -> Int? {
        func run(_ buffer: UnsafeBufferPointer<UInt8>) -> Int? {
            var scanner = Scanner(bytes: buffer, building: false)
            while scanner.index < buffer.count {
                if buffer[scanner.index] < 0x80 {
                    scanner.index += 1
                    continue
                }
                do throws(JSONSyntaxError) { try scanner.utf8Sequence() } catch { return error.offset }
            }
            return nil
        }
        return bytes.withContiguousStorageIfAvailable(run) ?? Array(bytes).withUnsafeBufferPointer(run)
    }

    private static func scan(_ bytes: some Collection<UInt8>, building: Bool) throws(JSONSyntaxError) -> JSONValue {
        func run(_ buffer: UnsafeBufferPointer<UInt8>) -> Result<JSONValue, JSONSyntaxError> {
            var scanner = Scanner(bytes: buffer, building: building)
            return Result { () throws(JSONSyntaxError) in try scanner.document() }
        }
        return try (bytes.withContiguousStorageIfAvailable(run) ?? Array(bytes).withUnsafeBufferPointer(run)).get()
    }

    /// The deepest nesting accepted, so a hostile line cannot exhaust the stack.
    public static let maximumDepth = 512

    /// One pass over the bytes that checks them and, when `building`,
    /// makes the tree (validation alone allocates nothing).
    private struct Scanner {
        let bytes: UnsafeBufferPointer<UInt8>
        let building: Bool
        var index = 0

        init(bytes: UnsafeBufferPointer<UInt8>, building: Bool) {
            self.bytes = bytes
            self.building = building
        }

        mutating func document() throws(JSONSyntaxError) -> JSONValue {
            skipWhitespace()
            let value = try value(depth: 0)
            skipWhitespace()
            if index != bytes.count {
                throw fail("unexpected text after the value")
            }
            return value
        }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        func fail(_ reason: String) -> JSONSyntaxError {
            JSONSyntaxError(offset: index, reason: reason)
        }

        mutating func value(depth: Int) throws(JSONSyntaxError) -> JSONValue {
            guard index < bytes.count else { throw fail("expected a value, found the end") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try object(depth: depth + 1)
            case UInt8(ascii: "["): return try array(depth: depth + 1)
            case UInt8(ascii: "\""): return try string().map(JSONValue.string) ?? .null
            case UInt8(ascii: "t"):
                try literal("true")
                return .bool(true)
            case UInt8(ascii: "f"):
                try literal("false")
                return .bool(false)
            case UInt8(ascii: "n"):
                try literal("null")
                return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                let start = index
                try number()
                guard building else { return .null }
                return .number(JSONNumber(unchecked: String(decoding: bytes[start..<index], as: UTF8.self)))
            case 0x80...:
                let start = index
                try utf8Sequence()
                throw JSONSyntaxError(offset: start, reason: "expected a value, found a character outside ASCII")
            default: throw fail("expected a value")
            }
        }

        mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
            let count = word.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw fail("expected \(word)") }
            let start = word.utf8Start
            for offset in 0..<count where bytes[index + offset] != start[offset] {
                throw fail("expected \(word)")
            }
            index += count
        }

        /// An object; of repeated keys the last wins.
        mutating func object(depth: Int) throws(JSONSyntaxError) -> JSONValue {
            guard depth <= JSONSyntax.maximumDepth else { throw fail("nested too deeply") }
            var members: [String: JSONValue] = [:]
            index += 1
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return building ? .object(members) : .null
            }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                    throw fail("expected a string key")
                }
                let key = try string()
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                index += 1
                skipWhitespace()
                let member = try value(depth: depth)
                if let key { members[key] = member }
                skipWhitespace()
                guard index < bytes.count else { throw fail("unterminated object") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                } else if bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    return building ? .object(members) : .null
                } else {
                    throw fail("expected ',' or '}'")
                }
            }
        }

        mutating func array(depth: Int) throws(JSONSyntaxError) -> JSONValue {
            guard depth <= JSONSyntax.maximumDepth else { throw fail("nested too deeply") }
            var elements: [JSONValue] = []
            index += 1
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return building ? .array(elements) : .null
            }
            while true {
                skipWhitespace()
                let element = try value(depth: depth)
                if building { elements.append(element) }
                skipWhitespace()
                guard index < bytes.count else { throw fail("unterminated array") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                } else if bytes[index] == UInt8(ascii: "]") {
                    index += 1
                    return building ? .array(elements) : .null
                } else {
                    throw fail("expected ',' or ']'")
                }
            }
        }

        /// A string: its text when `building`, else nil. Its bytes must be
        /// UTF-8 (shortest forms, no surrogates); an escaped lone surrogate
        /// (`\ud800`), which no Swift string can hold, reads as U+FFFD.
        mutating func string() throws(JSONSyntaxError) -> String? {
            index += 1
            var decoded: [UInt8] = []
            var plain = index
            func flush(upTo end: Int) {
                if building { decoded.append(contentsOf: bytes[plain..<end]) }
            }
            while index < bytes.count {
                let byte = bytes[index]
                switch byte {
                case UInt8(ascii: "\""):
                    flush(upTo: index)
                    index += 1
                    return building ? String(decoding: decoded, as: UTF8.self) : nil
                case UInt8(ascii: "\\"):
                    flush(upTo: index)
                    index += 1
                    guard index < bytes.count else { throw fail("unterminated escape") }
                    let escaped = bytes[index]
                    let character: UInt8
                    switch escaped {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): character = escaped
                    case UInt8(ascii: "b"): character = 0x08
                    case UInt8(ascii: "f"): character = 0x0C
                    case UInt8(ascii: "n"): character = 0x0A
                    case UInt8(ascii: "r"): character = 0x0D
                    case UInt8(ascii: "t"): character = 0x09
                    case UInt8(ascii: "u"):
                        index += 1
                        let unit = try hexUnit()
                        if building { appendScalar(unit, to: &decoded) }
                        plain = index
                        continue
                    default:
                        throw fail("invalid escape")
                    }
                    if building { decoded.append(character) }
                    index += 1
                    plain = index
                case 0x00..<0x20:
                    throw fail("control character in string")
                case 0x80...:
                    try utf8Sequence()
                default:
                    index += 1
                }
            }
            throw fail("unterminated string")
        }

        /// The four hex digits of a `\u` escape, as a UTF-16 unit.
        mutating func hexUnit() throws(JSONSyntaxError) -> UInt16 {
            var unit: UInt16 = 0
            for _ in 0..<4 {
                guard index < bytes.count, let digit = hexValue(bytes[index]) else { throw fail("invalid \\u escape") }
                unit = unit << 4 | UInt16(digit)
                index += 1
            }
            return unit
        }

        /// Appends the scalar of `unit`, joined with a low surrogate escape
        /// that follows a high one.
        mutating func appendScalar(_ unit: UInt16, to decoded: inout [UInt8]) {
            var scalar = Unicode.Scalar(unit)
            if (0xD800..<0xDC00).contains(unit), index + 6 <= bytes.count, bytes[index] == UInt8(ascii: "\\"),
                bytes[index + 1] == UInt8(ascii: "u")
            {
                let save = index
                index += 2
                if let low = try? hexUnit(), (0xDC00..<0xE000).contains(low) {
                    scalar = Unicode.Scalar(0x10000 + (UInt32(unit - 0xD800) << 10) + UInt32(low - 0xDC00))
                } else {
                    index = save
                }
            }
            decoded.append(contentsOf: Array(String(scalar ?? "\u{FFFD}").utf8))
        }

        /// Steps over one well-formed UTF-8 sequence of 2 to 4 bytes, or
        /// fails at its first byte.
        mutating func utf8Sequence() throws(JSONSyntaxError) {
            let lead = bytes[index]
            let count: Int
            var low: UInt8 = 0x80
            var high: UInt8 = 0xBF
            switch lead {
            case 0xC2...0xDF: count = 2
            case 0xE0:
                count = 3
                low = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: count = 3
            case 0xED:
                count = 3
                high = 0x9F
            case 0xF0:
                count = 4
                low = 0x90
            case 0xF1...0xF3: count = 4
            case 0xF4:
                count = 4
                high = 0x8F
            default: throw JSONSyntaxError(offset: index, reason: "invalid UTF-8", isInvalidUTF8: true)
            }
            guard index + count <= bytes.count else {
                throw JSONSyntaxError(
                    offset: index, reason: "invalid UTF-8 (a sequence cut short)", isInvalidUTF8: true)
            }
            for offset in 1..<count {
                let byte = bytes[index + offset]
                let range = offset == 1 ? low...high : 0x80...0xBF
                guard range.contains(byte) else {
                    throw JSONSyntaxError(offset: index + offset, reason: "invalid UTF-8", isInvalidUTF8: true)
                }
            }
            index += count
        }

        func hexValue(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
            default: return nil
            }
        }

        mutating func digits() -> Int {
            let start = index
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                index += 1
            }
            return index - start
        }

        mutating func number() throws(JSONSyntaxError) {
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count else { throw fail("expected a digit") }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
            } else if digits() == 0 {
                throw fail("expected a digit")
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard digits() > 0 else { throw fail("expected a digit after '.'") }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                    index += 1
                }
                guard digits() > 0 else { throw fail("expected a digit in the exponent") }
            }
        }
    }
}
