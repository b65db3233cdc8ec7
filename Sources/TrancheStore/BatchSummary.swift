public import Foundation

/// What is kept of a batch once it ends: its counters, its errors grouped by
/// code with a few samples, and its timings. Stored with the batch when it
/// ends, so the error log and the figures survive the pruning of its items.
public struct BatchSummary: Sendable, Hashable, Codable {
    /// One error group.
    public struct Errors: Sendable, Hashable, Codable {
        public var code: String
        public var category: ErrorCategory
        public var count: Int64
        public var samples: [Sample]
    }

    /// One sample of an error group.
    public struct Sample: Sendable, Hashable, Codable {
        public var seq: Int64
        public var message: String
    }

    public var status: BatchStatus
    public var counts: BatchCounts
    public var errors: [Errors]
    public var createdAt: Date
    public var startedAt: Date?
    public var completedAt: Date?
    /// Seconds spent processing (what the batch timeout counts).
    public var processingSeconds: Double

    /// Error groups kept in a summary, and samples per group.
    package static let maximumGroups = 50
    package static let samplesPerGroup = 3

    package init(_ batch: BatchRecord, errors: [ErrorGroup]) {
        status = batch.status
        counts = batch.counts
        self.errors = errors.prefix(Self.maximumGroups).map { group in
            Errors(
                code: group.code, category: group.category, count: group.count,
                samples: group.samples.prefix(Self.samplesPerGroup).map { Sample(seq: $0.seq, message: $0.message) })
        }
        createdAt = batch.createdAt
        startedAt = batch.startedAt
        completedAt = batch.completedAt
        processingSeconds = batch.processingTime
    }

    /// The error groups in the shape of the live error log.
    public var errorGroups: [ErrorGroup] {
        errors.map { group in
            ErrorGroup(
                code: group.code, category: group.category, count: group.count,
                samples: group.samples.map { ErrorSample(seq: $0.seq, message: $0.message) })
        }
    }

    enum CodingKeys: String, CodingKey {
        case status, counts, errors
        case createdAt = "created_at"
        case startedAt = "started_at"
        case completedAt = "completed_at"
        case processingSeconds = "processing_seconds"
    }
}

extension BatchRecord {
    /// The stored summary, once the batch has ended.
    public var decodedSummary: BatchSummary? {
        guard let summary else { return nil }
        return try? summary.decode(BatchSummary.self)
    }

    /// The summary text to store for this (ended) batch.
    package func summaryText(errors: [ErrorGroup]) throws -> JSONText {
        try JSONText(encoding: BatchSummary(self, errors: errors))
    }
}
