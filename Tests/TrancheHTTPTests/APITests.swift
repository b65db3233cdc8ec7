import CompressNIO
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TrancheEngine
import TrancheHTTP

@Suite("HTTP API")
struct APITests {
    @Test("health, readiness and the OpenAPI document, served whole")
    func health() async throws {
        try await LiveServer.with { server, _ in
            #expect(try await server.request(.GET, "/healthz").json["status"] as? String == "ok")
            #expect(try await server.request(.GET, "/readyz").status == 200)
            let document = try await server.request(.GET, "/openapi.yaml")
            #expect(document.headers["content-type"] == "application/yaml")
            let file = try String(
                contentsOf: repositoryRoot.appendingPathComponent("docs/openapi.yaml"), encoding: .utf8)
            #expect(document.text == file)
        }
    }

    @Test("at the sync threshold a batch runs at once (200); one more item is queued (202)")
    func syncThreshold() async throws {
        try await LiveServer.with { server, _ in
            let sync = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":\#(items(200))}"#)
            #expect(sync.status == 200, "\(sync.text)")
            #expect(sync.json["queued"] as? Bool == false)
            #expect(sync.json["status"] as? String == "completed")
            #expect((sync.json["items"] as? [Any])?.count == 200)
            #expect(sync.json[path: "counts", "succeeded"] as? Int == 200)
            let queued = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":\#(items(201))}"#)
            #expect(queued.status == 202, "\(queued.text)")
            #expect(queued.json["queued"] as? Bool == true)
            #expect(queued.json["total"] as? Int == 201)
            let id = try #require(queued.json["id"] as? String)
            #expect(queued.json["status_url"] as? String == "/v1/batches/\(id)")
            let done = try await server.waitFor(id) { $0["status"] as? String == "completed" }
            #expect(done[path: "counts", "succeeded"] as? Int == 201)
            #expect(done["progress"] as? Double == 100)
            let async = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":\#(items(3)),"mode":"async"}"#)
            #expect(async.status == 202)
        }
    }

    @Test("tenants are walls: another tenant's batch is a 404; keys are required and checked")
    func tenants() async throws {
        try await LiveServer.with(keyed: true) { server, keys in
            let a = try #require(keys["a"])
            let b = try #require(keys["b"])
            let created = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":[1,2,3],"mode":"async"}"#, key: a)
            #expect(created.status == 202)
            let id = try #require(created.json["id"] as? String)
            #expect(try await server.request(.GET, "/v1/batches/\(id)", key: a).status == 200)
            for (method, path) in [
                (NIOHTTP1.HTTPMethod.GET, "/v1/batches/\(id)"), (.GET, "/v1/batches/\(id)/items"),
                (.POST, "/v1/batches/\(id)/pause"),
                (.GET, "/v1/batches/\(id)/export"), (.DELETE, "/v1/batches/\(id)"), (.GET, "/v1/batches/\(id)/events"),
            ] {
                let reply = try await server.request(method, path, key: b)
                #expect(reply.status == 404, "\(method) \(path) as another tenant")
                #expect(reply.headers["content-type"] == "application/problem+json")
            }
            let listB = try await server.request(.GET, "/v1/batches", key: b)
            #expect((listB.json["batches"] as? [Any])?.isEmpty == true)
            let listA = try await server.request(.GET, "/v1/batches", key: a)
            #expect((listA.json["batches"] as? [Any])?.count == 1)
            let missing = try await server.request(.GET, "/v1/batches")
            #expect(missing.status == 401)
            #expect(missing.headers["www-authenticate"] == "Bearer")
            #expect(try await server.request(.GET, "/v1/batches", key: "tr_00000000_nope").status == 401)
            #expect(try await server.request(.GET, "/v1/batches", key: a + "x").status == 401)
            let keyID = String(a.split(separator: "_")[1])
            #expect(try await server.store.revokeAPIKey(id: keyID, at: Date()))
            #expect(try await server.request(.GET, "/v1/batches", key: a).status == 401)
            #expect(try await server.request(.GET, "/healthz").status == 200)
        }
    }

