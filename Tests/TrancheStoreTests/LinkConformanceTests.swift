import Foundation
import Testing
import TrancheStore

/// Linked batches on every store: resubmits, chains (`then`), and a dry run confirmed into a real run.
@Suite("LinkedBatchStore conformance", .testResources)
struct LinkConformanceTests {
    @Test("a resubmit copies the ended batch's dead and skipped items into a linked batch", arguments: StoreFactory.all)
    func resubmit(factory: StoreFactory) async throws {
        let store = try await linkedStore(factory)
        var items = payloads(6)
        items[1].rejection = .permanent("invalid_item", "bad")
        let parent = try await store.createBatch(
            NewBatch(
                type: "t", owner: "acme", context: JSONText(unchecked: "{\"k\":1}"), options: options(chunkSize: 2)),
            items: items)
        try await store.drain { seq in seq == 2 ? .dead : seq == 4 ? .skipped : .succeeded }
        #expect(try await store.batch(parent.id)?.status == .completed)

        let created = try await store.resubmit(Resubmission(parent: parent.id), idempotency: nil)
        guard case .created(let child) = created else {
            Issue.record("expected a new batch, got \(created)")
            return
        }
        #expect(child.type == "t" && child.owner == "acme" && child.context.text == "{\"k\":1}")
        #expect(child.counts.total == 3)
        #expect(child.status == .confirmed)
        let copied = try await store.items(of: child.id, status: nil, afterSeq: nil, limit: 10)
        #expect(copied.map(\.seq) == [0, 1, 2])
        #expect(copied.map { $0.payload?.text } == ["{\"n\":1}", "{\"n\":2}", "{\"n\":4}"])
        #expect(copied.allSatisfy { $0.status == .pending && $0.attempts == 0 && $0.error == nil })

        #expect(try await store.links(of: parent.id) == BatchLinks(children: [child.id]))
        #expect(try await store.links(of: child.id) == BatchLinks(parentID: parent.id, kind: .resubmit))
        let linked = try await store.events(of: parent.id, afterID: 0, limit: 100).filter { $0.type == .linked }
        #expect(linked.map { $0.data["child_id"] } == [.string(child.id.rawValue)])

        #expect(try await store.drainAll() == 2)  // 3 items in chunks of 2
        #expect(try await store.batch(child.id)?.status == .completed)
        // The parent is untouched.
        #expect(try await store.batch(parent.id)?.counts.dead == 1)
    }

    @Test("a resubmit of a large batch copies every item in order, in chunks of its size", arguments: StoreFactory.all)
    func resubmitLarge(factory: StoreFactory) async throws {
        let store = try await linkedStore(factory)
        let count = 30_000
        let parent = try await store.createBatch(
            NewBatch(type: "t", options: options(chunkSize: 1_000)), items: payloads(count))
        // Canceled in one statement: writing 30,000 outcomes one by one would take longer than the copy.
        _ = try await store.transition(parent.id, .cancel, reason: nil, at: Date())
        let resubmission = Resubmission(parent: parent.id, statuses: [.canceled])
        guard case .created(let child) = try await store.resubmit(resubmission, idempotency: nil) else {
            Issue.record("the resubmit must create a batch")
            return
        }
        #expect(child.counts.total == Int64(count))
        let last = try await store.items(of: child.id, status: nil, afterSeq: Int64(count - 3), limit: 10)
        #expect(last.map(\.seq) == [Int64(count - 2), Int64(count - 1)])
        #expect(last.map { $0.payload?.text } == ["{\"n\":\(count - 2)}", "{\"n\":\(count - 1)}"])
        #expect(try await store.drainAll() == count / 1_000)
        #expect(try await store.batch(child.id)?.counts.succeeded == Int64(count))
    }

