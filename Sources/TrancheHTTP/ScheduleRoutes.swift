public import Foundation
import Hummingbird
import NIOCore
public import TrancheEngine

/// The body of `POST /v1/schedules`: the batch every run submits and when
/// it runs (`cron` with `time_zone`, or `every`).
public struct CreateScheduleRequest: Codable, Sendable {
    /// What `POST /v1/batches` would take; its items are every run's items.
    public var batch: CreateBatchRequest
    /// A five-field cron expression (see ``CronExpression``).
    public var cron: String?
    /// The IANA zone the cron expression is read in. Default `UTC`.
    public var timeZone: String?
    /// An interval: a number and a unit, `s`, `m`, `h` or `d` (`30s`), 1 s to 366 days.
    public var every: String?
    /// A tick missed while no node ran: `one` (run once when a node is back, the default) or `skip`.
    public var catchUp: String?
    /// Start a run while the previous one is still going. Default false: that tick is skipped.
    public var overlap: Bool?
    /// Create the schedule paused.
    public var paused: Bool?

    public init(
        batch: CreateBatchRequest, cron: String? = nil, timeZone: String? = nil, every: String? = nil,
        catchUp: String? = nil, overlap: Bool? = nil, paused: Bool? = nil
    ) {
        self.batch = batch
        self.cron = cron
        self.timeZone = timeZone
        self.every = every
        self.catchUp = catchUp
        self.overlap = overlap
        self.paused = paused
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case batch, cron, every, overlap, paused
        case timeZone = "time_zone"
        case catchUp = "catch_up"
    }
}

/// The fields of a schedule request besides `batch`, which is read apart
/// (exactly, as `POST /v1/batches` reads its body).
private struct ScheduleFields: Decodable {
    var cron: String?
    var timeZone: String?
    var every: String?
    var catchUp: String?
    var overlap: Bool?
    var paused: Bool?

    typealias CodingKeys = CreateScheduleRequest.CodingKeys

    init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "field")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        // A field given as null is refused, not taken for a missing one.
        func field<T: Decodable>(_ type: T.Type, _ key: CodingKeys) throws -> T? {
            guard container.contains(key) else { return nil }
            return try container.decode(T.self, forKey: key)
        }
        cron = try field(String.self, .cron)
        timeZone = try field(String.self, .timeZone)
        every = try field(String.self, .every)
        catchUp = try field(String.self, .catchUp)
        overlap = try field(Bool.self, .overlap)
        paused = try field(Bool.self, .paused)
    }
}

/// A schedule as the API shows it. The batch's items are counted, not
/// echoed; its context hides the strategy's secret fields.
public struct ScheduleView: Codable, Sendable, Hashable {
    /// The batch each run submits.
    public struct Batch: Codable, Sendable, Hashable {
        public var type: String
        public var context: JSONValue
        public var options: BatchOptions
        public var dryRun: Bool
        public var priority: Int
        /// How many items each run has.
        public var items: Int

        enum CodingKeys: String, CodingKey {
            case type, context, options, priority, items
            case dryRun = "dry_run"
        }
    }

    public var id: String
    public var batch: Batch
    public var cron: String?
    public var timeZone: String
    /// Seconds between runs of an interval schedule.
    public var every: Double?
    public var catchUp: String
    public var overlap: Bool
    public var paused: Bool
    /// The next tick; null when paused or when the cron expression never matches again.
    public var nextRunAt: Date?
    public var lastRunAt: Date?
    /// The batch the last run created.
    public var lastBatchID: String?
    /// Batches created.
    public var runs: Int64
    /// Ticks skipped: the last run still going, or missed with `catch_up: skip`.
    public var skipped: Int64
    public var createdAt: Date

    public init(_ schedule: ScheduleRecord, context: JSONValue) {
        id = schedule.id
        batch = Batch(
            type: schedule.batch.type, context: context, options: schedule.batch.options,
            dryRun: schedule.batch.dryRun, priority: schedule.batch.priority, items: schedule.batch.items.count)
        cron = schedule.cron
        timeZone = schedule.timeZone
        every = schedule.every
        catchUp = schedule.catchUp.rawValue
        overlap = schedule.overlap
        paused = schedule.paused
        nextRunAt = schedule.paused ? nil : schedule.nextRunAt
        lastRunAt = schedule.lastRunAt
        lastBatchID = schedule.lastBatchID?.rawValue
        runs = schedule.runs
        skipped = schedule.skipped
        createdAt = schedule.createdAt
    }

