import Foundation
import Testing
import TrancheHTTP

@Suite("Null fields")
struct NullFieldTests {
    @Test("null for mode, dry_run, priority, require_confirmation or sleep's ms is a 422 naming the field")
    func nullsRefused() async throws {
        try await LiveServer.with { server, _ in
            // (the body's extra fields, the field the answer names)
            let cases: [(String, String)] = [
                (#""type":"noop","mode":null"#, "'mode' should be a string, found null"),
                (#""type":"noop","dry_run":null"#, "'dry_run' should be a boolean, found null"),
                (#""type":"noop","priority":null"#, "'priority' should be a number, found null"),
                (
                    #""type":"noop","require_confirmation":null"#,
                    "'require_confirmation' should be a boolean, found null"
                ),
                (#""type":"sleep","context":{"ms":null}"#, "'ms' should be a number, found null"),
            ]
            for (fields, detail) in cases {
                let body = #"{\#(fields),"items":[{}]}"#
                let reply = try await server.request(.POST, "/v1/batches", body: body)
                #expect(reply.status == 422, "\(body): \(reply.text)")
                #expect(reply.headers["content-type"] == "application/problem+json")
                #expect((reply.json["detail"] as? String)?.contains(detail) == true, "\(body): \(reply.text)")
                // A schedule's batch is read the same way.
                let schedule = #"{"batch":\#(body),"every":"1h"}"#
                let scheduled = try await server.request(.POST, "/v1/schedules", body: schedule)
                #expect(scheduled.status == 422, "\(schedule): \(scheduled.text)")
                #expect((scheduled.json["detail"] as? String)?.contains(detail) == true, "\(scheduled.text)")
            }
            // None of them stored a batch or a schedule.
            #expect((try await server.request(.GET, "/v1/batches").json["batches"] as? [Any])?.isEmpty == true)
            #expect((try await server.request(.GET, "/v1/schedules").json["schedules"] as? [Any])?.isEmpty == true)
            // Left out, each takes its default; a null context still counts as left out.
            let fine = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"sleep","context":null,"options":null,"items":[{"ms":0}]}"#)
            #expect(fine.status == 200, "\(fine.text)")
            #expect(fine.json["status"] as? String == "completed")
        }
    }
}
