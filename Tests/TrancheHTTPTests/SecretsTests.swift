import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TrancheEngine
import TrancheStrategies
import TrancheTestSupport

@Suite("Secrets and tenant walls")
struct SecretsTests {
    /// Reads a batch's event stream from its first stored event until
    /// `batch.completed` arrives, and returns the raw text.
    func replay(_ server: LiveServer, _ id: String) async throws -> String {
        let port = server.port
        return try await withDeadline(seconds: defaultDeadline, "the replayed stream to reach batch.completed") {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/batches/\(id)/events/stream")
            request.headers.add(name: "Last-Event-ID", value: "0")
            let response = try await LiveServer.client.execute(request, timeout: .seconds(120))
            var text = ""
            for try await part in response.body {
                text += String(buffer: part)
                if text.contains("event: batch.completed") { break }
            }
            return text
        }
    }

    @Test("http headers and a secret body are sent as given and shown nowhere but as ***")
    func secretContext() async throws {
        let receiver = LoopbackHTTPServer { request, _ in
            request.uri == "/hook" ? .init(status: 204) : .init(status: 200, body: #"{"ok":true}"#)
        }
        try await receiver.withRunning { port in
            let http = AnyBatchStrategy(HTTPStrategy(configuration: .init(outbound: .loopback)))
            try await LiveServer.with(strategies: [http]) { server, _ in
                let hook = try await server.request(
                    .POST, "/v1/webhooks", body: #"{"url":"http://127.0.0.1:\#(port)/hook"}"#)
                #expect(hook.status == 201, "\(hook.text)")
                let submitted = try await server.request(
                    .POST, "/v1/batches",
                    body: #"""
                        {"type":"http","mode":"async","items":[{"n":1},{"n":2}],
                         "context":{"url":"http://127.0.0.1:\#(port)/work","headers":{"Authorization":"Bearer s3cret"},
                                    "body":"{\"token\":\"b0dy-s3cret\",\"n\":{{n}}}","secret_body":true}}
                        """#)
                #expect(submitted.status == 202, "\(submitted.text)")
                #expect(!submitted.text.contains("s3cret"))
                let id = try #require(submitted.json["id"] as? String)
                let done = try await server.waitFor(id) { $0["status"] as? String == "completed" }
                #expect(done["status"] as? String == "completed")

                // The receiver got the real header and body.
                let work = receiver.requests.filter { $0.uri == "/work" }
                #expect(work.count == 2)
                #expect(work.allSatisfy { $0.headers["authorization"] == "Bearer s3cret" })
                #expect(work.allSatisfy { $0.body.contains("b0dy-s3cret") })
                // The store keeps the context as given.
                let batchID = try #require(BatchID(id))
                let stored = try #require(try await server.store.batch(batchID))
                #expect(stored.context.text.contains("Bearer s3cret"))

                let batch = try await server.request(.GET, "/v1/batches/\(id)")
                let context = try #require(batch.json["context"] as? [String: Any])
                #expect(context["headers"] as? String == "***")
                #expect(context["body"] as? String == "***")
                #expect(context["url"] as? String == "http://127.0.0.1:\(port)/work")
                #expect(context["secret_body"] as? Bool == true)
                let list = try await server.request(.GET, "/v1/batches")
                #expect(list.text.contains(#""headers":"***""#), "\(list.text)")
                var shown = [batch.text, list.text]
                for path in [
                    "/v1/batches/\(id)/items", "/v1/batches/\(id)/errors", "/v1/batches/\(id)/events",
                    "/v1/batches/\(id)/export?format=ndjson", "/v1/batches/\(id)/export?format=csv",
                    "/v1/batches/\(id)/export?format=json",
                ] {
                    let reply = try await server.request(.GET, path)
                    #expect(reply.status == 200, "\(path): \(reply.text)")
                    shown.append(reply.text)
                }
                let stream = try await replay(server, id)
                #expect(stream.contains("batch.created"))
                shown.append(stream)
                try await waitUntil("the webhook delivery of batch.completed") {
                    receiver.requests.contains { $0.uri == "/hook" && $0.body.contains("batch.completed") }
                }
                let deliveries = receiver.requests.filter { $0.uri == "/hook" }
                #expect(!deliveries.isEmpty)
                shown += deliveries.map(\.body)
                for text in shown {
                    #expect(!text.contains("s3cret"), "a secret is shown: \(text)")
                }
            }
        }
    }

    @Test("a dry run's estimate uses the tenant's own history only")
    func dryRunHistory() async throws {
        try await LiveServer.with(keyed: true) { server, keys in
            let a = try #require(keys["a"])
            let b = try #require(keys["b"])
            let run = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"sleep","context":{"ms":5},"mode":"async","items":[{},{},{}]}"#,
                key: a)
            let id = try #require(run.json["id"] as? String, "\(run.text)")
            let done = try await server.waitFor(id, key: a) { $0["status"] as? String == "completed" }
            #expect(done["status"] as? String == "completed")
            func basis(_ key: String) async throws -> String? {
                let reply = try await server.request(
                    .POST, "/v1/batches", body: #"{"type":"sleep","items":[{},{}],"dry_run":true}"#, key: key)
                #expect(reply.status == 200, "\(reply.text)")
                return (reply.json["result"] as? [String: Any])?["estimate_basis"] as? String
            }
            #expect(try await basis(a) == "history")
            #expect(try await basis(b) == "unknown")
        }
    }
}
