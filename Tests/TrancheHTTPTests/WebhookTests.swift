import Crypto
import Foundation
import NIOHTTP1
import Testing
import TrancheHTTP
import TrancheTestSupport

@Suite("Webhooks")
struct WebhookTests {
    @Test("events reach a real receiver, signed, and are redelivered after it failed twice")
    func delivery() async throws {
        let receiver = LoopbackHTTPServer { request, index in
            // The first two requests fail; every one after succeeds.
            index <= 2 ? .init(status: 500, body: "down") : .init(status: 204)
        }
        let port = try await receiver.start()
        defer { Task { try await receiver.stop() } }
        try await LiveServer.with { server, _ in
            let created = try await server.request(
                .POST, "/v1/webhooks",
                body: #"{"url":"http://127.0.0.1:\#(port)/hook","events":["batch.completed"],"secret":"s3cret"}"#)
            #expect(created.status == 201, "\(created.text)")
            let hookID = try #require(created.json["id"] as? String)
            #expect(created.json["secret"] as? String == "s3cret")
            let batch = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1,2,3]}"#)
            let batchID = try #require(batch.json["id"] as? String)
            let deadline = ContinuousClock.now + .seconds(30)
            while receiver.requests.count < 3, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
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
        }
    }
}
