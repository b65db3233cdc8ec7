import Foundation
import NIOHTTP1
import Testing
import TrancheEngine
import TrancheHTTP
import TrancheTestSupport

@Suite("Schedules API")
struct ScheduleAPITests {
    @Test("create, list, get, pause, resume and delete, tenant-scoped; runs carry schedule_id")
    func lifecycle() async throws {
        try await LiveServer.with(keyed: true) { server, keys in
            let a = try #require(keys["a"])
            let b = try #require(keys["b"])
            let created = try await server.request(
                .POST, "/v1/schedules",
                body:
                    #"{"batch":{"type":"noop","items":[1,2],"options":{"chunk_size":5}},"every":"1s","catch_up":"skip"}"#,
                key: a)
            #expect(created.status == 201, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            #expect(created.json["every"] as? Double == 1)
            #expect(created.json["catch_up"] as? String == "skip")
            #expect(created.json["overlap"] as? Bool == false)
            #expect(created.json["paused"] as? Bool == false)
            #expect(created.json[path: "batch", "items"] as? Int == 2)
            #expect(created.json[path: "batch", "type"] as? String == "noop")
            #expect(created.json["next_run_at"] is String)

            let listA = try await server.request(.GET, "/v1/schedules", key: a)
            #expect((listA.json["schedules"] as? [[String: Any]])?.map { $0["id"] as? String } == [id])
            let listB = try await server.request(.GET, "/v1/schedules", key: b)
            #expect((listB.json["schedules"] as? [Any])?.isEmpty == true)
            for (method, path) in [
                (NIOHTTP1.HTTPMethod.GET, "/v1/schedules/\(id)"), (.POST, "/v1/schedules/\(id)/pause"),
                (.POST, "/v1/schedules/\(id)/resume"), (.DELETE, "/v1/schedules/\(id)"),
            ] {
                let reply = try await server.request(method, path, key: b)
                #expect(reply.status == 404, "\(method) \(path) as another tenant")
                #expect(reply.headers["content-type"] == "application/problem+json")
            }

            // The leader fires the schedule: a batch of the tenant's with the schedule's id.
            try await waitUntil("a run of the schedule") {
                let list = try await server.request(.GET, "/v1/batches", key: a)
                let batches = list.json["batches"] as? [[String: Any]] ?? []
                return batches.contains { $0["schedule_id"] as? String == id }
            }
            let list = try await server.request(.GET, "/v1/batches", key: a)
            let scheduled = try #require(
                (list.json["batches"] as? [[String: Any]])?.first { $0["schedule_id"] as? String == id })
            let batchID = try #require(scheduled["id"] as? String)
            let one = try await server.request(.GET, "/v1/batches/\(batchID)", key: a)
            #expect(one.json["schedule_id"] as? String == id)
            #expect(one.json[path: "counts", "total"] as? Int == 2)
            let plain = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":[1],"mode":"async"}"#, key: a)
            let plainView = try await server.request(
                .GET, "/v1/batches/\(try #require(plain.json["id"] as? String))", key: a)
            #expect(plainView.json.keys.contains("schedule_id"))
            #expect(plainView.json["schedule_id"] is NSNull)

            let paused = try await server.request(.POST, "/v1/schedules/\(id)/pause", key: a)
            #expect(paused.status == 200)
            #expect(paused.json["paused"] as? Bool == true)
            #expect(paused.json["next_run_at"] is NSNull)
            let resumed = try await server.request(.POST, "/v1/schedules/\(id)/resume", key: a)
            #expect(resumed.json["paused"] as? Bool == false)
            #expect(resumed.json["next_run_at"] is String)
            #expect(try await server.request(.GET, "/v1/schedules/\(id)", key: a).json["runs"] as? Int ?? 0 >= 1)
            #expect(try await server.request(.DELETE, "/v1/schedules/\(id)", key: a).status == 204)
            #expect(try await server.request(.GET, "/v1/schedules/\(id)", key: a).status == 404)
            #expect(try await server.request(.DELETE, "/v1/schedules/\(id)", key: a).status == 404)
            // The runs stay.
            #expect(try await server.request(.GET, "/v1/batches/\(batchID)", key: a).status == 200)
        }
    }

    @Test("bad schedules are 422s naming the field")
    func badInput() async throws {
        try await LiveServer.with { server, _ in
            let batch = #""batch":{"type":"noop","items":[1]}"#
            let cases: [(String, String)] = [
                (#"{\#(batch),"cron":"61 * * * *"}"#, "cron: minute: 61 is outside 0-59"),
                (#"{\#(batch),"cron":"* * *"}"#, "cron: expected 5 fields"),
                (#"{\#(batch),"cron":"0 0 30 2 *"}"#, "cron: '0 0 30 2 *' never matches"),
                (#"{\#(batch),"cron":"0 3 * * *","time_zone":"Mars/Olympus"}"#, "time_zone:"),
                (#"{\#(batch),"every":"0.5s"}"#, "every:"),
                (#"{\#(batch),"every":"1e400s"}"#, "every:"),
                (#"{\#(batch),"every":"30s","time_zone":"UTC"}"#, "time_zone:"),
                (#"{\#(batch)}"#, "cron or every is required"),
                (#"{\#(batch),"cron":"* * * * *","every":"1m"}"#, "cron and every"),
                (#"{\#(batch),"every":"1m","catch_up":"maybe"}"#, "catch_up must be one or skip"),
                (#"{"every":"1m"}"#, "batch is required"),
                (#"{"batch":[1],"every":"1m"}"#, "batch is required"),
                (#"{\#(batch),"every":"1m","colour":"red"}"#, "unknown field 'colour'"),
                (#"{\#(batch),"every":"1m","paused":null}"#, "'paused' should be a boolean"),
                (#"{\#(batch),"cron":null,"every":"1m"}"#, "'cron' should be a string"),
                (#"{"batch":{"type":"nope","items":[1]},"every":"1m"}"#, "batch: unknown strategy 'nope'"),
                (#"{"batch":{"type":"noop"},"every":"1m"}"#, "batch: items are required"),
                (
                    #"{"batch":{"type":"noop","items":[1],"options":{"chunk_size":0}},"every":"1m"}"#,
                    "batch: options.chunk_size"
                ),
                (
                    #"{"batch":{"type":"noop","items":[1],"options":{"idempotency_key":"k"}},"every":"1m"}"#,
                    "batch: options.idempotency_key"
                ),
            ]
            for (body, detail) in cases {
                let reply = try await server.request(.POST, "/v1/schedules", body: body)
                #expect(reply.status == 422, "\(body): \(reply.text)")
                #expect(reply.headers["content-type"] == "application/problem+json")
                let text = reply.json["detail"] as? String ?? ""
                #expect(text.contains(detail), "\(body): \(text)")
            }
            #expect(try await server.request(.POST, "/v1/schedules", body: "{").status == 400)
            let none = try await server.request(.GET, "/v1/schedules")
            #expect((none.json["schedules"] as? [Any])?.isEmpty == true)
        }
    }
}
