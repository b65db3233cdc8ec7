import Foundation
import Testing
import TrancheEngine
import TrancheHTTP

@Suite("PATCH /v1/batches/{id}")
struct PatchTests {
    @Test(
        "a live batch takes a new priority, concurrency, rate limit and pace; bad bodies are 422; an ended batch 409")
    func patch() async throws {
        try await LiveServer.with { server, _ in
            let created = try await server.request(
                .POST, "/v1/batches",
                body:
                    #"{"type":"noop","items":[1,2,3],"mode":"async","options":{"require_confirmation":true,"rate_limit":{"max_concurrent":4}}}"#
            )
            #expect(created.status == 202, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            let patched = try await server.request(
                .PATCH, "/v1/batches/\(id)",
                body: #"{"priority":5,"options":{"concurrency":3,"rate_limit":{"rate":10}}}"#)
            #expect(patched.status == 200, "\(patched.text)")
            #expect(patched.json["priority"] as? Int == 5)
            #expect(patched.json[path: "options", "concurrency"] as? Int == 3)
            #expect((patched.json[path: "options", "rate_limit"] as? [String: Any])?["rate"] as? Double == 10)
            #expect((patched.json[path: "options", "rate_limit"] as? [String: Any])?["max_concurrent"] as? Int == 4)
            // null removes a field; the stored batch shows it.
            let removed = try await server.request(
                .PATCH, "/v1/batches/\(id)", body: #"{"options":{"rate_limit":{"max_concurrent":null}}}"#)
            #expect(removed.status == 200, "\(removed.text)")
            let shown = try await server.request(.GET, "/v1/batches/\(id)")
            // A noop batch paces fixed, at its rate limit.
            #expect(shown.json[path: "pace", "mode"] as? String == "fixed")
            #expect(shown.json[path: "pace", "rate"] as? Double == 10)
            #expect(shown.json[path: "pace", "throttled"] as? Int == 0)
            #expect((shown.json[path: "options", "rate_limit"] as? [String: Any])?["max_concurrent"] == nil)
            #expect((shown.json[path: "options", "rate_limit"] as? [String: Any])?["rate"] as? Double == 10)
            // The pace switches live: adaptive, then fixed again.
            let adaptive = try await server.request(
                .PATCH, "/v1/batches/\(id)", body: #"{"options":{"pace":"adaptive"}}"#)
            #expect(adaptive.status == 200, "\(adaptive.text)")
            #expect(adaptive.json[path: "options", "pace"] as? String == "adaptive")
            #expect(adaptive.json[path: "pace", "mode"] as? String == "adaptive")
            let fixed = try await server.request(.PATCH, "/v1/batches/\(id)", body: #"{"options":{"pace":"fixed"}}"#)
            #expect(fixed.json[path: "pace", "mode"] as? String == "fixed")
            for body in [
                #"{"options":{"chunk_size":5}}"#, #"{"colour":"red"}"#, #"{"options":{"concurrency":0}}"#,
                #"{"options":{"rate_limit":{"rate":-1}}}"#, #"{"priority":1e300}"#,
                #"{"options":{"rate_limit":{"burst":3}}}"#, #"{"options":{"pace":"fast"}}"#,
                #"{"options":{"pace":null}}"#, #"{"options":{"pace":1}}"#,
            ] {
                let reply = try await server.request(.PATCH, "/v1/batches/\(id)", body: body)
                #expect(reply.status == 422, "\(body): \(reply.text)")
                #expect(reply.headers["content-type"] == "application/problem+json")
            }
            #expect(try await server.request(.PATCH, "/v1/batches/\(id)", body: "{").status == 400)
            #expect(try await server.request(.PATCH, "/v1/batches/b_nope", body: "{}").status == 404)
            #expect(try await server.request(.POST, "/v1/batches/\(id)/cancel").status == 200)
            let ended = try await server.request(.PATCH, "/v1/batches/\(id)", body: #"{"priority":1}"#)
            #expect(ended.status == 409, "\(ended.text)")
        }
    }
}
