import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TrancheHTTP

/// What clients send arrives whole or is refused clearly: numbers keep their
/// text, bytes that are not UTF-8 are a 400 naming where, and a strategy's
/// context with an unknown field is a 422 at submission.
@Suite("HTTP input")
struct InputTests {
    /// Numbers no `Double` holds, as a client may send them.
    static let numbers = ["9007199254740993", "-9223372036854775809", "1e400", "123456789012345678901234567890"]
    static let items = "[" + numbers.map { #"{"n":\#($0)}"# }.joined(separator: ",") + "]"
    static let ndjson = numbers.map { #"{"n":\#($0)}"# }.joined(separator: "\n") + "\n"

    /// Every number of `numbers` appears in `text` exactly, `count` times.
    func expectExact(_ text: String, count: Int, _ what: String) {
        for number in Self.numbers {
            #expect(text.components(separatedBy: #"{"n":\#(number)}"#).count - 1 == count, "\(what): \(number)")
        }
        #expect(!text.contains("9007199254740992"), "\(what) rounded a number")
    }

    @Test("large numbers stay exact through create, append (JSON and NDJSON), items, outputs and export")
    func exactNumbers() async throws {
        try await LiveServer.with { server, _ in
            // `cat` echoes each item, so its output is the item as the strategy saw it.
            let created = try await server.request(
                .POST, "/v1/batches",
                body: #"{"type":"exec","context":{"command":"cat"},"mode":"sync","items":\#(Self.items)}"#)
            #expect(created.status == 200, "\(created.text)")
            expectExact(created.text, count: 1, "the synchronous result's outputs")
            // Foundation's JSON reader refuses 1e400, so the id is read from the text.
            let id = try #require(created.text.firstMatch(of: /"id":"([^"]+)"/)?.1)
            let listed = try await server.request(.GET, "/v1/batches/\(id)/items?include=item")
            expectExact(listed.text, count: 2, "the items with their outputs")
            let exported = try await server.request(.GET, "/v1/batches/\(id)/export?format=ndjson")
            expectExact(exported.text, count: 2, "the export")

            let open = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop"}"#)
            let openID = try #require(open.json["id"] as? String)
            let json = try await server.request(.POST, "/v1/batches/\(openID)/items", body: Self.items)
            #expect(json.status == 200, "\(json.text)")
            let lines = try await server.request(
                .POST, "/v1/batches/\(openID)/items", body: Self.ndjson,
                headers: ["Content-Type": "application/x-ndjson"])
            #expect(lines.status == 200, "\(lines.text)")
            #expect(lines.json["rejected"] as? Int == 0)
            let appended = try await server.request(.GET, "/v1/batches/\(openID)/items?include=item")
            expectExact(appended.text, count: 2, "the appended items")
        }
    }

    @Test(
        "a body that is not UTF-8 is a 400 naming the byte, on create and append, JSON and NDJSON; nothing is stored",
        arguments: [
            ("create", "application/json", #"{"type":"noop","items":[{"s":"a"#, #"b"}]}"#, "the body"),
            ("append", "application/json", #"[1,{"s":""#, #""}]"#, "the body"),
            ("append", "application/x-ndjson", "1\n{\"s\":\"", "\"}\n", "line 2"),
            // A line that is not JSON either: refused for its bytes, not stored as text with U+FFFD.
            ("append", "application/x-ndjson", "1\n{\"s\" ", "\n", "line 2"),
        ])
    func invalidUTF8(route: String, contentType: String, before: String, after: String, subject: String)
        async throws
    {
        try await LiveServer.with { server, _ in
            var path = "/v1/batches"
            if route == "append" {
                let open = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop"}"#)
                path += "/\(try #require(open.json["id"] as? String))/items"
            }
            // Offsets count from the start of the body, or of the line for NDJSON.
            let lead =
                before.utf8.count
                - (before.utf8.lastIndex(of: 0x0A).map {
                    before.utf8.distance(from: before.utf8.startIndex, to: $0) + 1
                } ?? 0)
            // The offending byte: the lead itself, or the continuation that does not fit it.
            for (bad, offset) in [
                ([0xFF] as [UInt8], lead), ([0xC3, 0x28], lead + 1), ([0xED, 0xA0, 0x80], lead + 1),
            ] {
                let reply = try await send(
                    server, path, Array(before.utf8) + bad + Array(after.utf8), contentType: contentType)
                #expect(reply.status == 400, "\(reply.text)")
                #expect(reply.headers["content-type"] == "application/problem+json")
                let message = reply.json["detail"] as? String ?? ""
                #expect(
                    message.hasPrefix(subject) && message.contains("not valid UTF-8 at byte \(offset)"), "\(message)")
            }
            let batches = try await server.request(.GET, "/v1/batches")
            let totals = (batches.json["batches"] as? [[String: Any]] ?? []).map { $0[path: "counts", "total"] as? Int }
            #expect(totals.allSatisfy { $0 == 0 }, "\(totals)")
        }
    }

    @Test("a body over its limit is a 413 on create and append, JSON and NDJSON")
    func bodyLimits() async throws {
        let limits: @Sendable (inout TrancheServer.Configuration) -> Void = { $0.maxUploadBytes = 2_000 }
        try await LiveServer.with(maxBodyBytes: 1_000, configure: limits) { server, _ in
            let filler = String(repeating: "x", count: 600)
            let items = #"[{"s":"\#(filler)"},{"s":"\#(filler)"}]"#
            let created = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":\#(items)}"#)
            #expect(created.status == 413, "\(created.text)")
            #expect((created.json["detail"] as? String)?.contains("larger than 1000 bytes") == true)
            let open = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop"}"#)
            let id = try #require(open.json["id"] as? String)
            let json = try await server.request(.POST, "/v1/batches/\(id)/items", body: items)
            #expect(json.status == 413, "\(json.text)")
            let batch = try await server.request(.GET, "/v1/batches/\(id)")
            #expect(batch.json[path: "counts", "total"] as? Int == 0, "a refused JSON body stored items")
            let lines = String(repeating: #"{"s":"\#(filler)"}"# + "\n", count: 4)
            let ndjson = try await server.request(
                .POST, "/v1/batches/\(id)/items", body: lines, headers: ["Content-Type": "application/x-ndjson"])
            #expect(ndjson.status == 413, "\(ndjson.text)")
            #expect((ndjson.json["detail"] as? String)?.contains("larger than 2000 bytes") == true)
            // Under the limits, the same items go in.
            let again = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop"}"#)
            let fresh = try #require(again.json["id"] as? String)
            let fine = try await server.request(
                .POST, "/v1/batches/\(fresh)/items", body: #"[{"s":"\#(filler)"}]"#)
            #expect(fine.status == 200, "\(fine.text)")
            #expect(fine.json["total"] as? Int == 1)
        }
    }

    @Test("an unknown field in a strategy's context is a 422 at submission naming it")
    func unknownContextField() async throws {
        try await LiveServer.with { server, _ in
            for (type, context, field) in [
                ("exec", #"{"command":"true","cmd":"false"}"#, "cmd"), ("sleep", #"{"ms":1,"ms_":2}"#, "ms_"),
            ] {
                let reply = try await server.request(
                    .POST, "/v1/batches", body: #"{"type":"\#(type)","context":\#(context),"items":[1]}"#)
                #expect(reply.status == 422, "\(reply.text)")
                #expect((reply.json["detail"] as? String)?.contains("unknown context field '\(field)'") == true)
            }
            let batches = try await server.request(.GET, "/v1/batches")
            #expect((batches.json["batches"] as? [Any])?.isEmpty == true)
        }
    }

    /// Sends `bytes` as they are (``LiveServer/request`` takes a `String`,
    /// which cannot hold bytes that are not UTF-8).
    func send(_ server: LiveServer, _ path: String, _ bytes: [UInt8], contentType: String) async throws
        -> LiveServer.Reply
    {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)\(path)")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: contentType)
        request.body = .bytes(ByteBuffer(bytes: bytes))
        let response = try await LiveServer.client.execute(request, timeout: .seconds(60))
        let body = try await response.body.collect(upTo: 1 << 20)
        var headers: [String: String] = [:]
        for header in response.headers { headers[header.name.lowercased()] = header.value }
        return LiveServer.Reply(status: Int(response.status.code), headers: headers, body: Data(body.readableBytesView))
    }
}
