package import Foundation
import Synchronization

/// A batch row with the store's internal key: what both drivers read and write.
package struct StoredBatch: Sendable {
    package var key: Int64
    package var record: BatchRecord
    /// Why the stored row cannot be honoured (its options do not decode), or
    /// nil. Such a batch is read with default options so that every path can
    /// still list and end it; a claim fails it with this reason instead of
    /// running it.
    package var damage: String?

    package init(key: Int64, record: BatchRecord, damage: String? = nil) {
        self.key = key
        self.record = record
        self.damage = damage
    }
}

/// One row a driver read, by column position. Each accessor answers nil for
/// NULL and throws for a value of another type, so a damaged row becomes a
/// `StoreError.storage`, never a crash.
package protocol StoredRow {
    func int64(at index: Int) throws -> Int64?
    func string(at index: Int) throws -> String?
    func bool(at index: Int) throws -> Bool?
}

extension StoredRow {
    /// The value at `index`, which must not be NULL.
    package func required<T>(_ read: (Int) throws -> T?, _ index: Int) throws -> T {
        guard let value = try read(index) else {
            throw StoreError(.storage, "a stored row has no value in column \(index)")
        }
        return value
    }

    package func int64(_ index: Int) throws -> Int64 { try required(int64(at:), index) }
    package func string(_ index: Int) throws -> String { try required(string(at:), index) }
    package func bool(_ index: Int) throws -> Bool { try required(bool(at:), index) }
    package func int(_ index: Int) throws -> Int {
        guard let value = Int(exactly: try int64(index)) else {
            throw StoreError(.storage, "a stored number in column \(index) is out of range")
        }
        return value
    }
    package func date(at index: Int) throws -> Date? { try int64(at: index).map(Date.init(milliseconds:)) }
}

/// The states of a chunk row.
package enum ChunkState: Int16, Sendable, CaseIterable {
    /// Claimable once `ready_at` has passed.
    case pending = 0
    /// Held by a lease.
    case leased = 1
    /// Every item is terminal.
    case done = 2

    /// The value as stored.
    package var stored: Int64 { Int64(rawValue) }
}

/// Literal lists for SQL, made from the status enums so that no statement
/// spells a status set by hand.
package enum SQLList {
    /// `'confirmed', 'processing'` for `IN (…)`.
    package static func of(_ statuses: [BatchStatus]) -> String {
        statuses.map { "'\($0.rawValue)'" }.joined(separator: ", ")
    }

    /// `0, 3` for `IN (…)`.
    package static func of(_ statuses: [ItemStatus]) -> String {
        statuses.map { String($0.rawValue) }.joined(separator: ", ")
    }

    /// Batches whose chunks may be leased.
    package static let runnableBatches = of(BatchStatus.runnable)
    /// Batches that have not ended.
    package static let openBatches = of(BatchStatus.open)
    /// Batches that have ended.
    package static let endedBatches = of(BatchStatus.ended)
    /// Items that will run (again).
    package static let waitingItems = of(ItemStatus.waiting)
    /// Items that carry an error.
    package static let itemsWithErrors = of(ItemStatus.withErrors)
}

extension StoredBatch {
    /// The `batches` columns both drivers select, in the order ``init(row:)`` reads them.
    package static let columns = """
        key, id, type, owner, status, paused_from, context, options, dry_run, priority, sealed,
        total, running, succeeded, failed, skipped, dead, canceled, retried, rescued,
        failure_reason, result, cursor, created_at, confirmed_at, started_at, completed_at, expires_at,
        processing_ms, running_since, pruned, summary
        """

    /// Decodes a row of ``columns``.
    package init(row: some StoredRow) throws {
        var counts = BatchCounts()
        counts.total = try row.int64(11)
        counts.running = try row.int64(12)
        counts.succeeded = try row.int64(13)
        counts.failed = try row.int64(14)
        counts.skipped = try row.int64(15)
        counts.dead = try row.int64(16)
        counts.canceled = try row.int64(17)
        counts.retried = try row.int64(18)
        counts.rescued = try row.int64(19)
        guard let id = BatchID(try row.string(1)) else {
            throw StoreError(.storage, "a stored batch id is malformed")
        }
        var options = BatchOptions()
        var damage: String?
        do {
            options = try RecentOptions.decode(try row.string(7))
        } catch {
            damage = "the stored options of batch \(id) cannot be read, so it cannot run"
        }
        var record = BatchRecord(
            id: id, type: try row.string(2), owner: try row.string(3),
            status: BatchStatus(rawValue: try row.string(4)) ?? .failed,
            pausedFrom: try row.string(at: 5).flatMap(BatchStatus.init(rawValue:)),
            context: JSONText(unchecked: try row.string(6)), options: options, dryRun: try row.bool(8),
            priority: try row.int(9), sealed: try row.bool(10), counts: counts,
            failureReason: try row.string(at: 20), result: try row.string(at: 21).map(JSONText.init(unchecked:)),
            cursor: try row.string(at: 22).map(JSONText.init(unchecked:)),
            createdAt: Date(milliseconds: try row.int64(23)), confirmedAt: try row.date(at: 24),
            startedAt: try row.date(at: 25), completedAt: try row.date(at: 26), expiresAt: try row.date(at: 27))
        record.processingTime = Double(try row.int64(28)) / 1000
        record.runningSince = try row.date(at: 29)
        record.pruned = try row.bool(30)
        record.summary = try row.string(at: 31).map(JSONText.init(unchecked:))
        self.init(key: try row.int64(0), record: record, damage: damage)
    }
}

