import Foundation
import GRDB
public import TrancheStore

// A page of batches' links and schedules, one query each for the page.

extension SQLiteBatchStore: BatchPageStore {
    public func links(of ids: [BatchID]) async throws -> [BatchID: BatchLinks] {
        guard !ids.isEmpty else { return [:] }
        let (list, arguments) = Self.inList(ids.map(\.rawValue))
        return try await read { db in
            let parents = try Row.fetchAll(db, sql: BatchPageSQL.parents(in: list), arguments: arguments).map { row in
                let read = SQLiteRow(row: row)
                return (child: try read.string(0), parent: try read.string(1), kind: try read.string(2))
            }
            let children = try Row.fetchAll(db, sql: BatchPageSQL.children(in: list), arguments: arguments).map {
                row in
                let read = SQLiteRow(row: row)
                return (parent: try read.string(0), child: try read.string(1))
            }
            return BatchLinks.assembled(parents: parents, children: children)
        }
    }

    public func scheduleIDs(ofBatches ids: [BatchID]) async throws -> [BatchID: String] {
        guard !ids.isEmpty else { return [:] }
        let (list, arguments) = Self.inList(ids.map(\.rawValue))
        return try await read { db in
            var schedules: [BatchID: String] = [:]
            for row in try Row.fetchAll(db, sql: BatchPageSQL.scheduleIDs(in: list), arguments: arguments) {
                let read = SQLiteRow(row: row)
                if let id = BatchID(try read.string(0)) { schedules[id] = try read.string(1) }
            }
            return schedules
        }
    }

    /// `IN (?, ?, …)` for `values`, and the values to bind.
    static func inList(_ values: [String]) -> (String, StatementArguments) {
        ("IN (\(values.map { _ in "?" }.joined(separator: ", ")))", StatementArguments(values))
    }
}
