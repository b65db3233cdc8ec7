public import Foundation
public import TrancheEngine

// The JSON the API answers with, one type per resource. The server encodes
// these and the `tranche` client decodes them: one definition of the wire.
// Keys are snake_case; a nullable field is always present (null when empty).

/// A batch: `GET /v1/batches/{id}`, list pages, lifecycle actions, and the
/// whole result of a synchronous submit.
public struct BatchView: Codable, Sendable, Hashable {
    public var id: BatchID
    public var type: String
    public var status: BatchStatus
    public var dryRun: Bool
    public var priority: Int
    public var sealed: Bool
    public var context: JSONValue
    public var options: BatchOptions
    public var counts: BatchCounts
    /// 0 to 100, one decimal.
    public var progress: Double
    /// Items per second over a sliding window, one decimal.
    public var rate: Double
    /// Seconds left at ``rate``; null until the cluster's samples span 10 s.
    public var etaSeconds: Double?
    /// The range the recent rates allow (``ProgressEstimate``); null when unknown.
    public var etaLowSeconds: Double?
    public var etaHighSeconds: Double?
    /// Chunks finished and in all; null once the items are pruned.
    public var chunksDone: Int64?
    public var chunksTotal: Int64?
    public var createdAt: Date
    public var confirmedAt: Date?
    public var startedAt: Date?
    public var completedAt: Date?
    public var expiresAt: Date?
    public var failureReason: String?
    /// A dry run's report or a strategy's summary; null when none.
    public var result: JSONValue
    /// The first item errors (at most 5).
    public var errors: [BatchErrorView]
    /// In a synchronous result: false, the batch ran. Absent elsewhere.
    public var queued: Bool?
    /// In a synchronous result: every item's outcome.
    public var items: [ItemView]?
    /// In a synchronous result: the errors grouped by code.
    public var errorGroups: [ErrorGroupView]?
    /// In a retry's answer: how many items run again.
    public var retriedItems: Int64?
    /// The batch it came from (a resubmit or a `then`); null when none.
    public var parentID: BatchID?
    /// The batches that came from it, oldest first (same tenant: a child has its parent's owner).
    public var children: [BatchID] = []
    /// The schedule that created this batch; null when none did.
    public var scheduleID: String?
    /// Its pace: fixed or adaptive, the current rate and why it last changed, refusals counted.
    public var pace: PaceView?
    /// What its strategy's `prepare` hook returned (a dry run's preview);
    /// absent when the hook returned nothing or the strategy has none.
    public var preview: JSONValue?

    /// The view of a stored batch, with its progress (rate, ETA, chunks);
    /// `context` is its public form (``TrancheEngine/publicContext(of:)``),
    /// never the stored one, whose secret fields it hides.
    public init(
        _ record: BatchRecord, context: JSONValue, progress: BatchProgress, errors: [BatchErrorView] = []
    ) {
        id = record.id
        type = record.type
        status = record.status
        dryRun = record.dryRun
        priority = record.priority
        sealed = record.sealed
        self.context = context
        options = record.options
        counts = record.counts
        self.progress = (record.counts.progress * 10).rounded() / 10
        rate = (progress.estimate.rate * 10).rounded() / 10
        etaSeconds = progress.estimate.eta?.rounded()
        etaLowSeconds = progress.estimate.etaLow?.rounded(.down)
        etaHighSeconds = progress.estimate.etaHigh?.rounded(.up)
        chunksDone = progress.chunksDone
        chunksTotal = progress.chunksTotal
        createdAt = record.createdAt
        confirmedAt = record.confirmedAt
        startedAt = record.startedAt
        completedAt = record.completedAt
        expiresAt = record.expiresAt
        failureReason = record.failureReason
        result = (try? record.result?.value()) ?? .null
        self.errors = errors
    }

