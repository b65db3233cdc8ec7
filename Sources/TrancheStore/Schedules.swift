public import Foundation

/// The batch a schedule submits on every run: what `POST /v1/batches` would
/// take, checked when the schedule was created. Stored as JSON.
public struct ScheduledBatch: Codable, Sendable, Hashable {
    public var type: String
    public var context: JSONValue
    public var options: BatchOptions
    public var dryRun: Bool
    public var priority: Int
    /// The items of every run.
    public var items: [JSONValue]

    public init(
        type: String, context: JSONValue, options: BatchOptions, dryRun: Bool, priority: Int, items: [JSONValue]
    ) {
        self.type = type
        self.context = context
        self.options = options
        self.dryRun = dryRun
        self.priority = priority
        self.items = items
    }

    enum CodingKeys: String, CodingKey {
        case type, context, options, priority, items
        case dryRun = "dry_run"
    }
}

/// What a schedule does with a tick missed while no node ran.
public struct CatchUp: RawRepresentable, Sendable, Hashable, Codable {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// Run once when a node is back, however many ticks were missed.
    public static let one = CatchUp(rawValue: "one")
    /// Run at the next tick only.
    public static let skip = CatchUp(rawValue: "skip")
    /// The choices a request may name.
    public static let all: [CatchUp] = [.one, .skip]
}

/// A recurring submission: `POST /v1/schedules`.
public struct ScheduleRecord: Sendable, Hashable {
    public var id: String
    public var tenant: String
    public var batch: ScheduledBatch
    /// The cron expression, or nil for an interval schedule.
    public var cron: String?
    /// The cron expression's time zone (an IANA name).
    public var timeZone: String
    /// Seconds between runs of an interval schedule.
    public var every: Double?
    public var catchUp: CatchUp
    /// Whether a run starts while the previous one is still going.
    public var overlap: Bool
    public var paused: Bool
    /// The next tick; nil when the cron expression never matches again.
    public var nextRunAt: Date?
    public var lastRunAt: Date?
    /// The batch the last run created.
    public var lastBatchID: BatchID?
    /// Batches created.
    public var runs: Int64
    /// Ticks skipped: the previous run was still going, or missed with `catch_up: skip`.
    public var skipped: Int64
    public var createdAt: Date

    public init(
        id: String, tenant: String, batch: ScheduledBatch, cron: String?, timeZone: String, every: Double?,
        catchUp: CatchUp, overlap: Bool, paused: Bool = false, nextRunAt: Date?, lastRunAt: Date? = nil,
        lastBatchID: BatchID? = nil, runs: Int64 = 0, skipped: Int64 = 0, createdAt: Date
    ) {
        self.id = id
        self.tenant = tenant
        self.batch = batch
        self.cron = cron
        self.timeZone = timeZone
        self.every = every
        self.catchUp = catchUp
        self.overlap = overlap
        self.paused = paused
        self.nextRunAt = nextRunAt
        self.lastRunAt = lastRunAt
        self.lastBatchID = lastBatchID
        self.runs = runs
        self.skipped = skipped
        self.createdAt = createdAt
    }

    /// When the schedule runs, as stored; nil when the stored expression or
    /// zone no longer parses (the schedule then never runs).
    public var timing: ScheduleTiming? {
        if let every { return ScheduleTiming(every: every) }
        guard let cron, let expression = try? CronExpression(cron), let zone = TimeZone(identifier: timeZone)
        else { return nil }
        return ScheduleTiming(cron: expression, timeZone: zone)
    }
}

/// One tick a node claims (``ScheduleStore/fireSchedule(_:)``).
public struct ScheduleFire: Sendable {
    public var scheduleID: String
    /// The `next_run_at` the node read: the claim succeeds only if it is
    /// still stored (compare-and-set), so one node alone fires a tick.
    public var expectedNextRunAt: Date
    /// The tick after this one.
    public var nextRunAt: Date?
    /// The batch to create, or nil to skip this tick.
    public var batch: NewBatch?
    public var items: [NewItem]
    /// Skip instead of creating the batch when the last run has not ended.
    public var skipIfRunning: Bool
    public var now: Date

    public init(
        scheduleID: String, expectedNextRunAt: Date, nextRunAt: Date?, batch: NewBatch?, items: [NewItem],
        skipIfRunning: Bool, now: Date
    ) {
        self.scheduleID = scheduleID
        self.expectedNextRunAt = expectedNextRunAt
        self.nextRunAt = nextRunAt
        self.batch = batch
        self.items = items
        self.skipIfRunning = skipIfRunning
        self.now = now
    }
}

/// What ``ScheduleStore/fireSchedule(_:)`` did.
public enum ScheduleFireResult: Sendable, Hashable {
    /// The tick was this caller's: the batch was created with it.
    case created(BatchRecord)
    /// The tick was this caller's and skipped (asked to, or the last run is still going).
    case skipped
    /// Another caller fired the tick first, or the schedule was paused or deleted.
    case lost
}

