import Foundation
import Testing
import TrancheStore

/// The server's records (API keys, idempotency, webhooks, deliveries) on
/// every store: each case runs against SQLite and PostgreSQL.
@Suite("ServerStore conformance", .testResources)
struct ServerStoreConformanceTests {
    /// Runs `body` on a fresh server store (the factory's: running, and
    /// removed when the test ends).
    func withStore(_ factory: StoreFactory, _ body: (any ServerStore) async throws -> Void) async throws {
        try await body(try #require(try await factory.make() as? any ServerStore))
    }

    func key(_ key: String, tenant: String = "t1", body: String = "{}") -> IdempotencyKey {
        IdempotencyKey(tenant: tenant, key: key, fingerprint: "fp:" + body)
    }

    // MARK: - API keys

    @Test("API keys: create, list, look up, revoke once", arguments: StoreFactory.all)
    func apiKeys(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            let start = Date(milliseconds: Date().milliseconds)
            let first = APIKeyRecord(id: "k1", tenant: "acme", hash: "h1", createdAt: start, revokedAt: nil)
            let second = APIKeyRecord(
                id: "k2", tenant: "other", hash: "h2", createdAt: start.addingTimeInterval(1), revokedAt: nil)
            try await store.createAPIKey(first)
            try await store.createAPIKey(second)
            #expect(try await store.apiKeys() == [first, second])
            #expect(try await store.apiKey(id: "k2") == second)
            #expect(try await store.apiKey(id: "nope") == nil)
            let revokedAt = start.addingTimeInterval(5)
            #expect(try await store.revokeAPIKey(id: "k1", at: revokedAt))
            #expect(try await store.revokeAPIKey(id: "k1", at: revokedAt.addingTimeInterval(1)) == false)
            #expect(try await store.revokeAPIKey(id: "nope", at: revokedAt) == false)
            #expect(try await store.apiKey(id: "k1")?.revokedAt == revokedAt)
            #expect(try await store.apiKeys().map(\.id) == ["k1", "k2"])
        }
    }

    // MARK: - Idempotency

