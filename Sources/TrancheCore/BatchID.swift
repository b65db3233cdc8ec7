public import Foundation

/// A batch's public identifier: a UUIDv7, so identifiers sort by creation time.
public struct BatchID: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The canonical lower-case text form.
    public let rawValue: String

    /// Accepts a UUID in its text form; returns nil for anything else.
    public init?(_ text: String) {
        guard text.utf8.count == 36, let uuid = UUID(uuidString: text) else { return nil }
        self.rawValue = uuid.uuidString.lowercased()
    }

    /// A new identifier for `date` (UUIDv7: 48 bits of milliseconds, then randomness).
    public static func generate(at date: Date = Date()) -> BatchID {
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255) }
        // A clock may answer any date: before 1970 is 0, beyond 48 bits wraps.
        let milliseconds = UInt64(max(0, Int(saturating: date.timeIntervalSince1970 * 1000)))
        for index in 0..<6 {
            bytes[index] = UInt8(truncatingIfNeeded: milliseconds >> (8 * (5 - UInt64(index))))
        }
        bytes[6] = (bytes[6] & 0x0F) | 0x70
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let uuid = UUID(
            uuid: (
                bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]
            )
        )
        return BatchID(unchecked: uuid.uuidString.lowercased())
    }

    init(unchecked rawValue: String) {
        self.rawValue = rawValue
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = BatchID(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a batch id"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public static func < (lhs: BatchID, rhs: BatchID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { rawValue }
}
