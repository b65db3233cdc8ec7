import Foundation
import PostgresNIO
public import TrancheStore

extension PostgresBatchStore {
    public func batch(_ id: BatchID) async throws -> BatchRecord? {
        try await read { db in try await Self.batch(db, id: id)?.record }
    }

    public func batches(_ query: BatchQuery) async throws -> [BatchRecord] {
        try await read { db in
            var conditions: [String] = []
            var binds = PostgresBindings()
            func bind(_ value: String) throws -> String {
                binds.append(value)
                return "$\(binds.count)"
            }
            if let owner = query.owner { conditions.append("b.owner = \(try bind(owner))") }
            if let type = query.type { conditions.append("b.type = \(try bind(type))") }
            if let status = query.status { conditions.append("b.status = \(try bind(status.rawValue))") }
            if let before = query.before { conditions.append("b.id < \(try bind(before.rawValue))") }
            let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            let limit = max(1, min(query.limit, 1000))
            return try await db.rows(
                PostgresQuery(
                    unsafeSQL:
                        "SELECT \(BatchShards.columns) FROM \(BatchShards.from) \(filter) ORDER BY b.id DESC LIMIT \(limit)",
                    binds: binds)
            ).map { try Self.decodeBatch($0).record }
        }
    }

    /// The batch's internal key, or `batchNotFound`.
    static func key(_ db: PostgresConnection, _ id: BatchID) async throws -> Int64 {
        guard let row = try await db.one("SELECT key FROM batches WHERE id = \(id.rawValue)") else {
            throw StoreError(.batchNotFound, "no batch \(id)")
        }
        return try row.get(0)
    }

    public func items(of id: BatchID, status: ItemStatus?, afterSeq: Int64?, limit: Int) async throws
        -> [ItemRecord]
    {
        try await read { db in
            let key = try await Self.key(db, id)
            let limit = Int64(max(1, min(limit, 10_000)))
            let after = afterSeq ?? -1
            let columns = """
                SELECT seq, status, attempts, payload, output, error_code, error_message, error_category,
                       next_attempt_at, updated_at
                FROM items
                """
            let query: PostgresQuery
            switch status {
            case nil:
                query = "\(unescaped: columns) WHERE batch_key = \(key) AND seq > \(after) ORDER BY seq LIMIT \(limit)"
            case .running:
                query = """
                    \(unescaped: columns) WHERE batch_key = \(key) AND seq > \(after)
                      AND status IN (\(unescaped: SQLList.waitingItems))
                      AND EXISTS (SELECT 1 FROM chunks c WHERE c.batch_key = items.batch_key
                                  AND c.state = \(ChunkState.leased.rawValue)
                                  AND items.seq BETWEEN c.first_seq AND c.last_seq)
                    ORDER BY seq LIMIT \(limit)
                    """
            case .some(let status):
                query = """
                    \(unescaped: columns) WHERE batch_key = \(key) AND seq > \(after)
                      AND status = \(Int16(status.rawValue)) ORDER BY seq LIMIT \(limit)
                    """
            }
            return try await db.rows(query).map { row in
                let code = try row.get(5, as: String?.self)
                let category = try row.get(7, as: String?.self)
                let message = try row.get(6, as: String?.self)
                return ItemRecord(
                    seq: try row.get(0), status: ItemStatus(rawValue: try row.get(1, as: Int.self)) ?? .pending,
                    attempts: try row.get(2), payload: try row.get(3, as: String?.self).map(JSONText.init(unchecked:)),
                    output: try row.get(4, as: String?.self).map(JSONText.init(unchecked:)),
                    error: code.map {
                        ItemError(
                            code: $0, message: message ?? "",
                            category: category.flatMap(ErrorCategory.init(rawValue:)) ?? .retryable)
                    },
                    nextAttemptAt: try row.get(8, as: Int64?.self).map(Date.init(milliseconds:)),
                    updatedAt: try row.get(9, as: Int64?.self).map(Date.init(milliseconds:)))
            }
        }
    }

    public func events(of id: BatchID, afterID: Int64, limit: Int) async throws -> [BatchEvent] {
        try await read { db in
            let key = try await Self.key(db, id)
            return try await db.rows(
                """
                SELECT id, type, at, data FROM events WHERE batch_key = \(key) AND id > \(afterID)
                ORDER BY id LIMIT \(Int64(max(1, min(limit, 10_000))))
                """
            ).map { row in
                BatchEvent(
                    id: try row.get(0), batchID: id, type: BatchEventType(rawValue: try row.get(1)),
                    at: Date(milliseconds: try row.get(2)), data: try JSONText(unchecked: try row.get(3)).value())
            }
        }
    }

    public func errorGroups(of id: BatchID, samples: Int) async throws -> [ErrorGroup] {
        try await read { db in
            guard let stored = try await Self.batch(db, id: id) else {
                throw StoreError(.batchNotFound, "no batch \(id)")
            }
            if stored.record.pruned, let summary = stored.record.decodedSummary { return summary.errorGroups }
            return try await Self.errorGroups(db, stored.key, samples: max(0, min(samples, 100)))
        }
    }

    public func allEvents(afterID: Int64, limit: Int) async throws -> [BatchEvent] {
        try await read { db in
            try await db.rows(
                """
                SELECT e.id, b.id, e.type, e.at, e.data FROM events e JOIN batches b ON b.key = e.batch_key
                WHERE e.id > \(afterID) ORDER BY e.id LIMIT \(Int64(max(1, min(limit, 10_000))))
                """
            ).compactMap { row in
                guard let batchID = BatchID(try row.get(1, as: String.self)) else { return nil }
                return BatchEvent(
                    id: try row.get(0), batchID: batchID, type: BatchEventType(rawValue: try row.get(2)),
                    at: Date(milliseconds: try row.get(3)), data: try JSONText(unchecked: try row.get(4)).value())
            }
        }
    }

    public func statusSummary() async throws -> [BatchStatusSummary] {
        try await read { db in
            try await db.rows(
                """
                SELECT status, count(*), 0::bigint FROM batches
                WHERE status NOT IN (\(unescaped: SQLList.openBatches)) GROUP BY status
                UNION ALL
                SELECT status, count(*),
                       sum(greatest(0, total - succeeded - skipped - dead - canceled - running))::bigint
                FROM batch_load WHERE status IN (\(unescaped: SQLList.openBatches)) GROUP BY status
                """
            ).compactMap { row in
                guard let status = BatchStatus(rawValue: try row.get(0)) else { return nil }
                return BatchStatusSummary(
                    status: status, batches: try row.get(1), waitingItems: try row.get(2, as: Int64?.self) ?? 0)
            }
        }
    }

    public func queuedItems(owner: String) async throws -> Int64 {
        try await read { db in
            try await db.one(
                """
                SELECT coalesce(\(unescaped: TenantUsage.queuedSQL(greatest: "greatest")), 0)::bigint
                FROM batch_load WHERE owner = \(owner) AND status IN (\(unescaped: SQLList.openBatches))
                """
            )?.get(0) ?? 0
        }
    }

    public func latestEventID() async throws -> Int64 {
        try await read { db in
            try await db.one("SELECT coalesce(max(id), 0)::bigint FROM events")?.get(0) ?? 0
        }
    }
}
