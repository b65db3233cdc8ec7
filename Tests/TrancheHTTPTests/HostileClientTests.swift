import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing
import TrancheEngine
import TrancheTestSupport

@testable import TrancheHTTP

/// What a slow, greedy or cross-site client can hold or make the server do.
@Suite("Hostile clients")
struct HostileClientTests {
    typealias Configure = @Sendable (inout TrancheServer.Configuration) -> Void

    /// Opens `count` event streams and holds them while `body` runs; then
    /// closes them.
    func holdingStreams(
        _ server: LiveServer, _ count: Int, path: String = "/v1/events/stream", key: String? = nil,
        _ body: @Sendable () async throws -> Void
    ) async throws {
        let opened = Records()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<count {
                group.addTask {
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)\(path)")
                    if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
                    let response = try await LiveServer.client.execute(request, timeout: .seconds(120))
                    #expect(response.status == .ok)
                    opened.count.withLock { $0 += 1 }
                    for try await _ in response.body {}
                }
            }
            try await waitUntil("\(count) event streams open") { opened.count.withLock { $0 } == count }
            try await body()
            group.cancelAll()
        }
    }

    @Test("an open event stream holds its place among the requests in flight until it ends")
    func streamsCountInFlight() async throws {
        let twoInFlight: Configure = { $0.maxRequestsInFlight = 2 }
        try await LiveServer.with(configure: twoInFlight) { server, _ in
            try await holdingStreams(server, 2) {
                let refused = try await server.request(.GET, "/healthz")
                #expect(refused.status == 503)
                #expect(refused.headers["retry-after"] == "1")
                #expect(refused.headers["content-type"] == "application/problem+json")
            }
            try await waitUntil("the closed streams gave their places back") {
                try await server.request(.GET, "/healthz").status == 200
            }
        }
    }

    @Test("a tenant over its cap of event streams or exports gets 429 with Retry-After; others are unaffected")
    func perTenantCaps() async throws {
        let caps: Configure = {
            $0.maxStreamsPerTenant = 2
            $0.maxExportsPerTenant = 0
        }
        try await LiveServer.with(keyed: true, configure: caps) { server, keys in
            let a = try #require(keys["a"])
            let b = try #require(keys["b"])
            try await holdingStreams(server, 2, key: a) {
                let refused = try await server.request(.GET, "/v1/events/stream", key: a)
                #expect(refused.status == 429)
                #expect(refused.headers["retry-after"] != nil)
                #expect(refused.headers["content-type"] == "application/problem+json")
                #expect((refused.json["detail"] as? String)?.contains("at most 2 event streams") == true)
                // Tenant b has its own places.
                try await holdingStreams(server, 1, key: b) {}
            }
            try await waitUntil("tenant a's closed streams gave their places back") {
                try await streamStatus(server, key: a) == 200
            }
            let batch = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#, key: a)
            let id = try #require(batch.json["id"] as? String)
            let export = try await server.request(.GET, "/v1/batches/\(id)/export", key: a)
            #expect(export.status == 429)
            #expect((export.json["detail"] as? String)?.contains("at most 0 exports") == true)
        }
    }

    /// The status of a new event stream (a stream that opens is closed again at once).
    func streamStatus(_ server: LiveServer, key: String) async throws -> Int {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)/v1/events/stream")
        request.headers.add(name: "Authorization", value: "Bearer \(key)")
        let response = try await LiveServer.client.execute(request, timeout: .seconds(120))
        for try await _ in response.body { break }
        return Int(response.status.code)
    }

    /// The stored frames of an event stream read to its end (or to `enough`).
    func frames(
        _ server: LiveServer, _ path: String, lastEventID: Int64, key: String? = nil,
        until enough: @escaping ([Int64]) -> Bool = { _ in false }
    ) async throws -> (ids: [Int64], text: String) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)\(path)")
        request.headers.add(name: "Last-Event-ID", value: String(lastEventID))
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        let response = try await LiveServer.client.execute(request, timeout: .seconds(120))
        var text = ""
        var ids: [Int64] = []
        for try await part in response.body {
            text += String(buffer: part)
            ids = text.split(separator: "\n").filter { $0.hasPrefix("id: ") }.compactMap { Int64($0.dropFirst(4)) }
            if enough(ids) { break }
        }
        return (ids, text)
    }

    @Test("a replay after Last-Event-ID sends at most the cap, ends with an id to go on from, and stays in the tenant")
    func boundedReplay() async throws {
        let replayTwo: Configure = { $0.maxReplayedEvents = 2 }
        try await LiveServer.with(keyed: true, configure: replayTwo) { server, keys in
            let a = try #require(keys["a"])
            let b = try #require(keys["b"])
            let before = try await server.store.latestEventID()
            let created = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":[1,2,3]}"#, key: a)
            let id = try #require(created.json["id"] as? String)
            let stored = try await server.store.events(of: try #require(BatchID(id)), afterID: 0, limit: 100).map(\.id)
            try #require(stored.count > 2, "the batch has more events than the cap: \(stored)")
            // The first stream ends after two events and an id line naming the second.
            let first = try await frames(server, "/v1/batches/\(id)/events/stream", lastEventID: 0, key: a)
            #expect(first.ids == Array(stored.prefix(2)) + [stored[1]])
            #expect(first.text.hasSuffix("id: \(stored[1])\n\n"))
            // Reconnecting from there goes on; every stored event arrives once.
            var received = Array(first.ids.prefix(2))
            while received.count < stored.count {
                let have = received.count
                let next = try await frames(
                    server, "/v1/batches/\(id)/events/stream", lastEventID: received.last ?? 0, key: a
                ) { ids in have + Set(ids).count >= stored.count }
                try #require(!next.ids.isEmpty, "a reconnect brings events: \(next.text)")
                for event in next.ids where event > (received.last ?? 0) { received.append(event) }
            }
            #expect(received == stored)
            // Tenant b's replay of the whole log reads past a's events and shows none.
            let other = try await frames(server, "/v1/events/stream", lastEventID: before, key: b)
            #expect(!other.text.contains(id))
            #expect(other.ids.count == 1, "only the id line to go on from: \(other.text)")
            // Another tenant's batch stays a 404.
            let foreign = try await server.request(.GET, "/v1/batches/\(id)/events/stream", key: b)
            #expect(foreign.status == 404)
        }
    }

    /// Posts a body that declares `length` bytes and sends them as `send` yields them.
    func slowPost(
        _ server: LiveServer, length: Int,
        _ send: @escaping @Sendable (AsyncStream<ByteBuffer>.Continuation) async -> Void
    ) async throws -> LiveServer.Reply {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)/v1/batches")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        request.body = .stream(stream, length: .known(Int64(length)))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await send(continuation) }
            defer {
                group.cancelAll()
                continuation.finish()
            }
            let response = try await LiveServer.client.execute(request, timeout: .seconds(120))
            let body = try await response.body.collect(upTo: 1 << 20)
            var headers: [String: String] = [:]
            for header in response.headers { headers[header.name.lowercased()] = header.value }
            return LiveServer.Reply(
                status: Int(response.status.code), headers: headers, body: Data(body.readableBytesView))
        }
    }

    @Test("a body that stalls, or trickles in past the body timeout, gets 408 and the connection closes")
    func bodyTimeout() async throws {
        let oneSecond: Configure = { $0.bodyTimeout = 1 }
        try await LiveServer.with(configure: oneSecond) { server, _ in
            let stalled = try await slowPost(server, length: 1_000) { body in
                body.yield(ByteBuffer(string: #"{"type":"#))
            }
            #expect(stalled.status == 408)
            #expect(stalled.headers["content-type"] == "application/problem+json")
            #expect(stalled.headers["connection"] == "close")
            #expect((stalled.json["detail"] as? String)?.contains("within 1.0 seconds") == true, "\(stalled.text)")
            // A byte every 50 ms keeps the connection busy, not the body on time.
            let trickled = try await slowPost(server, length: 100_000) { body in
                while !Task.isCancelled {
                    body.yield(ByteBuffer(string: " "))
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }
            #expect(trickled.status == 408)
            // A GET with a body is not held to it (and its stream still works).
            var get = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)/v1/events/stream")
            get.body = .bytes(ByteBuffer(string: "{}"))
            let stream = try await LiveServer.client.execute(get, timeout: .seconds(120))
            #expect(stream.status == .ok)
            for try await _ in stream.body { break }
            // A body on time is read as before.
            let fine = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#)
            #expect(fine.status == 200)
        }
    }

    @Test("a connection that sends half a request head and stops is closed after the idle timeout")
    func slowHeader() async throws {
        let halfSecond: Configure = { $0.idleTimeout = 0.5 }
        try await LiveServer.with(configure: halfSecond) { server, _ in
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: server.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            let received = try await withDeadline(seconds: 60, "the server to close a silent connection") {
                try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "))
                    var text = ""
                    for try await part in inbound { text += String(buffer: part) }
                    return text
                }
            }
            #expect(received.isEmpty, "no answer, just the close: \(received)")
            #expect(try await server.request(.GET, "/healthz").status == 200)
        }
    }

    @Test("open mode answers only loopback names and same-site origins; a non-JSON body is 415 in every mode")
    func openModeRefusesCrossSite() async throws {
        let trusted: Configure = { $0.trustedHosts = ["tranche.internal"] }
        try await LiveServer.with(configure: trusted) { server, _ in
            let port = server.port
            let allowed: [[String: String]] = [
                [:], ["Host": "localhost:\(port)"], ["Host": "[::1]:\(port)"], ["Host": "tranche.internal"],
                ["Origin": "http://127.0.0.1:\(port)"], ["Origin": "http://localhost:3000"],
            ]
            for headers in allowed {
                #expect(try await server.request(.GET, "/v1/batches", headers: headers).status == 200, "\(headers)")
            }
            let refused: [[String: String]] = [
                ["Host": "evil.example:\(port)"], ["Host": "127.0.0.1.evil.example"], ["Origin": "http://evil.example"],
                ["Origin": "null"], ["Host": "evil.example", "Origin": "http://evil.example"],
            ]
            for headers in refused {
                let reply = try await server.request(.GET, "/v1/batches", headers: headers)
                #expect(reply.status == 403, "\(headers)")
                #expect(reply.headers["content-type"] == "application/problem+json")
            }
            let post = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#,
                headers: ["Origin": "http://evil.example", "Content-Type": "application/json"])
            #expect(post.status == 403)
            let form = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#, headers: ["Content-Type": "text/plain"])
            #expect(form.status == 415)
            #expect((form.json["detail"] as? String)?.contains("not text/plain") == true)
        }
        try await LiveServer.with(keyed: true) { server, keys in
            let a = try #require(keys["a"])
            // With keys, any Host may call (the key is the check), but the body type still is.
            let batch = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#, key: a,
                headers: ["Host": "tranche.example.com", "Content-Type": "application/json; charset=utf-8"])
            #expect(batch.status == 200)
            let form = try await server.request(
                .POST, "/v1/batches", body: "type=noop", key: a,
                headers: ["Content-Type": "application/x-www-form-urlencoded"])
            #expect(form.status == 415)
        }
    }

    @Test("a key created while the server is open takes effect without a restart")
    func keyEndsOpenMode() async throws {
        try await LiveServer.with { server, _ in
            #expect(try await server.request(.GET, "/v1/batches").status == 200)
            // Another process creates a key (the CLI, another node): the
            // server sees it within a second.
            let (record, key) = APIKeys.make(tenant: "t")
            try await server.store.createAPIKey(record)
            try await waitUntil("the server to require keys") {
                try await server.request(.GET, "/v1/batches").status == 401
            }
            #expect(try await server.request(.GET, "/v1/batches", key: key).status == 200)
            #expect(try await server.request(.GET, "/v1/batches", key: "tr_00000000_nope").status == 401)
        }
        try await LiveServer.with { server, _ in
            // A request that presents the new key is checked at once.
            let (record, key) = APIKeys.make(tenant: "t")
            try await server.store.createAPIKey(record)
            let created = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#, key: key)
            #expect(created.status == 200)
            #expect(try await server.request(.GET, "/v1/batches").status == 401)
        }
    }

    @Test("CSV cells a spreadsheet would run as formulas start with a quote")
    func csvFormulas() {
        #expect(ExportFormat.csvField("=1+1") == "'=1+1")
        #expect(ExportFormat.csvField("+SUM(A1)") == "'+SUM(A1)")
        #expect(ExportFormat.csvField("-2") == "'-2")
        #expect(ExportFormat.csvField("@cmd") == "'@cmd")
        #expect(ExportFormat.csvField("\tx") == "'\tx")
        #expect(ExportFormat.csvField("\r\nx") == "\"'\r\nx\"")
        #expect(ExportFormat.csvField("=HYPERLINK(\"a\",\"b\")") == "\"'=HYPERLINK(\"\"a\"\",\"\"b\"\")\"")
        #expect(ExportFormat.csvField("plain") == "plain")
        #expect(ExportFormat.csvField("a\r\nb") == "\"a\r\nb\"", "a CRLF inside is quoted")
        #expect(ExportFormat.csvField("a=b") == "a=b")
        #expect(ExportFormat.csvField("") == "")
    }

    @Test("a server cancelled at shutdown does not log its accept loop's cancellation as an error")
    func quietCancellation() {
        let records = Records()
        var logger = Logger(label: "test") { _ in Recorder(records: records) }
        logger.logLevel = .info
        logger.handler = QuietCancellationLogHandler(base: logger.handler)
        logger.error("Waiting on child channel: CancellationError()")
        logger.error("Waiting on child channel: ioOnClosedChannel")
        logger.error("Server shutdown error: CancellationError()")
        #expect(
            records.value.withLock { $0.map(\.1) } == [
                "Waiting on child channel: ioOnClosedChannel", "Server shutdown error: CancellationError()",
            ])
        logger.logLevel = .debug
        logger.error("Waiting on child channel: CancellationError()")
        #expect(records.value.withLock { $0.last?.0 } == .debug)
    }

    /// What tasks of a test count or keep.
    final class Records: Sendable {
        let value = Mutex<[(Logger.Level, String)]>([])
        let count = Mutex(0)
    }

    /// Keeps what is logged.
    struct Recorder: LogHandler {
        let records: Records
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) { records.value.withLock { $0.append((event.level, event.message.description)) } }
    }
}