/// The options of the last few batches read, by their stored text. Every
/// claim and checkpoint reads its batch's row (on SQLite, on the one writer
/// queue), and decoding the same options through `JSONDecoder` each time
/// was about 2% of the client's CPU in `tranche bench --http 256`. A batch's
/// options change only when it is patched, which changes the text, so a hit
/// (the same bytes, not merely a canonically equal `String`) is the value
/// decoding afresh would give. Texts that do not decode are never kept (each
/// read reports them again), nor are long ones; at most ``capacity`` are.
enum RecentOptions {
    static let capacity = 8
    /// Longer stored texts are decoded every time rather than kept.
    static let maxTextBytes = 4096
    private static let entries = Mutex<[(text: String, options: BatchOptions)]>([])

    /// `text` decoded as ``BatchOptions``, as `JSONText(unchecked: text).decode()` would.
    static func decode(_ text: String) throws -> BatchOptions {
        if let hit = entries.withLock({ $0.first { $0.text.utf8.elementsEqual(text.utf8) }?.options }) { return hit }
        let options: BatchOptions = try JSONText(unchecked: text).decode()
        guard text.utf8.count <= maxTextBytes else { return options }
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeLast() }
            entries.insert((text, options), at: 0)
        }
        return options
    }
}

/// `a = ?, b = ?, …` for `columns`, with each driver's placeholders (1-based).
package func assignments(_ columns: [String], placeholder: (Int) -> String) -> String {
    columns.enumerated().map { "\($0.element) = \(placeholder($0.offset + 1))" }.joined(separator: ", ")
}

/// A value to bind, for the statements both drivers build from one column list.
package enum StoredValue: Sendable, Hashable {
    case int(Int64?)
    case text(String?)
}

extension BatchRecord {
    /// The columns a lifecycle step writes, in the order of ``lifecycleValues``.
    package static let lifecycleColumns = [
        "status", "paused_from", "confirmed_at", "started_at", "completed_at", "expires_at", "failure_reason",
        "processing_ms", "running_since", "summary",
    ]

    /// This record's values for ``lifecycleColumns``.
    package var lifecycleValues: [StoredValue] {
        [
            .text(status.rawValue), .text(pausedFrom?.rawValue), .int(confirmedAt?.milliseconds),
            .int(startedAt?.milliseconds), .int(completedAt?.milliseconds), .int(expiresAt?.milliseconds),
            .text(failureReason?.storable), .int(Int64.saturating(processingTime * 1000)),
            .int(runningSince?.milliseconds), .text(summary?.text),
        ]
    }
}

extension BatchOptions {
    /// How many chunks of the batch may be leased at once: enough to keep
    /// `concurrency` items running, plus one so a new chunk starts while
    /// the last items of another finish. Automatic chunks may hold a single
    /// item, so they count as chunks of one.
    package var maxChunksInFlight: Int {
        let chunk = max(1, chunkSize ?? 1)
        return min(concurrency / chunk + (concurrency % chunk == 0 ? 0 : 1), Int(Int32.max) - 1) + 1
    }
}

extension Int64 {
    /// `value` rounded and held within Int64's range (NaN is 0): a number
    /// from outside can never trap a conversion (TrancheCore's `Int(saturating:)`).
    package static func saturating(_ value: Double) -> Int64 {
        Int64(Int(saturating: value.rounded()))
    }
}

extension BatchCounts {
    /// The item counters a recount writes, in the order of ``recountValues``.
    package static let recountColumns = ["total", "succeeded", "failed", "skipped", "dead", "canceled"]

    /// Counters recounted from `(status, count)` rows of a batch's items
    /// (after bulk changes such as a retry); `running`, `retried` and
    /// `rescued` are not item states and stay as they are.
    package static func recounted(_ histogram: [(status: Int, count: Int64)]) -> BatchCounts {
        var counts = BatchCounts()
        for (raw, count) in histogram {
            counts.total += count
            if let status = ItemStatus(rawValue: raw) { counts[status] += count }
        }
        return counts
    }

    /// This recount's values for ``recountAssignments``.
    package var recountValues: [Int64] { [total, succeeded, failed, skipped, dead, canceled] }
}
