import Foundation
import Testing
import TrancheStore

/// Batch rows decoded as both drivers decode them, without a database.
@Suite("Stored batch rows")
struct StoredBatchRowTests {
    /// A `batches` row of ``StoredBatch/columns`` with `options` as its stored text.
    struct Row: StoredRow {
        var options: String

        func int64(at index: Int) throws -> Int64? {
            switch index {
            case 0: 1
            case 9, 11...19, 23, 28: 0
            default: nil
            }
        }

        func string(at index: Int) throws -> String? {
            switch index {
            case 1: "7f3c1d2e-8a4b-4c6d-9e0f-123456789abc"
            case 2: "t"
            case 3: "o"
            case 4: BatchStatus.processing.rawValue
            case 6: "{}"
            case 7: options
            default: nil
            }
        }

        func bool(at index: Int) throws -> Bool? { [8, 10, 30].contains(index) ? false : nil }
    }

    /// Options decoded afresh, as a row read them before any memo.
    func fresh(_ text: String) throws -> BatchOptions { try JSONText(unchecked: text).decode() }

    @Test("each row's options are what its own text decodes to, however the texts alternate, change or repeat")
    func optionsFollowTheText() throws {
        // More distinct texts than a memo would keep, read in turn twice, then
        // one text patched: every read answers its own text's options.
        let texts = (1...20).map { #"{"concurrency": \#($0), "max_attempts": 3}"# }
        for text in texts + texts + [#"{"concurrency": 7, "pace": "fixed"}"#, texts[0]] {
            let stored = try StoredBatch(row: Row(options: text))
            #expect(stored.damage == nil)
            #expect(stored.record.options == (try fresh(text)), "\(text)")
        }
        #expect(try StoredBatch(row: Row(options: texts[2])).record.options.concurrency == 3)
    }

    @Test("texts that Swift holds equal but whose bytes differ give each their own options")
    func canonicallyEqualTexts() throws {
        // "é" composed and decomposed: equal as `String`s, different bytes.
        let composed = "{\"idempotency_key\": \"caf\u{E9}\"}"
        let decomposed = "{\"idempotency_key\": \"cafe\u{301}\"}"
        #expect(composed == decomposed && !composed.utf8.elementsEqual(decomposed.utf8))
        for text in [composed, decomposed, composed] {
            let key = try #require(try StoredBatch(row: Row(options: text)).record.options.idempotencyKey)
            #expect(Array(key.utf8) == Array(try #require(try fresh(text).idempotencyKey).utf8))
        }
    }

    @Test("a stored text that does not decode is damage on every read, between reads of texts that do")
    func damagedOptionsStayDamage() throws {
        let good = #"{"concurrency": 4}"#
        let bad = #"{"chunk_size": "many"}"#
        for text in [good, bad, good, bad, bad] {
            let stored = try StoredBatch(row: Row(options: text))
            if text == bad {
                #expect(stored.damage?.contains("options") == true)
                #expect(stored.record.options == BatchOptions())
            } else {
                #expect(stored.damage == nil)
                #expect(stored.record.options.concurrency == 4)
            }
        }
    }
}
