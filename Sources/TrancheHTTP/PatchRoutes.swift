public import Foundation
import Hummingbird
public import TrancheEngine

/// `PATCH /v1/batches/{id}`: changes the priority, concurrency, rate limit
/// or pace (`fixed`, `adaptive`) of a live batch; every node running it applies the change within about a second.
extension TrancheServer {
    func addPatchRoutes(_ v1: RouterGroup<TrancheRequestContext>) {
        v1.patch("batches/:id") { request, context in
            let record = try await owned(context)
            let body = try request.decodeJSON(
                PatchBatchRequest.self, from: try await request.collectBody(limit: 64 << 10))
            guard let limits = store as? any LimitStore else {
                throw Problem(.notImplemented, "this server's store cannot change a batch's settings")
            }
            do throws(OptionsError) {
                _ = try body.change.applied(to: record.options)
            } catch {
                throw Problem(.unprocessableContent, error.message)
            }
            let updated = try await limits.updateSettings(record.id, body.change, at: engine.configuration.clock.now())
            engine.signalSettingsChanged(record.id)
            return try await batchResponse(updated)
        }
    }
}

/// A `PATCH /v1/batches/{id}` body, a JSON merge patch: a field given
/// replaces the stored one, `null` removes a rate limit field, unknown fields are refused.
struct PatchBatchRequest: Decodable {
    var change = BatchSettingsChange()

    enum CodingKeys: String, CodingKey, CaseIterable {
        case priority, options
    }

    enum OptionKeys: String, CodingKey, CaseIterable {
        case concurrency, pace
        case rateLimit = "rate_limit"
    }

    enum RateKeys: String, CodingKey, CaseIterable {
        case rate
        case maxConcurrent = "max_concurrent"
    }

    init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "field")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        // Only rate_limit and its fields may be null (they remove); the others are refused naming the field.
        try container.refuseNull(.priority, as: Int.self)
        try container.refuseNull(.options, as: [String: Int].self)
        change.priority = try container.decodeInteger(.priority, within: BatchOptions.Limits.priority)
        guard container.contains(.options) else { return }
        let optionsDecoder = try container.superDecoder(forKey: .options)
        try UnknownKeys.reject(in: optionsDecoder, known: OptionKeys.allCases.map(\.stringValue), what: "option")
        let options = try optionsDecoder.container(keyedBy: OptionKeys.self)
        try options.refuseNull(.concurrency, as: Int.self)
        try options.refuseNull(.pace, as: String.self)
        change.concurrency = try options.decodeInteger(.concurrency, within: BatchOptions.Limits.concurrency)
        if options.contains(.pace) {
            guard let pace = try? options.decode(String.self, forKey: .pace),
                PaceMode.all.map(\.rawValue).contains(pace)
            else {
                // A decoding error, not a Problem: thrown inside the decoder, its message is kept.
                throw DecodingError.dataCorruptedError(
                    forKey: .pace, in: options,
                    debugDescription: "must be one of \(PaceMode.all.map(\.rawValue).joined(separator: ", "))")
            }
            change.pace = PaceMode(rawValue: pace)
        }
        guard options.contains(.rateLimit) else { return }
        if try options.decodeNil(forKey: .rateLimit) {
            change.rate = .remove
            change.maxConcurrent = .remove
            return
        }
        let limitDecoder = try options.superDecoder(forKey: .rateLimit)
        try UnknownKeys.reject(in: limitDecoder, known: RateKeys.allCases.map(\.stringValue), what: "rate_limit field")
        let limit = try limitDecoder.container(keyedBy: RateKeys.self)
        if limit.contains(.rate) {
            change.rate =
                try limit.decodeNil(forKey: .rate) ? .remove : .set(try limit.decode(Double.self, forKey: .rate))
        }
        if limit.contains(.maxConcurrent) {
            if try limit.decodeNil(forKey: .maxConcurrent) {
                change.maxConcurrent = .remove
            } else if let value = try limit.decodeInteger(.maxConcurrent, within: BatchOptions.Limits.maxConcurrent) {
                change.maxConcurrent = .set(value)
            }
        }
    }
}

/// A batch's pace in its view: `fixed` or `adaptive`, the rate it keeps to
/// now (null while an adaptive batch has met no refusal and no rate was
/// given), why that rate last changed, and the refused calls counted on
/// every node. Read from the store, so every node answers the same.
public struct PaceView: Codable, Sendable, Hashable {
    public var mode: PaceMode
    /// Items a second now, or null when none applies.
    public var rate: Double?
    /// `start`, `succeeding`, `refused`, `retry_after` or `latency`; null for a fixed pace.
    public var reason: String?
    public var changedAt: Date?
    /// Refused calls (`429`, `503`, timeouts) so far.
    public var throttled: Int64
    /// Until when a `Retry-After` pauses its calls; null when none does.
    public var pausedUntil: Date?

    public init(
        mode: PaceMode, rate: Double?, reason: String?, changedAt: Date?, throttled: Int64, pausedUntil: Date?
    ) {
        self.mode = mode
        self.rate = rate
        self.reason = reason
        self.changedAt = changedAt
        self.throttled = throttled
        self.pausedUntil = pausedUntil
    }

    enum CodingKeys: String, CodingKey {
        case mode, rate, reason, throttled
        case changedAt = "changed_at"
        case pausedUntil = "paused_until"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        mode = try container.decode(PaceMode.self, forKey: .mode)
        rate = try container.decodeIfPresent(Double.self, forKey: .rate)
        reason = try container.decodeIfPresent(String.self, forKey: .reason)
        changedAt = try container.decodeTimestampIfPresent(forKey: .changedAt)
        throttled = try container.decodeIfPresent(Int64.self, forKey: .throttled) ?? 0
        pausedUntil = try container.decodeTimestampIfPresent(forKey: .pausedUntil)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(mode, forKey: .mode)
        try container.encodeNullable(rate, forKey: .rate)
        try container.encodeNullable(reason, forKey: .reason)
        try container.encodeTimestamp(changedAt, forKey: .changedAt)
        try container.encode(throttled, forKey: .throttled)
        try container.encodeTimestamp(pausedUntil, forKey: .pausedUntil)
    }
}

extension TrancheServer {
    /// The batch's pace (``PaceView``): its fixed rate, or the adaptive pace
    /// the store holds under its ``LimitKey/batch(_:)``, `stored` (read for
    /// a whole page at once, ``BatchExtras``).
    func paceView(of record: BatchRecord, stored: PaceRecord?) -> PaceView {
        let mode = record.options.paceMode(forType: record.type)
        let fixed = record.options.rateLimit?.rate
        guard mode == .adaptive, let stored else {
            return PaceView(
                mode: mode, rate: fixed, reason: mode == .adaptive ? "start" : nil, changedAt: nil, throttled: 0,
                pausedUntil: nil)
        }
        return PaceView(
            mode: mode, rate: fixed.map { min($0, stored.rate) } ?? stored.rate, reason: stored.reason,
            changedAt: stored.changedAt, throttled: stored.throttled, pausedUntil: stored.pausedUntil)
    }
}
