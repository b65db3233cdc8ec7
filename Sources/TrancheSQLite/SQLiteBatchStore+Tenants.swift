import Foundation
import GRDB
public import TrancheStore

extension SQLiteBatchStore: TenantStore {
    public func setTenant(_ tenant: TenantRecord) async throws {
        let tenant = try tenant.validated()
        try await write { db in
            try db.execute(
                sql: """
                    INSERT INTO tenants(\(TenantRecord.columns)) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT(name) DO UPDATE SET weight_millis = excluded.weight_millis,
                        max_running = excluded.max_running, max_queued = excluded.max_queued,
                        max_open_batches = excluded.max_open_batches, updated_at = excluded.updated_at
                    """,
                arguments: [
                    tenant.name, tenant.weightMillis, tenant.maxRunning, tenant.maxQueued, tenant.maxOpenBatches,
                    tenant.updatedAt.milliseconds,
                ])
        }
    }

    public func tenants() async throws -> [TenantRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT \(TenantRecord.columns) FROM tenants ORDER BY name")
                .map { try TenantRecord(row: SQLiteRow(row: $0)) }
        }
    }

    public func tenant(named name: String) async throws -> TenantRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT \(TenantRecord.columns) FROM tenants WHERE name = ?", arguments: [name])
                .map { try TenantRecord(row: SQLiteRow(row: $0)) }
        }
    }

    public func tenantUsage(_ name: String?) async throws -> [TenantUsage] {
        try await read { db in
            let filter = name == nil ? "" : "AND owner = ?"
            let usage = try Row.fetchAll(
                db,
                sql: """
                    SELECT owner, sum(max(0, running)), sum(max(0, leased_chunks)),
                           \(TenantUsage.queuedSQL(greatest: "max")), count(*)
                    FROM batches WHERE status IN (\(SQLList.openBatches)) \(filter)
                    GROUP BY owner ORDER BY owner
                    """,
                arguments: StatementArguments(name.map { [$0] } ?? [])
            ).map { try TenantUsage(row: SQLiteRow(row: $0)) }
            if let name, usage.isEmpty { return [TenantUsage(name: name)] }
            return usage
        }
    }
}
