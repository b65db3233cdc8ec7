import Foundation
import Testing
import TrancheTestSupport

/// `tranche schedules` against a real `tranche serve`.
@Suite("tranche schedules")
struct ScheduleCommandTests {
    @Test("create, list, pause, resume and delete; a run shows its schedule in tranche status; bad input exits 1")
    func schedules() async throws {
        try await withTemporaryDirectory("tranche-cli") { directory in
            let (server, url) = try await startServer(["--database", "s.db"], in: directory)
            defer { server.kill9() }
            try writeItems(3, to: directory.appendingPathComponent("items.ndjson"))
            let client = ["--server", url]
            let created = try await tranche(
                ["schedules", "create", "--type", "noop", "--items", "items.ndjson", "--every", "1s", "--json"]
                    + client, in: directory)
            #expect(created.status == 0, "\(created.stderr)")
            let schedule = try summary(created.stdout)
            let id = try #require(schedule["id"] as? String)
            #expect(schedule["every"] as? Double == 1)
            #expect((schedule["batch"] as? [String: Any])?["items"] as? Int == 3)

            // The leader fires it: the run's status names the schedule.
            @Sendable func lastBatch() async throws -> String? {
                let list = try await tranche(["schedules", "list", "--json"] + client, in: directory)
                let schedules = try summary(list.stdout)["schedules"] as? [[String: Any]] ?? []
                return schedules.first { $0["id"] as? String == id }?["last_batch_id"] as? String
            }
            try await waitUntil("the schedule's first run") { try await lastBatch() != nil }
            let batchID = try await lastBatch()
            let status = try await tranche(["status", try #require(batchID)] + client, in: directory)
            #expect(status.stdout.contains("schedule: \(id)"), "\(status.stdout)")

            let paused = try await tranche(["schedules", "pause", id] + client, in: directory)
            #expect(paused.status == 0, "\(paused.stderr)")
            #expect(paused.stdout.contains("\tyes\t"), "\(paused.stdout)")
            let resumed = try await tranche(["schedules", "resume", id] + client, in: directory)
            #expect(resumed.stdout.contains("\tno\t"), "\(resumed.stdout)")
            let listed = try await tranche(["schedules", "list"] + client, in: directory)
            #expect(listed.stdout.hasPrefix("ID\tWHEN\tNEXT_RUN"), "\(listed.stdout)")
            #expect(listed.stdout.contains("\(id)\tevery 1.0s"), "\(listed.stdout)")

            let badCron = try await tranche(
                ["schedules", "create", "--type", "noop", "--items", "items.ndjson", "--cron", "61 * * * *"] + client,
                in: directory)
            #expect(badCron.status == 1)
            #expect(badCron.stderr.contains("cron: minute: 61 is outside 0-59"), "\(badCron.stderr)")
            let neither = try await tranche(
                ["schedules", "create", "--type", "noop", "--items", "items.ndjson"] + client, in: directory)
            #expect(neither.status == 1)
            #expect(neither.stderr.contains("give one of --cron and --every"), "\(neither.stderr)")

            #expect(try await tranche(["schedules", "delete", id] + client, in: directory).status == 0)
            let again = try await tranche(["schedules", "delete", id] + client, in: directory)
            #expect(again.status == 1)
            #expect(again.stderr.contains("no schedule \(id)"), "\(again.stderr)")
        }
    }
}
