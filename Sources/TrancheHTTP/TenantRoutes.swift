import Foundation
import Hummingbird
import TrancheEngine
import TrancheStore

/// `GET /v1/tenants` and `PUT /v1/tenants/{name}` (admin keys only): each
/// tenant's weight in the fair share of workers and its quotas, with what
/// it holds now; `GET /v1/tenant`: the caller's own figures.
extension TrancheServer {
    func addTenantRoutes(_ v1: RouterGroup<TrancheRequestContext>) {
        v1.get("tenants") { _, context in
            let tenants = try requireTenantStore(admin: context)
            return Self.json(TenantList(tenants: try await tenants.tenantFigures().map(TenantView.init)))
        }
        v1.put("tenants/:name") { request, context in
            let tenants = try requireTenantStore(admin: context)
            let name = context.parameters.get("name") ?? ""
            let body = try await request.decodeJSON(TenantSettingsRequest.self, limit: 64 << 10)
            let record = TenantRecord(
                name: name, weight: body.weight ?? 1, maxRunning: body.maxRunning, maxQueued: body.maxQueued,
                maxOpenBatches: body.maxOpenBatches, updatedAt: engine.configuration.clock.now())
            if let problem = record.problem { throw Problem(.unprocessableContent, problem) }
            try await tenants.setTenant(record)
            return Self.json(TenantView(try await tenants.tenantFigures(of: name)))
        }
        v1.get("tenant") { _, context in
            guard let tenants = store as? any TenantStore else {
                throw Problem(.notFound, "this server's store keeps no tenant settings")
            }
            return Self.json(TenantView(try await tenants.tenantFigures(of: context.tenant)))
        }
    }

    /// The store's tenant settings, for an admin; 403 for anyone else.
    func requireTenantStore(admin context: TrancheRequestContext) throws -> any TenantStore {
        guard context.admin else {
            throw Problem(.forbidden, "this needs an admin key (`tranche keys create --admin`)")
        }
        guard let tenants = store as? any TenantStore else {
            throw Problem(.notFound, "this server's store keeps no tenant settings")
        }
        return tenants
    }

    /// Refuses (429, naming the quota) a submit or append that would put
    /// `tenant` over its `max_queued` with `items` more (nil: not checked),
    /// or over its `max_open_batches` with a new batch. Checked before the
    /// write: two requests racing may both pass at the edge.
    func checkTenantQuotas(_ tenant: String, items: Int?, newBatch: Bool) async throws {
        guard let tenants = store as? any TenantStore, let settings = try await tenants.tenant(named: tenant),
            (items != nil && settings.maxQueued != nil) || (newBatch && settings.maxOpenBatches != nil)
        else { return }
        let usage = try await tenants.tenantUsage(tenant).first ?? TenantUsage(name: tenant)
        if newBatch, let cap = settings.maxOpenBatches, usage.openBatches >= cap {
            throw Problem(
                .tooManyRequests,
                "tenant '\(tenant)' has \(usage.openBatches) open batches; its quota max_open_batches is \(cap)",
                retryAfter: 5)
        }
        guard let items, let cap = settings.maxQueued else { return }
        let after = usage.queued.addingReportingOverflow(Int64(clamping: items))
        if after.overflow || after.partialValue > cap {
            throw Problem(
                .tooManyRequests,
                "tenant '\(tenant)' has \(usage.queued) items queued; \(items) more would pass its quota "
                    + "max_queued of \(cap)",
                retryAfter: 5)
        }
    }
}

/// The body of `PUT /v1/tenants/{name}`: the tenant's whole settings (a
/// field left out or null is the default: weight 1, no quota). Unknown
/// fields are refused.
public struct TenantSettingsRequest: Decodable, Sendable {
    public var weight: Double?
    public var maxRunning: Int64?
    public var maxQueued: Int64?
    public var maxOpenBatches: Int64?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case weight
        case maxRunning = "max_running"
        case maxQueued = "max_queued"
        case maxOpenBatches = "max_open_batches"
    }

    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "field")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        weight = try container.decodeIfPresent(Double.self, forKey: .weight)
        let quota =
            Int(clamping: TenantRecord.Limits.quota.lowerBound)...Int(clamping: TenantRecord.Limits.quota.upperBound)
        maxRunning = try container.decodeInteger(.maxRunning, within: quota).map { Int64(clamping: $0) }
        maxQueued = try container.decodeInteger(.maxQueued, within: quota).map { Int64(clamping: $0) }
        maxOpenBatches = try container.decodeInteger(.maxOpenBatches, within: quota).map { Int64(clamping: $0) }
    }
}

/// `GET /v1/tenants`.
struct TenantList: Encodable, Sendable {
    var tenants: [TenantView]
}

/// A tenant's settings and what it holds now.
struct TenantView: Encodable, Sendable {
    var figures: TenantFigures

    init(_ figures: TenantFigures) { self.figures = figures }

    enum CodingKeys: String, CodingKey {
        case name, weight, running, queued
        case maxRunning = "max_running"
        case maxQueued = "max_queued"
        case maxOpenBatches = "max_open_batches"
        case chunksInFlight = "chunks_in_flight"
        case openBatches = "open_batches"
        case updatedAt = "updated_at"
    }

    func encode(to encoder: any Encoder) throws {
        let (settings, usage) = (figures.settings, figures.usage)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(usage.name, forKey: .name)
        try container.encode(settings?.weight ?? 1, forKey: .weight)
        try container.encodeNullable(settings?.maxRunning, forKey: .maxRunning)
        try container.encodeNullable(settings?.maxQueued, forKey: .maxQueued)
        try container.encodeNullable(settings?.maxOpenBatches, forKey: .maxOpenBatches)
        try container.encode(usage.running, forKey: .running)
        try container.encode(usage.chunksInFlight, forKey: .chunksInFlight)
        try container.encode(usage.queued, forKey: .queued)
        try container.encode(usage.openBatches, forKey: .openBatches)
        try container.encodeTimestamp(settings?.updatedAt, forKey: .updatedAt)
    }
}
