import Foundation
import Testing
import TrancheEngine
import TrancheTestSupport

/// Linked batches through the engine on both stores: a chain (`then`) runs
/// on its parent's outputs, a resubmit runs the failures again, a dry run
/// is confirmed into a real run.
@Suite("Linked batches (engine)", .serialized)
struct LinkEngineTests {
    /// Doubles `n`; fails (retryably: dead after `maxAttempts`) when `fail` is set; a negative `n` is refused.
    struct DoublingStrategy: BatchStrategy {
        struct Item: Codable, Sendable {
            var n: Int
            var fail: Bool?
        }

        struct Output: Codable, Sendable {
            var n: Int
        }

        var type: String { "double" }

        func validate(_ item: Item, context: JSONValue) throws {
            if item.n < 0 { throw ItemError.permanent("negative", "item \(item.n) is negative") }
        }

        func process(_ item: Item, context: JSONValue, input: ItemInput) async throws -> Output {
            if item.fail == true { throw ItemError.retryable("asked_to_fail", "item \(item.n) failed") }
            return Output(n: item.n * 2)
        }
    }

    static let strategies = [AnyBatchStrategy(DoublingStrategy())]

    @Test("a completed batch's outputs run as its successor", arguments: EngineStore.all)
    func chain(store: EngineStore) async throws {
        try await store.withEngine(Self.strategies) { engine in
            var submission = Submission(type: "double", options: options(chunkSize: 2))
            submission.then = Successor(type: "double", context: JSONText(unchecked: "{}"), options: options())
            let parent = try await engine.submit(submission, items: try items(5) { ["n": .number(Double($0 + 1))] })
            #expect(try await engine.waitForEnd(parent.id).status == .completed)
            let children = try await engine.links(of: parent.id).children
            try #require(children.count == 1)
            let child = try await engine.waitForEnd(children[0])
            #expect(child.status == .completed)
            #expect(child.counts.succeeded == 5)
            let outputs = try await engine.store.items(of: child.id, status: nil, afterSeq: nil, limit: 10)
                .compactMap { $0.output?.text }
            #expect(outputs == (1...5).map { "{\"n\":\($0 * 4)}" })
            #expect(try await engine.links(of: child.id) == BatchLinks(parentID: parent.id, kind: .chain))
        }
    }

    @Test("a then that names an unknown type is refused at submission, naming then")
    func chainRefused() async throws {
        try await EngineStore.sqlite.withEngine(Self.strategies) { engine in
            var submission = Submission(type: "double")
            submission.then = Successor(type: "nope", context: JSONText(unchecked: "{}"))
            let refused = #expect(throws: EngineError.self) { try engine.prepareBatch(submission, items: []) }
            #expect(refused?.code == .unknownStrategy)
            #expect(
                refused?.message.hasPrefix("then: unknown strategy 'nope'") == true, "\(String(describing: refused))")
            submission.then = Successor(type: "double", context: JSONText(unchecked: "{}"))
            let prepared = try engine.prepareBatch(submission, items: [])
            #expect(prepared.batch.then?.type == "double")
        }
    }

    @Test("a resubmit runs the dead items again, a confirmed dry run runs for real", arguments: EngineStore.all)
    func resubmitAndConfirm(store: EngineStore) async throws {
        try await store.withEngine(Self.strategies) { engine in
            let parent = try await engine.submit(
                Submission(type: "double", options: options(maxAttempts: 1)),
                items: try items(4) { ["n": .number(Double($0)), "fail": .bool($0 % 2 == 1)] })
            #expect(try await engine.waitForEnd(parent.id).counts.dead == 2)
            guard case .created(let child) = try await engine.resubmit(parent.id) else {
                Issue.record("the resubmit must create a batch")
                return
            }
            // The same payloads fail again: the child is the parent's failures, not new work.
            let ended = try await engine.waitForEnd(child.id)
            #expect(ended.counts.total == 2 && ended.counts.dead == 2)
            #expect(try await engine.links(of: parent.id).children == [child.id])

            let dry = try await engine.submit(
                Submission(type: "double", options: options(), dryRun: true), items: try items(3))
            #expect(dry.status == .preProcessed && dry.result != nil)
            let confirmed = try await engine.confirm(dry.id)
            #expect(!confirmed.dryRun)
            let ran = try await engine.waitForEnd(dry.id)
            #expect(ran.status == .completed && ran.counts.succeeded == 3)
            await #expect(throws: IllegalTransition.self) { try await engine.confirm(dry.id) }
        }
    }
}
