public import Foundation
import PostgresNIO
public import TrancheStore

extension PostgresBatchStore {
    public func acquireLeadership(node: String, for seconds: Double, now: Date) async throws -> Bool {
        try await write { db in
            let expires = now.milliseconds(after: seconds)
            let row = try await db.one(
                """
                INSERT INTO leader(id, node, expires_at) VALUES (1, \(node), \(expires))
                ON CONFLICT (id) DO UPDATE SET node = EXCLUDED.node, expires_at = EXCLUDED.expires_at
                WHERE leader.node = EXCLUDED.node OR leader.expires_at < \(now.milliseconds)
                RETURNING node
                """)
            return try row?.get(0, as: String.self) == node
        }
    }

    public func resignLeadership(node: String) async throws {
        try await write { db in try await db.run("DELETE FROM leader WHERE node = \(node)") }
    }

    public func recordHeartbeat(_ node: NodeRecord) async throws {
        try await write { db in
            try await db.run(
                """
                INSERT INTO nodes(id, role, host, pid, workers, started_at, heartbeat_at)
                VALUES (\(node.id), \(node.role), \(node.host), \(node.pid), \(node.workers),
                        \(node.startedAt.milliseconds), \(node.heartbeatAt.milliseconds))
                ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at, workers = EXCLUDED.workers,
                    role = EXCLUDED.role, host = EXCLUDED.host, pid = EXCLUDED.pid, started_at = EXCLUDED.started_at
                """)
        }
    }

    public func removeNode(id: String) async throws {
        try await write { db in try await db.run("DELETE FROM nodes WHERE id = \(id)") }
    }

    public func nodes(since: Date, now: Date) async throws -> [NodeRecord] {
        try await read { db in
            try await db.rows(
                """
                SELECT n.id, n.role, n.host, n.pid, n.workers, n.started_at, n.heartbeat_at,
                       (SELECT count(*) FROM chunks c WHERE c.state = \(ChunkState.leased.rawValue) AND c.lease_owner = n.id),
                       (SELECT coalesce(sum(c.claimed_items), 0)::bigint FROM chunks c
                        WHERE c.state = \(ChunkState.leased.rawValue) AND c.lease_owner = n.id),
                       EXISTS (SELECT 1 FROM leader l WHERE l.node = n.id AND l.expires_at >= \(now.milliseconds))
                FROM nodes n WHERE n.heartbeat_at >= \(since.milliseconds) ORDER BY n.started_at, n.id
                """
            ).map { row in
                NodeRecord(
                    id: try row.get(0), role: try row.get(1), host: try row.get(2), pid: try row.get(3),
                    workers: try row.get(4), startedAt: Date(milliseconds: try row.get(5)),
                    heartbeatAt: Date(milliseconds: try row.get(6)), chunks: try row.get(7),
                    runningItems: try row.get(8), isLeader: try row.get(9))
            }
        }
    }
}
