import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Prometheus
import Testing
import TrancheTestSupport

@testable import TrancheHTTP

@Suite("API keys, admin keys and stream tokens")
struct KeysTests {
    @Test("a key in a query string is refused with 400, whatever the parameter's name, and whatever the mode")
    func keyInQuery() async throws {
        try await LiveServer.with(keyed: true) { server, keys in
            let a = try #require(keys["a"])
            for name in ["access_token", "api_key", "key", "token", "API_KEY"] {
                let reply = try await server.request(.GET, "/v1/batches?\(name)=\(a)")
                #expect(reply.status == 400, "\(name)")
                #expect(reply.headers["content-type"] == "application/problem+json")
                #expect((reply.json["detail"] as? String)?.contains("Authorization") == true)
                // With the header as well: the key has leaked into a URL all the same.
                #expect(try await server.request(.GET, "/v1/batches?\(name)=\(a)", key: a).status == 400)
            }
            #expect(try await server.request(.GET, "/v1/batches", key: a).status == 200)
        }
        try await LiveServer.with { server, _ in
            let reply = try await server.request(.GET, "/v1/batches?access_token=tr_x_y")
            #expect(reply.status == 400)
        }
    }

    @Test("an EventSource-style request with a stream token streams; expired, forged and misused tokens are refused")
    func streamTokens() async throws {
        try await LiveServer.with(keyed: true) { server, keys in
            let a = try #require(keys["a"])
            let b = try #require(keys["b"])
            let created = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#, key: a)
            let id = try #require(created.json["id"] as? String)
            #expect(try await server.request(.POST, "/v1/stream-tokens").status == 401)
            let issued = try await server.request(.POST, "/v1/stream-tokens", key: a)
            #expect(issued.status == 201)
            #expect(issued.json.int("expires_in") == 300)
            let token = try #require(issued.json["token"] as? String)
            #expect(!token.contains(a))

            // No header, only the token: the batch's stream replays its events.
            let text = try await streamText(server, "/v1/batches/\(id)/events/stream?after=0&stream_token=\(token)")
            #expect(text.contains("event: batch.created"))
            #expect(text.contains(id))

            // Another tenant's token does not open this tenant's batch.
            let other = try #require(
                try await server.request(.POST, "/v1/stream-tokens", key: b).json["token"] as? String)
            #expect(
                try await server.request(.GET, "/v1/batches/\(id)/events/stream?stream_token=\(other)").status == 404)
            // A token opens event streams only.
            let misused = try await server.request(.GET, "/v1/batches/\(id)?stream_token=\(token)")
            #expect(misused.status == 401)
            #expect(misused.headers["content-type"] == "application/problem+json")
            // A forged token: the payload changed, or the signature.
            let parts = token.split(separator: ".").map(String.init)
            let forgedPayload = Data("x\nb\n\(Int64.max)".utf8).base64EncodedString()
                .replacingOccurrences(of: "=", with: "")
            let forgeries = [
                "st.\(forgedPayload).\(parts[2])", "st.\(parts[1]).AAAA", "garbage",
                String(repeating: "s", count: 5_000),
            ]
            for forged in forgeries {
                let reply = try await server.request(.GET, "/v1/events/stream?stream_token=\(forged)")
                #expect(reply.status == 401, "\(forged.prefix(40))")
            }
            // A token whose key was revoked is void.
            let keyID = String(try #require(a.split(separator: "_").dropFirst().first))
            #expect(try await server.store.revokeAPIKey(id: keyID, at: Date()))
            #expect(try await server.request(.GET, "/v1/events/stream?stream_token=\(token)").status == 401)
        }
    }

    @Test("a stream token signed on one node opens streams on another; an expired one is refused")
    func expiredToken() async throws {
        try await LiveServer.with(keyed: true) { server, _ in
            let (record, _) = APIKeys.make(tenant: "c")
            try await server.store.createAPIKey(record)
            // Another signer on the same store (another node): the secret is stored, so the server accepts its tokens.
            let node = StreamTokens(store: server.store)
            let expired = try await node.make(tenant: "c", keyID: record.id, now: Date().addingTimeInterval(-301))
            #expect(try await server.request(.GET, "/v1/events/stream?stream_token=\(expired.token)").status == 401)
            let fresh = try await node.make(tenant: "c", keyID: record.id)
            let text = try await streamText(
                server, "/v1/events/stream?stream_token=\(fresh.token)", until: ": tranche events")
            #expect(text.contains(": tranche events"))
            // A token naming another tenant than its key's is refused, even signed.
            let mismatched = try await node.make(tenant: "a", keyID: record.id)
            #expect(try await server.request(.GET, "/v1/events/stream?stream_token=\(mismatched.token)").status == 401)
        }
    }

    @Test("/metrics and /v1/nodes need an admin key once keys exist; a tenant key gets 403")
    func adminKeys() async throws {
        let withMetrics: @Sendable (inout TrancheServer.Configuration) -> Void = {
            $0.metrics = PrometheusCollectorRegistry()
        }
        try await LiveServer.with(keyed: true, configure: withMetrics) { server, keys in
            let a = try #require(keys["a"])
            let (record, admin) = APIKeys.make(tenant: "ops", admin: true)
            try await server.store.createAPIKey(record)
            #expect(try await server.store.apiKey(id: record.id)?.admin == true)
            for path in ["/metrics", "/v1/nodes"] {
                let anonymous = try await server.request(.GET, path)
                #expect(anonymous.status == 401, "\(path)")
                #expect(anonymous.headers["content-type"] == "application/problem+json")
                let tenant = try await server.request(.GET, path, key: a)
                #expect(tenant.status == 403, "\(path)")
                #expect(tenant.headers["content-type"] == "application/problem+json")
                #expect((tenant.json["detail"] as? String)?.contains("admin") == true)
                #expect(try await server.request(.GET, path, key: admin).status == 200, "\(path)")
            }
            // A tenant's own routes still answer its key.
            #expect(try await server.request(.GET, "/v1/batches", key: a).status == 200)
        }
        // Open mode stays open: loopback callers read both.
        try await LiveServer.with(configure: withMetrics) { server, _ in
            let metrics = try await server.request(.GET, "/metrics")
            let nodes = try await server.request(.GET, "/v1/nodes")
            #expect(metrics.status == 200)
            #expect(nodes.status == 200)
        }
    }

    @Test("the dashboard with a tenant key: live progress over a stream token, no key in any URL")
    func dashboard() async throws {
        // Short prefix: Chromium's socket paths under it must stay within 107 bytes.
        try await withTemporaryDirectory("tranche-dk") { directory in
            try await LiveServer.with(keyed: true) { server, keys in
                let a = try #require(keys["a"])
                let items = "[" + (0..<3_000).map { #"{"n":\#($0)}"# }.joined(separator: ",") + "]"
                let running = try await server.request(
                    .POST, "/v1/batches",
                    body:
                        #"{"type":"sleep","context":{"ms":30},"items":\#(items),"options":{"chunk_size":10,"concurrency":2}}"#,
                    key: a)
                let id = try #require(running.json["id"] as? String)
                let arguments = ["http://127.0.0.1:\(server.port)", a, id, directory.path]
                let (status, text) = try await runScript(
                    "dashboard_keys_check.py", arguments, temporaryDirectory: directory)
                #expect(status == 0, "\(text)")
                #expect(text.contains("dashboard key checks passed"), "\(text)")
            }
        }
    }

    @Test("the answers of stream tokens, admin routes and keys in a query match the OpenAPI document")
    func documented() async throws {
        let withMetrics: @Sendable (inout TrancheServer.Configuration) -> Void = {
            $0.metrics = PrometheusCollectorRegistry()
        }
        try await withTemporaryDirectory("tranche-keys-doc") { directory in
            try await LiveServer.with(keyed: true, configure: withMetrics) { server, keys in
                let a = try #require(keys["a"])
                let (record, admin) = APIKeys.make(tenant: "ops", admin: true)
                try await server.store.createAPIKey(record)
                var captured: [[String: Any]] = []
                let calls: [(NIOHTTP1.HTTPMethod, String, String, String?)] = [
                    (.POST, "/v1/stream-tokens", "/v1/stream-tokens", a),
                    (.POST, "/v1/stream-tokens", "/v1/stream-tokens", nil),
                    (.GET, "/v1/nodes", "/v1/nodes", a),
                    (.GET, "/v1/nodes", "/v1/nodes", admin),
                    (.GET, "/metrics", "/metrics", nil),
                    (.GET, "/metrics", "/metrics", a),
                    (.GET, "/metrics", "/metrics", admin),
                    (.GET, "/v1/events/stream?stream_token=st.x.y", "/v1/events/stream", nil),
                    (.GET, "/v1/events/stream?api_key=\(a)", "/v1/events/stream", nil),
                ]
                for (method, path, template, key) in calls {
                    let reply = try await server.request(method, path, key: key)
                    captured.append([
                        "method": method.rawValue, "path": template, "status": reply.status,
                        "content_type": reply.headers["content-type"] ?? "", "body": reply.text,
                    ])
                }
                let file = directory.appendingPathComponent("responses.json")
                try JSONSerialization.data(withJSONObject: captured).write(to: file)
                let (status, text) = try await runScript(
                    "check_openapi.py", [repositoryRoot.appendingPathComponent("docs/openapi.yaml").path, file.path])
                #expect(status == 0, "\(text)")
                #expect(text.contains("\(captured.count) responses checked, 0 mismatches"), "\(text)")
            }
        }
    }

    /// Opens an event stream with no `Authorization` header, as `EventSource`
    /// does, and reads until `marker` arrived.
    func streamText(_ server: LiveServer, _ path: String, until marker: String = "event: batch.created")
        async throws -> String
    {
        let url = "http://127.0.0.1:\(server.port)\(path)"
        return try await withDeadline("\(marker) on \(path.prefix(60))") {
            let response = try await LiveServer.client.execute(HTTPClientRequest(url: url), timeout: .seconds(120))
            #expect(response.status.code == 200)
            var text = ""
            for try await part in response.body {
                text += String(buffer: part)
                if text.contains(marker) { break }
            }
            return text
        }
    }
}
