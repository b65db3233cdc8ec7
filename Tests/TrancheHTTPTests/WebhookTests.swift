import Crypto
import Foundation
import Logging
import NIOHTTP1
import Testing
import TrancheEngine
import TrancheHTTP
import TranchePostgres
import TrancheStore
import TrancheStrategies
import TrancheTestSupport

@Suite("Webhooks")
struct WebhookTests {
    @Test("events reach a real receiver, signed, and are redelivered after it failed twice")
    func delivery() async throws {
        let receiver = LoopbackHTTPServer { request, index in
            // The first two requests fail; every one after succeeds.
            index <= 2 ? .init(status: 500, body: "down") : .init(status: 204)
        }
        try await receiver.withRunning { port in
            try await LiveServer.with { server, _ in
                let created = try await server.request(
                    .POST, "/v1/webhooks",
                    body: #"{"url":"http://127.0.0.1:\#(port)/hook","events":["batch.completed"],"secret":"s3cret"}"#)
                #expect(created.status == 201, "\(created.text)")
                let hookID = try #require(created.json["id"] as? String)
                #expect(created.json["secret"] as? String == "s3cret")
                let batch = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1,2,3]}"#)
                let batchID = try #require(batch.json["id"] as? String)
                try await waitUntil("two failed deliveries and a third that succeeds") { receiver.requests.count >= 3 }
                let requests = receiver.requests
                #expect(requests.count == 3)
                // The same event each time, with a valid signature over the body.
                #expect(Set(requests.compactMap { $0.headers["tranche-event-id"] }).count == 1)
                for request in requests {
                    let header = try #require(request.headers["tranche-signature"])
                    let parts = Dictionary(
                        uniqueKeysWithValues: header.split(separator: ",").map {
                            let pair = $0.split(separator: "=", maxSplits: 1)
                            return (String(pair[0]), String(pair[1]))
                        })
                    let timestamp = try #require(parts["t"])
                    let mac = HMAC<SHA256>.authenticationCode(
                        for: Data("\(timestamp).\(request.body)".utf8), using: SymmetricKey(data: Data("s3cret".utf8)))
                    #expect(parts["v1"] == mac.map { String(format: "%02x", $0) }.joined())
                    let body = try #require(
                        try JSONSerialization.jsonObject(with: Data(request.body.utf8)) as? [String: Any])
                    #expect(body["type"] as? String == "batch.completed")
                    #expect(body["batch_id"] as? String == batchID)
                }
                let log = try await server.request(.GET, "/v1/webhooks/\(hookID)/deliveries")
                let delivery = try #require((log.json["deliveries"] as? [[String: Any]])?.first)
                #expect(delivery["status"] as? String == "delivered")
                #expect(delivery["attempts"] as? Int == 3)
                #expect(delivery["last_status_code"] as? Int == 204)
                let list = try await server.request(.GET, "/v1/webhooks")
                #expect((list.json["webhooks"] as? [[String: Any]])?.first?["secret"] == nil)
                #expect(try await server.request(.DELETE, "/v1/webhooks/\(hookID)").status == 204)
                #expect(try await server.request(.DELETE, "/v1/webhooks/\(hookID)").status == 404)
            }
        }
    }

    @Test("ended deliveries go after the retention; an idempotency key goes when its batch expires")
    func pruning() async throws {
        let receiver = LoopbackHTTPServer { _, _ in .init(status: 204) }
        try await receiver.withRunning { port in
            try await LiveServer.with(deliveryRetention: 0) { server, _ in
                let created = try await server.request(
                    .POST, "/v1/webhooks",
                    body: #"{"url":"http://127.0.0.1:\#(port)/hook","events":["batch.completed"]}"#)
                let hookID = try #require(created.json["id"] as? String)
                // A batch that expires as soon as it ends, submitted with a key.
                let body = #"{"type":"noop","items":[1],"options":{"ttl":0}}"#
                let first = try await server.request(
                    .POST, "/v1/batches", body: body, headers: ["Idempotency-Key": "e"])
                #expect(first.status == 200)
                @Sendable func deliveries() async throws -> [Any] {
                    let log = try await server.request(.GET, "/v1/webhooks/\(hookID)/deliveries")
                    return log.json["deliveries"] as? [Any] ?? []
                }
                try await waitUntil("the delivery, then its pruning and the expired batch's key's") {
                    let record = try await server.store.idempotencyRecord(tenant: "local", key: "e")
                    let pruned = try await deliveries().isEmpty
                    return !receiver.requests.isEmpty && pruned && record == nil
                }
                let record = try await server.store.idempotencyRecord(tenant: "local", key: "e")
                #expect(receiver.requests.count == 1, "delivered once")
                #expect(try await deliveries().isEmpty, "the delivered delivery was pruned")
                #expect(record == nil, "the key's record went with its expired batch")
                #expect(try await server.request(.GET, "/v1/webhooks").json["webhooks"] as? [Any] != nil)
                // The key is free: the same request creates a new batch.
                let again = try await server.request(
                    .POST, "/v1/batches", body: body, headers: ["Idempotency-Key": "e"])
                #expect(again.status == 200)
                #expect(again.json["id"] as? String != first.json["id"] as? String)
                #expect(again.headers["idempotent-replayed"] == nil)
            }
        }
    }

    @Test("webhook targets obey the outbound allow-list; bad definitions are refused")
    func refused() async throws {
        try await LiveServer.with { server, _ in
            let privateTarget = try await server.request(
                .POST, "/v1/webhooks", body: #"{"url":"http://10.0.0.1/hook"}"#)
            #expect(privateTarget.status == 422)
            #expect((privateTarget.json["detail"] as? String)?.contains("allow-list") == true)
            #expect(try await server.request(.POST, "/v1/webhooks", body: #"{"url":"ftp://127.0.0.1/"}"#).status == 422)
            let unknown = try await server.request(
                .POST, "/v1/webhooks", body: #"{"url":"http://127.0.0.1:1/","events":["batch.exploded"]}"#)
            #expect(unknown.status == 422)
            let extra = try await server.request(
                .POST, "/v1/webhooks", body: #"{"url":"http://127.0.0.1:1/","colour":"red"}"#)
            #expect(extra.status == 422)
            #expect((extra.json["detail"] as? String)?.contains("colour") == true, "\(extra.text)")
        }
    }

    @Test(
        "a webhook whose name resolves to an internal address is never called: its delivery fails at once, saying why")
    func refusedAddress() async throws {
        let receiver = LoopbackHTTPServer { _, _ in .init(status: 204) }
        try await receiver.withRunning { port in
            let resolver = OutboundPolicy.Resolver.fixed([
                "hooks.test": [IPAddress("::ffff:127.0.0.1")].compactMap { $0 }
            ])
            try await LiveServer.with(configure: { $0.outbound = OutboundPolicy(resolver: resolver) }) { server, _ in
                let localhost = try await server.request(
                    .POST, "/v1/webhooks", body: #"{"url":"http://localhost:\#(port)/hook"}"#)
                #expect(localhost.status == 422, "\(localhost.text)")
                let created = try await server.request(
                    .POST, "/v1/webhooks",
                    body: #"{"url":"http://hooks.test:\#(port)/hook","events":["batch.completed"]}"#)
                #expect(created.status == 201, "\(created.text)")
                let hookID = try #require(created.json["id"] as? String)
                _ = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#)
                @Sendable func delivery() async throws -> [String: Any] {
                    let log = try await server.request(.GET, "/v1/webhooks/\(hookID)/deliveries")
                    return (log.json["deliveries"] as? [[String: Any]])?.first ?? [:]
                }
                try await waitUntil("the delivery to fail") { try await delivery()["status"] as? String == "failed" }
                let failed = try await delivery()
                #expect(failed["attempts"] as? Int == 1)
                let reason = failed["last_error"] as? String ?? ""
                #expect(reason.contains("resolves to ::ffff:127.0.0.1, a loopback address"), "\(reason)")
                #expect(reason.contains("--http-allow"))
                #expect(receiver.requests.isEmpty)
            }
        }
    }

    @Test("a delivery that cannot connect records what failed, and nothing of the request")
    func unreachableReceiver() async throws {
        // Nothing listens on port 1: every attempt is refused.
        try await LiveServer.with { server, _ in
            let created = try await server.request(
                .POST, "/v1/webhooks",
                body: #"{"url":"http://127.0.0.1:1/hook?token=abc","events":["batch.completed"],"secret":"s3cret"}"#)
            #expect(created.status == 201, "\(created.text)")
            let hookID = try #require(created.json["id"] as? String)
            _ = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#)
            @Sendable func lastError() async throws -> String? {
                let log = try await server.request(.GET, "/v1/webhooks/\(hookID)/deliveries")
                return (log.json["deliveries"] as? [[String: Any]])?.first?["last_error"] as? String
            }
            try await waitUntil("a delivery attempt to fail") { try await lastError() != nil }
            let reason = try await lastError() ?? ""
            #expect(reason == "the request failed: connection refused", "\(reason)")
        }
    }

    @Test("an allowed name is delivered to at the address checked, never resolved again")
    func allowedName() async throws {
        let receiver = LoopbackHTTPServer { _, _ in .init(status: 204) }
        try await receiver.withRunning { port in
            // The system resolver knows no `hooks.test`: only the checked address can be reached.
            let resolver = OutboundPolicy.Resolver.fixed(["hooks.test": [IPAddress("127.0.0.1")].compactMap { $0 }])
            let policy = OutboundPolicy(allowing: [.init(host: "hooks.test", port: port)], resolver: resolver)
            try await LiveServer.with(configure: { $0.outbound = policy }) { server, _ in
                let created = try await server.request(
                    .POST, "/v1/webhooks",
                    body: #"{"url":"http://hooks.test:\#(port)/hook","events":["batch.completed"]}"#)
                #expect(created.status == 201, "\(created.text)")
                _ = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#)
                try await waitUntil("the delivery to arrive") { !receiver.requests.isEmpty }
                #expect(receiver.requests.first?.headers["host"] == "hooks.test:\(port)")
            }
        }
    }
}
