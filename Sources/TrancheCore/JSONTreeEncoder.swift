import Foundation

/// An `Encoder` that builds a ``JSONValue`` tree, for ``JSONText/init(encoding:)``.
///
/// It writes what `JSONEncoder` writes with its default strategies (dates as
/// seconds since 2001, `Data` as Base64, URLs as strings, non-finite numbers
/// refused), except that a ``JSONValue`` or ``JSONNumber`` inside the value
/// keeps every number's text: `JSONEncoder` would turn `9007199254740993`
/// into a `Double` and refuse `1e400`.
final class JSONTreeEncoder: Encoder {
    /// What a container writes into; resolved into a ``JSONValue`` at the end.
    final class Node {
        enum Content {
            case empty
            case value(JSONValue)
            case object([String: Node])
            case array([Node])
        }

        var content = Content.empty

        var value: JSONValue {
            switch content {
            case .empty: return .object([:])
            case .value(let value): return value
            case .object(let members): return .object(members.mapValues(\.value))
            case .array(let elements): return .array(elements.map(\.value))
            }
        }

        func member(_ key: String) -> Node {
            if case .object(var members) = content {
                if let node = members[key] { return node }
                let node = Node()
                members[key] = node
                content = .object(members)
                return node
            }
            let node = Node()
            content = .object([key: node])
            return node
        }

        func appended() -> Node {
            let node = Node()
            if case .array(var elements) = content {
                elements.append(node)
                content = .array(elements)
            } else {
                content = .array([node])
            }
            return node
        }

        var count: Int {
            if case .array(let elements) = content { return elements.count }
            return 0
        }
    }

    let node: Node
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(node: Node = Node(), codingPath: [any CodingKey] = []) {
        self.node = node
        self.codingPath = codingPath
    }

    /// The tree of `value`.
    static func encode(_ value: some Encodable) throws -> JSONValue {
        let encoder = JSONTreeEncoder()
        try encoder.encodeValue(value)
        return encoder.node.value
    }

    /// Puts a finished value where this encoder writes.
    func store(_ value: JSONValue) {
        node.content = .value(value)
    }

    func encodeValue<T: Encodable>(_ value: T) throws {
        switch value {
        case let data as Data: store(.string(data.base64EncodedString()))
        case let url as URL: store(.string(url.absoluteString))
        case let decimal as Decimal:
            guard !decimal.isNaN else { throw invalid(value, "Decimal.nan is not a JSON number") }
            store(.number(JSONNumber(unchecked: decimal.description)))
        default: try value.encode(to: self)
        }
    }

    func invalid(_ value: Any, _ reason: String) -> EncodingError {
        EncodingError.invalidValue(value, .init(codingPath: codingPath, debugDescription: reason))
    }

    func number(_ value: Double) throws -> JSONValue {
        guard let number = JSONNumber(value) else { throw invalid(value, "\(value) is not a JSON number") }
        return .number(number)
    }

    func child(_ node: Node, _ key: (any CodingKey)?) -> JSONTreeEncoder {
        JSONTreeEncoder(node: node, codingPath: key.map { codingPath + [$0] } ?? codingPath)
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if case .object = node.content {} else { node.content = .object([:]) }
        return KeyedEncodingContainer(Keyed<Key>(encoder: self))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if case .array = node.content {} else { node.content = .array([]) }
        return Unkeyed(encoder: self)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { Single(encoder: self) }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let encoder: JSONTreeEncoder
        var codingPath: [any CodingKey] { encoder.codingPath }

        func at(_ key: Key) -> JSONTreeEncoder { encoder.child(encoder.node.member(key.stringValue), key) }

        mutating func encodeNil(forKey key: Key) throws { at(key).store(.null) }
        mutating func encode(_ value: Bool, forKey key: Key) throws { at(key).store(.bool(value)) }
        mutating func encode(_ value: String, forKey key: Key) throws { at(key).store(.string(value)) }
        mutating func encode(_ value: Double, forKey key: Key) throws {
            let target = at(key)
            target.store(try target.number(value))
        }
        mutating func encode(_ value: Float, forKey key: Key) throws {
            let target = at(key)
            target.store(try target.number(Double(value.description) ?? .nan))
        }
        mutating func encode(_ value: Int, forKey key: Key) throws { at(key).store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { at(key).store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { at(key).store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { at(key).store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { at(key).store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { at(key).store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { at(key).store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { at(key).store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { at(key).store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { at(key).store(.number(JSONNumber(value))) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { try at(key).encodeValue(value) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key)
            -> KeyedEncodingContainer<NestedKey>
        {
            at(key).container(keyedBy: type)
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            at(key).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder { encoder.child(encoder.node.member("super"), nil) }
        mutating func superEncoder(forKey key: Key) -> any Encoder { at(key) }
    }

    struct Unkeyed: UnkeyedEncodingContainer {
        let encoder: JSONTreeEncoder
        var codingPath: [any CodingKey] { encoder.codingPath }
        var count: Int { encoder.node.count }

        func next() -> JSONTreeEncoder { encoder.child(encoder.node.appended(), nil) }

        mutating func encodeNil() throws { next().store(.null) }
        mutating func encode(_ value: Bool) throws { next().store(.bool(value)) }
        mutating func encode(_ value: String) throws { next().store(.string(value)) }
        mutating func encode(_ value: Double) throws {
            let target = next()
            target.store(try target.number(value))
        }
        mutating func encode(_ value: Float) throws {
            let target = next()
            target.store(try target.number(Double(value.description) ?? .nan))
        }
        mutating func encode(_ value: Int) throws { next().store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int8) throws { next().store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int16) throws { next().store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int32) throws { next().store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int64) throws { next().store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt) throws { next().store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt8) throws { next().store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt16) throws { next().store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt32) throws { next().store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt64) throws { next().store(.number(JSONNumber(value))) }
        mutating func encode<T: Encodable>(_ value: T) throws { try next().encodeValue(value) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type)
            -> KeyedEncodingContainer<NestedKey>
        {
            next().container(keyedBy: type)
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer { next().unkeyedContainer() }
        mutating func superEncoder() -> any Encoder { next() }
    }

    struct Single: SingleValueEncodingContainer {
        let encoder: JSONTreeEncoder
        var codingPath: [any CodingKey] { encoder.codingPath }

        mutating func encodeNil() throws { encoder.store(.null) }
        mutating func encode(_ value: Bool) throws { encoder.store(.bool(value)) }
        mutating func encode(_ value: String) throws { encoder.store(.string(value)) }
        mutating func encode(_ value: Double) throws { encoder.store(try encoder.number(value)) }
        mutating func encode(_ value: Float) throws {
            encoder.store(try encoder.number(Double(value.description) ?? .nan))
        }
        mutating func encode(_ value: Int) throws { encoder.store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int8) throws { encoder.store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int16) throws { encoder.store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int32) throws { encoder.store(.number(JSONNumber(value))) }
        mutating func encode(_ value: Int64) throws { encoder.store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt) throws { encoder.store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt8) throws { encoder.store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt16) throws { encoder.store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt32) throws { encoder.store(.number(JSONNumber(value))) }
        mutating func encode(_ value: UInt64) throws { encoder.store(.number(JSONNumber(value))) }
        mutating func encode<T: Encodable>(_ value: T) throws { try encoder.encodeValue(value) }
    }
}
