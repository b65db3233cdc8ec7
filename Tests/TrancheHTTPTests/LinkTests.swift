import Foundation
import NIOHTTP1
import Testing
import TrancheEngine
import TrancheHTTP

/// `POST /v1/batches/{id}/resubmit`, `then` on a create, and confirming a dry run.
@Suite("HTTP API: linked batches")
struct LinkTests {
    /// Halves `n` (an odd `n` fails, retryably, when the context says `fail_odd`: dead after
    /// `max_attempts`); a negative `n` is refused at upload (skipped).
    struct HalvingStrategy: BatchStrategy {
        struct Context: Codable, Sendable {
            var failOdd: Bool?
            enum CodingKeys: String, CodingKey { case failOdd = "fail_odd" }
        }

        struct Item: Codable, Sendable {
            var n: Int
        }

        var type: String { "halve" }

        func validate(_ item: Item, context: Context) throws {
            if item.n < 0 { throw ItemError.permanent("negative", "item \(item.n) is negative") }
        }

        func process(_ item: Item, context: Context, input: ItemInput) async throws -> Item {
            if context.failOdd == true, item.n % 2 != 0 { throw ItemError.retryable("odd", "\(item.n) is odd") }
            return Item(n: item.n / 2)
        }
    }

    static let strategies = [AnyBatchStrategy(HalvingStrategy())]

    /// Submits an async batch and waits for it to end.
    func ended(_ server: LiveServer, _ body: String, key: String? = nil) async throws -> String {
        let created = try await server.request(.POST, "/v1/batches", body: body, key: key)
        #expect(created.status == 202, "\(created.text)")
        let id = try #require(created.json["id"] as? String)
        _ = try await server.waitFor(id, key: key) { ["completed", "failed"].contains($0["status"] as? String) }
        return id
    }

