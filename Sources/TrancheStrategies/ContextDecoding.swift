import TrancheCore

extension Decoder {
    /// The keyed container of a strategy's context, refusing any key that
    /// `Key` does not list, by name: a typo such as `header` for `headers` is
    /// a 422 at submission instead of a setting silently dropped.
    func contextContainer<Key: CodingKey & CaseIterable>(keyedBy type: Key.Type) throws
        -> KeyedDecodingContainer<Key>
    {
        try UnknownKeys.reject(in: self, known: Key.allCases.map(\.stringValue), what: "context field")
        return try container(keyedBy: type)
    }
}
