extension KeyedDecodingContainer {
    /// Refuses an explicit JSON `null` for `key` (a field the API does not
    /// declare nullable): `valueNotFound` naming the key, which answers
    /// "'dry_run' should be a boolean, found null". An absent key passes.
    public func refuseNull<T>(_ key: Key, as type: T.Type) throws {
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
