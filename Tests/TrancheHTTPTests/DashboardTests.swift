import Foundation
import Testing
import TrancheTestSupport

/// The dashboard in a real headless Chromium, driven over the DevTools
/// protocol by `scripts/dashboard_check.py`.
@Suite("Dashboard")
struct DashboardTests {
    @Test("live progress without reload, pause and resume from the batch page, the error log")
    func chromium() async throws {
        // The screenshots, Chromium's profile and its temporary files: all
        // in one directory, removed also when the check fails. A short
        // prefix: Chromium's socket paths under it must stay within 107 bytes.
        try await withTemporaryDirectory("tranche-dash") { directory in
            try await LiveServer.with { server, _ in
                let page = try await server.request(.GET, "/")
                #expect(page.headers["content-type"]?.hasPrefix("text/html") == true)
                let items = "[" + (0..<3_000).map { #"{"n":\#($0)}"# }.joined(separator: ",") + "]"
                let running = try await server.request(
                    .POST, "/v1/batches",
                    body:
                        #"{"type":"sleep","context":{"ms":30},"items":\#(items),"options":{"chunk_size":10,"concurrency":2}}"#
                )
                let runningID = try #require(running.json["id"] as? String)
                let failing = try await server.request(
                    .POST, "/v1/batches",
                    body:
                        #"{"type":"exec","context":{"command":"echo 'no such user' >&2; exit 65"},"items":[1,2,3],"mode":"async"}"#
                )
                let failingID = try #require(failing.json["id"] as? String)
                let (status, text) = try await runScript(
                    "dashboard_check.py", ["http://127.0.0.1:\(server.port)", runningID, failingID, directory.path],
                    temporaryDirectory: directory)
                #expect(status == 0, "\(text)")
                #expect(text.contains("dashboard checks passed"), "\(text)")
                for name in ["dashboard-list.png", "dashboard-batch.png", "dashboard-errors.png"] {
                    #expect(FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path))
                }
            }
        }
    }
}
