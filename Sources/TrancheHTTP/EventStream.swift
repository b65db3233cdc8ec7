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
            let after = try request.uri.queryParameters.get("after").map { try Self.eventID($0, "after") } ?? 0
            let limit = try limit(request, default: 1_000)
            let events = try await store.events(of: record.id, afterID: after, limit: limit)
            return Self.json(EventList(events: events.map(EventView.init)))
        }
        v1.get("batches/:id/events/stream") { request, context in
            try await eventStream(request, context, batch: try await owned(context))
        }
        v1.get("events/stream") { request, context in try await eventStream(request, context, batch: nil) }
    }

    /// An event id from `Last-Event-ID` or `after`: an integer from 0; 400 otherwise.
    static func eventID(_ text: String, _ name: String) throws -> Int64 {
        guard let id = Int64(text), id >= 0 else { throw Problem(.badRequest, "\(name) must be an event id") }
        return id
    }

    /// One frame on the wire.
    enum Frame: Sendable {
        case event(BatchEvent)
        case keepAlive
    }

    /// Streams events after `Last-Event-ID` (or `?after=`), then live ones,
    /// with a comment every 15 s to keep proxies from closing the stream.
    /// A replay sends at most `maxReplayedEvents` stored events (read from
    /// this batch, or for the tenant-wide stream that many of the log, of
    /// which the tenant's own): if more wait, the stream ends after an `id:`
    /// line and the client's reconnect goes on from there. The stream ends
    /// when the client goes away.
    func eventStream(_ request: Request, _ context: TrancheRequestContext, batch: BatchRecord?) async throws
        -> Response
    {
        // Both are checked; the header, sent by a reconnecting client, wins.
        let query = try request.uri.queryParameters.get("after").map { try Self.eventID($0, "after") }
        let header = try request.headers[HTTPField.Name("Last-Event-ID")!].map { try Self.eventID($0, "Last-Event-ID") }
        let after = header ?? query
        let tenant = context.tenant
        let store = self.store
        let owners = Owners(store: store, tenant: tenant)
        var replay = Replay()
        if let after {
            replay = try await self.replay(after: after, batch: batch, owners: owners)
        }
        let events = replay.complete ? try await engine.events(of: batch?.id, after: replay.resumeAfter) : nil
        let body = ResponseBody { [replay] writer in
            do {
                try await request.body.consumeWithCancellationOnInboundClose { _ in
                    try await writer.write(ByteBuffer(string: ": tranche events\n\n"))
                    for event in replay.events { try await writer.write(ByteBuffer(string: Self.sse(event))) }
                    guard let events else {
                        try await writer.write(ByteBuffer(string: "id: \(replay.resumeAfter ?? 0)\n\n"))
                        return
                    }
                    try await Self.live(events, to: &writer, batch: batch, owners: owners)
                }
                try await writer.finish(nil)
            } catch {
                // The client went away (or the server is stopping): nothing to answer.
            }
        }
        return Response(
            status: .ok,
            // The connection closes with the stream: no client should reuse it.
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", .connection: "close"],
            body: body)
    }

    /// Stored events a reconnecting client missed, and where live ones start.
    struct Replay: Sendable {
        var events: [BatchEvent] = []
        /// Whether every missed event is in `events` (else the stream ends after them).
        var complete = true
        /// The event id live events follow (nil: the newest).
        var resumeAfter: Int64?
    }

    func replay(after: Int64, batch: BatchRecord?, owners: Owners) async throws -> Replay {
        let limit = min(max(configuration.maxReplayedEvents, 1), 10_000)
        // Live events follow the newest stored event (read first, so none is
        // missed), not the replay's last one: the engine would reread the log from there.
        let latest = try await store.latestEventID()
        let read =
            if let batch {
                try await store.events(of: batch.id, afterID: after, limit: limit)
            } else {
                try await store.allEvents(afterID: after, limit: limit)
            }
        var replay = Replay(complete: read.count < limit)
        for event in read {
            if batch == nil, try await !owners.owns(event.batchID) { continue }
            replay.events.append(event)
        }
        let last = read.last?.id ?? after
        replay.resumeAfter = replay.complete ? max(after, latest, last) : last
        return replay
    }

    /// Writes live events and keep-alive comments until the events end.
    static func live(
        _ events: AsyncStream<BatchEvent>, to writer: inout any ResponseBodyWriter, batch: BatchRecord?,
        owners: Owners
    ) async throws {
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
            for await frame in frames {
                switch frame {
                case .keepAlive:
                    try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                case .event(let event):
                    if batch == nil, try await !owners.owns(event.batchID) { continue }
                    try await writer.write(ByteBuffer(string: Self.sse(event)))
                }
            }
            group.cancelAll()
        }
    }

    /// Which batches belong to the stream's tenant, remembered for the
    /// stream's length (at most 10,000 at once).
    final class Owners: @unchecked Sendable {
        let store: any ServerStore
        let tenant: String
        private var known: [BatchID: Bool] = [:]

        init(store: any ServerStore, tenant: String) {
            self.store = store
            self.tenant = tenant
        }

        /// Used by one task at a time: the replay, then the stream's writer.
        func owns(_ id: BatchID) async throws -> Bool {
            if let owned = known[id] { return owned }
            let owned = try await store.batch(id)?.owner == tenant
            if known.count >= 10_000 { known.removeAll() }
            known[id] = owned
            return owned
        }
    }

    /// `id:` (stored events only), `event:` and one `data:` line of JSON.
    static func sse(_ event: BatchEvent) -> String {
        let data = (try? JSONText(encoding: EventView(event)).text) ?? "{}"
        let id = event.id > 0 ? "id: \(event.id)\n" : ""
        return "\(id)event: \(event.type.rawValue)\ndata: \(data)\n\n"
    }
}
