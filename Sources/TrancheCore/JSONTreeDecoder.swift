import Foundation

extension JSONText {
    /// Decodes the text as `type` with every number exact: the text is
    /// parsed as a ``JSONValue`` tree and read by a decoder over it, so a
    /// ``JSONValue`` or ``JSONNumber`` inside (an item, an output, a context)
    /// keeps `9007199254740993`, `-9223372036854775809` and `1e400` as
    /// written, where ``decode(_:)`` (through `JSONDecoder`) rounds the
    /// first two and refuses the whole text for the third. Other fields are
    /// read as `JSONDecoder` reads them with its default strategies.
    public func decodeExactly<T: Decodable>(
        _ type: T.Type = T.self, userInfo: [CodingUserInfoKey: any Sendable] = [:]
    ) throws -> T {
        try value().decoded(as: type, userInfo: userInfo)
    }
}

extension JSONValue {
    /// The tree read as `type`, its numbers exact (see ``JSONText/decodeExactly(_:userInfo:)``).
    public func decoded<T: Decodable>(as type: T.Type = T.self, userInfo: [CodingUserInfoKey: any Sendable] = [:])
        throws -> T
    {
        try JSONTreeDecoder(value: self, codingPath: [], userInfo: userInfo).decodeValue(type)
    }
}

