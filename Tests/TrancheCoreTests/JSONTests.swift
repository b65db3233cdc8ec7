import Foundation
import Testing
import TrancheCore

@Suite("JSON")
struct JSONTests {
    @Test(
        "valid JSON is accepted",
        arguments: [
            "{}", "[]", "0", "-1.5e+3", "\"x\\u00e9\\n\"", "true", "null", " {\"a\": [1, {\"b\": null}]} ",
            "{\"k\":\"v\",\"n\":12345678901234567890}",
        ])
    func valid(text: String) throws {
        try JSONSyntax.validate(text)
    }

    @Test(
        "invalid JSON is refused with a position",
        arguments: [
            "", "{", "{\"a\"}", "{\"a\":}", "[1,]", "01", "1.", "\"abc", "\"\\x\"", "tru", "{} {}", "{'a':1}",
            "[1 2]", "\"a\u{01}\"",
        ])
    func invalid(text: String) {
        #expect(throws: JSONSyntaxError.self) { try JSONSyntax.validate(text) }
    }

    @Test("deep nesting is refused rather than overflowing the stack")
    func depth() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONSyntaxError.self) { try JSONSyntax.validate(deep) }
    }

    @Test("error positions point at the offending byte")
    func position() {
        do {
            try JSONSyntax.validate("{\"a\": tru}")
            Issue.record("accepted")
        } catch {
            #expect(error.offset == 6)
        }
    }

    @Test("JSON values round-trip with integers kept whole")
    func roundTrip() throws {
        let value: JSONValue = ["n": 3, "s": "x", "a": [true, nil], "f": 1.5]
        let text = try JSONText(encoding: value)
        #expect(text.text == #"{"a":[true,null],"f":1.5,"n":3,"s":"x"}"#)
        #expect(try text.value() == value)
    }

    @Test(
        "numbers keep their text through parsing and encoding",
        arguments: [
            "9007199254740993", "-9223372036854775809", "18446744073709551616", "1e400", "-1E-400", "0.1",
            "1.50", "123456789012345678901234567890123456789012345", "-0",
        ])
    func exactNumbers(number: String) throws {
        let text = try JSONText(validating: #"{"n":\#(number),"list":[\#(number)]}"#)
        let value = try text.value()
        #expect(value["n"] == .number(try #require(JSONNumber(number))))
        #expect(try JSONText(encoding: value).text == #"{"list":[\#(number)],"n":\#(number)}"#)
        // Nested in a Codable type, as the API's views carry them.
        struct View: Codable { var output: JSONValue }
        #expect(try JSONText(encoding: View(output: value)).text == #"{"output":{"list":[\#(number)],"n":\#(number)}}"#)
        #expect(try text.decode(JSONValue.self) == value)
    }

    @Test("through JSONEncoder, 64-bit integers and Decimal-sized numbers stay exact")
    func foreignEncoder() throws {
        let value = try JSONText(validating: "[9007199254740993,-9223372036854775809,0.30000000000000004]").value()
        let text = String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
        #expect(text == "[9007199254740993,-9223372036854775809,0.30000000000000004]")
        let decoded = try JSONDecoder().decode(JSONValue.self, from: Data("[9007199254740993]".utf8))
        #expect(decoded == [.number(try #require(JSONNumber("9007199254740993")))])
    }

    @Test("JSONText(encoding:) writes what JSONEncoder writes")
    func encoderParity() throws {
        struct Sample: Codable {
            var name = "a/b \"q\" \u{1}\n é"
            var count = 42
            var ratio = 0.1
            var large = 1e300
            var whole = 100.0
            var small: Float = 0.25
            var missing: Int? = nil
            var present: Int? = 7
            var flags = [true, false]
            var table = ["b": 2, "a": 1, "B": 3]
            var nested = [["x": [1, 2]]]
            var when = Date(timeIntervalSinceReferenceDate: 1.5)
            var data = Data([1, 2, 3])
            var url = URL(string: "https://example.com/x")!
            var decimal = Decimal(string: "12345678901234567890.5")!
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let expected = String(decoding: try encoder.encode(Sample()), as: UTF8.self)
        #expect(try JSONText(encoding: Sample()).text == expected)
        #expect(throws: EncodingError.self) { try JSONText(encoding: [Double.infinity]) }
    }

    @Test("strings decode escapes and surrogate pairs")
    func strings() throws {
        let value = try JSONText(validating: #""a\u00e9\ud83d\ude00\n\/\"""#).value()
        #expect(value == .string("aé😀\n/\""))
        #expect(try JSONText(validating: #""\ud800x""#).value() == .string("\u{FFFD}x"))
        #expect(try JSONText(validating: #"{"k":1,"k":2}"#).value() == ["k": 2])
    }

    @Test(
        "bytes that are not UTF-8 are refused at the offending byte",
        arguments: [
            ([0x22, 0xC3, 0x28, 0x22], 2),  // a lead byte without its continuation
            ([0x22, 0x61, 0xFF, 0x22], 2),  // never valid
            ([0x22, 0xC0, 0x80, 0x22], 1),  // overlong NUL
            ([0x22, 0xED, 0xA0, 0x80, 0x22], 2),  // a surrogate
            ([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], 2),  // beyond U+10FFFF
            ([0x22, 0xE2, 0x82], 1),  // cut short
            ([0x5B, 0xE9, 0x5D], 1),  // outside a string, cut short
        ] as [([UInt8], Int)])
    func invalidUTF8(bytes: [UInt8], offset: Int) {
        do {
            try JSONSyntax.validate(bytes)
            Issue.record("accepted \(bytes)")
        } catch {
            #expect(error.offset == offset)
            #expect(error.isInvalidUTF8)
            #expect(error.description.contains("invalid UTF-8"))
        }
    }

    @Test("a well-formed character outside a string is a syntax error, not an encoding one")
    func strayCharacter() {
        do {
            try JSONSyntax.validate([0x5B, 0xC3, 0xA9, 0x5D])
            Issue.record("accepted")
        } catch {
            #expect(error.offset == 1)
            #expect(!error.isInvalidUTF8)
        }
    }

    @Test("well-formed multi-byte UTF-8 is accepted")
    func validUTF8() throws {
        try JSONSyntax.validate(Array("{\"é\":\"日本 😀 \u{7F} \u{10FFFF}\"}".utf8))
    }
}
