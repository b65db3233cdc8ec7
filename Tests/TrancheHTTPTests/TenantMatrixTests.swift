import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Prometheus
import Testing
import TrancheEngine
import TrancheHTTP
import TrancheStrategies
import TrancheTestSupport

/// Every operation of the OpenAPI document, called by every kind of caller:
/// three tenants, an admin, no key and a revoked key. Routes added to the
/// document are covered without touching this test.
@Suite("Tenant × route matrix")
struct TenantMatrixTests {
    /// One operation of the document.
    struct Operation: CustomStringConvertible {
        var method: String
        var path: String
        var summary: String
        /// `security: []`: answered without a key.
        var isPublic: Bool

        /// Needs an admin key once keys exist (the summary says so).
        var adminOnly: Bool { summary.contains("admin key") }
        /// The path names a tenant's resource (a batch, a webhook, a schedule).
        var ownsResource: Bool { ["{id}", "{hook}", "{schedule}"].contains { path.contains($0) } }
        var description: String { "\(method.uppercased()) \(path)" }
    }

    /// The operations under `paths:`, path items shared through
    /// `components/pathItems` resolved. A small reader for the document's own
    /// layout (two spaces per level), not a YAML parser.
    static func operations(in document: String) -> [Operation] {
        let lines = document.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let methods = ["get", "post", "put", "patch", "delete"]
        func indent(_ line: String) -> Int { line.prefix { $0 == " " }.count }
        /// Operations of the path item whose lines start after `start` at `level` spaces.
        func item(from start: Int, level: Int) -> [(String, String, Bool)] {
            var found: [(String, String, Bool)] = []
            var index = start
            while index < lines.count {
                let line = lines[index]
                if !line.trimmingCharacters(in: .whitespaces).isEmpty && indent(line) < level { break }
                let name = line.trimmingCharacters(in: .whitespaces).dropLast()
                if indent(line) == level, line.hasSuffix(":"), methods.contains(String(name)) {
                    var summary = ""
                    var isPublic = false
                    var inner = index + 1
                    while inner < lines.count, indent(lines[inner]) > level || lines[inner].isEmpty {
                        let text = lines[inner].trimmingCharacters(in: .whitespaces)
                        if indent(lines[inner]) == level + 2 {
                            if text.hasPrefix("summary:") { summary = String(text.dropFirst("summary:".count)) }
                            if text == "security: []" { isPublic = true }
                        }
                        inner += 1
                    }
                    found.append((String(name), summary, isPublic))
                }
                index += 1
            }
            return found
        }
        var shared: [String: [(String, String, Bool)]] = [:]
        if let start = lines.firstIndex(of: "  pathItems:") {
            var index = start + 1
            while index < lines.count, indent(lines[index]) >= 4 || lines[index].isEmpty {
                let line = lines[index]
                if indent(line) == 4, line.hasSuffix(":") {
                    shared[line.trimmingCharacters(in: .whitespaces).dropLast().description] = item(
                        from: index + 1, level: 6)
                }
                index += 1
            }
        }
        guard let start = lines.firstIndex(of: "paths:") else { return [] }
        var operations: [Operation] = []
        var index = start + 1
        while index < lines.count, lines[index].isEmpty || lines[index].hasPrefix(" ") {
            let line = lines[index]
            if indent(line) == 2, line.trimmingCharacters(in: .whitespaces).hasPrefix("/") {
                let text = line.trimmingCharacters(in: .whitespaces)
                let path = String(text.prefix { $0 != ":" })
                let found: [(String, String, Bool)]
                if let ref = text.range(of: "#/components/pathItems/") {
                    found = shared[String(text[ref.upperBound...].prefix { $0 != "\"" })] ?? []
                } else {
                    found = item(from: index + 1, level: 4)
                }
                operations += found.map { Operation(method: $0.0, path: path, summary: $0.1, isPublic: $0.2) }
            }
            index += 1
        }
        return operations
    }

    /// What one tenant owns: the ids in its paths, and what must never leave it.
    struct Fixture {
        var tenant: String
        var parameters: [String: String] = [:]
        /// Ids only this tenant may see.
        var ids: [String] = []
        /// Values no answer may carry, not even to this tenant.
        var secrets: [String] = []
    }

