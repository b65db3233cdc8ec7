public import Foundation

/// A tenant's share of the workers and its quotas, as an operator set them
/// (`PUT /v1/tenants/{name}`, `tranche tenants set`). A tenant without a
/// stored record has weight 1 and no quotas. A tenant is a batch's `owner`:
/// an API key's tenant, or `local` for batches of the library, the CLI and
/// an open server.
public struct TenantRecord: Sendable, Hashable {
    public var name: String
    /// Its share of free workers against the other tenants with runnable
    /// work: claims go to the tenant with the fewest chunks in flight per
    /// unit of weight. Default 1.
    public var weight: Double
    /// Items running at once: a tenant at its cap gets no new chunk. Nil: no cap.
    public var maxRunning: Int64?
    /// Items queued (accepted, not finished): a submit or append past it is refused. Nil: no cap.
    public var maxQueued: Int64?
    /// Batches not yet ended: creating one more is refused. Nil: no cap.
    public var maxOpenBatches: Int64?
    public var updatedAt: Date

    public init(
        name: String, weight: Double = 1, maxRunning: Int64? = nil, maxQueued: Int64? = nil,
        maxOpenBatches: Int64? = nil, updatedAt: Date = Date()
    ) {
        self.name = name
        self.weight = weight
        self.maxRunning = maxRunning
        self.maxQueued = maxQueued
        self.maxOpenBatches = maxOpenBatches
        self.updatedAt = updatedAt
    }

    /// What the API, the CLI and the stores accept.
    public enum Limits {
        /// A tenant's name: 1 to 100 characters, like an API key's tenant.
        public static let nameLength = 1...100
        /// A weight: from one thousandth to a million.
        public static let weight = 0.001...1_000_000.0
        /// Any quota: from 0 (nothing at all) to a trillion.
        public static let quota: ClosedRange<Int64> = 0...1_000_000_000_000
    }

    /// Nil when every field is within ``Limits``; otherwise what is wrong, naming the field.
    public var problem: String? {
        guard Limits.nameLength.contains(name.count) else {
            return "a tenant's name must be 1 to 100 characters"
        }
        guard weight.isFinite, Limits.weight.contains(weight) else {
            return "weight must be between 0.001 and 1000000, got \(weight.shortText)"
        }
        for (field, value) in [
            ("max_running", maxRunning), ("max_queued", maxQueued), ("max_open_batches", maxOpenBatches),
        ] {
            if let value, !Limits.quota.contains(value) {
                return "\(field) must be between 0 and \(Limits.quota.upperBound), got \(value)"
            }
        }
        return nil
    }
}

/// What a tenant holds now, counted from its batches that have not ended.
public struct TenantUsage: Sendable, Hashable {
    public var name: String
    /// Items running now (claimed by leased chunks).
    public var running: Int64
    /// Chunks leased now, which the fair share compares.
    public var chunksInFlight: Int64
    /// Items accepted and not finished.
    public var queued: Int64
    /// Batches not yet ended.
    public var openBatches: Int64

    public init(name: String, running: Int64 = 0, chunksInFlight: Int64 = 0, queued: Int64 = 0, openBatches: Int64 = 0)
    {
        self.name = name
        self.running = running
        self.chunksInFlight = chunksInFlight
        self.queued = queued
        self.openBatches = openBatches
    }
}

/// Tenants' weights and quotas, kept in the same database as the batches;
/// `claimChunk` of a store that conforms follows them (weighted fair share
/// across tenants, `maxRunning`), and the server checks the other quotas at
/// submit and append.
public protocol TenantStore: BatchStore {
    /// Stores `tenant`'s settings, replacing any stored before.
    /// Throws `invalidTenant` when a field is out of ``TenantRecord/Limits``.
    func setTenant(_ tenant: TenantRecord) async throws
    /// Every tenant with stored settings, by name.
    func tenants() async throws -> [TenantRecord]
    /// The stored settings of `name`; nil when it has none (weight 1, no quotas).
    func tenant(named name: String) async throws -> TenantRecord?
    /// What tenants hold now: `name`'s figures only, or (nil) those of every
    /// tenant with an open batch, by name. A tenant holding nothing is
    /// answered with zeros when named.
    func tenantUsage(_ name: String?) async throws -> [TenantUsage]
}

extension TenantRecord {
    /// Checks the record before a store writes it.
    package func validated() throws -> TenantRecord {
        if let problem { throw StoreError(.invalidTenant, problem) }
        return self
    }
}