    @Test("bad input gets a precise 4xx problem, never a 500")
    func badInput() async throws {
        try await LiveServer.with(maxBodyBytes: 10_000) { server, _ in
            let cases: [(String, String, Int, String)] = [
                ("/v1/batches", #"{"type":"noop","items":[1,2"#, 400, "not valid JSON"),
                ("/v1/batches", #"{"type":5}"#, 422, "'type' should be a string"),
                ("/v1/batches", #"{"items":[]}"#, 422, "missing field 'type'"),
                ("/v1/batches", #"{"type":"nope","items":[1]}"#, 422, "unknown strategy 'nope'"),
                (
                    "/v1/batches", #"{"type":"noop","items":[1],"options":{"chunk_size":0}}"#, 422,
                    "chunk_size must be between 1"
                ),
                (
                    "/v1/batches", #"{"type":"noop","items":[1],"options":{"chunksize":5}}"#, 422,
                    "unknown option 'chunksize'"
                ),
                (
                    "/v1/batches", #"{"type":"noop","items":[1],"mode":"later"}"#, 422,
                    "mode must be auto, sync or async"
                ),
                ("/v1/batches", #"{"type":"sleep","items":[1],"context":{"ms":"x"}}"#, 422, "'ms' should be a number"),
                ("/v1/batches", #"{"type":"noop","items":\#(items(2_000))}"#, 413, "larger than 10000 bytes"),
                ("/v1/batches", "[]", 422, "not a valid request"),
            ]
            for (path, body, status, detail) in cases {
                let reply = try await server.request(.POST, path, body: body)
                #expect(reply.status == status, "\(body.prefix(60)): \(reply.text)")
                #expect(reply.headers["content-type"] == "application/problem+json")
                #expect((reply.json["detail"] as? String)?.contains(detail) == true, "\(reply.text)")
                #expect(reply.json["status"] as? Int == status)
            }
            let done = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#)
            let id = try #require(done.json["id"] as? String)
            let resume = try await server.request(.POST, "/v1/batches/\(id)/resume")
            #expect(resume.status == 409)
            #expect(resume.json["detail"] as? String == "cannot resume a batch that is completed")
            #expect(try await server.request(.GET, "/v1/batches/\(id)/items?status=weird").status == 400)
            #expect(try await server.request(.GET, "/v1/batches/\(id)/items?limit=0").status == 400)
            #expect(try await server.request(.GET, "/v1/batches?status=done").status == 400)
            #expect(try await server.request(.GET, "/v1/batches?cursor=zzz").status == 400)
            #expect(try await server.request(.GET, "/v1/batches/\(id)/export?format=xml").status == 400)
            #expect(try await server.request(.GET, "/v1/batches/01a20913-c2b9-7b0e-ac5a-054c27715214").status == 404)
            #expect(try await server.request(.GET, "/v1/nothing-here").status == 404)
            // The server is still fine.
            #expect(try await server.request(.GET, "/healthz").status == 200)
        }
    }

    @Test("a tenant over its queue limit gets 429 with Retry-After at once; others are unaffected")
    func backpressure() async throws {
        try await LiveServer.with(keyed: true, maxQueuedItems: 100) { server, keys in
            let a = try #require(keys["a"])
            let slow =
                #"{"type":"sleep","context":{"ms":200},"items":\#(items(60)),"mode":"async","options":{"concurrency":1}}"#
            #expect(try await server.request(.POST, "/v1/batches", body: slow, key: a).status == 202)
            let refused = try await server.request(.POST, "/v1/batches", body: slow, key: a)
            #expect(refused.status == 429)
            #expect(refused.headers["retry-after"] == "5")
            #expect((refused.json["detail"] as? String)?.contains("the limit is 100") == true)
            let open = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop"}"#, key: a)
            let id = try #require(open.json["id"] as? String)
            #expect(try await server.request(.POST, "/v1/batches/\(id)/items", body: items(50), key: a).status == 429)
            #expect(try await server.request(.POST, "/v1/batches", body: slow, key: keys["b"]).status == 202)
        }
    }

    @Test("Idempotency-Key: a repeat answers the same batch (also synchronous), another body is 422")
    func idempotency() async throws {
        try await LiveServer.with { server, _ in
            let body = #"{"type":"noop","items":[1,2,3],"mode":"async"}"#
            let first = try await server.request(.POST, "/v1/batches", body: body, headers: ["Idempotency-Key": "k1"])
            let again = try await server.request(.POST, "/v1/batches", body: body, headers: ["Idempotency-Key": "k1"])
            #expect(first.status == 202)
            #expect(again.status == 202)
            let id = try #require(first.json["id"] as? String)
            #expect(again.json["id"] as? String == id)
            #expect(first.headers["idempotent-replayed"] == nil)
            #expect(again.headers["idempotent-replayed"] == "true")
            // The batch carries its key, whichever way it came.
            #expect(
                try await server.request(.GET, "/v1/batches/\(id)").json[path: "options", "idempotency_key"] as? String
                    == "k1")
            let other = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":[9]}"#, headers: ["Idempotency-Key": "k1"])
            #expect(other.status == 422)
            #expect((other.json["detail"] as? String)?.contains("different request body") == true)
            #expect(try await server.store.batches(.init()).count == 1)

            // A synchronous submit's repeat answers the whole result again.
            let sync = #"{"type":"noop","items":[1,2,3]}"#
            let ran = try await server.request(.POST, "/v1/batches", body: sync, headers: ["Idempotency-Key": "k2"])
            let rerun = try await server.request(.POST, "/v1/batches", body: sync, headers: ["Idempotency-Key": "k2"])
            #expect(ran.status == 200)
            #expect(rerun.status == 200)
            #expect(rerun.json["id"] as? String == ran.json["id"] as? String)
            #expect((rerun.json["items"] as? [Any])?.count == 3)
            #expect(rerun.json[path: "counts", "succeeded"] as? Int == 3)

            // A request that failed holds nothing: the same key works once the body is right.
            let bad = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"nope"}"#, headers: ["Idempotency-Key": "k3"])
            #expect(bad.status == 422)
            #expect(try await server.store.idempotencyRecord(tenant: "local", key: "k3") == nil)
            let long = try await server.request(
                .POST, "/v1/batches", body: body, headers: ["Idempotency-Key": String(repeating: "k", count: 256)])
            #expect(long.status == 400)
            #expect(try await server.store.batches(.init()).count == 2)
        }
    }

    @Test("options.idempotency_key works exactly like the Idempotency-Key header; two different keys are a 422")
    func idempotencyOption() async throws {
        try await LiveServer.with(keyed: true) { server, keys in
            let a = try #require(keys["a"])
            let body = #"{"type":"noop","items":[1],"mode":"async","options":{"idempotency_key":"o1"}}"#
            let first = try await server.request(.POST, "/v1/batches", body: body, key: a)
            let again = try await server.request(.POST, "/v1/batches", body: body, key: a)
            let both = try await server.request(
                .POST, "/v1/batches", body: body, key: a, headers: ["Idempotency-Key": "o1"])
            #expect(first.status == 202)
            let id = try #require(first.json["id"] as? String)
            #expect(again.json["id"] as? String == id)
            #expect(again.headers["idempotent-replayed"] == "true")
            #expect(both.json["id"] as? String == id)
            let differing = try await server.request(
                .POST, "/v1/batches", body: body, key: a, headers: ["Idempotency-Key": "o2"])
            #expect(differing.status == 422)
            // Keys are per tenant: another tenant's same key is its own.
            let b = try await server.request(.POST, "/v1/batches", body: body, key: keys["b"])
            #expect(b.status == 202)
            #expect(b.json["id"] as? String != id)
            #expect(b.headers["idempotent-replayed"] == nil)
        }
    }

    @Test("concurrent repeats of one key store one batch and all answer it")
    func idempotencyConcurrent() async throws {
        try await LiveServer.with { server, _ in
            let body = #"{"type":"noop","items":[1,2,3,4,5]}"#
            let replies = try await withThrowingTaskGroup(of: LiveServer.Reply.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        try await server.request(.POST, "/v1/batches", body: body, headers: ["Idempotency-Key": "same"])
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.allSatisfy { (200..<300).contains($0.status) }, "\(replies.map(\.text))")
            #expect(Set(replies.compactMap { $0.json["id"] as? String }).count == 1)
            #expect(replies.filter { $0.headers["idempotent-replayed"] == nil }.count == 1)
            #expect(try await server.store.batches(.init()).count == 1)
        }
    }

    @Test("a crash after the batch was stored: the retry answers that batch, never a second one, never 409")
    func idempotencyAfterCrash() async throws {
        try await LiveServer.with { server, _ in
            // What a server that died before answering left behind: the batch
            // and its key, stored together (the old two-step code left a key
            // "in flight" here, and answered 409 forever).
            let body = #"{"type":"noop","items":[1,2],"mode":"async"}"#
            let prepared = try server.engine.prepareBatch(
                Submission(type: "noop", owner: "local"), items: [JSONText(unchecked: "1"), JSONText(unchecked: "2")])
            let key = IdempotencyKey(tenant: "local", key: "crash", fingerprint: TrancheServer.fingerprint(of: body))
            guard
                case .created(let stored) = try await server.store.createBatch(
                    prepared.batch, items: prepared.items, idempotency: key)
            else { throw Failure() }
            let retry = try await server.request(
                .POST, "/v1/batches", body: body, headers: ["Idempotency-Key": "crash"])
            #expect(retry.status == 202, "\(retry.text)")
            #expect(retry.json["id"] as? String == stored.id.rawValue)
            #expect(try await server.store.batches(.init()).count == 1)
            // Once its batch is deleted, the key is free again.
            _ = try await server.waitFor(stored.id.rawValue) { $0["status"] as? String == "completed" }
            #expect(try await server.request(.DELETE, "/v1/batches/\(stored.id.rawValue)").status == 204)
            let fresh = try await server.request(
                .POST, "/v1/batches", body: body, headers: ["Idempotency-Key": "crash"])
            #expect(fresh.status == 202)
            #expect(fresh.json["id"] as? String != stored.id.rawValue)
            #expect(fresh.headers["idempotent-replayed"] == nil)
        }
    }

    struct Failure: Error {}

    @Test("upload: open, append NDJSON (idempotent by start_seq), seal; results, errors, events, export")
    func uploadAndResults() async throws {
        try await LiveServer.with { server, _ in
            let open = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","options":{"chunk_size":10}}"#)
            #expect(open.status == 202)
            #expect(open.json["sealed"] as? Bool == false)
            let id = try #require(open.json["id"] as? String)
            var ndjson = (0..<50).map { #"{"n":\#($0),"name":"a, \"b\""}"# }.joined(separator: "\n")
            ndjson += "\n{broken\n"
            let appended = try await server.request(
                .POST, "/v1/batches/\(id)/items?start_seq=0", body: ndjson,
                headers: ["Content-Type": "application/x-ndjson"])
            #expect(appended.status == 200, "\(appended.text)")
            #expect(appended.json["inserted"] as? Int == 51)
            #expect(appended.json["rejected"] as? Int == 1)
            #expect(((appended.json["errors"] as? [[String: Any]])?.first?["line"] as? Int) == 51)
            let repeated = try await server.request(
                .POST, "/v1/batches/\(id)/items?start_seq=0", body: ndjson,
                headers: ["Content-Type": "application/x-ndjson"])
            #expect(repeated.json["inserted"] as? Int == 0)
            let json = try await server.request(.POST, "/v1/batches/\(id)/items", body: "[100, 101]")
            #expect(json.json["inserted"] as? Int == 2)
            #expect(json.json["total"] as? Int == 53)
            let sealed = try await server.request(.POST, "/v1/batches/\(id)/seal")
            #expect(sealed.status == 200)
            let done = try await server.waitFor(id) { $0["status"] as? String == "completed" }
            #expect(done[path: "counts", "succeeded"] as? Int == 52)
            #expect(done[path: "counts", "skipped"] as? Int == 1)
            let errorsInline = try #require(done["errors"] as? [[String: Any]])
            #expect(errorsInline.first?["code"] as? String == "invalid_json")
            #expect(try await server.request(.POST, "/v1/batches/\(id)/items", body: "[1]").status == 409)

            var seen: [Int] = []
            var cursor = ""
            repeat {
                let page = try await server.request(.GET, "/v1/batches/\(id)/items?limit=20\(cursor)")
                seen += (page.json["items"] as? [[String: Any]] ?? []).compactMap { $0["seq"] as? Int }
                cursor = (page.json["next_cursor"] as? String).map { "&cursor=\($0)" } ?? ""
            } while !cursor.isEmpty
            #expect(seen == Array(0..<53))
            let skipped = try await server.request(.GET, "/v1/batches/\(id)/items?status=skipped&include=item")
            let item = try #require((skipped.json["items"] as? [[String: Any]])?.first)
            #expect(item["item"] as? String == "{broken")
            let errors = try await server.request(.GET, "/v1/batches/\(id)/errors")
            let group = try #require((errors.json["errors"] as? [[String: Any]])?.first)
            #expect(group["code"] as? String == "invalid_json")
            #expect(group["count"] as? Int == 1)
            let events = try await server.request(.GET, "/v1/batches/\(id)/events")
            let types = (events.json["events"] as? [[String: Any]] ?? []).compactMap { $0["type"] as? String }
            #expect(types.first == "batch.created")
            #expect(types.last == "batch.completed")

            let ndjsonExport = try await server.request(.GET, "/v1/batches/\(id)/export?format=ndjson")
            #expect(ndjsonExport.headers["content-type"] == "application/x-ndjson")
            #expect(ndjsonExport.text.split(separator: "\n").count == 53)
            let csv = try await server.request(.GET, "/v1/batches/\(id)/export?format=csv&status=succeeded")
            let rows = csv.text.split(separator: "\n")
            #expect(rows.first == "seq,status,attempts,error_code,error_message,output,item")
            #expect(rows.count == 53)
            #expect(rows[1] == #"0,succeeded,1,,,,"{""n"":0,""name"":""a, \""b\""""}""#)
            let array = try await server.request(.GET, "/v1/batches/\(id)/export?format=json")
            let decoded = try JSONSerialization.jsonObject(with: array.body) as? [[String: Any]]
            #expect(decoded?.count == 53)
            let gzip = try await server.request(
                .GET, "/v1/batches/\(id)/export?format=ndjson", headers: ["Accept-Encoding": "gzip"])
            #expect(gzip.headers["content-encoding"] == "gzip")
            #expect(Array(gzip.body.prefix(2)) == [0x1F, 0x8B])
            var compressed = ByteBuffer(bytes: gzip.body)
            let plain = try compressed.decompress(with: .gzip)
            #expect(String(buffer: plain) == ndjsonExport.text)

            #expect(try await server.request(.DELETE, "/v1/batches/\(id)").status == 204)
            #expect(try await server.request(.GET, "/v1/batches/\(id)").status == 404)
        }
    }

    @Test("pause, resume, cancel, retry, confirm and dry runs through the API")
    func lifecycle() async throws {
        try await LiveServer.with { server, _ in
            let slow = try await server.request(
                .POST, "/v1/batches",
                body:
                    #"{"type":"sleep","context":{"ms":20},"items":\#(items(300)),"options":{"chunk_size":5,"concurrency":2}}"#
            )
            let id = try #require(slow.json["id"] as? String)
            let paused = try await server.request(.POST, "/v1/batches/\(id)/pause")
            #expect(paused.json["status"] as? String == "paused")
            #expect(try await server.request(.DELETE, "/v1/batches/\(id)").status == 409)
            let resumed = try await server.request(.POST, "/v1/batches/\(id)/resume")
            // Back to where it was paused from: processing, or confirmed when
            // the pause came before its first chunk was claimed.
            let resumedStatus = try #require(resumed.json["status"] as? String)
            #expect(resumedStatus == "processing" || resumedStatus == "confirmed", "resumed to \(resumedStatus)")
            let canceled = try await server.request(.POST, "/v1/batches/\(id)/cancel")
            #expect(canceled.json["status"] as? String == "canceled")
            let settled = try await server.waitFor(id) { ($0[path: "counts", "running"] as? Int) == 0 }
            let canceledCount = try #require(settled[path: "counts", "canceled"] as? Int)
            #expect(canceledCount > 0)
            let retried = try await server.request(
                .POST, "/v1/batches/\(id)/retry", body: #"{"statuses":["canceled"]}"#)
            #expect(retried.status == 200, "\(retried.text)")
            #expect(retried.json["retried_items"] as? Int == canceledCount)
            _ = try await server.waitFor(id) { $0["status"] as? String == "completed" }

            let confirm = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":[1,2],"require_confirmation":true}"#)
            #expect(confirm.status == 202)
            let waiting = try #require(confirm.json["id"] as? String)
            #expect(confirm.json["status"] as? String == "pre_processed")
            #expect(try await server.request(.POST, "/v1/batches/\(waiting)/confirm").status == 200)
            _ = try await server.waitFor(waiting) { $0["status"] as? String == "completed" }

            let dry = try await server.request(
                .POST, "/v1/batches", body: #"{"type":"noop","items":[1,2,3],"dry_run":true}"#)
            #expect(dry.status == 200)
            #expect(dry.json["status"] as? String == "pre_processed")
            #expect(dry.json[path: "result", "valid"] as? Int == 3)
        }
    }

    @Test("an absurd number in any option, the priority or sleep's ms is a 422 naming the field and its limit")
    func absurdNumbers() async throws {
        try await LiveServer.with { server, _ in
            // (the JSON fragment with X for the number, the field the answer names, its limit)
            let fields: [(String, String, String)] = [
                (#""options":{"chunk_size":X}"#, "options.chunk_size", "between 1 and 100000"),
                (#""options":{"concurrency":X}"#, "options.concurrency", "between 1 and 10000"),
                (#""options":{"max_attempts":X}"#, "options.max_attempts", "between 1 and 1000"),
                (#""options":{"failure_min_items":X}"#, "options.failure_min_items", "between 1 and 1000000000"),
                (#""options":{"item_timeout":X}"#, "options.item_timeout", "at most 86400 seconds"),
                (#""options":{"batch_timeout":X}"#, "options.batch_timeout", "at most 31536000 seconds"),
                (#""options":{"ttl":X}"#, "options.ttl", "between 0 and 31536000 seconds"),
                (#""options":{"backoff":{"base":X}}"#, "options.backoff.base", "between 0 and 86400 seconds"),
                (#""options":{"backoff":{"base":0,"cap":X}}"#, "options.backoff.cap", "between 0 and 86400 seconds"),
                (#""options":{"rate_limit":{"rate":X}}"#, "options.rate_limit.rate", "between 0.0001 and 1000000"),
                (
                    #""options":{"rate_limit":{"max_concurrent":X}}"#, "options.rate_limit.max_concurrent",
                    "between 1 and 10000"
                ),
                (#""options":{"failure_ratio":X}"#, "options.failure_ratio", "(0, 1]"),
                (#""priority":X"#, "priority", "between -1000000 and 1000000"),
                (#""type":"sleep","context":{"ms":X}"#, "'ms'", "between 0 and 3600000"),
            ]
            // Every one is out of range for every field (but -1 is a fine priority).
            let numbers = ["1e300", "-1e300", "-1", "9223372036854775808", "-9223372036854775809", "1e10"]
            for (fragment, field, limit) in fields {
                for number in numbers {
                    let fields = fragment.replacingOccurrences(of: "X", with: number)
                    let body =
                        fragment.contains(#""type""#)
                        ? #"{\#(fields),"items":[{}]}"# : #"{"type":"noop","items":[1],\#(fields)}"#
                    let reply = try await server.request(.POST, "/v1/batches", body: body)
                    if number == "-1", field == "priority" {
                        #expect(reply.status == 200, "\(body): \(reply.text)")
                        continue
                    }
                    #expect(reply.status == 422, "\(body): \(reply.text)")
                    #expect(reply.headers["content-type"] == "application/problem+json")
                    let detail = reply.json["detail"] as? String ?? ""
                    #expect(detail.contains(field), "\(body): \(detail)")
                    #expect(detail.contains(limit), "\(body): \(detail)")
                }
            }
            // The server is still up, and still runs batches.
            #expect(try await server.request(.GET, "/healthz").status == 200)
            let fine = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1]}"#)
            #expect(fine.status == 200)
            #expect(fine.json["status"] as? String == "completed")
        }
    }

    @Test(
        "sleep with an item's ms of 1e300 (the crash of issue 13): the item is skipped naming the field, the server lives"
    )
    func sleepItemOutOfRange() async throws {
        try await LiveServer.with { server, _ in
            for ms in ["1e300", "-1", "9223372036854775808", "3600001"] {
                let reply = try await server.request(
                    .POST, "/v1/batches", body: #"{"type":"sleep","items":[{"ms":\#(ms)},{"ms":1}]}"#)
                #expect(reply.status == 200, "\(ms): \(reply.text)")
                #expect(reply.json[path: "counts", "skipped"] as? Int == 1)
                #expect(reply.json[path: "counts", "succeeded"] as? Int == 1)
                let first = (reply.json["items"] as? [[String: Any]])?.first
                #expect(first?["status"] as? String == "skipped")
                let message = (first?["error"] as? [String: Any])?["message"] as? String ?? ""
                #expect(message.contains("'ms' must be an integer between 0 and 3600000"), "\(message)")
            }
            #expect(try await server.request(.GET, "/healthz").status == 200)
        }
    }

    @Test("an item over the item limit (2 MiB) is refused alike on create and on append, JSON and NDJSON")
    func itemLimitOnEveryPath() async throws {
        try await LiveServer.with(maxBodyBytes: 4 << 20) { server, _ in
            let big = #"{"s":"\#(String(repeating: "x", count: 2 << 20))"}"#
            let created = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop","items":[1,\#(big)]}"#)
            #expect(created.status == 413)
            #expect((created.json["detail"] as? String)?.contains("item 1 is larger than 1048576 bytes") == true)
            let open = try await server.request(.POST, "/v1/batches", body: #"{"type":"noop"}"#)
            let id = try #require(open.json["id"] as? String)
            let json = try await server.request(.POST, "/v1/batches/\(id)/items", body: "[1,\(big)]")
            #expect(json.status == 413, "\(json.text.prefix(200))")
            #expect(json.headers["content-type"] == "application/problem+json")
            #expect((json.json["detail"] as? String)?.contains("item 1 is larger than 1048576 bytes") == true)
            // The refused JSON body stored nothing.
            let batch = try await server.request(.GET, "/v1/batches/\(id)")
            #expect(batch.json[path: "counts", "total"] as? Int == 0)
            let ndjson = try await server.request(
                .POST, "/v1/batches/\(id)/items", body: "1\n\(big)\n",
                headers: ["Content-Type": "application/x-ndjson"])
            #expect(ndjson.status == 413, "\(ndjson.text.prefix(200))")
            #expect((ndjson.json["detail"] as? String)?.contains("longer than 1048576 bytes") == true)
            // The server goes on.
            let fine = try await server.request(.POST, "/v1/batches/\(id)/items?start_seq=0", body: "[1,2]")
            #expect(fine.status == 200)
            #expect(fine.json["total"] as? Int == 2)
        }
    }
}