    enum CodingKeys: String, CodingKey {
        case id, batch, cron, every, overlap, paused, runs, skipped
        case timeZone = "time_zone"
        case catchUp = "catch_up"
        case nextRunAt = "next_run_at"
        case lastRunAt = "last_run_at"
        case lastBatchID = "last_batch_id"
        case createdAt = "created_at"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        batch = try container.decode(Batch.self, forKey: .batch)
        cron = try container.decodeIfPresent(String.self, forKey: .cron)
        timeZone = try container.decode(String.self, forKey: .timeZone)
        every = try container.decodeIfPresent(Double.self, forKey: .every)
        catchUp = try container.decode(String.self, forKey: .catchUp)
        overlap = try container.decode(Bool.self, forKey: .overlap)
        paused = try container.decode(Bool.self, forKey: .paused)
        nextRunAt = try container.decodeTimestampIfPresent(forKey: .nextRunAt)
        lastRunAt = try container.decodeTimestampIfPresent(forKey: .lastRunAt)
        lastBatchID = try container.decodeIfPresent(String.self, forKey: .lastBatchID)
        runs = try container.decode(Int64.self, forKey: .runs)
        skipped = try container.decode(Int64.self, forKey: .skipped)
        createdAt = try container.decodeTimestamp(forKey: .createdAt)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(batch, forKey: .batch)
        try container.encodeNullable(cron, forKey: .cron)
        try container.encode(timeZone, forKey: .timeZone)
        try container.encodeNullable(every, forKey: .every)
        try container.encode(catchUp, forKey: .catchUp)
        try container.encode(overlap, forKey: .overlap)
        try container.encode(paused, forKey: .paused)
        try container.encodeTimestamp(nextRunAt, forKey: .nextRunAt)
        try container.encodeTimestamp(lastRunAt, forKey: .lastRunAt)
        try container.encodeNullable(lastBatchID, forKey: .lastBatchID)
        try container.encode(runs, forKey: .runs)
        try container.encode(skipped, forKey: .skipped)
        try container.encodeTimestamp(createdAt, forKey: .createdAt)
    }
}

/// `GET /v1/schedules`, oldest first.
public struct ScheduleList: Codable, Sendable, Hashable {
    public var schedules: [ScheduleView]

    public init(schedules: [ScheduleView]) { self.schedules = schedules }
}

/// `/v1/schedules`: a tenant's recurring batches. The maintenance leader
/// creates each run (``TrancheEngine/fireDueSchedules()``).
extension TrancheServer {
    func addScheduleRoutes(_ v1: RouterGroup<TrancheRequestContext>) {
        v1.post("schedules") { request, context in
            let buffer = try await request.collectBody(limit: configuration.maxBodyBytes)
            let schedule = try schedule(request, buffer, context)
            try await scheduleStore().createSchedule(schedule)
            return Self.json(view(of: schedule), status: .created)
        }
        v1.get("schedules") { _, context in
            let schedules = try await scheduleStore().schedules(tenant: context.tenant)
            return Self.json(ScheduleList(schedules: schedules.map(view(of:))))
        }
        v1.get("schedules/:schedule") { _, context in
            Self.json(view(of: try await ownedSchedule(context)))
        }
        v1.delete("schedules/:schedule") { _, context in
            let id = context.parameters.get("schedule") ?? ""
            guard try await scheduleStore().deleteSchedule(id: id, tenant: context.tenant) else {
                throw Problem(.notFound, "no schedule \(id)")
            }
            return Response(status: .noContent)
        }
        for action in ["pause", "resume"] {
            v1.post("schedules/:schedule/\(action)") { _, context in
                let schedule = try await ownedSchedule(context)
                // A resumed schedule runs at its next tick from now: ticks
                // missed while it was paused are not run.
                let next = action == "resume" ? schedule.timing?.nextRun(after: engine.configuration.clock.now()) : nil
                guard
                    let updated = try await scheduleStore().setSchedulePaused(
                        id: schedule.id, tenant: context.tenant, paused: action == "pause", nextRunAt: next)
                else { throw Problem(.notFound, "no schedule \(schedule.id)") }
                return Self.json(view(of: updated))
            }
        }
    }

    func scheduleStore() throws -> any ScheduleStore {
        guard let schedules = store as? any ScheduleStore else {
            throw Problem(.notImplemented, "this store keeps no schedules")
        }
        return schedules
    }

    func ownedSchedule(_ context: TrancheRequestContext) async throws -> ScheduleRecord {
        let id = context.parameters.get("schedule") ?? ""
        guard let schedule = try await scheduleStore().schedule(id: id), schedule.tenant == context.tenant else {
            throw Problem(.notFound, "no schedule \(id)")
        }
        return schedule
    }

    func view(of schedule: ScheduleRecord) -> ScheduleView {
        let context = (try? JSONText(encoding: schedule.batch.context)) ?? JSONText(unchecked: "{}")
        return ScheduleView(schedule, context: engine.publicContext(type: schedule.batch.type, context: context))
    }

