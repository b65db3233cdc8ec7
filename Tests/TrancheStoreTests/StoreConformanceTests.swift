import Foundation
import Testing
import TrancheStore

/// The conformance suite: every case runs against every store.
@Suite("BatchStore conformance", .testResources)
struct StoreConformanceTests {
    @Test("bulk insert stores every item and chunk, counted", arguments: StoreFactory.all)
    func bulkInsert(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 7)), items: payloads(50))
        #expect(batch.counts.total == 50)
        #expect(batch.status == .confirmed)
        #expect(batch.sealed)
        let items = try await store.items(of: batch.id, status: nil, afterSeq: nil, limit: 100)
        #expect(items.map(\.seq) == Array(0..<50))
        #expect(items.allSatisfy { $0.status == .pending && $0.attempts == 0 })
        #expect(items[42].payload?.text == "{\"n\":42}")
        let chunks = try await store.drainAll()
        #expect(chunks == 8)  // 7 × 7 + 1
        let done = try #require(try await store.batch(batch.id))
        #expect(done.status == .completed)
        #expect(done.counts.succeeded == 50)
        #expect(done.counts.running == 0)
        #expect(done.completedAt != nil && done.expiresAt != nil)
    }

    @Test("an empty sealed batch completes at once", arguments: StoreFactory.all)
    func emptyBatch(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(NewBatch(type: "t"), items: [])
        #expect(batch.status == .completed)
    }

    @Test("rejected items are stored as skipped with their error", arguments: StoreFactory.all)
    func rejectedItems(factory: StoreFactory) async throws {
        let store = try await factory.make()
        var items = payloads(3)
        items[1].rejection = .permanent("invalid_json", "line 2: bad")
        let batch = try await store.createBatch(NewBatch(type: "t"), items: items)
        #expect(batch.counts.skipped == 1)
        let skipped = try await store.items(of: batch.id, status: .skipped, afterSeq: nil, limit: 10)
        #expect(skipped.map(\.seq) == [1])
        #expect(skipped.first?.error?.code == "invalid_json")
        _ = try await store.drainAll()
        let done = try #require(try await store.batch(batch.id))
        #expect(done.status == .completed)
        #expect(done.counts.succeeded == 2)
    }

    @Test("appends are idempotent by start seq and refuse gaps", arguments: StoreFactory.all)
    func appendIdempotent(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(NewBatch(type: "t", options: options(), sealed: false), items: [])
        #expect(batch.status == .confirmed)
        #expect(!batch.sealed)
        var result = try await store.appendItems(
            to: batch.id, startSeq: 0, items: payloads(20), cursor: nil, at: Date())
        #expect(result == AppendResult(inserted: 20, total: 20))
        // The same append again, and one overlapping it: nothing is stored twice.
        result = try await store.appendItems(to: batch.id, startSeq: 0, items: payloads(20), cursor: nil, at: Date())
        #expect(result == AppendResult(inserted: 0, total: 20))
        result = try await store.appendItems(
            to: batch.id, startSeq: 15, items: payloads(10, from: 15), cursor: JSONText(unchecked: "{\"at\":25}"),
            at: Date())
        #expect(result == AppendResult(inserted: 5, total: 25))
        await #expect(throws: StoreError.self) {
            try await store.appendItems(to: batch.id, startSeq: 30, items: payloads(1), cursor: nil, at: Date())
        }
        let record = try #require(try await store.batch(batch.id))
        #expect(record.counts.total == 25)
        #expect(record.cursor?.text == "{\"at\":25}")
        // Items of an open batch run before it is sealed, but it cannot complete.
        _ = try await store.drainAll()
        #expect(try await store.batch(batch.id)?.status == .processing)
        let sealed = try await store.seal(batch.id, at: Date())
        #expect(sealed.status == .completed)
        await #expect(throws: StoreError.self) {
            try await store.appendItems(to: batch.id, startSeq: 25, items: payloads(1), cursor: nil, at: Date())
        }
    }

    @Test("a claim leases one chunk with a growing token and marks the batch processing", arguments: StoreFactory.all)
    func claim(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 10)), items: payloads(30))
        let first = try #require(try await store.claimChunk(owner: "a", leaseDuration: 30, now: Date()))
        let second = try #require(try await store.claimChunk(owner: "b", leaseDuration: 30, now: Date()))
        #expect(first.firstSeq == 0 && first.lastSeq == 9)
        #expect(second.firstSeq == 10)
        #expect(second.token > first.token)
        #expect(first.items.count == 10)
        let record = try #require(try await store.batch(batch.id))
        #expect(record.status == .processing)
        #expect(record.startedAt != nil)
        #expect(record.counts.running == 20)
        #expect(record.counts.pending == 10)
    }

    @Test("a batch's chunks in flight are capped by its concurrency", arguments: StoreFactory.all)
    func chunkCap(factory: StoreFactory) async throws {
        let store = try await factory.make()
        // concurrency 10 with chunks of 10: one chunk working, one prefetched.
        _ = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 10, concurrency: 10)), items: payloads(100))
        var leases: [ChunkLease] = []
        while let lease = try await store.claimChunk(owner: "a", leaseDuration: 30, now: Date()) {
            leases.append(lease)
        }
        #expect(leases.count == 2)
    }

    @Test("higher priority runs first, then batches share fairly", arguments: StoreFactory.all)
    func priorityAndFairness(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let many = options(chunkSize: 1, concurrency: 100)
        let low = try await store.createBatch(NewBatch(type: "t", options: many, priority: 0), items: payloads(6))
        let other = try await store.createBatch(NewBatch(type: "t", options: many, priority: 0), items: payloads(6))
        let high = try await store.createBatch(NewBatch(type: "t", options: many, priority: 5), items: payloads(2))
        var order: [BatchID] = []
        while let lease = try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()) {
            order.append(lease.batchID)
            _ = try await store.checkpoint(
                lease, outcomes: succeeded(lease), finish: true, failBatch: nil, leaseDuration: 30, now: Date())
        }
        #expect(Array(order.prefix(2)) == [high.id, high.id])
        // The two equal batches alternate instead of one running to its end first.
        let rest = Array(order.dropFirst(2))
        #expect(rest.count == 12)
        for (index, id) in rest.enumerated() {
            #expect(id == (index % 2 == 0 ? low.id : other.id))
        }
    }

    @Test("writes with a stale lease token are refused", arguments: StoreFactory.all)
    func fencing(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(NewBatch(type: "t", options: options(chunkSize: 5)), items: payloads(5))
        let start = Date()
        let stale = try #require(try await store.claimChunk(owner: "old", leaseDuration: 1, now: start))
        // The lease expires and the chunk is rescued and leased by another worker.
        let later = start.addingTimeInterval(5)
        let rescued = try await store.rescueExpiredLeases(now: later, splitAfter: 10)
        #expect(rescued.count == 1)
        #expect(rescued.first?.unfinished == 5)
        let fresh = try #require(try await store.claimChunk(owner: "new", leaseDuration: 30, now: later))
        #expect(fresh.chunkID == stale.chunkID)
        #expect(fresh.token > stale.token)
        // The old holder wakes up: its heartbeat and its results are refused.
        await #expect(throws: StoreError.self) {
            try await store.checkpoint(
                stale, outcomes: [], finish: false, failBatch: nil, leaseDuration: 30, now: later)
        }
        do {
            _ = try await store.checkpoint(
                stale, outcomes: succeeded(stale), finish: true, failBatch: nil, leaseDuration: 30, now: later)
            Issue.record("a stale holder wrote its results")
        } catch let error as StoreError {
            #expect(error.code == .leaseLost)
        }
        let items = try await store.items(of: batch.id, status: .succeeded, afterSeq: nil, limit: 10)
        #expect(items.isEmpty)
        _ = try await store.checkpoint(
            fresh, outcomes: succeeded(fresh), finish: true, failBatch: nil, leaseDuration: 30, now: later)
        let record = try #require(try await store.batch(batch.id))
        #expect(record.status == .completed)
        #expect(record.counts.succeeded == 5)
        #expect(record.counts.rescued == 5)
    }

    @Test("a rescued chunk runs only its unfinished items again", arguments: StoreFactory.all)
    func rescueKeepsCheckpoints(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 10)), items: payloads(10))
        let now = Date()
        let lease = try #require(try await store.claimChunk(owner: "a", leaseDuration: 1, now: now))
        // Four items were checkpointed before the worker died.
        _ = try await store.checkpoint(
            lease, outcomes: Array(succeeded(lease).prefix(4)), finish: false, failBatch: nil, leaseDuration: 1,
            now: now)
        let rescued = try await store.rescueExpiredLeases(now: now.addingTimeInterval(10), splitAfter: 10)
        #expect(rescued.first?.unfinished == 6)
        let again = try #require(
            try await store.claimChunk(owner: "b", leaseDuration: 30, now: now.addingTimeInterval(10)))
        #expect(again.items.map(\.seq) == Array(4..<10))
        let record = try #require(try await store.batch(batch.id))
        #expect(record.counts.rescued == 6)
        #expect(record.counts.succeeded == 4)
    }

    @Test("a chunk that keeps killing its worker is split until the poison item is dead", arguments: StoreFactory.all)
    func poisonSplit(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(NewBatch(type: "t", options: options(chunkSize: 8)), items: payloads(8))
        let poison: Int64 = 5
        var now = Date()
        var crashes = 0
        while let lease = try await store.claimChunk(owner: "w", leaseDuration: 1, now: now) {
            if lease.items.contains(where: { $0.seq == poison }) {
                // The worker dies: nothing is written, the lease expires.
                crashes += 1
                now = now.addingTimeInterval(5)
                _ = try await store.rescueExpiredLeases(now: now, splitAfter: 2)
            } else {
                _ = try await store.checkpoint(
                    lease, outcomes: succeeded(lease), finish: true, failBatch: nil, leaseDuration: 1, now: now)
            }
            #expect(crashes < 20)
            if crashes >= 20 { break }
        }
        let record = try #require(try await store.batch(batch.id))
        #expect(record.status == .completed)
        #expect(record.counts.succeeded == 7)
        #expect(record.counts.dead == 1)
        let dead = try await store.items(of: batch.id, status: .dead, afterSeq: nil, limit: 10)
        #expect(dead.map(\.seq) == [poison])
        #expect(dead.first?.error?.code == "worker_lost")
        let events = try await store.events(of: batch.id, afterID: 0, limit: 100)
        #expect(events.contains { $0.type == .itemDead })
    }

    @Test("a checkpoint writes each outcome exactly, whatever their order and mix", arguments: StoreFactory.all)
    func mixedOutcomes(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 10)), items: payloads(10))
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        var outcomes = succeeded(lease).filter { $0.seq != 8 }
        outcomes[4].output = JSONText(unchecked: #"{"id":4}"#)
        outcomes[7].status = .skipped
        outcomes[7].error = .permanent("bad", "seven is bad")
        _ = try await store.checkpoint(
            lease, outcomes: outcomes.shuffled(), finish: true, failBatch: nil, leaseDuration: 30, now: Date())
        let items = try await store.items(of: batch.id, status: nil, afterSeq: nil, limit: 10)
        #expect(
            items.map(\.status) == [
                .succeeded, .succeeded, .succeeded, .succeeded, .succeeded, .succeeded, .succeeded, .skipped, .pending,
                .succeeded,
            ])
        #expect(items[4].output?.text == #"{"id":4}"#)
        #expect(items[3].output == nil && items[5].output == nil)
        #expect(items[7].error == .permanent("bad", "seven is bad"))
        #expect(items.filter { $0.status != .pending }.allSatisfy { $0.attempts == 1 })
        #expect(items[8].attempts == 0)
        let record = try #require(try await store.batch(batch.id))
        #expect(record.counts.succeeded == 8 && record.counts.skipped == 1 && record.counts.pending == 1)
        #expect(record.status == .processing)
    }

    @Test("failed items wait for their retry time and then run alone", arguments: StoreFactory.all)
    func retryDue(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(NewBatch(type: "t", options: options(chunkSize: 4)), items: payloads(4))
        let now = Date()
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: now))
        var outcomes = succeeded(lease)
        outcomes[2] = ItemOutcome(
            seq: 2, previousStatus: .pending, attempt: 1, status: .failed,
            error: .retryable("http_503", "unavailable"), nextAttemptAt: now.addingTimeInterval(60))
        _ = try await store.checkpoint(
            lease, outcomes: outcomes, finish: true, failBatch: nil, leaseDuration: 30, now: now)
        var record = try #require(try await store.batch(batch.id))
        #expect(record.counts.failed == 1)
        #expect(record.status == .processing)
        #expect(try await store.claimChunk(owner: "w", leaseDuration: 30, now: now.addingTimeInterval(30)) == nil)
        let due = try #require(try await store.nextDueTime())
        #expect(abs(due.timeIntervalSince(now.addingTimeInterval(60))) < 0.01)
        let retry = try #require(
            try await store.claimChunk(owner: "w", leaseDuration: 30, now: now.addingTimeInterval(61)))
        #expect(retry.items.map(\.seq) == [2])
        #expect(retry.items.first?.attempts == 1)
        #expect(retry.items.first?.status == .failed)
        _ = try await store.checkpoint(
            retry, outcomes: succeeded(retry), finish: true, failBatch: nil, leaseDuration: 30,
            now: now.addingTimeInterval(61))
        record = try #require(try await store.batch(batch.id))
        #expect(record.status == .completed)
        #expect(record.counts.failed == 0)
        #expect(record.counts.succeeded == 4)
        #expect(record.counts.retried == 1)
    }

    @Test("pause stops leasing; resume goes on", arguments: StoreFactory.all)
    func pauseResume(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 5)), items: payloads(10))
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        let paused = try await store.transition(batch.id, .pause, reason: nil, at: Date())
        #expect(paused.status == .paused)
        #expect(paused.pausedFrom == .processing)
        #expect(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()) == nil)
        // The chunk in flight still finishes.
        _ = try await store.checkpoint(
            lease, outcomes: succeeded(lease), finish: true, failBatch: nil, leaseDuration: 30, now: Date())
        #expect(try await store.batch(batch.id)?.counts.succeeded == 5)
        let resumed = try await store.transition(batch.id, .resume, reason: nil, at: Date())
        #expect(resumed.status == .processing)
        _ = try await store.drainAll()
        #expect(try await store.batch(batch.id)?.status == .completed)
        await #expect(throws: IllegalTransition.self) {
            try await store.transition(batch.id, .resume, reason: nil, at: Date())
        }
    }

    @Test("cancel cancels what is not in flight; the chunk in flight finishes", arguments: StoreFactory.all)
    func cancel(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 5)), items: payloads(20))
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        let canceled = try await store.transition(batch.id, .cancel, reason: nil, at: Date())
        #expect(canceled.status == .canceled)
        #expect(canceled.counts.canceled == 15)
        var outcomes = succeeded(lease)
        outcomes[4] = ItemOutcome(
            seq: 4, previousStatus: .pending, attempt: 1, status: .failed, error: .retryable("x", "y"),
            nextAttemptAt: Date())
        let result = try await store.checkpoint(
            lease, outcomes: outcomes, finish: true, failBatch: nil, leaseDuration: 30, now: Date())
        #expect(result.batchStatus == .canceled)
        let record = try #require(try await store.batch(batch.id))
        // The counters of an ended batch never move: what finishes after the
        // cancel is recorded as canceled, not succeeded.
        #expect(record.counts.succeeded == 0)
        #expect(record.counts.canceled == 20)
        #expect(record.counts.failed == 0)
        #expect(record.counts.running == 0)
        await #expect(throws: IllegalTransition.self) {
            try await store.transition(batch.id, .confirm, reason: nil, at: Date())
        }
    }

    @Test("retry runs failed, skipped and dead items of an ended batch again", arguments: StoreFactory.all)
    func retryEnded(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(NewBatch(type: "t", options: options(chunkSize: 4)), items: payloads(4))
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        var outcomes = succeeded(lease)
        outcomes[1].status = .skipped
        outcomes[1].error = .permanent("bad", "bad item")
        outcomes[3].status = .dead
        outcomes[3].error = .retryable("http_503", "gone")
        _ = try await store.checkpoint(
            lease, outcomes: outcomes, finish: true, failBatch: nil, leaseDuration: 30, now: Date())
        #expect(try await store.batch(batch.id)?.status == .completed)
        let (record, count) = try await store.retry(batch.id, statuses: [.skipped, .dead], at: Date())
        #expect(count == 2)
        #expect(record.status == .confirmed)
        #expect(record.completedAt == nil)
        #expect(record.counts.skipped == 0 && record.counts.dead == 0)
        let again = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        #expect(again.items.map(\.seq) == [1, 3])
        #expect(again.items.allSatisfy { $0.attempts == 0 })
        _ = try await store.checkpoint(
            again, outcomes: succeeded(again), finish: true, failBatch: nil, leaseDuration: 30, now: Date())
        let done = try #require(try await store.batch(batch.id))
        #expect(done.status == .completed)
        #expect(done.counts.succeeded == 4)
    }

    @Test("the failure policy fails the batch and cancels the rest", arguments: StoreFactory.all)
    func failurePolicy(factory: StoreFactory) async throws {
        let store = try await factory.make()
        var opts = options(chunkSize: 2)
        opts.failurePolicy = .stopOnFirstError
        let batch = try await store.createBatch(NewBatch(type: "t", options: opts), items: payloads(10))
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        var outcomes = succeeded(lease)
        outcomes[1].status = .skipped
        outcomes[1].error = .permanent("bad", "bad")
        let result = try await store.checkpoint(
            lease, outcomes: outcomes, finish: true, failBatch: nil, leaseDuration: 30, now: Date())
        #expect(result.batchStatus == .failed)
        let record = try #require(try await store.batch(batch.id))
        #expect(record.failureReason?.contains("stop_on_first_error") == true)
        #expect(record.counts.canceled == 8)
    }

    @Test("a fatal error fails the batch with its reason", arguments: StoreFactory.all)
    func fatal(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(NewBatch(type: "t", options: options(chunkSize: 2)), items: payloads(6))
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        let result = try await store.checkpoint(
            lease, outcomes: [], finish: true, failBatch: "fatal error on item 0: http_401: no", leaseDuration: 30,
            now: Date())
        #expect(result.batchStatus == .failed)
        let record = try #require(try await store.batch(batch.id))
        #expect(record.failureReason == "fatal error on item 0: http_401: no")
        #expect(record.counts.canceled == 6)
    }

    @Test("confirmation: a batch waits in pre_processed until confirmed", arguments: StoreFactory.all)
    func confirmation(factory: StoreFactory) async throws {
        let store = try await factory.make()
        var opts = options()
        opts.requireConfirmation = true
        let batch = try await store.createBatch(NewBatch(type: "t", options: opts), items: payloads(3))
        #expect(batch.status == .preProcessed)
        #expect(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()) == nil)
        let confirmed = try await store.transition(batch.id, .confirm, reason: nil, at: Date())
        #expect(confirmed.status == .confirmed)
        #expect(confirmed.confirmedAt != nil)
        _ = try await store.drainAll()
        #expect(try await store.batch(batch.id)?.status == .completed)
        let types = try await store.events(of: batch.id, afterID: 0, limit: 100).map(\.type)
        #expect(
            types == [.created, .sealed, .preProcessed, .confirmed, .processing, .completed])
    }

    @Test("the batch timeout fails a batch that runs too long", arguments: StoreFactory.all)
    func batchTimeout(factory: StoreFactory) async throws {
        let store = try await factory.make()
        var opts = options()
        opts.batchTimeout = 60
        let batch = try await store.createBatch(NewBatch(type: "t", options: opts), items: payloads(3))
        _ = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        #expect(try await store.enforceDeadlines(now: Date()).isEmpty)
        let events = try await store.enforceDeadlines(now: Date().addingTimeInterval(120))
        #expect(events.map(\.type) == [.failed])
        let record = try #require(try await store.batch(batch.id))
        #expect(record.status == .failed)
        #expect(record.failureReason?.hasPrefix("batch_timeout") == true)
    }

    @Test("errors are grouped by code with samples", arguments: StoreFactory.all)
    func errorGroups(factory: StoreFactory) async throws {
        let store = try await factory.make()
        var items = payloads(6)
        for index in [1, 3, 5] { items[index].rejection = .permanent("invalid_json", "line \(index + 1): bad") }
        items[2].rejection = .permanent("too_big", "too big")
        let batch = try await store.createBatch(NewBatch(type: "t"), items: items)
        let groups = try await store.errorGroups(of: batch.id, samples: 2)
        #expect(groups.map(\.code) == ["invalid_json", "too_big"])
        #expect(groups.first?.count == 3)
        #expect(groups.first?.samples.map(\.seq) == [1, 3])
    }

    @Test("listing pages newest first and filters", arguments: StoreFactory.all)
    func listing(factory: StoreFactory) async throws {
        let store = try await factory.make()
        var ids: [BatchID] = []
        for index in 0..<5 {
            let batch = try await store.createBatch(
                NewBatch(id: .generate(at: Date().addingTimeInterval(Double(index))), type: index % 2 == 0 ? "a" : "b"),
                items: payloads(1))
            ids.append(batch.id)
        }
        let page = try await store.batches(BatchQuery(limit: 2))
        #expect(page.map(\.id) == [ids[4], ids[3]])
        let next = try await store.batches(BatchQuery(before: page.last?.id, limit: 2))
        #expect(next.map(\.id) == [ids[2], ids[1]])
        let onlyA = try await store.batches(BatchQuery(type: "a", limit: 10))
        #expect(onlyA.count == 3)
    }

    @Test("pruning removes items of expired batches, keeping the summary", arguments: StoreFactory.all)
    func prune(factory: StoreFactory) async throws {
        let store = try await factory.make()
        var opts = options()
        // Long enough that a slow machine still prunes nothing "now".
        opts.ttl = 3_600
        let batch = try await store.createBatch(NewBatch(type: "t", options: opts), items: payloads(30))
        _ = try await store.drainAll()
        #expect(try await store.prune(now: Date(), retention: 86_400, limit: 100) == 0)
        var rounds = 0
        while try await store.prune(now: Date().addingTimeInterval(7_200), retention: 86_400, limit: 7) > 0 {
            rounds += 1
        }
        #expect(rounds >= 4)
        #expect(try await store.items(of: batch.id, status: nil, afterSeq: nil, limit: 100).isEmpty)
        let record = try #require(try await store.batch(batch.id))
        #expect(record.counts.succeeded == 30)
        #expect(!(try await store.events(of: batch.id, afterID: 0, limit: 10)).isEmpty)
    }

    @Test("concurrent claimers never lease the same chunk and every item runs once", arguments: StoreFactory.all)
    func concurrentClaims(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 5, concurrency: 40)), items: payloads(600))
        let leases = try await withThrowingTaskGroup(of: [ChunkLease].self) { group in
            for worker in 0..<6 {
                group.addTask {
                    var mine: [ChunkLease] = []
                    while true {
                        guard
                            let lease = try await store.claimChunk(owner: "w\(worker)", leaseDuration: 30, now: Date())
                        else {
                            let record = try await store.batch(batch.id)
                            if record?.status.isEnded ?? true { return mine }
                            try await Task.sleep(for: .milliseconds(2))
                            continue
                        }
                        mine.append(lease)
                        _ = try await store.checkpoint(
                            lease, outcomes: succeeded(lease), finish: true, failBatch: nil, leaseDuration: 30,
                            now: Date())
                    }
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(Set(leases.map(\.chunkID)).count == leases.count)
        #expect(leases.count == 120)
        #expect(leases.reduce(0) { $0 + $1.items.count } == 600)
        let record = try #require(try await store.batch(batch.id))
        #expect(record.status == .completed)
        #expect(record.counts.succeeded == 600)
        #expect(record.counts.running == 0)
        let items = try await store.items(of: batch.id, status: nil, afterSeq: nil, limit: 1000)
        #expect(items.allSatisfy { $0.attempts == 1 && $0.status == .succeeded })
    }

    @Test("one node leads at a time; a silent leader is replaced after its term", arguments: StoreFactory.all)
    func leadership(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let now = Date()
        #expect(try await store.acquireLeadership(node: "a", for: 5, now: now))
        #expect(!(try await store.acquireLeadership(node: "b", for: 5, now: now.addingTimeInterval(1))))
        // The leader renews its term.
        #expect(try await store.acquireLeadership(node: "a", for: 5, now: now.addingTimeInterval(4)))
        #expect(!(try await store.acquireLeadership(node: "b", for: 5, now: now.addingTimeInterval(8))))
        // Silent past its term: replaced.
        #expect(try await store.acquireLeadership(node: "b", for: 5, now: now.addingTimeInterval(10)))
        #expect(!(try await store.acquireLeadership(node: "a", for: 5, now: now.addingTimeInterval(11))))
        // Resigning hands over at once; resigning what one does not hold changes nothing.
        try await store.resignLeadership(node: "a")
        #expect(!(try await store.acquireLeadership(node: "a", for: 5, now: now.addingTimeInterval(11))))
        try await store.resignLeadership(node: "b")
        #expect(try await store.acquireLeadership(node: "a", for: 5, now: now.addingTimeInterval(11)))
    }

    @Test("heartbeats list live nodes with the chunks they hold", arguments: StoreFactory.all)
    func nodes(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let now = Date()
        for (id, age) in [("a", 0.0), ("b", 1.0), ("gone", 60.0)] {
            try await store.recordHeartbeat(
                NodeRecord(
                    id: id, role: "worker", host: "h", pid: 7, workers: 4, startedAt: now.addingTimeInterval(-100),
                    heartbeatAt: now.addingTimeInterval(-age)))
        }
        _ = try await store.createBatch(NewBatch(type: "t", options: options(chunkSize: 10)), items: payloads(30))
        let lease = try #require(try await store.claimChunk(owner: "b", leaseDuration: 30, now: now))
        #expect(try await store.acquireLeadership(node: "a", for: 5, now: now))
        let live = try await store.nodes(since: now.addingTimeInterval(-15), now: now)
        #expect(live.map(\.id) == ["a", "b"])
        #expect(live[0].isLeader && !live[1].isLeader)
        #expect(live[0].chunks == 0)
        #expect(live[1].chunks == 1 && live[1].runningItems == Int64(lease.items.count))
        #expect(live[1].workers == 4 && live[1].role == "worker")
        try await store.removeNode(id: "a")
        #expect(try await store.nodes(since: now.addingTimeInterval(-15), now: now).map(\.id) == ["b"])
    }

    @Test("an error message with a NUL byte is stored and the chunk goes on", arguments: StoreFactory.all)
    func nulInMessage(factory: StoreFactory) async throws {
        let store = try await factory.make()
        let batch = try await store.createBatch(
            NewBatch(type: "t", options: options(maxAttempts: 1)), items: payloads(2))
        let lease = try #require(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()))
        let outcomes = lease.items.map {
            ItemOutcome(
                seq: $0.seq, previousStatus: $0.status, attempt: 1, status: .dead,
                error: ItemError(code: "exit_1", message: "bad\u{0}byte", category: .retryable))
        }
        _ = try await store.checkpoint(
            lease, outcomes: outcomes, finish: true, failBatch: nil, leaseDuration: 30, now: Date())
        let items = try await store.items(of: batch.id, status: .dead, afterSeq: nil, limit: 10)
        #expect(items.count == 2)
        let message = try #require(items.first?.error?.message)
        #expect(message.hasPrefix("bad") && message.hasSuffix("byte"))
        #expect(try await store.batch(batch.id)?.status.isEnded == true)
    }
}
