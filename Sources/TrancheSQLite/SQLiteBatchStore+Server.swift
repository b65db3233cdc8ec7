public import Foundation
import GRDB
public import TrancheStore

extension SQLiteBatchStore: ServerStore {
    public func createAPIKey(_ key: APIKeyRecord) async throws {
        try await pool.write { db in
            try db.execute(
                sql: "INSERT INTO api_keys(id, tenant, hash, created_at) VALUES (?, ?, ?, ?)",
                arguments: [key.id, key.tenant, key.hash, key.createdAt.milliseconds])
        }
    }

    public func apiKeys() async throws -> [APIKeyRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT id, tenant, hash, created_at, revoked_at FROM api_keys ORDER BY created_at"
            )
            .map(Self.decodeKey)
        }
    }

    public func apiKey(id: String) async throws -> APIKeyRecord? {
        try await pool.read { db in
            try Row.fetchOne(
                db, sql: "SELECT id, tenant, hash, created_at, revoked_at FROM api_keys WHERE id = ?", arguments: [id]
            ).map(Self.decodeKey)
        }
    }

    public func revokeAPIKey(id: String, at now: Date) async throws -> Bool {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                arguments: [now.milliseconds, id])
            return db.changesCount == 1
        }
    }

    static func decodeKey(_ row: Row) -> APIKeyRecord {
        APIKeyRecord(
            id: row[0], tenant: row[1], hash: row[2], createdAt: Date(milliseconds: row[3]),
            revokedAt: (row[4] as Int64?).map(Date.init(milliseconds:)))
    }

    public func beginIdempotent(tenant: String, key: String, fingerprint: String, at now: Date) async throws
        -> IdempotencyState
    {
        try await pool.write { db in
            if let row = try Row.fetchOne(
                db, sql: "SELECT fingerprint, status, body FROM idempotency WHERE tenant = ? AND key = ?",
                arguments: [tenant, key])
            {
                let stored: String = row[0]
                guard stored == fingerprint else { return .mismatch }
                guard let status = row[1] as Int?, let body = row[2] as String? else { return .inFlight }
                return .completed(status: status, body: body)
            }
            try db.execute(
                sql: "INSERT INTO idempotency(tenant, key, fingerprint, created_at) VALUES (?, ?, ?, ?)",
                arguments: [tenant, key, fingerprint, now.milliseconds])
            return .started
        }
    }

    public func completeIdempotent(tenant: String, key: String, status: Int, body: String) async throws {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE idempotency SET status = ?, body = ? WHERE tenant = ? AND key = ?",
                arguments: [status, body, tenant, key])
        }
    }

    public func abandonIdempotent(tenant: String, key: String) async throws {
        try await pool.write { db in
            try db.execute(
                sql: "DELETE FROM idempotency WHERE tenant = ? AND key = ? AND status IS NULL",
                arguments: [tenant, key])
        }
    }
}