    @Test("a resubmit is refused while the parent runs, and when no item matches", arguments: StoreFactory.all)
    func resubmitRefused(factory: StoreFactory) async throws {
        let store = try await linkedStore(factory)
        var waiting = options()
        waiting.requireConfirmation = true
        let open = try await store.createBatch(NewBatch(type: "t", options: waiting), items: payloads(2))
        await expectConflict { try await store.resubmit(Resubmission(parent: open.id), idempotency: nil) }

        let clean = try await store.createBatch(NewBatch(type: "t", options: options()), items: payloads(2))
        _ = try await store.drainAll()
        await expectConflict { try await store.resubmit(Resubmission(parent: clean.id), idempotency: nil) }
        await expectConflict {
            try await store.resubmit(Resubmission(parent: clean.id, statuses: []), idempotency: nil)
        }
        await #expect(throws: StoreError.self) {
            try await store.resubmit(Resubmission(parent: BatchID.generate()), idempotency: nil)
        }
        // Nothing was left behind by the refusals.
        #expect(try await store.links(of: clean.id).children.isEmpty)
        #expect(try await store.batches(BatchQuery(limit: 10)).count == 2)
    }

    @Test("a resubmit with an idempotency key creates one batch", arguments: StoreFactory.all)
    func resubmitIdempotent(factory: StoreFactory) async throws {
        let store = try await linkedStore(factory)
        let parent = try await store.createBatch(
            NewBatch(type: "t", owner: "acme", options: options()), items: payloads(3))
        try await store.drain { $0 == 0 ? .dead : .succeeded }
        let key = IdempotencyKey(tenant: "acme", key: "again", fingerprint: "f1")
        guard case .created(let first) = try await store.resubmit(Resubmission(parent: parent.id), idempotency: key)
        else {
            Issue.record("the first resubmit must create a batch")
            return
        }
        #expect(first.options.idempotencyKey == nil)
        let repeated = try await store.resubmit(Resubmission(parent: parent.id), idempotency: key)
        #expect(repeated == .existing(first))
        var other = key
        other.fingerprint = "f2"
        #expect(try await store.resubmit(Resubmission(parent: parent.id), idempotency: other) == .mismatch)
        #expect(try await store.links(of: parent.id).children == [first.id])
    }

    @Test("a completed batch starts its successor once, with its outputs as items", arguments: StoreFactory.all)
    func chain(factory: StoreFactory) async throws {
        let store = try await linkedStore(factory)
        var batch = NewBatch(type: "t", owner: "acme", options: options(chunkSize: 2), priority: 3)
        batch.then = Successor(type: "next", context: JSONText(unchecked: "{\"s\":2}"), options: options(chunkSize: 5))
        let parent = try await store.createBatch(batch, items: payloads(4))
        try await store.drain(output: { "{\"out\":\($0)}" }, status: { $0 == 2 ? .dead : .succeeded })
        #expect(try await store.batch(parent.id)?.status == .completed)

        let children = try await store.links(of: parent.id).children
        try #require(children.count == 1)
        let child = try #require(try await store.batch(children[0]))
        #expect(child.type == "next" && child.owner == "acme" && child.priority == 3)
        #expect(child.context.text == "{\"s\":2}")
        #expect(child.options.chunkSize == 5)
        #expect(try await store.links(of: child.id) == BatchLinks(parentID: parent.id, kind: .chain))
        let copied = try await store.items(of: child.id, status: nil, afterSeq: nil, limit: 10)
        #expect(copied.map { $0.payload?.text } == ["{\"out\":0}", "{\"out\":1}", "{\"out\":3}"])

        // Retrying the parent's dead item completes it again: no second successor.
        _ = try await store.retry(parent.id, statuses: [.dead], at: Date())
        try await store.drain(output: { "{\"out\":\($0)}" }, status: { _ in .succeeded })
        #expect(try await store.batch(parent.id)?.status == .completed)
        #expect(try await store.links(of: parent.id).children == children)
    }

    @Test("a failed batch starts no successor until a retry completes it", arguments: StoreFactory.all)
    func chainAfterFailure(factory: StoreFactory) async throws {
        let store = try await linkedStore(factory)
        var batch = NewBatch(type: "t", options: options())
        batch.then = Successor(type: "next", context: JSONText(unchecked: "{}"))
        let parent = try await store.createBatch(batch, items: payloads(2))
        try await store.drain { _ in .dead }
        #expect(try await store.batch(parent.id)?.status == .failed)
        #expect(try await store.links(of: parent.id).children.isEmpty)

        var second = batch
        second.id = .generate()
        let canceled = try await store.createBatch(second, items: payloads(2))
        _ = try await store.transition(canceled.id, .cancel, reason: nil, at: Date())
        #expect(try await store.links(of: canceled.id).children.isEmpty)

        _ = try await store.retry(parent.id, statuses: [.dead], at: Date())
        try await store.drain(output: { _ in "\"ok\"" }, status: { _ in .succeeded })
        #expect(try await store.batch(parent.id)?.status == .completed)
        let children = try await store.links(of: parent.id).children
        try #require(children.count == 1)
        let copied = try await store.items(of: children[0], status: nil, afterSeq: nil, limit: 10)
        #expect(copied.map { $0.payload?.text } == ["\"ok\"", "\"ok\""])
    }

    @Test("a confirmed dry run runs its stored items and keeps its report in its history", arguments: StoreFactory.all)
    func confirmDryRun(factory: StoreFactory) async throws {
        let store = try await linkedStore(factory)
        let dry = try await store.createBatch(NewBatch(type: "t", options: options(), dryRun: true), items: payloads(3))
        #expect(dry.status == .preProcessed)
        #expect(try await store.claimChunk(owner: "w", leaseDuration: 30, now: Date()) == nil)
        try await store.setResult(dry.id, result: JSONText(unchecked: "{\"dry_run\":true,\"total\":3}"))

        let confirmed = try await store.confirmDryRun(dry.id, at: Date())
        #expect(confirmed.status == .confirmed)
        #expect(!confirmed.dryRun)
        #expect(confirmed.result == nil)
        #expect(confirmed.counts.total == 3)
        let event = try #require(
            try await store.events(of: dry.id, afterID: 0, limit: 100).last { $0.type == .confirmed })
        #expect(event.data["preview"] == .object(["dry_run": .bool(true), "total": .number(3)]))
        #expect(try await store.drainAll() == 1)
        #expect(try await store.batch(dry.id)?.status == .completed)

        // Only a dry run waiting for its confirmation can be confirmed this way.
        await #expect(throws: IllegalTransition.self) { try await store.confirmDryRun(dry.id, at: Date()) }
        let real = try await store.createBatch(NewBatch(type: "t", options: options()), items: payloads(1))
        await #expect(throws: IllegalTransition.self) { try await store.confirmDryRun(real.id, at: Date()) }
    }

    @Test("deleting a batch forgets its links", arguments: StoreFactory.all)
    func deleteForgetsLinks(factory: StoreFactory) async throws {
        let store = try await linkedStore(factory)
        let parent = try await store.createBatch(NewBatch(type: "t", options: options()), items: payloads(2))
        try await store.drain { _ in .dead }
        guard case .created(let child) = try await store.resubmit(Resubmission(parent: parent.id), idempotency: nil)
        else {
            Issue.record("the resubmit must create a batch")
            return
        }
        try await store.deleteBatch(parent.id)
        #expect(try await store.links(of: child.id) == BatchLinks())
    }

    func linkedStore(_ factory: StoreFactory) async throws -> any LinkedBatchStore {
        try #require(try await factory.make() as? any LinkedBatchStore)
    }

    func expectConflict(_ body: () async throws -> some Any) async {
        do {
            _ = try await body()
            Issue.record("expected a conflict")
        } catch let error as StoreError {
            #expect(error.code == .conflict, "\(error)")
        } catch {
            Issue.record("expected a conflict, got \(error)")
        }
    }
}

extension BatchStore {
    /// Claims and finishes chunks until none is left, each item ending as
    /// `status` says (dead and skipped with an error), succeeded ones with `output`.
    func drain(output: (Int64) -> String? = { _ in nil }, status: (Int64) -> ItemStatus) async throws {
        while let lease = try await claimChunk(owner: "w", leaseDuration: 30, now: Date()) {
            let outcomes = lease.items.map { item in
                let chosen = status(item.seq)
                return ItemOutcome(
                    seq: item.seq, previousStatus: item.status, attempt: item.attempts + 1, status: chosen,
                    output: chosen == .succeeded ? output(item.seq).map(JSONText.init(unchecked:)) : nil,
                    error: chosen == .succeeded ? nil : .permanent("nope", "item \(item.seq) failed"))
            }
            _ = try await checkpoint(
                lease, outcomes: outcomes, finish: true, failBatch: nil, leaseDuration: 30, now: Date())
        }
    }
}