    @Test(
        "idempotency: a new key stores the batch, a repeat answers it, another body is a mismatch",
        arguments: StoreFactory.all)
    func idempotency(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            let first = NewBatch(type: "t", owner: "t1")
            guard
                case .created(let created) = try await store.createBatch(
                    first, items: payloads(3), idempotency: key("k"))
            else { throw Unexpected("the first create was not new") }
            #expect(created.id == first.id)
            #expect(created.counts.total == 3)
            let record = try #require(try await store.idempotencyRecord(tenant: "t1", key: "k"))
            #expect(record.batchID == first.id)
            #expect(record.fingerprint == "fp:{}")
            // A repeat stores nothing and answers the first batch.
            let repeated = try await store.createBatch(
                NewBatch(type: "t", owner: "t1"), items: payloads(3), idempotency: key("k"))
            guard case .existing(let existing) = repeated else { throw Unexpected("\(repeated)") }
            #expect(existing.id == first.id)
            #expect(
                try await store.createBatch(
                    NewBatch(type: "t", owner: "t1"), items: [], idempotency: key("k", body: "{\"other\":1}"))
                    == .mismatch)
            // Keys are per tenant.
            let elsewhere = try await store.createBatch(
                NewBatch(type: "t", owner: "t2"), items: [], idempotency: key("k", tenant: "t2"))
            guard case .created = elsewhere else { throw Unexpected("\(elsewhere)") }
            #expect(try await store.batches(BatchQuery(owner: "t1")).count == 1)
            #expect(try await store.idempotencyRecord(tenant: "t3", key: "k") == nil)
        }
    }

    @Test(
        "idempotency after a crash: a create that did not commit leaves the key free; a deleted batch frees it",
        arguments: StoreFactory.all)
    func idempotencyCrash(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            // A create that fails inside its transaction (here: its batch id
            // is taken) is what a crash mid-request leaves: nothing at all.
            let taken = try await store.createBatch(NewBatch(type: "t", owner: "t1", sealed: false), items: [])
            await #expect(throws: (any Error).self) {
                try await store.createBatch(
                    NewBatch(id: taken.id, type: "t", owner: "t1"), items: payloads(2), idempotency: key("k"))
            }
            #expect(try await store.idempotencyRecord(tenant: "t1", key: "k") == nil)
            let retried = NewBatch(type: "t", owner: "t1")
            guard
                case .created(let batch) = try await store.createBatch(
                    retried, items: [], idempotency: key("k"))
            else { throw Unexpected("the retry was not new") }
            #expect(batch.status == .completed)
            // Its batch deleted, the key names nothing: a new request creates anew.
            try await store.deleteBatch(batch.id)
            let again = NewBatch(type: "t", owner: "t1")
            guard
                case .created(let fresh) = try await store.createBatch(
                    again, items: [], idempotency: key("k", body: "{\"new\":1}"))
            else { throw Unexpected("the key was not freed") }
            #expect(fresh.id == again.id)
            #expect(try await store.idempotencyRecord(tenant: "t1", key: "k")?.batchID == again.id)
        }
    }

    @Test("idempotency: concurrent creates with one key store one batch", arguments: StoreFactory.all)
    func idempotencyConcurrent(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            let outcomes = try await withThrowingTaskGroup(of: IdempotentCreation.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        try await store.createBatch(
                            NewBatch(type: "t", owner: "t1"), items: payloads(5), idempotency: key("same"))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            var created: [BatchID] = []
            var existing: [BatchID] = []
            for outcome in outcomes {
                switch outcome {
                case .created(let batch): created.append(batch.id)
                case .existing(let batch): existing.append(batch.id)
                case .mismatch: Issue.record("a mismatch with one body")
                }
            }
            #expect(created.count == 1)
            #expect(Set(existing) == Set(created))
            #expect(try await store.batches(BatchQuery()).count == 1)
        }
    }

    @Test("idempotency records go when their batch expires, not before", arguments: StoreFactory.all)
    func idempotencyPruning(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            var shortLived = BatchOptions()
            shortLived.ttl = 60
            let now = Date()
            let ended = try await store.createBatch(
                NewBatch(type: "t", owner: "t1", options: shortLived, createdAt: now), items: [],
                idempotency: key("ended"))
            guard case .created(let batch) = ended else { throw Unexpected("\(ended)") }
            let expiry = try #require(batch.expiresAt)
            _ = try await store.createBatch(
                NewBatch(type: "t", owner: "t1", sealed: false), items: [], idempotency: key("running"))
            #expect(try await store.pruneServerRecords(now: now, deliveriesEndedBefore: now, limit: 10) == 0)
            #expect(try await store.idempotencyRecord(tenant: "t1", key: "ended") != nil)
            let later = expiry.addingTimeInterval(1)
            #expect(try await store.pruneServerRecords(now: later, deliveriesEndedBefore: now, limit: 10) == 1)
            #expect(try await store.idempotencyRecord(tenant: "t1", key: "ended") == nil)
            #expect(try await store.idempotencyRecord(tenant: "t1", key: "running") != nil)
        }
    }

    // MARK: - Webhooks and deliveries

    func webhook(_ id: String, tenant: String, events: [String] = [], at offset: Double = 0) -> WebhookRecord {
        WebhookRecord(
            id: id, tenant: tenant, url: "http://127.0.0.1:1/\(id)", events: events, secret: "s-\(id)",
            createdAt: Date(milliseconds: Date().milliseconds).addingTimeInterval(offset))
    }

    @Test("webhooks: create, list per tenant, delete only one's own", arguments: StoreFactory.all)
    func webhooks(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            let mine = webhook("w1", tenant: "t1", events: ["batch.completed"])
            let theirs = webhook("w2", tenant: "t2", at: 1)
            try await store.createWebhook(mine)
            try await store.createWebhook(theirs)
            #expect(try await store.webhooks(tenant: "t1") == [mine])
            #expect(try await store.webhooks(tenant: "t2") == [theirs])
            #expect(try await store.webhooks(tenant: nil) == [mine, theirs])
            #expect(try await store.deleteWebhook(id: "w2", tenant: "t1") == false)
            #expect(try await store.webhooks(tenant: "t2") == [theirs])
            #expect(try await store.deleteWebhook(id: "w1", tenant: "t1"))
            #expect(try await store.deleteWebhook(id: "w1", tenant: "t1") == false)
            #expect(try await store.webhooks(tenant: nil) == [theirs])
        }
    }

    /// A claim by `owner` at `now` of up to `limit` deliveries, leased for 30 s.
    func claim(
        _ owner: String, at now: Date, limit: Int = 1_000, perWebhook: Int = 1_000, busy: [String: Int] = [:]
    ) -> DeliveryClaim {
        DeliveryClaim(
            owner: owner, now: now, leaseUntil: now.addingTimeInterval(30), limit: limit, perWebhook: perWebhook,
            busy: busy)
    }

    @Test("deliveries: queued from events exactly once, due, attempts recorded, listed", arguments: StoreFactory.all)
    func deliveries(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            try await store.createWebhook(webhook("all", tenant: "t1"))
            try await store.createWebhook(webhook("done", tenant: "t1", events: ["batch.completed"], at: 1))
            try await store.createWebhook(webhook("other", tenant: "t2", at: 2))
            let batch = try await store.createBatch(NewBatch(type: "t", owner: "t1"), items: [])
            _ = try await store.createBatch(NewBatch(type: "t", owner: "t3"), items: [])
            let events = try await store.events(of: batch.id, afterID: 0, limit: 100)
            #expect(events.last?.type == .completed)
            let now = Date()
            // Several nodes queueing at once queue each delivery once.
            let queued = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<4 { group.addTask { try await store.queueDeliveries(limit: 2, now: now) } }
                return try await group.reduce(0, +)
            }
            let rest = try await store.queueDeliveries(limit: 1_000, now: now)
            #expect(queued + rest == events.count + 1)
            #expect(try await store.queueDeliveries(limit: 1_000, now: now) == 0)
            #expect(try await store.deliveries(webhookID: "other", limit: 10).isEmpty)
            let due = try await store.claimDeliveries(claim("n1", at: now))
            #expect(due.count == events.count + 1)
            #expect(due.allSatisfy { $0.0.status == "pending" && $0.0.attempts == 0 && $0.2.batchID == batch.id })
            let (completion, hook, event) = try #require(due.first { $0.1.id == "done" })
            #expect(event.type == .completed)
            #expect(hook.secret == "s-done")

            // A failed attempt waits for its next time (the others, leased
            // until now + 30 s, are due again after); a delivered one is done.
            let retryAt = now.addingTimeInterval(60)
            #expect(
                try await store.recordDelivery(
                    id: completion.id, owner: "n1", delivered: false, statusCode: 500,
                    error: "the receiver answered 500", nextAttemptAt: retryAt, now: now))
            #expect(try await store.claimDeliveries(claim("n2", at: now.addingTimeInterval(10))).isEmpty)
            #expect(try await store.claimDeliveries(claim("n2", at: retryAt)).count == events.count + 1)
            try await store.recordDelivery(
                id: completion.id, owner: "n2", delivered: true, statusCode: 204, error: nil, nextAttemptAt: nil,
                now: retryAt)
            let logged = try #require(try await store.deliveries(webhookID: "done", limit: 10).first)
            #expect(logged.status == "delivered")
            #expect(logged.attempts == 2)
            #expect(logged.lastStatusCode == 204)
            #expect(logged.deliveredAt?.milliseconds == retryAt.milliseconds)
            #expect(logged.lastAttemptAt?.milliseconds == retryAt.milliseconds)
            let listed = try await store.deliveries(webhookID: "all", limit: 100)
            #expect(listed.map(\.eventID) == events.map(\.id).reversed())
        }
    }

    @Test(
        "delivery claims: disjoint between claimers, turns between webhooks, again once the lease expired, fenced by the owner",
        arguments: StoreFactory.all)
    func deliveryClaims(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            try await store.createWebhook(webhook("a", tenant: "t1"))
            try await store.createWebhook(webhook("b", tenant: "t1", at: 1))
            for _ in 0..<3 { _ = try await store.createBatch(NewBatch(type: "t", owner: "t1"), items: []) }
            let now = Date(milliseconds: Date().milliseconds)
            let queued = try await store.queueDeliveries(limit: 1_000, now: now)
            #expect(queued >= 6)
            // One per webhook: the claim takes turns, and what is in flight counts against the cap.
            let fair = try await store.claimDeliveries(claim("fair", at: now, limit: 10, perWebhook: 1))
            #expect(fair.map(\.1.id).sorted() == ["a", "b"])
            let onlyB = try await store.claimDeliveries(
                claim("b-only", at: now, perWebhook: 2, busy: ["a": 2, "b": 1]))
            #expect(onlyB.map(\.1.id) == ["b"])
            let turns = try await store.claimDeliveries(
                claim("turns", at: now, limit: 2, perWebhook: 9, busy: ["b": 2]))
            #expect(turns.map(\.1.id) == ["a", "a"], "b's two in flight came first")
            // Claimers at once (on PostgreSQL, each on its own connection) get disjoint deliveries.
            let concurrent = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for node in 0..<6 {
                    group.addTask { try await store.claimDeliveries(claim("n\(node)", at: now, limit: 2)).map(\.0.id) }
                }
                return try await group.reduce(into: [Int64]()) { $0 += $1 }
            }
            let rest = try await store.claimDeliveries(claim("late", at: now)).map(\.0.id)
            let all = (fair + onlyB + turns).map(\.0.id) + concurrent + rest
            #expect(all.count == queued)
            #expect(Set(all).count == queued, "no delivery was claimed twice")
            // Leased until now + 30 s: nothing is due before, everything after.
            #expect(try await store.claimDeliveries(claim("early", at: now.addingTimeInterval(29))).isEmpty)
            let reclaimed = try await store.claimDeliveries(claim("rescuer", at: now.addingTimeInterval(31)))
            #expect(Set(reclaimed.map(\.0.id)) == Set(all))
            // The first owner's late result is refused; the rescuer's counts, once.
            let stale = try #require(fair.first).0
            #expect(
                try await store.recordDelivery(
                    id: stale.id, owner: "fair", delivered: false, statusCode: 500, error: "late", nextAttemptAt: now,
                    now: now.addingTimeInterval(40)) == false)
            let at = now.addingTimeInterval(41)
            #expect(
                try await store.recordDelivery(
                    id: stale.id, owner: "rescuer", delivered: true, statusCode: 204, error: nil, nextAttemptAt: nil,
                    now: at))
            #expect(
                try await store.recordDelivery(
                    id: stale.id, owner: "rescuer", delivered: false, statusCode: 500, error: "again",
                    nextAttemptAt: now, now: at) == false)
            let logged = try #require(
                try await store.deliveries(webhookID: stale.webhookID, limit: 100).first { $0.id == stale.id })
            #expect(logged.status == "delivered")
            #expect(logged.attempts == 1)
            #expect(logged.lastStatusCode == 204)
            // A recorded delivery is no longer due, even after its lease would have ended.
            let later = try await store.claimDeliveries(claim("later", at: now.addingTimeInterval(100)))
            #expect(later.count == queued - 1)
            #expect(!later.contains { $0.0.id == stale.id })
        }
    }

    @Test("deliveries that ended are pruned after the retention; pending ones stay", arguments: StoreFactory.all)
    func deliveryPruning(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            try await store.createWebhook(webhook("all", tenant: "t1"))
            let batch = try await store.createBatch(NewBatch(type: "t", owner: "t1"), items: [])
            let now = Date()
            let queued = try await store.queueDeliveries(limit: 1_000, now: now)
            #expect(queued >= 3)
            let due = try await store.claimDeliveries(claim("n1", at: now, limit: 2)).map(\.0)
            try #require(due.count == 2)
            try await store.recordDelivery(
                id: due[0].id, owner: "n1", delivered: true, statusCode: 200, error: nil, nextAttemptAt: nil, now: now)
            try await store.recordDelivery(
                id: due[1].id, owner: "n1", delivered: false, statusCode: 500, error: "down", nextAttemptAt: nil,
                now: now)
            // Within the retention nothing goes.
            #expect(try await store.pruneServerRecords(now: now, deliveriesEndedBefore: now, limit: 10) == 0)
            // After it, the delivered and the failed one go, a step at a time.
            let after = now.addingTimeInterval(1)
            #expect(try await store.pruneServerRecords(now: after, deliveriesEndedBefore: after, limit: 1) == 1)
            #expect(try await store.pruneServerRecords(now: after, deliveriesEndedBefore: after, limit: 10) == 1)
            #expect(try await store.pruneServerRecords(now: after, deliveriesEndedBefore: after, limit: 10) == 0)
            let left = try await store.deliveries(webhookID: "all", limit: 100)
            #expect(left.count == queued - 2)
            #expect(left.allSatisfy { $0.status == "pending" })
            // Pending deliveries whose event is gone (its batch deleted) can never go out: they go too.
            try await store.deleteBatch(batch.id)
            #expect(
                try await store.pruneServerRecords(now: after, deliveriesEndedBefore: now, limit: 100) == left.count)
            #expect(try await store.deliveries(webhookID: "all", limit: 100).isEmpty)
        }
    }

    struct Unexpected: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
