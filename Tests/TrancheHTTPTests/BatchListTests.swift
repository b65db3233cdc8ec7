import Foundation
import Testing
import TrancheEngine
import TrancheHTTP

/// `GET /v1/batches` reads a page's links, schedules, paces and previews in
/// bulk: each entry must answer what the batch's own `GET` answers.
@Suite("HTTP API: batch list")
struct BatchListTests {
    @Test("a page of 100 batches (chains, resubmits, previews) answers each batch as its own GET does")
    func pageMatchesEachBatch() async throws {
        let strategies = [AnyBatchStrategy(PrepareAPITests.AuditStrategy())]
        try await LiveServer.with(strategies: strategies) { server, _ in
            // 30 chains: a parent and the successor its `then` started.
            var parents: [String: [String]] = [:]
            for n in 0..<30 {
                let reply = try await server.request(
                    .POST, "/v1/batches", body: #"{"type":"noop","items":[\#(n)],"then":{"type":"noop"}}"#)
                #expect(reply.status == 200, "\(reply.text)")
                parents[try #require(reply.json["id"] as? String)] = []
            }
            // One parent with three resubmits (its item is skipped): children in order.
            let skipped = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"sleep","items":[{"ms":-1}]}"#)
            let skippedID = try #require(skipped.json["id"] as? String)
            _ = try await server.waitFor(skippedID) { $0["status"] as? String == "failed" }
            var resubmits: [String] = []
            for _ in 0..<3 {
                let reply = try await server.request(.POST, "/v1/batches/\(skippedID)/resubmit")
                #expect(reply.status == 200 || reply.status == 202, "\(reply.text)")
                resubmits.append(try #require(reply.json["id"] as? String))
            }
            // Dry runs of a prepared type, each with its own preview.
            for n in 0..<5 {
                let reply = try await server.request(
                    .POST, "/v1/batches", body: #"{"type":"audit","items":[\#(n)],"dry_run":true}"#)
                let id = try #require(reply.json["id"] as? String)
                _ = try await server.waitFor(id) { $0["preview"] != nil }
            }
            // And plain batches up to 100 in all.
            let made = 30 * 2 + 1 + 3 + 5
            for n in made..<100 {
                _ = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[\#(n)]}"#)
            }
            for parent in parents.keys {
                let view = try await server.waitFor(parent) { ($0["children"] as? [Any])?.count == 1 }
                parents[parent] = view["children"] as? [String]
            }

            let page = try await server.request(.GET, "/v1/batches?limit=100")
            #expect(page.status == 200, "\(page.text)")
            let batches = try #require(page.json["batches"] as? [[String: Any]])
            #expect(batches.count == 100)
            for listed in batches {
                let id = try #require(listed["id"] as? String)
                let single = try await server.request(.GET, "/v1/batches/\(id)")
                var own = single.json
                own["errors"] = nil  // a list leaves out item errors
                var entry = listed
                entry["errors"] = nil
                #expect(NSDictionary(dictionary: entry) == NSDictionary(dictionary: own), "\(id)")
            }
            // The links are the ones created, not merely the same twice.
            let byID = Dictionary(uniqueKeysWithValues: batches.map { ($0["id"] as? String ?? "", $0) })
            for (parent, children) in parents {
                #expect(byID[parent]?["children"] as? [String] == children)
                #expect(children.count == 1)
                #expect(byID[children.first ?? ""]?["parent_id"] as? String == parent)
            }
            #expect(byID[skippedID]?["children"] as? [String] == resubmits)
            for child in resubmits { #expect(byID[child]?["parent_id"] as? String == skippedID) }
            #expect(batches.filter { $0["preview"] != nil }.count == 5)
        }
    }
}
