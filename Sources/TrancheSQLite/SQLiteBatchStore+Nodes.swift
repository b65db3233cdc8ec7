public import Foundation
import GRDB
public import TrancheStore

extension SQLiteBatchStore {
    public func acquireLeadership(node: String, for seconds: Double, now: Date) async throws -> Bool {
        try await write { db in
            let expires = now.milliseconds(after: seconds)
            try db.execute(
                sql: """
                    INSERT INTO leader(id, node, expires_at) VALUES (1, ?1, ?2)
                    ON CONFLICT (id) DO UPDATE SET node = ?1, expires_at = ?2
                    WHERE leader.node = ?1 OR leader.expires_at < ?3
                    """,
                arguments: [node, expires, now.milliseconds])
            return try String.fetchOne(db, sql: "SELECT node FROM leader WHERE id = 1") == node
        }
    }

    public func resignLeadership(node: String) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM leader WHERE node = ?", arguments: [node])
        }
    }

    public func recordHeartbeat(_ node: NodeRecord) async throws {
        try await write { db in
            try db.execute(
                sql: """
                    INSERT INTO nodes(id, role, host, pid, workers, started_at, heartbeat_at)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                    ON CONFLICT (id) DO UPDATE SET heartbeat_at = ?7, workers = ?5, role = ?2, host = ?3, pid = ?4,
                        started_at = ?6
                    """,
                arguments: [
                    node.id, node.role, node.host, node.pid, node.workers, node.startedAt.milliseconds,
                    node.heartbeatAt.milliseconds,
                ])
        }
    }

    public func removeNode(id: String) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM nodes WHERE id = ?", arguments: [id])
        }
    }

    public func nodes(since: Date, now: Date) async throws -> [NodeRecord] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT n.id, n.role, n.host, n.pid, n.workers, n.started_at, n.heartbeat_at,
                           (SELECT count(*) FROM chunks c WHERE c.state = \(ChunkState.leased.stored) AND c.lease_owner = n.id),
                           (SELECT coalesce(sum(c.claimed_items), 0) FROM chunks c
                            WHERE c.state = \(ChunkState.leased.stored) AND c.lease_owner = n.id),
                           EXISTS (SELECT 1 FROM leader l WHERE l.node = n.id AND l.expires_at >= ?)
                    FROM nodes n WHERE n.heartbeat_at >= ? ORDER BY n.started_at, n.id
                    """,
                arguments: [now.milliseconds, since.milliseconds]
            ).map { row in
                // Read through SQLiteRow: a damaged row is a storage error, not a trap.
                let row = SQLiteRow(row: row)
                return NodeRecord(
                    id: try row.string(0), role: try row.string(1), host: try row.string(2), pid: try row.int(3),
                    workers: try row.int(4), startedAt: Date(milliseconds: try row.int64(5)),
                    heartbeatAt: Date(milliseconds: try row.int64(6)), chunks: try row.int64(7),
                    runningItems: try row.int64(8), isLeader: try row.bool(9))
            }
        }
    }
}
