import Foundation
import NIOHTTP1
import Testing
import TrancheTestSupport

@testable import TrancheHTTP

/// `/v1/tenants` (admin keys), `/v1/tenant`, the quotas a submit meets, and
/// the fair share a tenant's small batch gets beside another's huge one.
@Suite("Tenants over HTTP")
struct TenantTests {
    /// An admin key stored on the server.
    func adminKey(_ server: LiveServer) async throws -> String {
        let (record, key) = APIKeys.make(tenant: "ops", admin: true)
        try await server.store.createAPIKey(record)
        return key
    }

    @Test("only an admin key manages tenants; every number is bounded; a tenant sees its own figures only")
    func management() async throws {
        try await LiveServer.with(keyed: true) { server, keys in
            let a = try #require(keys["a"])
            let admin = try await adminKey(server)
            #expect(try await server.request(.GET, "/v1/tenants").status == 401)
            #expect(try await server.request(.GET, "/v1/tenants", key: a).status == 403)
            #expect(try await server.request(.PUT, "/v1/tenants/a", body: #"{"weight":50}"#, key: a).status == 403)

            let set = try await server.request(
                .PUT, "/v1/tenants/b", body: #"{"weight":2.5,"max_running":3,"max_queued":null}"#, key: admin)
            #expect(set.status == 200, "\(set.text)")
            #expect(set.json["weight"] as? Double == 2.5)
            #expect(set.json.int("max_running") == 3)
            #expect(set.json["max_queued"] is NSNull)
            for (body, field) in [
                (#"{"max_running":1e300}"#, "max_running"), (#"{"max_queued":-1}"#, "max_queued"),
                (#"{"max_open_batches":1000000000001}"#, "max_open_batches"), (#"{"weight":1e300}"#, "weight"),
                (#"{"weight":0}"#, "weight"), (#"{"weight":"x"}"#, "weight"), (#"{"priority":1}"#, "priority"),
            ] {
                let reply = try await server.request(.PUT, "/v1/tenants/b", body: body, key: admin)
                #expect(reply.status == 422, "\(body): \(reply.text)")
                #expect(reply.headers["content-type"] == "application/problem+json")
                #expect((reply.json["detail"] as? String)?.contains(field) == true, "\(body): \(reply.text)")
            }
            let long = String(repeating: "n", count: 101)
            #expect(try await server.request(.PUT, "/v1/tenants/\(long)", body: "{}", key: admin).status == 422)
            // The refused requests changed nothing.
            let list = try await server.request(.GET, "/v1/tenants", key: admin)
            let tenants = try #require(list.json["tenants"] as? [[String: Any]])
            #expect(tenants.map { $0["name"] as? String } == ["b"])
            #expect(tenants.first?.int("max_running") == 3)

            let own = try await server.request(.GET, "/v1/tenant", key: a)
            #expect(own.status == 200)
            #expect(own.json["name"] as? String == "a")
            #expect(own.json.int("open_batches") == 0)
            #expect(own.json["weight"] as? Double == 1)
        }
    }

    @Test("max_open_batches and max_queued refuse the request past them with 429 naming the quota")
    func quotas() async throws {
        try await LiveServer.with(keyed: true) { server, keys in
            let a = try #require(keys["a"])
            let b = try #require(keys["b"])
            let admin = try await adminKey(server)
            #expect(
                try await server.request(.PUT, "/v1/tenants/a", body: #"{"max_open_batches":1}"#, key: admin).status
                    == 200)
            #expect(
                try await server.request(.PUT, "/v1/tenants/b", body: #"{"max_queued":5}"#, key: admin).status == 200)

            // a: one open batch (filled by uploads) is its quota.
            let open = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop"}"#, key: a)
            #expect(open.status == 202)
            let refused = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop"}"#, key: a)
            #expect(refused.status == 429)
            #expect((refused.json["detail"] as? String)?.contains("max_open_batches is 1") == true, "\(refused.text)")
            // Another tenant is not held by a's quota.
            #expect(try await server.request(.POST, "/v1/batches", body: #"{"type":"noop"}"#, key: b).status == 202)

            // b: five items queued at most (the open batch above holds none).
            let waiting = #"{"type":"noop","require_confirmation":true,"items":"#
            let three = try await server.request(.POST, "/v1/batches", body: waiting + "[1,2,3]}", key: b)
            #expect(three.status == 202)
            let over = try await server.request(.POST, "/v1/batches", body: waiting + "[1,2,3]}", key: b)
            #expect(over.status == 429)
            #expect((over.json["detail"] as? String)?.contains("max_queued of 5") == true, "\(over.text)")
            #expect(try await server.request(.POST, "/v1/batches", body: waiting + "[1,2]}", key: b).status == 202)
            let usage = try await server.request(.GET, "/v1/tenant", key: b)
            #expect(usage.json.int("queued") == 5)
            #expect(usage.json.int("open_batches") == 3)
        }
    }

    @Test("a tenant's small batch finishes while another's huge top-priority batch still has most items waiting")
    func fairShare() async throws {
        try await LiveServer.with(keyed: true) { server, keys in
            let a = try #require(keys["a"])
            let b = try #require(keys["b"])
            // a's batch could hold every worker of the node (16) at once, for
            // 200 items of 300 ms: about four seconds of work.
            let huge = try await server.request(
                .POST, "/v1/batches",
                body: #"{"type":"sleep","context":{"ms":300},"mode":"async","priority":1000000,"#
                    + #""options":{"chunk_size":1,"concurrency":16},"items":\#(items(200))}"#,
                key: a)
            #expect(huge.status == 202, "\(huge.text)")
            let hugeID = try #require(huge.json["id"] as? String)
            _ = try await server.waitFor(hugeID, key: a) { ($0["counts"] as? [String: Any])?.int("running") ?? 0 > 0 }
            let small = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","mode":"async","items":[1]}"#, key: b)
            let smallID = try #require(small.json["id"] as? String)
            let done = try await server.waitFor(smallID, key: b) { $0["status"] as? String == "completed" }
            #expect(done["status"] as? String == "completed")
            // Before the fair share, b's chunk was claimed only once every
            // chunk of a's was: a had at most 16 items unfinished by then.
            let state = try await server.request(.GET, "/v1/batches/\(hugeID)", key: a).json
            let counts = try #require(state["counts"] as? [String: Any])
            let finished = counts.int("succeeded") ?? 200
            let running = counts.int("running") ?? 200
            #expect(state["status"] as? String == "processing")
            #expect(200 - finished - running > 16, "a's batch: \(counts)")
        }
    }

    @Test("the tenant routes' answers and the quota's 429 match the OpenAPI document")
    func documented() async throws {
        try await withTemporaryDirectory("tranche-tenants-doc") { directory in
            try await LiveServer.with(keyed: true) { server, keys in
                let a = try #require(keys["a"])
                let admin = try await adminKey(server)
                let calls: [(NIOHTTP1.HTTPMethod, String, String, String?, String?)] = [
                    (.PUT, "/v1/tenants/a", "/v1/tenants/{name}", #"{"weight":2,"max_open_batches":0}"#, admin),
                    (.PUT, "/v1/tenants/a", "/v1/tenants/{name}", #"{"weight":-1}"#, admin),
                    (.PUT, "/v1/tenants/a", "/v1/tenants/{name}", #"{}"#, a),
                    (.GET, "/v1/tenants", "/v1/tenants", nil, admin),
                    (.GET, "/v1/tenants", "/v1/tenants", nil, a),
                    (.GET, "/v1/tenants", "/v1/tenants", nil, nil),
                    (.GET, "/v1/tenant", "/v1/tenant", nil, a),
                    (.POST, "/v1/batches", "/v1/batches", #"{"type":"noop"}"#, a),
                ]
                var captured: [[String: Any]] = []
                for (method, path, template, body, key) in calls {
                    let reply = try await server.request(method, path, body: body, key: key)
                    captured.append([
                        "method": method.rawValue, "path": template, "status": reply.status,
                        "content_type": reply.headers["content-type"] ?? "", "body": reply.text,
                    ])
                }
                #expect(captured.map { $0["status"] as? Int } == [200, 422, 403, 200, 403, 401, 200, 429])
                let file = directory.appendingPathComponent("responses.json")
                try JSONSerialization.data(withJSONObject: captured).write(to: file)
                let (status, text) = try await runScript(
                    "check_openapi.py", [repositoryRoot.appendingPathComponent("docs/openapi.yaml").path, file.path])
                #expect(status == 0, "\(text)")
                #expect(text.contains("\(captured.count) responses checked, 0 mismatches"), "\(text)")
            }
        }
    }
}