    /// A checked `POST /v1/schedules` body. The batch goes through the
    /// checks of `POST /v1/batches` (and its strategy's), so a run is never
    /// refused later for a reason known now; every error names its field.
    func schedule(_ request: Request, _ buffer: ByteBuffer, _ context: TrancheRequestContext) throws
        -> ScheduleRecord
    {
        guard case .object(var fields) = try request.parseJSON(buffer) else {
            throw Problem(.unprocessableContent, "the body is not a valid request: it should be a JSON object")
        }
        guard let batchValue = fields.removeValue(forKey: "batch"), case .object = batchValue else {
            throw Problem(.unprocessableContent, "batch is required: the body POST /v1/batches would take")
        }
        let settings: ScheduleFields
        do {
            settings = try JSONDecoder().decode(ScheduleFields.self, from: Data(JSONValue.object(fields).jsonText.utf8))
        } catch {
            throw Problem.invalidRequest(error)
        }
        let now = engine.configuration.clock.now()
        let timing: ScheduleTiming
        var zoneName = "UTC"
        switch (settings.cron, settings.every) {
        case (let cron?, nil):
            let expression: CronExpression
            do {
                expression = try CronExpression(cron)
            } catch {
                throw Problem(.unprocessableContent, "cron: \(error)")
            }
            zoneName = settings.timeZone ?? zoneName
            guard let zone = TimeZone(identifier: zoneName) else {
                throw Problem(.unprocessableContent, "time_zone: '\(zoneName)' is not a known IANA time zone")
            }
            timing = ScheduleTiming(cron: expression, timeZone: zone)
        case (nil, let every?):
            guard let seconds = ScheduleTiming.interval(every) else {
                throw Problem(
                    .unprocessableContent,
                    "every: '\(every)' should be a number and a unit (s, m, h or d), from 1s to 366d")
            }
            guard settings.timeZone == nil else {
                throw Problem(.unprocessableContent, "time_zone: only a cron schedule has one")
            }
            timing = ScheduleTiming(every: seconds)
        case (nil, nil):
            throw Problem(.unprocessableContent, "cron or every is required")
        case (.some, .some):
            throw Problem(.unprocessableContent, "cron and every: give one of them, not both")
        }
        guard let next = timing.nextRun(after: now) else {
            throw Problem(.unprocessableContent, "cron: '\(settings.cron ?? "")' never matches a date")
        }
        let catchUp = CatchUp(rawValue: settings.catchUp ?? CatchUp.one.rawValue)
        guard CatchUp.all.contains(catchUp) else {
            throw Problem(.unprocessableContent, "catch_up must be one or skip, got '\(catchUp.rawValue)'")
        }
        let batch = try scheduledBatch(request, batchValue, context)
        return ScheduleRecord(
            id: "sch_" + APIKeys.randomHex(bytes: 8), tenant: context.tenant, batch: batch, cron: settings.cron,
            timeZone: zoneName, every: timing.every, catchUp: catchUp, overlap: settings.overlap ?? false,
            paused: settings.paused ?? false, nextRunAt: next, createdAt: now)
    }

    /// The schedule's batch, checked as `POST /v1/batches` checks its body;
    /// errors say `batch.` before the field.
    func scheduledBatch(_ request: Request, _ value: JSONValue, _ context: TrancheRequestContext) throws
        -> ScheduledBatch
    {
        func inBatch(_ problem: Problem) -> Problem {
            var problem = problem
            problem.detail = "batch: " + problem.detail
            return problem
        }
        let creation: CreationRequest
        do {
            let body = try request.decodeCreation(from: ByteBuffer(string: value.jsonText))
            guard body.then == nil else {
                throw Problem(.unprocessableContent, "then is not supported in a schedule")
            }
            creation = try creationRequest(body, context)
        } catch let problem as Problem {
            throw inBatch(problem)
        }
        guard let items = creation.items else {
            throw inBatch(Problem(.unprocessableContent, "items are required: every run takes the schedule's items"))
        }
        guard creation.submission.options.idempotencyKey == nil else {
            throw inBatch(Problem(.unprocessableContent, "options.idempotency_key would name every run; leave it out"))
        }
        do {
            _ = try engine.prepareBatch(creation.submission, items: items)
        } catch let error as EngineError {
            throw inBatch(Problem(.unprocessableContent, error.message))
        }
        let submission = creation.submission
        return ScheduledBatch(
            type: submission.type, context: try submission.context.value(), options: submission.options,
            dryRun: submission.dryRun, priority: submission.priority, items: try items.map { try $0.value() })
    }
}
