import Foundation
import Testing
import TrancheStore

/// The page reads (`BatchPageStore`, `LeasedStepStore.steps`) on every store:
/// keyed right for many batches at once, the same as the one-batch reads.
@Suite("BatchPageStore conformance", .testResources)
struct BatchPageConformanceTests {
    @Test("links and prepare steps of many batches, read at once, are each batch's own", arguments: StoreFactory.all)
    func pageReads(factory: StoreFactory) async throws {
        let made = try await factory.make()
        let store = try #require(made as? any LinkedBatchStore & BatchPageStore & PrepareStore)
        try await store.registerPrepareTypes(["prepared"], without: [])
        // Two parents with resubmits (three and one), a prepared batch, a plain one.
        var parents: [BatchID] = []
        var children: [BatchID: [BatchID]] = [:]
        for count in [3, 1] {
            var items = payloads(1)
            items[0].rejection = .permanent("invalid_item", "bad")
            let parent = try await store.createBatch(NewBatch(type: "t", options: options()), items: items)
            _ = try await store.drainAll()
            for _ in 0..<count {
                guard
                    case .created(let child) = try await store.resubmit(
                        Resubmission(parent: parent.id), idempotency: nil)
                else {
                    Issue.record("a resubmit must create a batch")
                    return
                }
                children[parent.id, default: []].append(child.id)
            }
            parents.append(parent.id)
        }
        let prepared = try await store.createBatch(NewBatch(type: "prepared", options: options()), items: payloads(1))
        let plain = try await store.createBatch(NewBatch(type: "t", options: options()), items: payloads(1))
        let ids = parents + children.values.flatMap { $0 } + [prepared.id, plain.id, BatchID.generate()]

        let links = try await store.links(of: ids)
        for id in ids {
            let own = try await store.links(of: id)
            #expect((links[id] ?? BatchLinks()) == own, "\(id)")
        }
        for parent in parents {
            #expect(links[parent] == BatchLinks(children: children[parent] ?? []))
            for child in children[parent] ?? [] {
                #expect(links[child] == BatchLinks(parentID: parent, kind: .resubmit))
            }
        }
        #expect(links[plain.id] == nil)
        #expect(links.count == parents.count + children.values.flatMap { $0 }.count)

        let steps = try await store.steps(.prepare, of: ids)
        #expect(Array(steps.keys) == [prepared.id])
        #expect(steps[prepared.id]?.state == .pending)
        #expect(try await store.step(.prepare, of: prepared.id) == steps[prepared.id])
        #expect(try await store.steps(.finalize, of: ids).isEmpty)
        #expect(try await store.scheduleIDs(ofBatches: ids).isEmpty)
        #expect(try await store.links(of: []).isEmpty)
    }
}
