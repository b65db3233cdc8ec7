import Foundation
import Hummingbird
import TrancheEngine

/// `/v1/batches`: submit, list, show, delete, and the lifecycle actions.
extension TrancheServer {
    func addBatchRoutes(_ v1: RouterGroup<TrancheRequestContext>) {
        v1.post("batches") { request, context in try await create(request, context) }
        v1.get("batches") { request, context in try await list(request, context) }
        v1.get("batches/:id") { _, context in try await batchResponse(try await owned(context)) }
        v1.delete("batches/:id") { _, context in
            let record = try await owned(context)
            try await store.deleteBatch(record.id)
            return Response(status: .noContent)
        }
        v1.post("batches/:id/seal") { _, context in
            let record = try await owned(context)
            return try await batchResponse(try await engine.seal(record.id))
        }
        for action in ["confirm", "pause", "resume", "cancel"] {
            v1.post("batches/:id/\(action)") { _, context in
                let record = try await owned(context)
                let updated: BatchRecord
                switch action {
                case "confirm": updated = try await engine.confirm(record.id)
                case "pause": updated = try await engine.pause(record.id)
                case "resume": updated = try await engine.resume(record.id)
                default: updated = try await engine.cancel(record.id)
                }
                return try await batchResponse(updated)
            }
        }
        v1.post("batches/:id/retry") { request, context in try await retry(request, context) }
    }

    func list(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        var status: BatchStatus?
        if let text = query.get("status") {
            guard let parsed = BatchStatus(rawValue: text) else {
                throw Problem(
                    .badRequest, "status must be one of \(BatchStatus.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            status = parsed
        }
        var before: BatchID?
        if let cursor = query.get("cursor") {
            guard let id = BatchID(cursor) else { throw Problem(.badRequest, "cursor is not valid") }
            before = id
        }
        let limit = try limit(request, default: 50)
        let records = try await store.batches(
            BatchQuery(owner: context.tenant, type: query.get("type"), status: status, before: before, limit: limit))
        // One read per kind for the whole page, never one per batch.
        let progress = try await engine.progress(of: records)
        let extras = try await extras(of: records)
        var views: [BatchView] = []
        for record in records {
            views.append(try await batchView(record, withErrors: false, progress: progress[record.id], extras: extras))
        }
        let next = records.count == limit ? records.last?.id.rawValue : nil
        return Self.json(BatchPage(batches: views, nextCursor: next))
    }

    func retry(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let record = try await owned(context)
        let buffer = try await request.collectBody(limit: 64 << 10)
        var statuses: Set<ItemStatus>?
        if buffer.readableBytes > 0 {
            let body = try request.decodeJSON(RetryRequest.self, from: buffer)
            statuses = try body.statuses.map { Set(try $0.map(itemStatus)) }
        }
        let (updated, count) = try await engine.retry(record.id, statuses: statuses)
        var view = try await batchView(updated)
        view.retriedItems = count
        return Self.json(view)
    }
}

/// What batch views show besides the batch's row and progress: its links,
/// the schedule that started it, its stored pace and its prepare preview.
struct BatchExtras: Sendable {
    var links: [BatchID: BatchLinks] = [:]
    var scheduleIDs: [BatchID: String] = [:]
    var paces: [String: PaceRecord] = [:]
    var previews: [BatchID: JSONText] = [:]

    /// Sets `view`'s links, schedule and preview from these.
    func fill(_ view: inout BatchView, of record: BatchRecord) {
        let links = links[record.id] ?? BatchLinks()
        (view.parentID, view.children) = (links.parentID, links.children)
        view.scheduleID = scheduleIDs[record.id]
        view.preview = previews[record.id].flatMap { try? $0.value() }
    }
}

extension TrancheServer {
    /// The extras of `records`, one store read per kind for all of them.
    func extras(of records: [BatchRecord]) async throws -> BatchExtras {
        let ids = records.map(\.id)
        var extras = BatchExtras()
        if let page = store as? any BatchPageStore {
            extras.links = try await page.links(of: ids)
            extras.scheduleIDs = try await page.scheduleIDs(ofBatches: ids)
        }
        // Only adaptive batches have a stored pace.
        if let limits = store as? any LimitStore {
            extras.paces = try await limits.paces(
                keys: records.filter { $0.options.paceMode(forType: $0.type) == .adaptive }.map {
                    LimitKey.batch($0.id)
                })
        }
        if let steps = store as? any LeasedStepStore {
            extras.previews = try await steps.steps(.prepare, of: ids).compactMapValues(\.preview)
        }
        return extras
    }
}
