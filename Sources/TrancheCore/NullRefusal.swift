public import Foundation

extension CodingUserInfoKey {
    /// Set to `true` on the decoder of a client's request (``Foundation/JSONDecoder/clientRequest()``).
    /// Types that also read stored rows (``BatchOptions``) refuse a `null`
    /// the API does not declare only then, so a row stored by any version
    /// keeps decoding as it did.
    public static let clientRequest = CodingUserInfoKey(rawValue: "tranche.client_request")!
}

extension JSONDecoder {
    /// A decoder for a client's request body: what the API does not declare
    /// nullable is refused as `null` (``CodingUserInfoKey/clientRequest``).
    public static func clientRequest() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.userInfo[.clientRequest] = true
        return decoder
    }
}

extension Decoder {
    /// Whether this decoder reads a client's request (``CodingUserInfoKey/clientRequest``).
    public var readsClientRequest: Bool { userInfo[.clientRequest] as? Bool == true }
}

extension KeyedDecodingContainer {
    /// Refuses an explicit JSON `null` for `key` (a field the API does not
    /// declare nullable): `valueNotFound` naming the key, which answers
    /// "'dry_run' should be a boolean, found null". An absent key passes.
    public func refuseNull(_ key: Key, as type: Any.Type) throws {
        guard contains(key), try decodeNil(forKey: key) else { return }
        throw DecodingError.valueNotFound(
            type, .init(codingPath: codingPath + [key], debugDescription: "\(key.stringValue) may not be null"))
    }

    /// The value of `key`, nil when it is absent; an explicit `null` is
    /// refused (``refuseNull(_:as:)``) instead of being taken as absent.
    public func decodeUnlessNull<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        try refuseNull(key, as: type)
        return try decodeIfPresent(type, forKey: key)
    }
}
