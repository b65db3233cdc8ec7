import Foundation
import PostgresNIO
public import TrancheStore

extension PostgresBatchStore: TenantStore {
    public func setTenant(_ tenant: TenantRecord) async throws {
        let tenant = try tenant.validated()
        try await write { db in
            try await db.run(
                """
                INSERT INTO tenants(\(unescaped: TenantRecord.columns))
                VALUES (\(tenant.name), \(tenant.weightMillis), \(tenant.maxRunning), \(tenant.maxQueued),
                        \(tenant.maxOpenBatches), \(tenant.updatedAt.milliseconds))
                ON CONFLICT (name) DO UPDATE SET weight_millis = excluded.weight_millis,
                    max_running = excluded.max_running, max_queued = excluded.max_queued,
                    max_open_batches = excluded.max_open_batches, updated_at = excluded.updated_at
                """)
        }
    }

    public func tenants() async throws -> [TenantRecord] {
        try await read { db in
            try await db.rows("SELECT \(unescaped: TenantRecord.columns) FROM tenants ORDER BY name")
                .map { try TenantRecord(row: PostgresStoredRow(row: $0)) }
        }
    }

    public func tenant(named name: String) async throws -> TenantRecord? {
        try await read { db in
            try await db.one("SELECT \(unescaped: TenantRecord.columns) FROM tenants WHERE name = \(name)")
                .map { try TenantRecord(row: PostgresStoredRow(row: $0)) }
        }
    }

    public func tenantUsage(_ name: String?) async throws -> [TenantUsage] {
        try await read { db in
            // A NULL name matches every owner.
            let usage = try await db.rows(
                """
                SELECT owner, sum(greatest(0, running))::bigint, sum(greatest(0, leased_chunks))::bigint,
                       \(unescaped: TenantUsage.queuedSQL(greatest: "greatest"))::bigint, count(*)::bigint
                FROM batch_load WHERE status IN (\(unescaped: SQLList.openBatches))
                  AND (\(name)::text IS NULL OR owner = \(name))
                GROUP BY owner ORDER BY owner
                """
            ).map { try TenantUsage(row: PostgresStoredRow(row: $0)) }
            if let name, usage.isEmpty { return [TenantUsage(name: name)] }
            return usage
        }
    }
}

extension PostgresBatchStore {
    /// Whether `owner` has a `max_running` and is at it, read under a lock
    /// on its tenant row that the claim's transaction holds to its end: the
    /// candidates were read without locks, so claims on several nodes
    /// would otherwise all pass the cap at once. Claims of a tenant with a
    /// cap take turns; those of other tenants take no lock.
    static func tenantAtCap(_ db: PostgresConnection, owner: String) async throws -> Bool {
        guard
            let cap = try await db.one(
                Prepared.TenantCap.self,
                "SELECT max_running FROM tenants WHERE name = \(owner) AND max_running IS NOT NULL FOR UPDATE"
            )
            .map({ try PostgresStoredRow(row: $0).int64(at: 0) }) ?? nil
        else { return false }
        // Read after the lock: it counts what the claims before this one committed.
        let running =
            try await db.one(
                """
                SELECT coalesce(sum(running), 0)::bigint FROM batch_load
                WHERE owner = \(owner) AND status IN (\(unescaped: SQLList.openBatches))
                """
            ).map { try PostgresStoredRow(row: $0).int64(0) } ?? 0
        return running >= cap
    }
}
