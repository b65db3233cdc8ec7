import Foundation
import Hummingbird
import TrancheEngine

/// `PATCH /v1/batches/{id}`: changes the priority, concurrency or rate limit
/// of a live batch; every node running it applies the change within about a second.
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
        case concurrency
        case rateLimit = "rate_limit"
    }

    enum RateKeys: String, CodingKey, CaseIterable {
        case rate
        case maxConcurrent = "max_concurrent"
    }

    init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "field")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        change.priority = try container.decodeInteger(.priority, within: BatchOptions.Limits.priority)
        guard container.contains(.options) else { return }
        let optionsDecoder = try container.superDecoder(forKey: .options)
        try UnknownKeys.reject(in: optionsDecoder, known: OptionKeys.allCases.map(\.stringValue), what: "option")
        let options = try optionsDecoder.container(keyedBy: OptionKeys.self)
        change.concurrency = try options.decodeInteger(.concurrency, within: BatchOptions.Limits.concurrency)
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
