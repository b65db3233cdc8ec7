/// Reads for a page of batches at once: what a batch's view shows besides
/// its row (links, the schedule that started it), one query per kind for
/// the whole page instead of one per batch. The one-batch reads
/// (`links(of:)`, `scheduleID(ofBatch:)`) are these with one key.
public protocol BatchPageStore: BatchStore {
    /// The parent and children of each batch of `ids` that has either
    /// (children oldest first, at most 1,000 per batch).
    func links(of ids: [BatchID]) async throws -> [BatchID: BatchLinks]
    /// The schedule that started each batch of `ids` that a schedule started.
    func scheduleIDs(ofBatches ids: [BatchID]) async throws -> [BatchID: String]
}

/// The page reads' SQL, the same for both stores; `ids` is the dialect's
/// list of batch ids (`?, ?` bound on SQLite, `ANY($1)` on PostgreSQL, used
/// as `IN (ids)` or `= ids`).
package enum BatchPageSQL {
    /// `child_id, parent_id, kind` of each batch of the page with a parent that still exists.
    package static func parents(in ids: String) -> String {
        """
        SELECT l.child_id, l.parent_id, l.kind FROM batch_links l JOIN batches b ON b.id = l.parent_id
        WHERE l.child_id \(ids)
        """
    }

    /// `parent_id, child_id` of the page's batches' children that still
    /// exist, each parent's oldest first and at most 1,000 of them.
    package static func children(in ids: String) -> String {
        """
        SELECT parent_id, child_id FROM (
            SELECT l.parent_id, l.child_id,
                   row_number() OVER (PARTITION BY l.parent_id ORDER BY l.created_at, b.key) AS turn
            FROM batch_links l JOIN batches b ON b.id = l.child_id
            WHERE l.parent_id \(ids)) numbered
        WHERE turn <= 1000 ORDER BY parent_id, turn
        """
    }

    /// `batch_id, schedule_id` of the page's batches that a schedule started.
    package static func scheduleIDs(in ids: String) -> String {
        "SELECT batch_id, schedule_id FROM schedule_runs WHERE batch_id \(ids)"
    }
}

extension BatchLinks {
    /// The links of each batch, from the rows of ``BatchPageSQL/parents(in:)``
    /// (`child, parent, kind`) and ``BatchPageSQL/children(in:)`` (`parent, child`), in their order.
    package static func assembled(
        parents: [(child: String, parent: String, kind: String)], children: [(parent: String, child: String)]
    ) -> [BatchID: BatchLinks] {
        var links: [BatchID: BatchLinks] = [:]
        for row in parents {
            guard let child = BatchID(row.child) else { continue }
            links[child, default: BatchLinks()].parentID = BatchID(row.parent)
            links[child, default: BatchLinks()].kind = LinkKind(rawValue: row.kind)
        }
        for row in children {
            guard let parent = BatchID(row.parent), let child = BatchID(row.child) else { continue }
            links[parent, default: BatchLinks()].children.append(child)
        }
        return links
    }
}
