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
}
