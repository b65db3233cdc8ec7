import Foundation
import TrancheEngine
import TrancheSQLite

/// A typed strategy: one welcome e-mail per new user.
struct WelcomeEmail: BatchStrategy {
    struct Context: Codable, Sendable {
        var sender: String
    }

    struct Item: Codable, Sendable {
        var email: String
        var name: String
    }

    struct Output: Codable, Sendable {
        var messageID: String
    }

    var type: String { "welcome-email" }

    /// This strategy checks each batch before it runs (see `prepare`) and
    /// reports when it ends (see `finalize`).
    var hooks: BatchHooks { [.prepare, .finalize] }

    /// Runs once before the first e-mail goes out, on one node (another one
    /// runs it again if it dies): check the whole campaign here. Throwing
    /// fails the batch with the reason; what it returns is the batch's `preview`.
    func prepare(_ batch: PreparingBatch, context: Context) async throws -> JSONValue? {
        guard context.sender.hasSuffix("@example.com") else {
            throw ItemError.fatal("unknown_sender", "'\(context.sender)' may not send e-mail")
        }
        return ["recipients": .number(Double(batch.total))]
    }

    /// Runs at upload: a bad address is skipped before anything is sent.
    func validate(_ item: Item, context: Context) throws {
        guard item.email.contains("@") else {
            throw ItemError.permanent("invalid_email", "'\(item.email)' is not an e-mail address")
        }
    }

    func process(_ item: Item, context: Context, input: ItemInput) async throws -> Output {
        // Send the e-mail here. Pass input.idempotencyKey to the mail API so
        // that a retry after a crash is not sent twice. Throw
        // ItemError.retryable(...) for a timeout or a 503: Tranche retries it
        // with backoff.
        Output(messageID: "\(context.sender)/\(input.seq)")
    }

    /// Runs once when the batch ends, on one node (another one takes over if
    /// it dies): post the campaign's report here. What it returns becomes
    /// the batch's `result`.
    func finalize(_ batch: EndedBatch, context: Context) async throws -> JSONValue? {
        [
            "sender": .string(context.sender), "sent": .number(Double(batch.counts.succeeded)),
            "skipped": .number(Double(batch.counts.skipped)),
        ]
    }
}

@main
struct LibraryExample {
    static func main() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("welcome-\(UUID()).db").path
        let store = try SQLiteBatchStore(path: path)
        let engine = TrancheEngine(store: store, strategies: [AnyBatchStrategy(WelcomeEmail())])

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await engine.run() }

            let users = (0..<1_000).map { index in
                WelcomeEmail.Item(
                    email: index == 7 ? "not-an-address" : "user\(index)@example.com", name: "User \(index)")
            }
            var options = BatchOptions()
            options.concurrency = 16
            let batch = try await engine.submit(
                try Submission(
                    type: "welcome-email", context: WelcomeEmail.Context(sender: "hello@example.com"),
                    options: options),
                items: users)

            let done = try await engine.waitForEnd(batch.id)
            print("\(done.status): \(done.counts.succeeded) sent, \(done.counts.skipped) skipped")
            print("preview: \(try await engine.preparation(of: batch.id)?.preview?.text ?? "")")
            for item in try await store.items(of: batch.id, status: .skipped, afterSeq: nil, limit: 10) {
                print("  item \(item.seq): \(item.error?.message ?? "")")
            }
            // The finalize hook runs just after the end; its answer is the batch's result.
            while try await store.batch(batch.id)?.result == nil {
                try await Task.sleep(for: .milliseconds(50))
            }
            print("result: \(try await store.batch(batch.id)?.result?.text ?? "")")
            engine.drain()
            try await group.waitForAll()
        }
        // A demonstration: its database goes when it ends.
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }
}
