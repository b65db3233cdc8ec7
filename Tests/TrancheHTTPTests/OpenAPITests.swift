import Foundation
import NIOHTTP1
import Testing

/// Real answers of a live server, checked against `docs/openapi.yaml` by
/// `scripts/check_openapi.py` (jsonschema and openapi-spec-validator).
@Suite("OpenAPI conformance")
struct OpenAPITests {
    @Test("every answer matches the document: its status, its content type and its schema")
    func responsesMatchTheDocument() async throws {
        try await LiveServer.with { server, _ in
            var captured: [[String: Any]] = []
            func record(
                _ method: NIOHTTP1.HTTPMethod, _ path: String, template: String, body: String? = nil,
                headers: [String: String] = [:]
            ) async throws -> [String: Any] {
                let reply = try await server.request(method, path, body: body, headers: headers)
                captured.append([
                    "method": method.rawValue, "path": template, "status": reply.status,
                    "content_type": reply.headers["content-type"] ?? "", "body": reply.text,
                ])
                return reply.json
            }
            _ = try await record(.GET, "/healthz", template: "/healthz")
            _ = try await record(.GET, "/readyz", template: "/readyz")
            let sync = try await record(
                .POST, "/v1/batches", template: "/v1/batches",
                body: #"{"type":"sleep","context":{"ms":1},"items":[{"ms":1},{"ms":2},"x"]}"#)
            let syncID = try #require(sync["id"] as? String)
            let queued = try await record(
                .POST, "/v1/batches", template: "/v1/batches",
                body: #"{"type":"noop","items":[1,2,3],"mode":"async","options":{"rate_limit":{"rate":100}}}"#)
            let id = try #require(queued["id"] as? String)
            _ = try await server.waitFor(id) { $0["status"] as? String == "completed" }
            _ = try await record(
                .POST, "/v1/batches", template: "/v1/batches", body: #"{"type":"noop","items":[1],"dry_run":true}"#)
            let open = try await record(.POST, "/v1/batches", template: "/v1/batches", body: #"{"type":"noop"}"#)
            let openID = try #require(open["id"] as? String)
            _ = try await record(
                .POST, "/v1/batches/\(openID)/items?start_seq=0", template: "/v1/batches/{id}/items",
                body: "{\"a\":1}\n{bad",
                headers: ["Content-Type": "application/x-ndjson"])
            _ = try await record(.POST, "/v1/batches/\(openID)/seal", template: "/v1/batches/{id}/seal")
            for path in ["", "/items", "/items?status=succeeded&limit=1", "/errors", "/events"] {
                let template = "/v1/batches/{id}" + (path.split(separator: "?").first.map(String.init) ?? "")
                _ = try await record(.GET, "/v1/batches/\(syncID)\(path)", template: template)
            }
            _ = try await record(.GET, "/v1/batches?limit=2", template: "/v1/batches")
            _ = try await record(.GET, "/v1/nodes", template: "/v1/nodes")
            _ = try await record(.GET, "/v1/batches/\(id)/export?format=json", template: "/v1/batches/{id}/export")
            _ = try await record(.GET, "/v1/batches/\(id)/export?format=csv", template: "/v1/batches/{id}/export")
            _ = try await record(
                .POST, "/v1/batches/\(id)/retry", template: "/v1/batches/{id}/retry", body: #"{"statuses":["skipped"]}"#
            )
            _ = try await record(.POST, "/v1/batches/\(syncID)/pause", template: "/v1/batches/{id}/pause")
            _ = try await record(.GET, "/v1/batches/\(UUID().uuidString.lowercased())", template: "/v1/batches/{id}")
            _ = try await record(.POST, "/v1/batches", template: "/v1/batches", body: "{nope")
            _ = try await record(.POST, "/v1/batches", template: "/v1/batches", body: #"{"type":"nope","items":[]}"#)
            _ = try await record(.DELETE, "/v1/batches/\(syncID)", template: "/v1/batches/{id}")

            let file = FileManager.default.temporaryDirectory.appendingPathComponent("responses-\(UUID()).json")
            defer { try? FileManager.default.removeItem(at: file) }
            try JSONSerialization.data(withJSONObject: captured).write(to: file)
            let (status, text) = try await runScript(
                "check_openapi.py", [repositoryRoot.appendingPathComponent("docs/openapi.yaml").path, file.path])
            #expect(status == 0, "\(text)")
            #expect(text.contains("\(captured.count) responses checked, 0 mismatches"), "\(text)")
        }
    }
}
