import Foundation
import Testing
import TrancheEngine
import TrancheHTTP

/// Rate, ETA and chunks in the API, from the samples the engine stores.
@Suite("Progress in the API")
struct ProgressAPITests {
    @Test("a batch shows its stored rate and chunk n of m; the ETA and its range are null until known")
    func progressFields() async throws {
        try await LiveServer.with { server, _ in
            let created = try await server.request(
                .POST, "/v1/batches",
                body:
                    #"{"type":"sleep","context":{"ms":300},"items":[1,2,3,4,5,6,7,8,9,10,11,12],"mode":"async","options":{"chunk_size":2,"concurrency":1}}"#
            )
            #expect(created.status == 202, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            let running = try await server.waitFor(id) {
                ($0["rate"] as? Double ?? 0) > 0 && $0["status"] as? String == "processing"
            }
            #expect(running["chunks_total"] as? Int == 6)
            #expect((running["chunks_done"] as? Int).map { (0...6).contains($0) } == true)
            // One item at a time, 0.3 s each: a few a second, never hundreds.
            #expect((running["rate"] as? Double ?? 0) < 20, "\(running)")
            for key in ["eta_seconds", "eta_low_seconds", "eta_high_seconds"] {
                #expect(running.keys.contains(key), "\(key) is always present")
            }
            if running["eta_seconds"] is NSNull {
                #expect(running["eta_low_seconds"] is NSNull && running["eta_high_seconds"] is NSNull)
            }
            let list = try await server.request(.GET, "/v1/batches")
            let listed = try #require((list.json["batches"] as? [[String: Any]])?.first { $0["id"] as? String == id })
            #expect(listed["chunks_total"] as? Int == 6)
            let done = try await server.waitFor(id) { $0["status"] as? String == "completed" }
            #expect(done["rate"] as? Double == 0)
            #expect(done["eta_seconds"] as? Double == 0)
            #expect(done["chunks_done"] as? Int == 6)
            #expect(done["chunks_total"] as? Int == 6)
        }
    }
}
