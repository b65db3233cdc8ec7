import Foundation
import Hummingbird
import NIOCore
public import TrancheEngine

/// `then` in a `POST /v1/batches` body: what runs on the succeeded items'
/// outputs once the batch completes. Unknown fields are refused.
public struct SuccessorRequest: Codable, Sendable, Hashable {
    /// The successor's strategy.
    public var type: String
    /// Its settings (a JSON object); secret fields are stored, never shown.
    public var context: JSONValue?
    public var options: BatchOptions?

    public init(type: String, context: JSONValue? = nil, options: BatchOptions? = nil) {
        self.type = type
        self.context = context
        self.options = options
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case type, context, options
    }

    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "field of then")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        type = try container.decode(String.self, forKey: .type)
        context = try container.decodeIfPresent(JSONValue.self, forKey: .context)
        options = try container.decodeIfPresent(BatchOptions.self, forKey: .options)
    }
}

/// The body of `POST /v1/batches/{id}/resubmit` (optional). Unknown fields are refused.
public struct ResubmitRequest: Codable, Sendable, Hashable {
    /// Item statuses to submit again; default dead and skipped.
    public var statuses: [String]?

    public init(statuses: [String]? = nil) { self.statuses = statuses }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case statuses
    }

    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "field")
        statuses = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent([String].self, forKey: .statuses)
    }
}

/// Linked batches: `POST /v1/batches/{id}/resubmit`, and `then` on a create.
/// (`POST /v1/batches/{id}/confirm` of a dry run is the confirm route.)
extension TrancheServer {
    func addLinkRoutes(_ v1: RouterGroup<TrancheRequestContext>) {
        v1.post("batches/:id/resubmit") { request, context in try await resubmit(request, context) }
    }

    /// `POST /v1/batches/{id}/resubmit`: a new batch of the ended batch's
    /// items in `statuses`, linked to it, answered 202 like a queued create.
    /// An `Idempotency-Key` makes a repeat answer the same batch.
    func resubmit(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let parent = try await owned(context)
        let buffer = try await request.collectBody(limit: 64 << 10)
        var statuses = LinkRules.defaultResubmit
        if buffer.readableBytes > 0 {
            let body = try request.decodeJSON(ResubmitRequest.self, from: buffer)
            if let names = body.statuses { statuses = try resubmitStatuses(names) }
        }
        var key: IdempotencyKey?
        if let header = request.headers[.idempotencyKey] {
            guard !header.isEmpty, header.utf8.count <= 255 else {
                throw Problem(.badRequest, "Idempotency-Key must be 1 to 255 bytes")
            }
            // The parent is part of the request: one key on two batches is a mismatch.
            let fingerprint = Self.fingerprint(of: "resubmit \(parent.id)\n" + String(buffer: buffer))
            key = IdempotencyKey(tenant: context.tenant, key: header, fingerprint: fingerprint)
        }
        var repeated = false
        if let key { repeated = try await store.idempotencyRecord(tenant: key.tenant, key: key.key) != nil }
        if !repeated {
            // Like a create: the tenant's quotas (open batches, queued items) and the queue limit.
            try await checkTenantQuotas(context.tenant, items: nil, newBatch: true)
            let count = statuses.reduce(Int64(0)) { $0.addingReportingOverflow(parent.counts[$1]).partialValue }
            try await admit(Int(clamping: count), tenant: context.tenant)
        }
        switch try await engine.resubmit(parent.id, statuses: statuses, idempotency: key) {
        case .created(let record):
            return try await batchResponse(record, status: .accepted)
        case .existing(let record):
            var response = try await batchResponse(record, status: .accepted)
            response.headers[.idempotentReplayed] = "true"
            return response
        case .mismatch:
            throw Self.idempotencyMismatch
        }
    }

    /// The statuses a resubmit body names: each one an item status a
    /// resubmit can take (422 otherwise), at least one.
    func resubmitStatuses(_ names: [String]) throws -> Set<ItemStatus> {
        let allowed = LinkRules.resubmittable.map(\.name).joined(separator: ", ")
        guard !names.isEmpty else { throw Problem(.unprocessableContent, "statuses must name some of \(allowed)") }
        return Set(
            try names.map { name in
                guard let status = ItemStatus(name: name), LinkRules.resubmittable.contains(status) else {
                    throw Problem(
                        .unprocessableContent,
                        "statuses: '\(name.prefix(64))' cannot be resubmitted; give some of \(allowed)")
                }
                return status
            })
    }

    /// A create's `then`, checked like a create's options; the engine checks
    /// its type and context when it prepares the batch.
    func successor(_ then: SuccessorRequest) throws -> Successor {
        let options = then.options ?? BatchOptions()
        do {
            try options.validate()
        } catch {
            throw Problem(.unprocessableContent, "then.options.\(error.message)")
        }
        return Successor(type: then.type, context: try JSONText(encoding: then.context ?? [:]), options: options)
    }
}
