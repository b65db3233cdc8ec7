import Foundation
import NIOHTTP1
import Testing
import TrancheEngine
import TrancheHTTP

/// A strategy's `prepare` hook through the API: `preparing`, `preview`, and a failed hook.
@Suite("HTTP API: prepare hooks")
struct PrepareAPITests {
    /// Echoes items; its `prepare` counts them, or refuses the batch when the context says `reject`.
    struct AuditStrategy: BatchStrategy {
        struct Context: Codable, Sendable {
            var reject: Bool?
        }
        var type: String { "audit" }
        var hooks: BatchHooks { [.prepare] }

        func process(_ item: JSONValue, context: Context, input: ItemInput) async throws -> JSONValue { item }

        func prepare(_ batch: PreparingBatch, context: Context) async throws -> JSONValue? {
            if context.reject == true { throw ItemError.permanent("over_budget", "the batch costs too much") }
            return ["items": .number(Double(batch.total)), "dry_run": .bool(batch.dryRun)]
        }
    }

    @Test("a dry run shows its preview; confirmed, it runs; a refused batch fails with the reason")
    func preview() async throws {
        try await LiveServer.with(strategies: [AnyBatchStrategy(AuditStrategy())]) { server, _ in
            let dry = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"audit","items":[{"n":1},{"n":2},{"n":3}],"dry_run":true}"#)
            #expect(dry.status == 200, "\(dry.text)")
            let id = try #require(dry.json["id"] as? String)
            let previewed = try await server.waitFor(id) { $0["preview"] != nil }
            #expect(previewed["status"] as? String == "pre_processed")
            #expect((previewed["preview"] as? [String: Any])?["items"] as? Int == 3)
            #expect((previewed["preview"] as? [String: Any])?["dry_run"] as? Bool == true)

            let confirmed = try await server.request(.POST, "/v1/batches/\(id)/confirm")
            #expect(confirmed.status == 200 || confirmed.status == 202, "\(confirmed.text)")
            let ended = try await server.waitFor(id) { $0["status"] as? String == "completed" }
            #expect(ended[path: "counts", "succeeded"] as? Int == 3)
            #expect((ended["preview"] as? [String: Any])?["dry_run"] as? Bool == false)

            let refused = try await server.request(
                .POST, "/v1/batches",
                body: #"{"type":"audit","context":{"reject":true},"items":[{"n":1}],"mode":"async"}"#)
            #expect(refused.status == 202, "\(refused.text)")
            let refusedID = try #require(refused.json["id"] as? String)
            let failed = try await server.waitFor(refusedID) { $0["status"] as? String == "failed" }
            #expect(failed["failure_reason"] as? String == "prepare_failed: over_budget: the batch costs too much")
            #expect(failed[path: "counts", "succeeded"] as? Int == 0)
            #expect(failed["preview"] == nil)

            let listed = try await server.request(.GET, "/v1/batches?status=preparing")
            #expect(listed.status == 200, "\(listed.text)")
        }
    }
}
