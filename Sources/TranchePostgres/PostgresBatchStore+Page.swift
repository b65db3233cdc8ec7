import Foundation
import PostgresNIO
public import TrancheStore

// A page of batches' links and schedules, one query each for the page.

extension PostgresBatchStore: BatchPageStore {
    public func links(of ids: [BatchID]) async throws -> [BatchID: BatchLinks] {
        guard !ids.isEmpty else { return [:] }
        let values = ids.map(\.rawValue)
        return try await read { db in
            let parents = try await db.rows(.anyOf(values, BatchPageSQL.parents(in:))).map { row in
                let read = PostgresStoredRow(row: row)
                return (child: try read.string(0), parent: try read.string(1), kind: try read.string(2))
            }
            let children = try await db.rows(.anyOf(values, BatchPageSQL.children(in:))).map { row in
                let read = PostgresStoredRow(row: row)
                return (parent: try read.string(0), child: try read.string(1))
            }
            return BatchLinks.assembled(parents: parents, children: children)
        }
    }

    public func scheduleIDs(ofBatches ids: [BatchID]) async throws -> [BatchID: String] {
        guard !ids.isEmpty else { return [:] }
        return try await read { db in
            var schedules: [BatchID: String] = [:]
            for row in try await db.rows(.anyOf(ids.map(\.rawValue), BatchPageSQL.scheduleIDs(in:))) {
                let read = PostgresStoredRow(row: row)
                if let id = BatchID(try read.string(0)) { schedules[id] = try read.string(1) }
            }
            return schedules
        }
    }
}

extension PostgresQuery {
    /// `sql(ids)` with `ids` as `= ANY($1)`, `values` bound as one text array.
    static func anyOf(_ values: [String], _ sql: (String) -> String) -> PostgresQuery {
        var binds = PostgresBindings()
        binds.append(values)
        return PostgresQuery(unsafeSQL: sql("= ANY($1)"), binds: binds)
    }
}