    enum CodingKeys: String, CodingKey {
        case id, type, status, priority, sealed, context, options, counts, progress, rate, result, errors
        case queued, items
        case dryRun = "dry_run"
        case etaSeconds = "eta_seconds"
        case etaLowSeconds = "eta_low_seconds"
        case etaHighSeconds = "eta_high_seconds"
        case chunksDone = "chunks_done"
        case chunksTotal = "chunks_total"
        case createdAt = "created_at"
        case confirmedAt = "confirmed_at"
        case startedAt = "started_at"
        case completedAt = "completed_at"
        case expiresAt = "expires_at"
        case failureReason = "failure_reason"
        case errorGroups = "error_groups"
        case retriedItems = "retried_items"
        case parentID = "parent_id"
        case children
        case scheduleID = "schedule_id"
        case pace
        case preview
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(BatchID.self, forKey: .id)
        type = try container.decode(String.self, forKey: .type)
        status = try container.decode(BatchStatus.self, forKey: .status)
        dryRun = try container.decode(Bool.self, forKey: .dryRun)
        priority = try container.decode(Int.self, forKey: .priority)
        sealed = try container.decodeIfPresent(Bool.self, forKey: .sealed) ?? true
        context = try container.decodeIfPresent(JSONValue.self, forKey: .context) ?? .null
        options = try container.decode(BatchOptions.self, forKey: .options)
        counts = try container.decode(BatchCounts.self, forKey: .counts)
        progress = try container.decode(Double.self, forKey: .progress)
        rate = try container.decode(Double.self, forKey: .rate)
        etaSeconds = try container.decodeIfPresent(Double.self, forKey: .etaSeconds)
        etaLowSeconds = try container.decodeIfPresent(Double.self, forKey: .etaLowSeconds)
        etaHighSeconds = try container.decodeIfPresent(Double.self, forKey: .etaHighSeconds)
        chunksDone = try container.decodeIfPresent(Int64.self, forKey: .chunksDone)
        chunksTotal = try container.decodeIfPresent(Int64.self, forKey: .chunksTotal)
        createdAt = try container.decodeTimestamp(forKey: .createdAt)
        confirmedAt = try container.decodeTimestampIfPresent(forKey: .confirmedAt)
        startedAt = try container.decodeTimestampIfPresent(forKey: .startedAt)
        completedAt = try container.decodeTimestampIfPresent(forKey: .completedAt)
        expiresAt = try container.decodeTimestampIfPresent(forKey: .expiresAt)
        failureReason = try container.decodeIfPresent(String.self, forKey: .failureReason)
        result = try container.decodeIfPresent(JSONValue.self, forKey: .result) ?? .null
        errors = try container.decodeIfPresent([BatchErrorView].self, forKey: .errors) ?? []
        queued = try container.decodeIfPresent(Bool.self, forKey: .queued)
        items = try container.decodeIfPresent([ItemView].self, forKey: .items)
        errorGroups = try container.decodeIfPresent([ErrorGroupView].self, forKey: .errorGroups)
        retriedItems = try container.decodeIfPresent(Int64.self, forKey: .retriedItems)
        parentID = try container.decodeIfPresent(BatchID.self, forKey: .parentID)
        children = try container.decodeIfPresent([BatchID].self, forKey: .children) ?? []
        scheduleID = try container.decodeIfPresent(String.self, forKey: .scheduleID)
        pace = try container.decodeIfPresent(PaceView.self, forKey: .pace)
        preview = try container.decodeIfPresent(JSONValue.self, forKey: .preview)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(type, forKey: .type)
        try container.encode(status, forKey: .status)
        try container.encode(dryRun, forKey: .dryRun)
        try container.encode(priority, forKey: .priority)
        try container.encode(sealed, forKey: .sealed)
        try container.encode(context, forKey: .context)
        try container.encode(options, forKey: .options)
        try container.encode(counts, forKey: .counts)
        try container.encode(progress, forKey: .progress)
        try container.encode(rate, forKey: .rate)
        try container.encodeNullable(etaSeconds, forKey: .etaSeconds)
        try container.encodeNullable(etaLowSeconds, forKey: .etaLowSeconds)
        try container.encodeNullable(etaHighSeconds, forKey: .etaHighSeconds)
        try container.encodeNullable(chunksDone, forKey: .chunksDone)
        try container.encodeNullable(chunksTotal, forKey: .chunksTotal)
        try container.encodeTimestamp(createdAt, forKey: .createdAt)
        try container.encodeTimestamp(confirmedAt, forKey: .confirmedAt)
        try container.encodeTimestamp(startedAt, forKey: .startedAt)
        try container.encodeTimestamp(completedAt, forKey: .completedAt)
        try container.encodeTimestamp(expiresAt, forKey: .expiresAt)
        try container.encodeNullable(failureReason, forKey: .failureReason)
        try container.encode(result, forKey: .result)
        try container.encode(errors, forKey: .errors)
        try container.encodeIfPresent(queued, forKey: .queued)
        try container.encodeIfPresent(items, forKey: .items)
        try container.encodeIfPresent(errorGroups, forKey: .errorGroups)
        try container.encodeIfPresent(retriedItems, forKey: .retriedItems)
        try container.encodeNullable(parentID, forKey: .parentID)
        try container.encode(children, forKey: .children)
        try container.encodeNullable(scheduleID, forKey: .scheduleID)
        try container.encodeIfPresent(pace, forKey: .pace)
        try container.encodeIfPresent(preview, forKey: .preview)
    }
}