/// Schedules, stored beside the batches they create.
public protocol ScheduleStore: Sendable {
    func createSchedule(_ schedule: ScheduleRecord) async throws
    /// A tenant's schedules (every tenant's with nil), oldest first.
    func schedules(tenant: String?) async throws -> [ScheduleRecord]
    func schedule(id: String) async throws -> ScheduleRecord?
    /// Pauses or resumes a tenant's schedule; a resume sets `nextRunAt`
    /// (ticks missed while paused are not run). Nil when there is no such schedule.
    func setSchedulePaused(id: String, tenant: String, paused: Bool, nextRunAt: Date?) async throws
        -> ScheduleRecord?
    /// Returns false when the tenant has no such schedule. Its batches stay.
    func deleteSchedule(id: String, tenant: String) async throws -> Bool
    /// Running schedules whose next tick is at or before `now`, the most overdue first.
    func dueSchedules(now: Date, limit: Int) async throws -> [ScheduleRecord]
    /// Claims one tick: in one transaction, moves `next_run_at` from
    /// `expectedNextRunAt` to `nextRunAt` and creates the batch (recording its
    /// schedule), or skips. Concurrent callers with the same tick: one wins.
    func fireSchedule(_ fire: ScheduleFire) async throws -> ScheduleFireResult
    /// The schedule that created a batch, if one did.
    func scheduleID(ofBatch id: BatchID) async throws -> String?
}

/// What a due schedule does at a sweep: pure, so tested without a database.
public enum ScheduleRules {
    /// A tick later than this many seconds was missed (no node ran): it runs
    /// once or is skipped, as the schedule's `catch_up` says. 60 s.
    public static let missedAfter: Double = 60

    /// The decision for a due schedule at `now`.
    public struct Decision: Sendable, Hashable {
        /// Create a batch (true) or skip the tick.
        public var run: Bool
        /// The tick after `now`.
        public var nextRunAt: Date?
    }

    /// Whether to run `schedule` at `now` and its next tick; nil when it is
    /// not due. Every tick due since the last sweep is one run (never a
    /// burst); when even the latest due tick is more than ``missedAfter``
    /// seconds old, `catch_up` decides.
    public static func decide(_ schedule: ScheduleRecord, timing: ScheduleTiming, now: Date) -> Decision? {
        guard !schedule.paused, let due = schedule.nextRunAt, due <= now else { return nil }
        let onTime: Bool
        let next: Date?
        if let every = timing.every {
            // The last tick at or before now, without walking every
            // interval; the next one keeps the schedule's phase.
            let intervals = (now.timeIntervalSince(due) / every).rounded(.down)
            let latest = due.addingTimeInterval(intervals * every)
            onTime = now.timeIntervalSince(latest) <= missedAfter
            next = timing.nextRun(after: latest)
        } else {
            // On time when a tick lies within the last `missedAfter`
            // seconds: two evaluations, however many ticks were missed.
            let recent = timing.nextRun(after: now.addingTimeInterval(-missedAfter)).map { $0 <= now } ?? false
            onTime = now.timeIntervalSince(due) <= missedAfter || recent
            next = timing.nextRun(after: now)
        }
        return Decision(run: onTime || schedule.catchUp == .one, nextRunAt: next)
    }
}

extension ScheduleRecord {
    /// The columns ``init(row:)`` reads, in its order.
    package static let columns = """
        id, tenant, batch, cron, time_zone, every_ms, catch_up, overlap, paused, next_run_at, last_run_at,
        last_batch_id, runs, skipped, created_at
        """

    /// Decodes a stored schedule without trapping: a damaged row is a storage error.
    package init(row: some StoredRow) throws {
        let batchText = try row.string(2)
        guard let batch = try? JSONText(unchecked: batchText).decodeExactly(ScheduledBatch.self) else {
            throw StoreError(.storage, "a stored schedule's batch cannot be read")
        }
        self.init(
            id: try row.string(0), tenant: try row.string(1), batch: batch, cron: try row.string(at: 3),
            timeZone: try row.string(4), every: try row.int64(at: 5).map { Double($0) / 1_000 },
            catchUp: CatchUp(rawValue: try row.string(6)), overlap: try row.bool(7), paused: try row.bool(8),
            nextRunAt: try row.date(at: 9), lastRunAt: try row.date(at: 10),
            lastBatchID: try row.string(at: 11).flatMap { BatchID($0) }, runs: try row.int64(12),
            skipped: try row.int64(13), createdAt: Date(milliseconds: try row.int64(14)))
    }

    /// `every` in whole milliseconds, as stored.
    package var everyMilliseconds: Int64? {
        every.map { Int64(($0 * 1_000).bounded(to: 0...1e15).rounded()) }
    }
}
