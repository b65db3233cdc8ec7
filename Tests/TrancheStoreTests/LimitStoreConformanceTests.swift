import Foundation
import Testing
import TrancheStore

/// Limits across nodes on every store: live settings, shared token buckets
/// and concurrency slots. Each case runs against SQLite and PostgreSQL.
@Suite("LimitStore conformance", .testResources)
struct LimitStoreConformanceTests {
    func withStore(_ factory: StoreFactory, _ body: (any LimitStore) async throws -> Void) async throws {
        try await body(try #require(try await factory.make() as? any LimitStore))
    }

    @Test(
        "settings: a live batch takes a new priority, concurrency and rate limit; fields not given stay",
        arguments: StoreFactory.all)
    func updateSettings(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            var batch = NewBatch(type: "t", owner: "t1", options: options(concurrency: 4))
            batch.options.rateLimit = RateLimit(rate: 5, maxConcurrent: 3)
            let created = try await store.createBatch(batch, items: payloads(3))
            let now = Date()
            var record = try await store.updateSettings(
                created.id, BatchSettingsChange(priority: 7, concurrency: 12, rate: .set(2.5)), at: now)
            #expect(record.priority == 7)
            #expect(record.options.concurrency == 12)
            #expect(record.options.rateLimit == RateLimit(rate: 2.5, maxConcurrent: 3))
            #expect(try await store.batch(created.id) == record)
            record = try await store.updateSettings(created.id, BatchSettingsChange(maxConcurrent: .remove), at: now)
            #expect(record.options.rateLimit == RateLimit(rate: 2.5))
            #expect(record.priority == 7)
            record = try await store.updateSettings(created.id, BatchSettingsChange(rate: .remove), at: now)
            #expect(record.options.rateLimit == nil)
            // Out of the bounds a submit has: refused, nothing written.
            await #expect(throws: OptionsError.self) {
                try await store.updateSettings(created.id, BatchSettingsChange(concurrency: 0), at: now)
            }
            #expect(try await store.batch(created.id)?.options.concurrency == 12)
            _ = try await store.transition(created.id, .cancel, reason: nil, at: now)
            await #expect {
                try await store.updateSettings(created.id, BatchSettingsChange(priority: 1), at: now)
            } throws: { error in
                (error as? StoreError)?.code == .illegalTransition
            }
            await #expect {
                try await store.updateSettings(.generate(), BatchSettingsChange(priority: 1), at: now)
            } throws: { error in
                (error as? StoreError)?.code == .batchNotFound
            }
        }
    }

    @Test(
        "token bucket: grants never exceed the rate's refill plus one token, and say how long to wait",
        arguments: StoreFactory.all)
    func drawTokens(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            let start = Date(milliseconds: 1_000_000)
            // A new bucket holds one token.
            var grant = try await store.drawTokens(key: "k", rate: 10, burst: 10, want: 5, now: start)
            #expect(grant.tokens == 1)
            grant = try await store.drawTokens(key: "k", rate: 10, burst: 10, want: 5, now: start)
            #expect(grant.tokens == 0)
            #expect(grant.wait > 0.05 && grant.wait <= 0.1)
            // 0.35 s later: three whole tokens have come back.
            grant = try await store.drawTokens(
                key: "k", rate: 10, burst: 10, want: 5, now: start.addingTimeInterval(0.35))
            #expect(grant.tokens == 3)
            // An hour later the bucket is full at its burst, no more.
            grant = try await store.drawTokens(
                key: "k", rate: 10, burst: 10, want: 50, now: start.addingTimeInterval(3600))
            #expect(grant.tokens == 10)
            // A clock behind the last draw (another node's) adds nothing.
            grant = try await store.drawTokens(key: "k", rate: 10, burst: 10, want: 50, now: start)
            #expect(grant.tokens == 0)
            // Keys are separate.
            #expect(try await store.drawTokens(key: "other", rate: 10, burst: 10, want: 5, now: start).tokens == 1)
        }
    }

    @Test("token bucket: nodes drawing at once share one rate", arguments: StoreFactory.all)
    func concurrentDraws(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            let now = Date(milliseconds: 2_000_000)
            _ = try await store.drawTokens(key: "shared", rate: 20, burst: 20, want: 1, now: now)
            let later = now.addingTimeInterval(10)
            // 40 draws of up to 2 at once: the refilled bucket (20 at its burst) is split, never doubled.
            let total = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<40 {
                    group.addTask {
                        try await store.drawTokens(key: "shared", rate: 20, burst: 20, want: 2, now: later).tokens
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(total == 20)
        }
    }

    @Test(
        "slots: the cap holds across nodes, a release frees one, an expired node's slots come back",
        arguments: StoreFactory.all)
    func slots(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            let now = Date(milliseconds: 3_000_000)
            let until = now.addingTimeInterval(30)
            #expect(
                try await store.acquireSlots(key: "b", node: "n1", limit: 3, want: 2, expiresAt: until, now: now) == 2)
            #expect(
                try await store.acquireSlots(key: "b", node: "n2", limit: 3, want: 2, expiresAt: until, now: now) == 1)
            #expect(
                try await store.acquireSlots(key: "b", node: "n2", limit: 3, want: 1, expiresAt: until, now: now) == 0)
            try await store.releaseSlots(key: "b", node: "n1", count: 1)
            #expect(
                try await store.acquireSlots(key: "b", node: "n2", limit: 3, want: 1, expiresAt: until, now: now) == 1)
            // Another key is not counted.
            #expect(
                try await store.acquireSlots(key: "c", node: "n1", limit: 1, want: 1, expiresAt: until, now: now) == 1)
            // n2 renews; n1 does not and its slot expires.
            let later = now.addingTimeInterval(60)
            try await store.renewSlots(node: "n2", expiresAt: later.addingTimeInterval(30))
            #expect(
                try await store.acquireSlots(
                    key: "b", node: "n3", limit: 3, want: 3, expiresAt: later.addingTimeInterval(30), now: later) == 1)
        }
    }

    @Test(
        "the paces of several keys in one read: each as stored, none for a key without one",
        arguments: StoreFactory.all)
    func pacesOfSeveralKeys(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            let now = Date(milliseconds: 5_000_000)
            #expect(try await store.paces(keys: []).isEmpty)
            let keys = [LimitKey.host("a"), LimitKey.host("b"), LimitKey.host("none")]
            for (index, key) in keys.prefix(2).enumerated() {
                _ = try await store.mergePace(
                    PaceChange(key: key, kind: .keep(rate: Double(index + 2)), reason: "start", known: nil),
                    throttledDelta: Int64(index), now: now)
            }
            let paces = try await store.paces(keys: keys + [keys[0]])
            #expect(Set(paces.keys) == Set(keys.prefix(2)))
            for key in keys.prefix(2) {
                #expect(paces[key] == (try await store.pace(key: key)))
            }
            #expect(paces[keys[0]]?.rate == 2 && paces[keys[1]]?.rate == 3)
            #expect(paces[keys[1]]?.throttled == 1)
        }
    }

    @Test("a batch's buckets, slots and pace go with the batch; other keys stay", arguments: StoreFactory.all)
    func deletedWithTheBatch(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            let now = Date(milliseconds: 4_000_000)
            let created = try await store.createBatch(NewBatch(type: "t", owner: "t1"), items: payloads(1))
            let other = try await store.createBatch(NewBatch(type: "t", owner: "t1"), items: payloads(1))
            for id in [created.id, other.id] {
                let key = LimitKey.batch(id)
                _ = try await store.drawTokens(key: key, rate: 10, burst: 10, want: 1, now: now)
                _ = try await store.acquireSlots(
                    key: key, node: "n1", limit: 2, want: 1, expiresAt: now.addingTimeInterval(30), now: now)
                _ = try await store.mergePace(
                    PaceChange(key: key, kind: .keep(rate: 5), reason: "start", known: nil), throttledDelta: 1, now: now
                )
            }
            _ = try await store.mergePace(
                PaceChange(key: LimitKey.host("h"), kind: .keep(rate: 5), reason: "start", known: nil),
                throttledDelta: 1, now: now)
            _ = try await store.transition(created.id, .cancel, reason: nil, at: now)
            try await store.deleteBatch(created.id)
            #expect(try await store.pace(key: LimitKey.batch(created.id)) == nil)
            #expect(try await store.pace(key: LimitKey.batch(other.id)) != nil)
            #expect(try await store.pace(key: LimitKey.host("h")) != nil)
            // The deleted batch's bucket starts afresh (one token) and its slot is free again.
            let grant = try await store.drawTokens(
                key: LimitKey.batch(created.id), rate: 10, burst: 10, want: 5, now: now)
            #expect(grant.tokens == 1)
            #expect(
                try await store.acquireSlots(
                    key: LimitKey.batch(created.id), node: "n2", limit: 1, want: 1,
                    expiresAt: now.addingTimeInterval(30), now: now) == 1)
            #expect(
                try await store.acquireSlots(
                    key: LimitKey.batch(other.id), node: "n2", limit: 1, want: 1,
                    expiresAt: now.addingTimeInterval(30), now: now) == 0)
        }
    }

    @Test(
        "the cluster's pace: two nodes cutting at once cut once, growth steps once per interval, first cuts add shares",
        arguments: StoreFactory.all)
    func clusterPace(factory: StoreFactory) async throws {
        try await withStore(factory) { store in
            let t0 = Date(milliseconds: 5_000_000)
            func at(_ seconds: Double) -> Date { t0.addingTimeInterval(seconds) }
            let key = LimitKey.host("api.example")
            // Node a's slow start reached 20/s; both nodes read that row.
            let seen = try await store.mergePace(
                PaceChange(key: key, kind: .grow(from: 10, to: 20, interval: 0.1), reason: "starting", known: nil),
                throttledDelta: 0, now: t0)
            #expect(seen.rate == 20 && seen.cutAt == nil)
            // Refusals on both nodes at once: each proposes a cut of the rate it knew.
            let cut = PaceChange(
                key: key, kind: .cut(factor: 0.5, from: 20, measured: false), reason: "refused",
                known: seen.changedAt)
            async let first = store.mergePace(cut, throttledDelta: 2, now: at(1))
            async let second = store.mergePace(cut, throttledDelta: 3, now: at(1.01))
            let answers = try await [first, second]
            var row = try #require(try await store.pace(key: key))
            #expect(row.rate == 10, "cut once: \(answers.map(\.rate))")
            #expect(row.throttled == 5)
            #expect(answers.allSatisfy { $0.rate == 10 })
            // A node that knows of that cut and is refused again cuts again.
            let known = try #require(answers.map(\.changedAt).max())
            row = try await store.mergePace(
                PaceChange(
                    key: key, kind: .cut(factor: 0.5, from: 10, measured: false), reason: "refused", known: known),
                throttledDelta: 1, now: at(3))
            #expect(row.rate == 5)
            // Growth: one step per interval across the nodes.
            let grow = { (known: Date?) in
                PaceChange(key: key, kind: .grow(from: 5, to: 6, interval: 0.25), reason: "succeeding", known: known)
            }
            row = try await store.mergePace(grow(row.changedAt), throttledDelta: 0, now: at(3.3))
            #expect(row.rate == 6)
            let stale = try await store.mergePace(grow(known), throttledDelta: 0, now: at(3.35))
            #expect(stale.rate == 6, "a step taken on an older pace is not applied")
            let early = try await store.mergePace(grow(row.changedAt), throttledDelta: 0, now: at(3.42))
            #expect(early.rate == 6, "a second step within the interval is not applied")
            row = try await store.mergePace(grow(row.changedAt), throttledDelta: 0, now: at(3.6))
            #expect(row.rate == 7)
            // A Retry-After pause: the latest end wins; the rate stays within its bounds.
            row = try await store.mergePace(
                PaceChange(
                    key: key, kind: .cut(factor: 0.7, from: 1e300, measured: false), reason: "retry_after",
                    known: row.changedAt, pausedUntil: at(10), bounds: 0.1...50),
                throttledDelta: 1, now: at(5))
            #expect(row.pausedUntil == at(10))
            #expect(abs(row.rate - 4.9) < 1e-9)
            row = try await store.mergePace(
                PaceChange(key: key, kind: .keep(rate: 1), reason: "refused", known: nil, pausedUntil: at(8)),
                throttledDelta: 0, now: at(5.5))
            #expect(row.pausedUntil == at(10) && abs(row.rate - 4.9) < 1e-9)

            // A first cut out of a slow start counts what each node saw answered.
            let fresh = LimitKey.host("other.example")
            let share = { (from: Double) in
                PaceChange(
                    key: fresh, kind: .cut(factor: 0.5, from: from, measured: true), reason: "refused", known: nil)
            }
            row = try await store.mergePace(share(12), throttledDelta: 1, now: at(20))
            #expect(row.rate == 6 && row.estimated)
            row = try await store.mergePace(share(8), throttledDelta: 0, now: at(21))
            #expect(row.rate == 10, "node b's share added")
            row = try await store.mergePace(share(8), throttledDelta: 0, now: at(30))
            #expect(row.rate == 10, "past the window a measured cut is the same refusals again")
        }
    }
}
