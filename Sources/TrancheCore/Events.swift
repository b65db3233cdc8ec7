public import Foundation

/// The kinds of event a batch records. A struct with static members so that
/// new kinds can be added without breaking anyone's `switch`.
public struct BatchEventType: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    public static let created = BatchEventType(rawValue: "batch.created")
    public static let preProcessed = BatchEventType(rawValue: "batch.pre_processed")
    public static let confirmed = BatchEventType(rawValue: "batch.confirmed")
    public static let processing = BatchEventType(rawValue: "batch.processing")
    public static let paused = BatchEventType(rawValue: "batch.paused")
    public static let resumed = BatchEventType(rawValue: "batch.resumed")
    public static let progress = BatchEventType(rawValue: "batch.progress")
    public static let completed = BatchEventType(rawValue: "batch.completed")
    public static let failed = BatchEventType(rawValue: "batch.failed")
    public static let canceled = BatchEventType(rawValue: "batch.canceled")
    public static let retried = BatchEventType(rawValue: "batch.retried")
    public static let sealed = BatchEventType(rawValue: "batch.sealed")
    public static let chunkRescued = BatchEventType(rawValue: "chunk.rescued")
    public static let itemDead = BatchEventType(rawValue: "item.dead")
    /// A batch got a child (a resubmit or its `then`): `child_id`, `kind`, `items`.
    public static let linked = BatchEventType(rawValue: "batch.linked")
    /// A strategy's `finalize` hook ran for an ended batch: `attempt`, `node`, `result` (whether it set one).
    public static let finalized = BatchEventType(rawValue: "batch.finalized")
    /// A confirmed batch waits for its strategy's `prepare` hook.
    public static let preparing = BatchEventType(rawValue: "batch.preparing")
    /// A strategy's `prepare` hook completed (`attempt`, `node`): the batch runs.
    public static let prepared = BatchEventType(rawValue: "batch.prepared")

    /// Every type the store records (progress is live only): what webhooks can subscribe to.
    public static let stored: [BatchEventType] = [
        .created, .preProcessed, .confirmed, .processing, .paused, .resumed, .completed, .failed, .canceled,
        .retried, .sealed, .chunkRescued, .itemDead, .linked, .finalized,
        .preparing, .prepared,
    ]

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }
}

/// One entry in a batch's history.
public struct BatchEvent: Sendable, Hashable, Codable {
    /// Increases with every event the store records; 0 for events that are
    /// only delivered live (progress).
    public var id: Int64
    public var batchID: BatchID
    public var type: BatchEventType
    public var at: Date
    /// Details: the new status, a reason, counts.
    public var data: JSONValue

    public init(id: Int64, batchID: BatchID, type: BatchEventType, at: Date, data: JSONValue = .object([:])) {
        self.id = id
        self.batchID = batchID
        self.type = type
        self.at = at
        self.data = data
    }

    enum CodingKeys: String, CodingKey {
        case id, type, at, data
        case batchID = "batch_id"
    }
}
