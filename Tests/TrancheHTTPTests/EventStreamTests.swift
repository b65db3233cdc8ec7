import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TrancheEngine

@Suite("Server-Sent Events")
struct EventStreamTests {
    struct Frame {
        var id: Int64?
        var type: String
        var data: [String: Any]
    }

    /// Reads frames from an event stream until `enough` says so, then disconnects.
    func read(
        _ server: LiveServer, _ path: String, lastEventID: Int64? = nil, until enough: ([Frame]) -> Bool
    ) async throws -> [Frame] {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)\(path)")
        if let lastEventID { request.headers.add(name: "Last-Event-ID", value: String(lastEventID)) }
        let response = try await LiveServer.client.execute(request, timeout: .seconds(120))
        #expect(response.headers.first(name: "content-type") == "text/event-stream")
        var text = ""
        var frames: [Frame] = []
        for try await part in response.body {
            text += String(buffer: part)
            while let end = text.range(of: "\n\n") {
                let block = text[..<end.lowerBound]
                text.removeSubrange(..<end.upperBound)
                var frame = Frame(type: "", data: [:])
                for line in block.split(separator: "\n") where !line.hasPrefix(":") {
                    if line.hasPrefix("id: ") { frame.id = Int64(line.dropFirst(4)) }
                    if line.hasPrefix("event: ") { frame.type = String(line.dropFirst(7)) }
                    if line.hasPrefix("data: ") {
                        frame.data =
                            (try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8))) as? [String: Any]
                            ?? [:]
                    }
                }
                if !frame.type.isEmpty { frames.append(frame) }
            }
            if enough(frames) { break }
        }
        return frames
    }

    @Test("a client that reconnects with Last-Event-ID gets every stored event exactly once")
    func reconnect() async throws {
        try await LiveServer.with { server, _ in
            let created = try await server.request(
                .POST, "/v1/batches",
                body:
                    #"{"type":"exec","context":{"command":"sleep 0.02; exit 3"},"items":\#(items(30)),"require_confirmation":true,"options":{"chunk_size":1,"concurrency":1,"max_attempts":1}}"#
            )
            let id = try #require(created.json["id"] as? String)
            let stream = "/v1/batches/\(id)/events/stream"
            // From the beginning (after event 0), until ten stored events
            // arrived: the stream replays what was stored before it opened.
            #expect(try await server.request(.POST, "/v1/batches/\(id)/confirm").status == 200)
            let first = try await read(server, stream, lastEventID: 0) { $0.filter { $0.id != nil }.count >= 10 }
            let lastSeen = try #require(first.compactMap(\.id).last)
            // Reconnect where it stopped, until the batch ends.
            let second = try await read(server, stream, lastEventID: lastSeen) { frames in
                frames.contains { $0.type == "batch.failed" || $0.type == "batch.completed" }
            }
            let received = (first + second).compactMap(\.id)
            let stored = try await server.store.events(of: try #require(BatchID(id)), afterID: 0, limit: 1_000).map(
                \.id)
            #expect(received == stored, "every stored event once, in order")
            #expect(Set(received).count == received.count)
            #expect((first + second).contains { $0.type == "item.dead" })
            #expect((first + second).first?.type == "batch.created")
            #expect((first + second).allSatisfy { ($0.data["batch_id"] as? String) == id })
        }
    }

    @Test("the tenant-wide stream carries only the tenant's own batches")
    func tenantStream() async throws {
        try await LiveServer.with(keyed: true) { server, keys in
            let a = try #require(keys["a"])
            let b = try #require(keys["b"])
            let before = try await server.store.latestEventID()
            _ = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#, key: a)
            let own = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1,2]}"#, key: b)
            let ownID = try #require(own.json["id"] as? String)
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)/v1/events/stream")
            request.headers.add(name: "Authorization", value: "Bearer \(b)")
            request.headers.add(name: "Last-Event-ID", value: String(before))
            let response = try await LiveServer.client.execute(request, timeout: .seconds(120))
            var text = ""
            for try await part in response.body {
                text += String(buffer: part)
                if text.contains("event: batch.completed") { break }
            }
            #expect(text.contains(ownID))
            let ids = Set(
                text.split(separator: "\n").filter { $0.hasPrefix("data: ") }.compactMap { line -> String? in
                    let json = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any]
                    return json?["batch_id"] as? String
                })
            #expect(ids == [ownID])
            let unauthorized = try await server.request(.GET, "/v1/events/stream")
            #expect(unauthorized.status == 401)
        }
    }
}
