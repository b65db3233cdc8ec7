import Foundation
import Testing
import TrancheTestSupport

/// The progress line off a terminal (stderr is a pipe here): the rate the
/// store measured, with a decimal below 10 items a second, and the chunks.
@Suite("Progress line")
struct ProgressLineTests {
    /// The items a second each line shows (lines without a rate are left out).
    static func rates(_ stderr: String) -> [Double] {
        stderr.split(separator: "\n").compactMap { line in
            guard let match = line.firstMatch(of: #/  ([0-9][0-9,.]*)/s/#) else { return nil }
            return Double(match.1.replacingOccurrences(of: ",", with: ""))
        }
    }

    /// Checks the lines of a batch that runs one item each 1.5 s: a rate
    /// below one item a second shows as such (`0.7/s`, never `0/s` once
    /// items finish), and the chunks count up.
    static func expectSlowRate(_ stderr: String) {
        let rates = rates(stderr)
        #expect(rates.contains { $0 > 0 }, "no line showed the rate:\n\(stderr)")
        // One item at a time, 1.5 s each: about 0.7 a second; samples a
        // second apart may see two items in one span, never ten.
        #expect(rates.allSatisfy { $0 < 3 }, "a rate beyond what one slot can do:\n\(stderr)")
        #expect(stderr.contains(#/[0-9]\.[0-9]/s/#), "a slow rate shows a decimal:\n\(stderr)")
        #expect(stderr.contains(#/chunk [0-9]+ of 8/#), "the chunks are counted:\n\(stderr)")
    }

    @Test("tranche run: the line off a terminal shows the real rate of a slow batch")
    func run() async throws {
        try await withTemporaryDirectory("tranche-progress") { directory in
            try writeItems(8, to: directory.appendingPathComponent("items.ndjson"))
            let result = try await tranche(
                [
                    "run", "--input", "items.ndjson", "--type", "sleep", "--context", #"{"ms":1500}"#,
                    "--concurrency", "1", "--chunk-size", "1", "--progress-interval", "0.5",
                ], in: directory)
            #expect(result.status == 0, "\(result.stderr)")
            Self.expectSlowRate(result.stderr)
        }
    }

    @Test("tranche submit --wait shows the same line, with the rate the server stored")
    func submitWait() async throws {
        try await withTemporaryDirectory("tranche-progress") { directory in
            try writeItems(8, to: directory.appendingPathComponent("items.ndjson"))
            let (server, url) = try await startServer(["--database", "p.db"], in: directory)
            defer { server.kill9() }
            let result = try await tranche(
                [
                    "submit", "--server", url, "--type", "sleep", "--context", #"{"ms":1500}"#, "--items",
                    "items.ndjson", "--option", "concurrency=1", "--option", "chunk_size=1", "--option",
                    "pace=adaptive", "--wait",
                ], in: directory)
            #expect(result.status == 0, "\(result.stderr)")
            Self.expectSlowRate(result.stderr)
            #expect(result.stderr.contains("pace adaptive"), "the line shows the batch's pace:\n\(result.stderr)")
            #expect(result.stdout.contains("100.0%  chunk 8 of 8"), "the summary counts the chunks:\n\(result.stdout)")
        }
    }
}