/// A `Decoder` over a ``JSONValue`` tree, for ``JSONText/decodeExactly(_:)``:
/// the counterpart of ``JSONTreeEncoder``. Errors are the `DecodingError`s
/// `JSONDecoder` throws, with their coding paths.
struct JSONTreeDecoder: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    let info: [CodingUserInfoKey: any Sendable]
    var userInfo: [CodingUserInfoKey: Any] { info }

    init(value: JSONValue, codingPath: [any CodingKey], userInfo: [CodingUserInfoKey: any Sendable]) {
        self.value = value
        self.codingPath = codingPath
        self.info = userInfo
    }

    /// The decoder of a value under this one, at `key`.
    func child(_ value: JSONValue, _ key: any CodingKey) -> JSONTreeDecoder {
        JSONTreeDecoder(value: value, codingPath: codingPath + [key], userInfo: info)
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = value else { throw mismatch([String: JSONValue].self) }
        return KeyedDecodingContainer(Keyed<Key>(members: members, decoder: self))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else { throw mismatch([JSONValue].self) }
        return Unkeyed(elements: elements, decoder: self)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { Single(decoder: self) }

    func mismatch(_ type: Any.Type) -> DecodingError {
        if value == .null {
            return .valueNotFound(type, .init(codingPath: codingPath, debugDescription: "found null"))
        }
        return .typeMismatch(type, .init(codingPath: codingPath, debugDescription: "found \(value.kind)"))
    }

    func corrupted(_ message: String) -> DecodingError {
        .dataCorrupted(.init(codingPath: codingPath, debugDescription: message))
    }

    /// `type` read from this node: the exact tree types as they are, the
    /// types `JSONDecoder` treats apart as it does, anything else by its own `init(from:)`.
    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        if T.self == JSONValue.self, let result = value as? T { return result }
        if T.self == JSONNumber.self {
            guard case .number(let number) = value, let result = number as? T else { throw mismatch(type) }
            return result
        }
        if T.self == JSONText.self, let result = JSONText(unchecked: value.jsonText) as? T { return result }
        if T.self == URL.self {
            guard let url = URL(string: try decodeString()), let result = url as? T else {
                throw corrupted("invalid URL string")
            }
            return result
        }
        if T.self == Data.self {
            guard let data = Data(base64Encoded: try decodeString()), let result = data as? T else {
                throw corrupted("invalid Base64 string")
            }
            return result
        }
        if T.self == Decimal.self {
            guard case .number(let number) = value else { throw mismatch(type) }
            guard let decimal = Decimal(string: number.text, locale: Locale(identifier: "en_US_POSIX")),
                let result = decimal as? T
            else { throw corrupted("number \(number.text) is not representable as a Decimal") }
            return result
        }
        return try T(from: self)
    }

    func decodeString() throws -> String {
        guard case .string(let string) = value else { throw mismatch(String.self) }
        return string
    }

    func decodeBool() throws -> Bool {
        guard case .bool(let bool) = value else { throw mismatch(Bool.self) }
        return bool
    }

    func decodeFloatingPoint<T: BinaryFloatingPoint & LosslessStringConvertible>(_ type: T.Type) throws -> T {
        guard case .number(let number) = value else { throw mismatch(type) }
        guard let result = T(number.text), result.isFinite else {
            throw corrupted("number \(number.text) is not representable in Swift")
        }
        return result
    }

    func decodeInteger<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        guard case .number(let number) = value else { throw mismatch(type) }
        if let result = T(number.text) { return result }
        if let double = Double(number.text), let result = T(exactly: double) { return result }
        throw corrupted("number \(number.text) does not fit in \(type)")
    }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let members: [String: JSONValue]
        let decoder: JSONTreeDecoder
        var codingPath: [any CodingKey] { decoder.codingPath }

        var allKeys: [Key] { members.keys.compactMap { Key(stringValue: $0) } }

        func contains(_ key: Key) -> Bool { members[key.stringValue] != nil }

        func node(_ key: Key) throws -> JSONTreeDecoder {
            guard let value = members[key.stringValue] else {
                throw DecodingError.keyNotFound(
                    key, .init(codingPath: codingPath, debugDescription: "no value for key '\(key.stringValue)'"))
            }
            return decoder.child(value, key)
        }

        func decodeNil(forKey key: Key) throws -> Bool { try node(key).value == .null }
        func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try node(key).decodeBool() }
        func decode(_ type: String.Type, forKey key: Key) throws -> String { try node(key).decodeString() }
        func decode(_ type: Double.Type, forKey key: Key) throws -> Double {
            try node(key).decodeFloatingPoint(type)
        }
        func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try node(key).decodeFloatingPoint(type) }
        func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try node(key).decodeInteger(type) }
        func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try node(key).decodeInteger(type) }
        func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try node(key).decodeInteger(type) }
        func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try node(key).decodeInteger(type) }
        func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try node(key).decodeInteger(type) }
        func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try node(key).decodeInteger(type) }
        func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try node(key).decodeInteger(type) }
        func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try node(key).decodeInteger(type) }
        func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try node(key).decodeInteger(type) }
        func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try node(key).decodeInteger(type) }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try node(key).decodeValue(type) }

        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws
            -> KeyedDecodingContainer<NestedKey>
        {
            try node(key).container(keyedBy: type)
        }

        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            try node(key).unkeyedContainer()
        }

        func superDecoder() throws -> any Decoder {
            decoder.child(members["super"] ?? .null, AnyKey(stringValue: "super"))
        }

        func superDecoder(forKey key: Key) throws -> any Decoder {
            decoder.child(members[key.stringValue] ?? .null, key)
        }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        let elements: [JSONValue]
        let decoder: JSONTreeDecoder
        var codingPath: [any CodingKey] { decoder.codingPath }
        var currentIndex = 0

        init(elements: [JSONValue], decoder: JSONTreeDecoder) {
            self.elements = elements
            self.decoder = decoder
        }

        var count: Int? { elements.count }
        var isAtEnd: Bool { currentIndex >= elements.count }

        /// The next element's decoder; the index moves on only when `read` succeeds.
        mutating func next<T>(_ type: Any.Type, _ read: (JSONTreeDecoder) throws -> T) throws -> T {
            let key = AnyKey(intValue: currentIndex) ?? AnyKey(stringValue: String(currentIndex))
            guard currentIndex < elements.count else {
                throw DecodingError.valueNotFound(
                    type, .init(codingPath: codingPath + [key], debugDescription: "unkeyed container is at end"))
            }
            let result = try read(decoder.child(elements[currentIndex], key))
            currentIndex += 1
            return result
        }

        mutating func decodeNil() throws -> Bool {
            guard currentIndex < elements.count, elements[currentIndex] == .null else { return false }
            currentIndex += 1
            return true
        }

        mutating func decode(_ type: Bool.Type) throws -> Bool { try next(type) { try $0.decodeBool() } }
        mutating func decode(_ type: String.Type) throws -> String { try next(type) { try $0.decodeString() } }
        mutating func decode(_ type: Double.Type) throws -> Double {
            try next(type) { try $0.decodeFloatingPoint(type) }
        }
        mutating func decode(_ type: Float.Type) throws -> Float { try next(type) { try $0.decodeFloatingPoint(type) } }
        mutating func decode(_ type: Int.Type) throws -> Int { try next(type) { try $0.decodeInteger(type) } }
        mutating func decode(_ type: Int8.Type) throws -> Int8 { try next(type) { try $0.decodeInteger(type) } }
        mutating func decode(_ type: Int16.Type) throws -> Int16 { try next(type) { try $0.decodeInteger(type) } }
        mutating func decode(_ type: Int32.Type) throws -> Int32 { try next(type) { try $0.decodeInteger(type) } }
        mutating func decode(_ type: Int64.Type) throws -> Int64 { try next(type) { try $0.decodeInteger(type) } }
        mutating func decode(_ type: UInt.Type) throws -> UInt { try next(type) { try $0.decodeInteger(type) } }
        mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try next(type) { try $0.decodeInteger(type) } }
        mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try next(type) { try $0.decodeInteger(type) } }
        mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try next(type) { try $0.decodeInteger(type) } }
        mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try next(type) { try $0.decodeInteger(type) } }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next(type) { try $0.decodeValue(type) } }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws
            -> KeyedDecodingContainer<NestedKey>
        {
            try next(type) { try $0.container(keyedBy: type) }
        }

        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
            try next([JSONValue].self) { try $0.unkeyedContainer() }
        }

        mutating func superDecoder() throws -> any Decoder { try next(JSONValue.self) { $0 } }
    }

    struct Single: SingleValueDecodingContainer {
        let decoder: JSONTreeDecoder
        var codingPath: [any CodingKey] { decoder.codingPath }

        func decodeNil() -> Bool { decoder.value == .null }
        func decode(_ type: Bool.Type) throws -> Bool { try decoder.decodeBool() }
        func decode(_ type: String.Type) throws -> String { try decoder.decodeString() }
        func decode(_ type: Double.Type) throws -> Double { try decoder.decodeFloatingPoint(type) }
        func decode(_ type: Float.Type) throws -> Float { try decoder.decodeFloatingPoint(type) }
        func decode(_ type: Int.Type) throws -> Int { try decoder.decodeInteger(type) }
        func decode(_ type: Int8.Type) throws -> Int8 { try decoder.decodeInteger(type) }
        func decode(_ type: Int16.Type) throws -> Int16 { try decoder.decodeInteger(type) }
        func decode(_ type: Int32.Type) throws -> Int32 { try decoder.decodeInteger(type) }
        func decode(_ type: Int64.Type) throws -> Int64 { try decoder.decodeInteger(type) }
        func decode(_ type: UInt.Type) throws -> UInt { try decoder.decodeInteger(type) }
        func decode(_ type: UInt8.Type) throws -> UInt8 { try decoder.decodeInteger(type) }
        func decode(_ type: UInt16.Type) throws -> UInt16 { try decoder.decodeInteger(type) }
        func decode(_ type: UInt32.Type) throws -> UInt32 { try decoder.decodeInteger(type) }
        func decode(_ type: UInt64.Type) throws -> UInt64 { try decoder.decodeInteger(type) }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.decodeValue(type) }
    }
}

extension JSONValue {
    /// What kind of JSON value this is, for an error message.
    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}