/// One of a batch's first item errors.
public struct BatchErrorView: Codable, Sendable, Hashable {
    public var seq: Int64
    public var code: String
    public var message: String

    public init(seq: Int64, code: String, message: String) {
        self.seq = seq
        self.code = code
        self.message = message
    }
}

/// The answer to a submit that was queued (202): where to follow it.
public struct AcceptedView: Codable, Sendable, Hashable {
    /// Always true.
    public var queued: Bool
    public var id: BatchID
    public var status: BatchStatus
    /// `/v1/batches/{id}`.
    public var statusURL: String
    public var total: Int64
    /// False while the batch takes uploads.
    public var sealed: Bool

    public init(_ record: BatchRecord) {
        queued = true
        id = record.id
        status = record.status
        statusURL = "/v1/batches/\(record.id.rawValue)"
        total = record.counts.total
        sealed = record.sealed
    }

    enum CodingKeys: String, CodingKey {
        case queued, id, status, total, sealed
        case statusURL = "status_url"
    }
}

/// A page of batches, newest first.
public struct BatchPage: Codable, Sendable, Hashable {
    public var batches: [BatchView]
    /// Pass as `cursor` for the next page; null on the last.
    public var nextCursor: String?

    public init(batches: [BatchView], nextCursor: String?) {
        self.batches = batches
        self.nextCursor = nextCursor
    }

    enum CodingKeys: String, CodingKey {
        case batches
        case nextCursor = "next_cursor"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(batches, forKey: .batches)
        try container.encodeNullable(nextCursor, forKey: .nextCursor)
    }
}

/// A page of a batch's items, in `seq` order.
public struct ItemPage: Codable, Sendable, Hashable {
    public var items: [ItemView]
    /// Pass as `cursor` for the next page; null on the last.
    public var nextCursor: String?

    public init(items: [ItemView], nextCursor: String?) {
        self.items = items
        self.nextCursor = nextCursor
    }

    enum CodingKeys: String, CodingKey {
        case items
        case nextCursor = "next_cursor"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(items, forKey: .items)
        try container.encodeNullable(nextCursor, forKey: .nextCursor)
    }
}

/// The answer to an upload: what was stored and what was refused.
public struct AppendView: Codable, Sendable, Hashable {
    /// A refused NDJSON line.
    public struct LineError: Codable, Sendable, Hashable {
        public var line: Int
        public var message: String

        public init(line: Int, message: String) {
            self.line = line
            self.message = message
        }
    }

    /// Items stored by this request (a repeated append stores none twice).
    public var inserted: Int
    /// Lines stored as `skipped` because they were not JSON.
    public var rejected: Int
    public var total: Int64
    /// The first refused lines (at most 10).
    public var errors: [LineError]
    public var status: BatchStatus

    public init(inserted: Int, rejected: Int, total: Int64, errors: [LineError], status: BatchStatus) {
        self.inserted = inserted
        self.rejected = rejected
        self.total = total
        self.errors = errors
        self.status = status
    }
}

/// A batch's errors of one code, with a few samples.
public struct ErrorGroupView: Codable, Sendable, Hashable {
    /// One failing item.
    public struct Sample: Codable, Sendable, Hashable {
        public var seq: Int64
        public var message: String
    }

    public var code: String
    public var category: ErrorCategory
    public var count: Int64
    public var samples: [Sample]

