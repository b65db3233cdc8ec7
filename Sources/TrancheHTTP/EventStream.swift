import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import TrancheEngine

/// A batch's history, and Server-Sent Events: a batch's events, or all of a tenant's.
extension TrancheServer {
    func addEventRoutes(_ v1: RouterGroup<TrancheRequestContext>) {
        v1.get("batches/:id/events") { request, context in
            let record = try await owned(context)
            let after = Int64(request.uri.queryParameters.get("after") ?? "0") ?? 0
            let limit = try limit(request, default: 1_000)
            let events = try await store.events(of: record.id, afterID: after, limit: limit)
            return Self.json(EventList(events: events.map(EventView.init)))
        }
        v1.get("batches/:id/events/stream") { request, context in
            try await eventStream(request, context, batch: try await owned(context))
        }
        v1.get("events/stream") { request, context in try await eventStream(request, context, batch: nil) }
    }

    /// One frame on the wire.
    enum Frame: Sendable {
        case event(BatchEvent)
        case keepAlive
    }

    /// Streams events after `Last-Event-ID` (or `?after=`), then live ones,
    /// with a comment every 15 s to keep proxies from closing the stream.
    func eventStream(_ request: Request, _ context: TrancheRequestContext, batch: BatchRecord?) async throws
        -> Response
    {
        let header = request.headers[HTTPField.Name("Last-Event-ID")!] ?? request.uri.queryParameters.get("after")
        var after: Int64?
        if let header {
            guard let id = Int64(header), id >= 0 else {
                throw Problem(.badRequest, "Last-Event-ID must be an event id")
            }
            after = id
        }
        let events = try await engine.events(of: batch?.id, after: after)
        let tenant = context.tenant
        let store = self.store
        let body = ResponseBody { writer in
            let (frames, continuation) = AsyncStream<Frame>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await event in events { continuation.yield(.event(event)) }
                    continuation.finish()
                }
                group.addTask {
                    while !Task.isCancelled {
                        try await Task.sleep(for: .seconds(15))
                        continuation.yield(.keepAlive)
                    }
                }
                var owners: [BatchID: Bool] = [:]
                try await writer.write(ByteBuffer(string: ": tranche events\n\n"))
                for await frame in frames {
                    switch frame {
                    case .keepAlive:
                        try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                    case .event(let event):
                        if batch == nil {
                            if owners[event.batchID] == nil {
                                owners[event.batchID] = try await store.batch(event.batchID)?.owner == tenant
                            }
                            guard owners[event.batchID] == true else { continue }
                        }
                        try await writer.write(ByteBuffer(string: Self.sse(event)))
                    }
                }
                group.cancelAll()
            }
            try await writer.finish(nil)
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: body)
    }

    /// `id:` (stored events only), `event:` and one `data:` line of JSON.
    static func sse(_ event: BatchEvent) -> String {
        let data = (try? JSONText(encoding: EventView(event)).text) ?? "{}"
        let id = event.id > 0 ? "id: \(event.id)\n" : ""
        return "\(id)event: \(event.type.rawValue)\ndata: \(data)\n\n"
    }
}
