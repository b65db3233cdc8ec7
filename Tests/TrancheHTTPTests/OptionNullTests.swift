import Foundation
import Testing
import TrancheEngine
import TrancheHTTP

@Suite("Null options")
struct OptionNullTests {
    /// Every field of `options` the OpenAPI document does not declare
    /// nullable, with the null it is sent and the type the answer names.
    static let refused: [(field: String, options: String, expected: String)] = [
        ("chunk_size", #"{"chunk_size":null}"#, "a number"),
        ("concurrency", #"{"concurrency":null}"#, "a number"),
        ("max_attempts", #"{"max_attempts":null}"#, "a number"),
        ("backoff", #"{"backoff":null}"#, "an object"),
        ("backoff.base", #"{"backoff":{"base":null}}"#, "a number"),
        ("backoff.cap", #"{"backoff":{"cap":null}}"#, "a number"),
        ("item_timeout", #"{"item_timeout":null}"#, "a number"),
        ("batch_timeout", #"{"batch_timeout":null}"#, "a number"),
        ("rate_limit.rate", #"{"rate_limit":{"rate":null}}"#, "a number"),
        ("rate_limit.max_concurrent", #"{"rate_limit":{"max_concurrent":null}}"#, "a number"),
        ("ttl", #"{"ttl":null}"#, "a number"),
        ("require_confirmation", #"{"require_confirmation":null}"#, "a boolean"),
        ("failure_policy", #"{"failure_policy":null}"#, "a string"),
        ("failure_ratio", #"{"failure_ratio":null}"#, "a number"),
        ("failure_min_items", #"{"failure_min_items":null}"#, "a number"),
        ("pace", #"{"pace":null}"#, "a string"),
    ]

    @Test("null for an options field not declared nullable is a 422 naming it, on a batch, its then and a schedule")
    func nullsRefused() async throws {
        try await LiveServer.with { server, _ in
            for (field, options, expected) in Self.refused {
                let detail = "'options.\(field)' should be \(expected), found null"
                try await server.expectRefused(#"{"type":"noop","items":[{}],"options":\#(options)}"#, detail)
                // The successor's options are read the same way.
                let then = #"{"type":"noop","items":[{}],"then":{"type":"noop","options":\#(options)}}"#
                let chained = try await server.request(.POST, "/v1/batches", body: then)
                #expect(chained.status == 422, "\(then): \(chained.text)")
                #expect((chained.json["detail"] as? String)?.contains("'then.\(detail.dropFirst())") == true)
            }
            try await server.expectNothingStored()

            // rate_limit and idempotency_key are declared nullable: null means none, as when left out.
            let nullable = try await server.request(
                .POST, "/v1/batches",
                body: #"{"type":"noop","items":[{}],"options":{"rate_limit":null,"idempotency_key":null}}"#)
            #expect(nullable.status == 200, "\(nullable.text)")
            #expect(nullable.json["status"] as? String == "completed")
            #expect(nullable.json[path: "options", "rate_limit"] == nil)
            #expect(nullable.json[path: "options", "idempotency_key"] == nil)
        }
    }

    @Test("PATCH refuses null for priority, concurrency and pace, and changes nothing; rate_limit fields may be null")
    func patchNullsRefused() async throws {
        try await LiveServer.with { server, _ in
            let created = try await server.request(
                .POST, "/v1/batches",
                body:
                    #"{"type":"noop","items":[1],"mode":"async","priority":3,"options":{"require_confirmation":true,"concurrency":2,"pace":"fixed","rate_limit":{"rate":5,"max_concurrent":4}}}"#
            )
            #expect(created.status == 202, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            let cases: [(String, String)] = [
                (#"{"priority":null}"#, "'priority' should be a number, found null"),
                (#"{"options":{"concurrency":null}}"#, "'options.concurrency' should be a number, found null"),
                (#"{"options":{"pace":null}}"#, "'options.pace' should be a string, found null"),
                (#"{"options":null}"#, "'options' should be an object, found null"),
                (#"{"options":{"pace":"fast"}}"#, "'options.pace': must be one of fixed, adaptive"),
            ]
            for (body, detail) in cases {
                let reply = try await server.request(.PATCH, "/v1/batches/\(id)", body: body)
                #expect(reply.status == 422, "\(body): \(reply.text)")
                #expect((reply.json["detail"] as? String)?.contains(detail) == true, "\(body): \(reply.text)")
            }
            let shown = try await server.request(.GET, "/v1/batches/\(id)")
            #expect(shown.json["priority"] as? Int == 3)
            #expect(shown.json[path: "options", "concurrency"] as? Int == 2)
            #expect(shown.json[path: "options", "pace"] as? String == "fixed")
            // A rate_limit field given as null is removed, as the document says.
            let removed = try await server.request(
                .PATCH, "/v1/batches/\(id)", body: #"{"options":{"rate_limit":{"rate":null}}}"#)
            #expect(removed.status == 200, "\(removed.text)")
            #expect((removed.json[path: "options", "rate_limit"] as? [String: Any])?["rate"] == nil)
            #expect((removed.json[path: "options", "rate_limit"] as? [String: Any])?["max_concurrent"] as? Int == 4)
        }
    }

    @Test("stored options holding a null still decode as before; only a request's decoder refuses it")
    func storedNullsDecode() throws {
        let text = #"{"concurrency":null,"backoff":{"base":null},"rate_limit":{"rate":null},"pace":null}"#
        let stored = try JSONText(unchecked: text).decode(BatchOptions.self)
        #expect(stored.concurrency == BatchOptions().concurrency)
        #expect(stored.backoff == Backoff())
        #expect(stored.rateLimit == RateLimit())
        #expect(stored.pace == nil)
        #expect(throws: DecodingError.self) {
            try JSONDecoder.clientRequest().decode(BatchOptions.self, from: Data(text.utf8))
        }
    }
}

extension LiveServer {
    /// Sends `body` to `POST /v1/batches`, and as a schedule's batch to
    /// `POST /v1/schedules`: each must be a 422 problem whose detail holds `detail`.
    func expectRefused(_ body: String, _ detail: String) async throws {
        for (path, sent) in [("/v1/batches", body), ("/v1/schedules", #"{"batch":\#(body),"every":"1h"}"#)] {
            let reply = try await request(.POST, path, body: sent)
            #expect(reply.status == 422, "\(sent): \(reply.text)")
            #expect(reply.headers["content-type"] == "application/problem+json")
            #expect((reply.json["detail"] as? String)?.contains(detail) == true, "\(sent): \(reply.text)")
        }
    }

    /// No batch and no schedule is stored.
    func expectNothingStored() async throws {
        #expect((try await request(.GET, "/v1/batches").json["batches"] as? [Any])?.isEmpty == true)
        #expect((try await request(.GET, "/v1/schedules").json["schedules"] as? [Any])?.isEmpty == true)
    }
}
