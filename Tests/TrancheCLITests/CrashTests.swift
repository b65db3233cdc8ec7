import Foundation
import Testing
import TrancheSQLite
import TrancheStore
import TrancheTestSupport

/// `kill -9` at the worst moments: every item still ends up succeeded, and
/// the items run twice are counted and bounded by what was in flight.
@Suite("crash and resume")
struct CrashTests {
    static let count = 20_000

    /// Reads the run's batch from its state file while the run may hold it.
    func batch(in path: String) async throws -> BatchRecord? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let store = try SQLiteBatchStore(path: path)
        return try await store.batches(BatchQuery(limit: 1)).first
    }

    @Test("kill -9 while reading the input and while processing; the run resumes and every item succeeds")
    func killAndResume() async throws {
        let server = LoopbackHTTPServer { _, _ in .init(status: 200, body: "{}") }
        try await server.withRunning { port in
            try await withTemporaryDirectory("tranche-cli") { directory in
                let state = directory.appendingPathComponent("crash.db").path
                var input = Data()
                for seq in 0..<Self.count { input.append(Data(#"{"id":\#(seq),"name":"user \#(seq)"}"#.utf8 + [0x0A])) }
                let arguments = [
                    "run", "--input", "-", "--url", "http://127.0.0.1:\(port)/items/{{seq}}?id={{id}}", "--state",
                    state,
                    "--chunk-size", "100", "--concurrency", "16", "--json", "--quiet",
                ]
                func seqs() -> [Int] {
                    server.requests.compactMap { Int($0.uri.split(separator: "/").last!.split(separator: "?").first!) }
                }

                // 1. Feed the first 8,000 lines only, and kill the run while it waits for more input.
                let first = try TrancheProcess(arguments, in: directory, stdinFromPipe: true)
                let cut = input.split(separator: 0x0A, maxSplits: 8_000, omittingEmptySubsequences: false).prefix(8_000)
                    .map { Data($0) + [0x0A] }.reduce(Data(), +)
                first.feed(cut, close: false)
                try await waitUntil("2,000 requests from the first run") {
                    server.requests.count >= 2_000 || !first.process.isRunning
                }
                #expect(first.process.isRunning, "the first run stopped early: \(first.stderr)")
                first.kill9()
                let afterFirst = try #require(try await batch(in: state))
                #expect(!afterFirst.sealed, "the input was still being read")
                #expect(afterFirst.counts.total <= 8_000)

                // 2. Run again with the whole input; kill it mid-processing.
                let second = try TrancheProcess(arguments, in: directory, stdinFromPipe: true)
                second.feed(input, close: true)
                try await waitUntil("12,000 requests, with the second run's") {
                    server.requests.count >= 12_000 || !second.process.isRunning
                }
                #expect(second.process.isRunning, "the second run stopped early: \(second.stderr)")
                second.kill9()
                let afterSecond = try #require(try await batch(in: state))
                #expect(afterSecond.status != .completed)

                // 3. Run to the end.
                let third = try TrancheProcess(arguments, in: directory, stdinFromPipe: true)
                third.feed(input, close: true)
                let status = try await third.wait(seconds: 300)
                #expect(status == 0, "\(third.stderr)")
                let report = try summary(third.stdout)
                #expect(report["status"] as? String == "completed")
                #expect(report["total"] as? Int == Self.count)
                #expect(report["succeeded"] as? Int == Self.count)
                #expect(report["resumed"] as? Bool == true)

                let seen = seqs()
                #expect(Set(seen) == Set(0..<Self.count), "every item reached the server")
                let duplicates = seen.count - Self.count
                let rescued = try #require(report["rescued"] as? Int)
                print(
                    "crash test: \(seen.count) requests for \(Self.count) items; \(duplicates) ran twice; bound (rescued) \(rescued)"
                )
                #expect(duplicates <= rescued, "items run twice are bounded by what was in flight")
                #expect(rescued <= 2 * 16 * 100 * 2, "at most the chunks leased at each of the two kills")
                // Items were read exactly once into the store: seq N is the input's line N.
                let store = try SQLiteBatchStore(path: state)
                let id = try #require(try await store.batches(BatchQuery(limit: 1)).first?.id)
                let sample = try await store.items(of: id, status: nil, afterSeq: 12_344, limit: 1).first
                #expect(sample?.payload?.text == #"{"id":12345,"name":"user 12345"}"#)
            }
        }
    }
}