    struct Offense: CustomStringConvertible {
        var route: String
        var caller: String
        var status: Int
        var why: String
        var description: String { "| \(route) | \(caller) | \(status) | \(why) |" }
    }

    @Test("every route answers every caller without a 5xx, a hang or a leak; other tenants' resources are 404")
    func matrix() async throws {
        let document = try String(
            contentsOf: repositoryRoot.appendingPathComponent("Sources/TrancheHTTP/openapi.yaml"), encoding: .utf8)
        let operations = Self.operations(in: document)
        // The reader found the document's routes (a change of layout must not empty the matrix).
        #expect(operations.count >= 25, "\(operations)")
        #expect(operations.contains { $0.path == "/v1/batches/{id}/pause" && $0.method == "post" })
        #expect(operations.contains { $0.adminOnly })
        #expect(operations.contains { $0.isPublic })

        let http = AnyBatchStrategy(HTTPStrategy(configuration: .init(outbound: .loopback)))
        let withMetrics: @Sendable (inout TrancheServer.Configuration) -> Void = {
            $0.metrics = PrometheusCollectorRegistry()
        }
        try await LiveServer.with(keyed: true, strategies: [http], configure: withMetrics) { server, made in
            var keys = made
            for (tenant, admin) in [("c", false), ("ops", true)] {
                let (record, key) = APIKeys.make(tenant: tenant, admin: admin)
                try await server.store.createAPIKey(record)
                keys[tenant] = key
            }
            let (revokedRecord, revoked) = APIKeys.make(tenant: "a")
            try await server.store.createAPIKey(revokedRecord)
            _ = try await server.store.revokeAPIKey(id: revokedRecord.id, at: Date())

            var fixtures: [String: Fixture] = [:]
            for tenant in ["a", "b", "c"] {
                fixtures[tenant] = try await Self.fixture(of: tenant, key: keys[tenant], on: server)
            }
            let allSecrets = fixtures.values.flatMap(\.secrets)
            var offenses: [Offense] = []
            // Callers in turn; the owner last, its deletes at the very end, so
            // every other caller meets the resources alive.
            let callers: [(name: String, key: String?)] = [
                ("no key", nil), ("revoked", revoked), ("tenant b", keys["b"]), ("tenant c", keys["c"]),
                ("admin", keys["ops"]), ("tenant a (owner)", keys["a"]),
            ]
            let owner = try #require(fixtures["a"])
            let ordered = operations.filter { $0.method != "delete" } + operations.filter { $0.method == "delete" }
            for caller in callers {
                let tenant = caller.name.hasPrefix("tenant ") ? String(caller.name.dropFirst(7).prefix(1)) : nil
                let isOwner = tenant == "a"
                for operation in ordered {
                    let path = Self.fill(operation.path, with: owner.parameters)
                    let route = operation.description
                    let reply = try await Self.send(operation.method, path, key: caller.key, on: server)
                    func offend(_ why: String) {
                        offenses.append(Offense(route: route, caller: caller.name, status: reply.status, why: why))
                    }
                    if reply.status >= 500 { offend("server error") }
                    for secret in allSecrets where reply.body.contains(secret) { offend("a secret in the body") }
                    for other in fixtures.values where other.tenant != tenant {
                        // An id the caller sent may come back ("no batch ID"): that tells nothing.
                        for id in other.ids where reply.body.contains(id) && !path.contains(id) {
                            offend("tenant \(other.tenant)'s id \(id) in the body")
                        }
                    }
                    if operation.isPublic { continue }
                    if caller.key == nil || caller.key == revoked {
                        if reply.status != 401 { offend("not 401") }
                        continue
                    }
                    let isAdmin = caller.name == "admin"
                    if operation.adminOnly {
                        if !isAdmin && reply.status != 403 { offend("an admin route not 403 to a tenant key") }
                        if isAdmin && [401, 403].contains(reply.status) {
                            offend("an admin route refused to an admin")
                        }
                        continue
                    }
                    if [401, 403].contains(reply.status) { offend("refused to a valid key") }
                    guard operation.ownsResource else { continue }
                    if isOwner {
                        if reply.status == 404 && !path.contains("missing-") { offend("the owner's resource is 404") }
                        continue
                    }
                    // Another tenant's resource: 404, the answer for a resource that does not exist.
                    let missing = try await Self.send(
                        operation.method, Self.fill(operation.path, with: [:]), key: caller.key, on: server)
                    if (200..<300).contains(reply.status) { offend("another tenant's resource answered") }
                    if reply.status != 404 && reply.status != missing.status {
                        offend("answers \(reply.status) where a missing resource answers \(missing.status)")
                    }
                }
            }
            let table = offenses.map(\.description).joined(separator: "\n")
            #expect(
                offenses.isEmpty,
                "\(offenses.count) offenses:\n| route | caller | status | why |\n|---|---|---|---|\n\(table)")
        }
    }

    /// A path with its parameters filled; a parameter without a value gets a
    /// well-formed id of nothing.
    static func fill(_ template: String, with parameters: [String: String]) -> String {
        var path = template
        for name in ["id", "hook", "schedule", "name"] {
            let missing = name == "id" ? UUID().uuidString.lowercased() : "missing-\(name)"
            path = path.replacingOccurrences(of: "{\(name)}", with: parameters[name] ?? missing)
        }
        return path
    }

    /// Makes `tenant`'s resources: an ended batch, an open `http` batch with
    /// a secret header, a webhook with a secret, a schedule.
    static func fixture(of tenant: String, key: String?, on server: LiveServer) async throws -> Fixture {
        var fixture = Fixture(tenant: tenant)
        fixture.parameters["name"] = tenant
        let marker = UUID().uuidString.lowercased()
        let done = try await server.request(
            .POST, "/v1/batches", body: #"{"type":"noop","items":[1,2,3]}"#, key: key)
        let batchID = try #require(done.json["id"] as? String, "\(done.text)")
        _ = try await server.waitFor(batchID, key: key) { $0["status"] as? String == "completed" }
        fixture.parameters["id"] = batchID
        let secretHeader = "Bearer SECRET-\(tenant)-\(marker)"
        let open = try await server.request(
            .POST, "/v1/batches",
            body:
                #"{"type":"http","context":{"url":"http://127.0.0.1:1/x","headers":{"Authorization":"\#(secretHeader)"}}}"#,
            key: key)
        let openID = try #require(open.json["id"] as? String, "\(open.text)")
        let hookSecret = "WHSECRET-\(tenant)-\(marker)"
        let hook = try await server.request(
            .POST, "/v1/webhooks", body: #"{"url":"http://127.0.0.1:1/hook-\#(tenant)","secret":"\#(hookSecret)"}"#,
            key: key)
        let hookID = try #require(hook.json["id"] as? String, "\(hook.text)")
        fixture.parameters["hook"] = hookID
        fixture.ids += [batchID, openID, hookID]
        fixture.secrets += [secretHeader, hookSecret]
        let schedule = try await server.request(
            .POST, "/v1/schedules", body: #"{"every":"366d","paused":true,"batch":{"type":"noop","items":[1]}}"#,
            key: key)
        if let scheduleID = schedule.json["id"] as? String {
            fixture.parameters["schedule"] = scheduleID
            fixture.ids.append(scheduleID)
        }
        return fixture
    }

    /// One request with a deadline; an event stream's body is not read (it does not end).
    static func send(
        _ method: String, _ path: String, key: String?, on server: LiveServer
    ) async throws -> (status: Int, body: String) {
        let port = server.port
        return try await withDeadline(seconds: 60, "an answer to \(method.uppercased()) \(path)") {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
            request.method = HTTPMethod(rawValue: method.uppercased())
            if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
            if ["post", "put", "patch"].contains(method) {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(string: "{}"))
            }
            let response = try await LiveServer.client.execute(request, timeout: .seconds(60))
            let status = Int(response.status.code)
            if response.headers.first(name: "Content-Type")?.hasPrefix("text/event-stream") == true {
                return (status, "")
            }
            let body = try await response.body.collect(upTo: 64 << 20)
            return (status, String(buffer: body))
        }
    }
}