    @Test("a resubmit creates a linked batch of the dead and skipped items, once per idempotency key")
    func resubmit() async throws {
        try await LiveServer.with(strategies: Self.strategies) { server, _ in
            let id = try await ended(
                server,
                #"{"type":"halve","context":{"fail_odd":true},"items":[{"n":0},{"n":1},{"n":2},{"n":3},{"n":-1}],"options":{"max_attempts":1},"mode":"async"}"#
            )
            let first = try await server.request(
                .POST, "/v1/batches/\(id)/resubmit", headers: ["Idempotency-Key": "again-1"])
            #expect(first.status == 202, "\(first.text)")
            let child = try #require(first.json["id"] as? String)
            #expect(first.json["parent_id"] as? String == id)
            #expect(first.json[path: "counts", "total"] as? Int == 3)  // 1 and 3 dead, -1 skipped
            #expect((first.json["context"] as? [String: Any])?["fail_odd"] as? Bool == true)
            let repeated = try await server.request(
                .POST, "/v1/batches/\(id)/resubmit", headers: ["Idempotency-Key": "again-1"])
            #expect(repeated.status == 202)
            #expect(repeated.json["id"] as? String == child)
            #expect(repeated.headers["idempotent-replayed"] == "true")
            let parent = try await server.request(.GET, "/v1/batches/\(id)")
            #expect(parent.json["children"] as? [String] == [child])
            #expect(parent.json.keys.contains("parent_id") && parent.json["parent_id"] is NSNull)

            let onlyDead = try await server.request(
                .POST, "/v1/batches/\(id)/resubmit", body: #"{"statuses":["dead"]}"#)
            #expect(onlyDead.status == 202, "\(onlyDead.text)")
            #expect(onlyDead.json[path: "counts", "total"] as? Int == 2)
            let other = try await server.request(
                .POST, "/v1/batches/\(id)/resubmit", body: #"{"statuses":["dead"]}"#,
                headers: ["Idempotency-Key": "again-1"])
            #expect(other.status == 422, "the key was used with another body")
        }
    }

    @Test("a resubmit refuses bad statuses (422), a batch still open or with nothing to take (409)")
    func resubmitRefused() async throws {
        try await LiveServer.with(strategies: Self.strategies) { server, _ in
            let clean = try await ended(server, #"{"type":"halve","items":[{"n":2}],"mode":"async"}"#)
            for body in [
                #"{"statuses":["succeeded"]}"#, #"{"statuses":["nope"]}"#, #"{"statuses":[]}"#, #"{"other":1}"#,
                #"{"statuses":"dead"}"#,
            ] {
                let reply = try await server.request(.POST, "/v1/batches/\(clean)/resubmit", body: body)
                #expect(reply.status == 422, "\(body): \(reply.text)")
                #expect(reply.headers["content-type"] == "application/problem+json")
            }
            let nothing = try await server.request(.POST, "/v1/batches/\(clean)/resubmit")
            #expect(nothing.status == 409, "\(nothing.text)")
            let waiting = try await server.request(
                .POST, "/v1/batches",
                body: #"{"type":"halve","items":[{"n":1}],"require_confirmation":true,"mode":"async"}"#)
            let open = try #require(waiting.json["id"] as? String)
            #expect(try await server.request(.POST, "/v1/batches/\(open)/resubmit").status == 409)
            let children = try await server.request(.GET, "/v1/batches/\(clean)")
            #expect(children.json["children"] as? [String] == [])
        }
    }

    @Test("a resubmit counts against the tenant's queue limit like a create (429)")
    func resubmitAdmitted() async throws {
        try await LiveServer.with(strategies: Self.strategies, maxQueuedItems: 2) { server, _ in
            let id = try await ended(
                server,
                #"{"type":"halve","context":{"fail_odd":true},"items":[{"n":1},{"n":3}],"options":{"max_attempts":1},"mode":"async"}"#
            )
            let waiting = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"halve","items":[{"n":2}],"require_confirmation":true}"#)
            let queued = try #require(waiting.json["id"] as? String, "\(waiting.text)")
            let refused = try await server.request(.POST, "/v1/batches/\(id)/resubmit")
            #expect(refused.status == 429, "1 item queued and 2 more: \(refused.text)")
            #expect(try await server.request(.GET, "/v1/batches/\(id)").json["children"] as? [String] == [])
            #expect(try await server.request(.POST, "/v1/batches/\(queued)/cancel").status == 200)
            let admitted = try await server.request(.POST, "/v1/batches/\(id)/resubmit")
            #expect(admitted.status == 202, "\(admitted.text)")
        }
    }

    @Test("another tenant's batch cannot be resubmitted or confirmed, and does not show its links")
    func tenantWalls() async throws {
        try await LiveServer.with(keyed: true, strategies: Self.strategies) { server, keys in
            let a = try #require(keys["a"])
            let b = try #require(keys["b"])
            let id = try await ended(
                server,
                #"{"type":"halve","context":{"fail_odd":true},"items":[{"n":1}],"options":{"max_attempts":1},"mode":"async"}"#,
                key: a)
            for path in ["/v1/batches/\(id)/resubmit", "/v1/batches/\(id)/confirm"] {
                let reply = try await server.request(.POST, path, key: b)
                #expect(reply.status == 404, "POST \(path) as another tenant: \(reply.text)")
            }
            let mine = try await server.request(.POST, "/v1/batches/\(id)/resubmit", key: a)
            #expect(mine.status == 202, "\(mine.text)")
            let child = try #require(mine.json["id"] as? String)
            #expect(try await server.request(.GET, "/v1/batches/\(child)", key: b).status == 404)
            #expect(try await server.request(.GET, "/v1/batches/\(child)", key: a).json["parent_id"] as? String == id)
        }
    }

    @Test("then: a completed batch's outputs become a linked batch; a bad then is a 422")
    func chain() async throws {
        try await LiveServer.with(strategies: Self.strategies) { server, _ in
            let id = try await ended(
                server, #"{"type":"halve","items":[{"n":8},{"n":4}],"mode":"async","then":{"type":"halve"}}"#)
            let parent = try await server.waitFor(id) { ($0["children"] as? [String])?.count == 1 }
            let child = try #require((parent["children"] as? [String])?.first)
            let done = try await server.waitFor(child) { $0["status"] as? String == "completed" }
            #expect(done["parent_id"] as? String == id)
            let results = try await server.request(.GET, "/v1/batches/\(child)/items")
            #expect(results.status == 200)
            #expect(results.text.contains(#""n":2"#) && results.text.contains(#""n":1"#), "\(results.text)")
            for then in [
                #"{"type":"nope"}"#, #"{"type":"halve","context":[1]}"#, #"{"type":"halve","extra":1}"#,
                #"{"type":"halve","options":{"chunk_size":0}}"#, #""halve""#,
            ] {
                let reply = try await server.request(
                    .POST, "/v1/batches", body: #"{"type":"halve","items":[{"n":2}],"then":\#(then)}"#)
                #expect(reply.status == 422, "then \(then): \(reply.text)")
            }
        }
    }

    @Test("a dry run is confirmed into a real run of the same items, its report kept in its history")
    func confirmDryRun() async throws {
        try await LiveServer.with(strategies: Self.strategies) { server, _ in
            let dry = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"halve","items":[{"n":2},{"n":-1}],"dry_run":true}"#)
            #expect(dry.status == 200, "\(dry.text)")
            #expect(dry.json["dry_run"] as? Bool == true)
            let id = try #require(dry.json["id"] as? String)
            let confirmed = try await server.request(.POST, "/v1/batches/\(id)/confirm")
            #expect(confirmed.status == 200, "\(confirmed.text)")
            #expect(confirmed.json["dry_run"] as? Bool == false)
            let done = try await server.waitFor(id) { $0["status"] as? String == "completed" }
            #expect(done[path: "counts", "succeeded"] as? Int == 1)
            #expect(done[path: "counts", "skipped"] as? Int == 1)
            let events = try await server.request(.GET, "/v1/batches/\(id)/events")
            let list = try #require(events.json["events"] as? [[String: Any]])
            let confirmation = try #require(list.first { $0["type"] as? String == "batch.confirmed" })
            let preview = (confirmation["data"] as? [String: Any])?["preview"] as? [String: Any]
            #expect(preview?["invalid"] as? Int == 1, "\(events.text)")
            #expect(try await server.request(.POST, "/v1/batches/\(id)/confirm").status == 409)
        }
    }
}