extension StoreError.Code {
    /// Tenant settings out of ``TenantRecord/Limits``.
    public static let invalidTenant = StoreError.Code(rawValue: "invalid_tenant")
}

extension TenantRecord {
    /// The stored columns, in the order ``init(row:)`` reads them. The
    /// weight is stored in thousandths, an integer, so that both stores
    /// compare shares alike.
    package static let columns = "name, weight_millis, max_running, max_queued, max_open_batches, updated_at"

    /// The weight as stored: thousandths, within the limits.
    package var weightMillis: Int64 {
        Int64.saturating(weight.bounded(to: Limits.weight) * 1_000)
    }

    /// A stored row; a damaged one is a storage error, and a weight out of
    /// range is held within the limits.
    package init(row: some StoredRow) throws {
        let millis = try row.int64(1)
        self.init(
            name: try row.string(0), weight: (Double(millis) / 1_000).bounded(to: Limits.weight),
            maxRunning: try row.int64(at: 2), maxQueued: try row.int64(at: 3), maxOpenBatches: try row.int64(at: 4),
            updatedAt: Date(milliseconds: try row.int64(5)))
    }
}

extension TenantUsage {
    /// Items queued (accepted, not finished) over the `batches` rows
    /// selected, none below 0 per batch: the one formula of ``queued`` and
    /// `queuedItems(owner:)`. `greatest` is the dialect's two-argument
    /// maximum (`max` on SQLite, `greatest` on PostgreSQL).
    package static func queuedSQL(greatest: String) -> String {
        "sum(\(greatest)(0, total - succeeded - skipped - dead - canceled))"
    }

    /// A row of `owner, running, chunks in flight, queued, open batches`.
    package init(row: some StoredRow) throws {
        self.init(
            name: try row.string(0), running: try row.int64(1), chunksInFlight: try row.int64(2),
            queued: try row.int64(3), openBatches: try row.int64(4))
    }
}

/// The fair share across tenants, as SQL both stores' claims use: each
/// runnable batch `b` joined to its owner's load over its open batches
/// (`tenant_load`: chunks leased, items running, last claim) and to its
/// owner's settings (`t`, none for a tenant without a stored record).
package enum TenantShareSQL {
    /// Joins `b` to `tenant_load` and `t`.
    package static let join = join(load: "batches")

    /// Joins `b` to `tenant_load`, summed over `load` (a relation with the
    /// `batches` columns owner, status, leased_chunks, running and
    /// last_claim_at: PostgreSQL's `batch_load` adds the counter shards).
    package static func join(load: String) -> String {
        """
        JOIN (SELECT owner, sum(leased_chunks) AS leased, sum(running) AS running, max(last_claim_at) AS served
              FROM \(load) WHERE status IN (\(SQLList.openBatches)) GROUP BY owner) tenant_load
          ON tenant_load.owner = b.owner
        LEFT JOIN tenants t ON t.name = b.owner
        """
    }
    /// A tenant at its `max_running` gets no new chunk.
    package static let admits = "(t.max_running IS NULL OR tenant_load.running < t.max_running)"
    /// The fewest chunks in flight per unit of weight first (weight 1 without
    /// a record), then the least recently served tenant.
    package static let order = """
        tenant_load.leased * 1000.0
            / (CASE WHEN t.weight_millis > 0 THEN t.weight_millis ELSE 1000 END), tenant_load.served, b.owner
        """
}

/// A tenant as the API and the CLI show it: its settings (nil: the
/// defaults, weight 1 and no quotas) and what it holds now.
public struct TenantFigures: Sendable, Hashable {
    public var settings: TenantRecord?
    public var usage: TenantUsage

    public init(settings: TenantRecord?, usage: TenantUsage) {
        self.settings = settings
        self.usage = usage
    }

    public var name: String { usage.name }
}

extension TenantStore {
    /// Every tenant with stored settings or an open batch, by name.
    public func tenantFigures() async throws -> [TenantFigures] {
        let stored = Dictionary(try await tenants().map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let usage = Dictionary(
            try await tenantUsage(nil).map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        return Set(stored.keys).union(usage.keys).sorted().map { name in
            TenantFigures(settings: stored[name], usage: usage[name] ?? TenantUsage(name: name))
        }
    }

    /// One tenant's figures, stored settings or not.
    public func tenantFigures(of name: String) async throws -> TenantFigures {
        TenantFigures(
            settings: try await tenant(named: name),
            usage: try await tenantUsage(name).first ?? TenantUsage(name: name))
    }
}
