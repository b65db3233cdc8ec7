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
                // As a batch and as a schedule's batch.
                try await server.expectRefused(#"{\#(fields),"items":[{}]}"#, detail)
            }
            try await server.expectNothingStored()
            // Left out, each takes its default; a null context still counts as left out.
            let fine = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"sleep","context":null,"options":null,"items":[{"ms":0}]}"#)
            #expect(fine.status == 200, "\(fine.text)")
            #expect(fine.json["status"] as? String == "completed")
        }
    }
}