    public init(_ group: ErrorGroup) {
        code = group.code
        category = group.category
        count = group.count
        samples = group.samples.map { Sample(seq: $0.seq, message: $0.message) }
    }
}

/// `GET /v1/batches/{id}/errors`.
public struct ErrorGroupList: Codable, Sendable, Hashable {
    public var errors: [ErrorGroupView]

    public init(errors: [ErrorGroupView]) { self.errors = errors }
}

/// An event of a batch's history, as listed, streamed (SSE) and sent to webhooks.
public struct EventView: Codable, Sendable, Hashable {
    public var id: Int64
    public var batchID: BatchID
    public var type: BatchEventType
    public var at: Date
    public var data: JSONValue

    public init(_ event: BatchEvent) {
        id = event.id
        batchID = event.batchID
        type = event.type
        at = event.at
        data = event.data
    }

    enum CodingKeys: String, CodingKey {
        case id, type, at, data
        case batchID = "batch_id"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(Int64.self, forKey: .id)
        batchID = try container.decode(BatchID.self, forKey: .batchID)
        type = try container.decode(BatchEventType.self, forKey: .type)
        at = try container.decodeTimestamp(forKey: .at)
        data = try container.decodeIfPresent(JSONValue.self, forKey: .data) ?? .null
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(batchID, forKey: .batchID)
        try container.encode(type, forKey: .type)
        try container.encodeTimestamp(at, forKey: .at)
        try container.encode(data, forKey: .data)
    }
}

/// `GET /v1/batches/{id}/events`.
public struct EventList: Codable, Sendable, Hashable {
    public var events: [EventView]

    public init(events: [EventView]) { self.events = events }
}

/// A live node sharing the store.
public struct NodeView: Codable, Sendable, Hashable {
    public var id: String
    /// `serve`, `worker` or `run`.
    public var role: String
    public var host: String
    public var pid: Int
    public var workers: Int
    /// Whether the node runs maintenance.
    public var leader: Bool
    /// Chunks whose lease the node holds.
    public var chunks: Int64
    /// Unfinished items in those chunks.
    public var runningItems: Int64
    public var startedAt: Date
    public var heartbeatAt: Date

    public init(_ node: NodeRecord) {
        id = node.id
        role = node.role
        host = node.host
        pid = node.pid
        workers = node.workers
        leader = node.isLeader
        chunks = node.chunks
        runningItems = node.runningItems
        startedAt = node.startedAt
        heartbeatAt = node.heartbeatAt
    }

    enum CodingKeys: String, CodingKey {
        case id, role, host, pid, workers, leader, chunks
        case runningItems = "running_items"
        case startedAt = "started_at"
        case heartbeatAt = "heartbeat_at"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        role = try container.decode(String.self, forKey: .role)
        host = try container.decode(String.self, forKey: .host)
        pid = try container.decode(Int.self, forKey: .pid)
        workers = try container.decode(Int.self, forKey: .workers)
        leader = try container.decode(Bool.self, forKey: .leader)
        chunks = try container.decode(Int64.self, forKey: .chunks)
        runningItems = try container.decode(Int64.self, forKey: .runningItems)
        startedAt = try container.decodeTimestamp(forKey: .startedAt)
        heartbeatAt = try container.decodeTimestamp(forKey: .heartbeatAt)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(role, forKey: .role)
        try container.encode(host, forKey: .host)
        try container.encode(pid, forKey: .pid)
        try container.encode(workers, forKey: .workers)
        try container.encode(leader, forKey: .leader)
        try container.encode(chunks, forKey: .chunks)
        try container.encode(runningItems, forKey: .runningItems)
        try container.encodeTimestamp(startedAt, forKey: .startedAt)
        try container.encodeTimestamp(heartbeatAt, forKey: .heartbeatAt)
    }
}

/// `GET /v1/nodes`.
public struct NodeList: Codable, Sendable, Hashable {
    public var nodes: [NodeView]

    public init(nodes: [NodeView]) { self.nodes = nodes }
}

/// `GET /healthz` and `GET /readyz`.
public struct HealthView: Codable, Sendable, Hashable {
    /// `ok` or `ready`.
    public var status: String

    public init(status: String) { self.status = status }
}
