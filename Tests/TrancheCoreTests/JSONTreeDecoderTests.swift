import Foundation
import Testing
import TrancheCore

@Suite("Exact decoding")
struct JSONTreeDecoderTests {
    struct Sample: Decodable, Equatable {
        var count: Int
        var ratio: Double
        var name: String?
        var payload: JSONValue
        var list: [JSONValue]
        var flags: [String: Bool]
        var at: Date
    }

    @Test("numbers inside JSONValue fields keep their text; other fields read as JSONDecoder reads them")
    func exact() throws {
        let text = #"""
            {"count":3,"ratio":0.5,"name":null,"payload":{"a":9007199254740993,"b":-9223372036854775809,"c":1e400},
             "list":[1e400,null],"flags":{"x":true},"at":0}
            """#
        let sample = try JSONText(unchecked: text).decodeExactly(Sample.self)
        #expect(sample.payload.jsonText == #"{"a":9007199254740993,"b":-9223372036854775809,"c":1e400}"#)
        #expect(JSONValue.array(sample.list).jsonText == "[1e400,null]")
        #expect(sample.count == 3 && sample.ratio == 0.5 && sample.name == nil && sample.flags == ["x": true])
        #expect(sample.at == Date(timeIntervalSinceReferenceDate: 0))
        // JSONDecoder refuses the whole text for the one 1e400.
        #expect(throws: (any Error).self) { try JSONDecoder().decode(Sample.self, from: Data(text.utf8)) }
    }

    @Test("a null, a wrong type or a number that does not fit is refused naming the field, as JSONDecoder does")
    func errors() throws {
        let base = #""ratio":1,"payload":{},"list":[],"flags":{},"at":0"#
        let cases: [(String, String)] = [
            (#"{"count":null,\#(base)}"#, "'count' should be a number, found null"),
            (#"{"count":"3",\#(base)}"#, "'count' should be a number"),
            (#"{"count":9223372036854775808,\#(base)}"#, "'count': number 9223372036854775808 does not fit in Int"),
            (#"{"count":1,"ratio":1e400,"payload":{},"list":[],"flags":{},"at":0}"#, "'ratio': number 1e400"),
            (#"{"count":1,"ratio":1,"payload":{},"list":[],"flags":{"x":1},"at":0}"#, "'flags.x' should be a boolean"),
            (#"{"ratio":1,"payload":{},"list":[],"flags":{},"at":0}"#, "missing field 'count'"),
        ]
        for (text, message) in cases {
            do {
                _ = try JSONText(unchecked: text).decodeExactly(Sample.self)
                Issue.record("\(text) decoded")
            } catch {
                #expect(describeDecodingError(error).contains(message), "\(text): \(describeDecodingError(error))")
            }
        }
        // A whole number written with a fraction or exponent is an integer, as JSONDecoder takes it.
        #expect(try JSONText(unchecked: #"{"count":2e1,\#(base)}"#).decodeExactly(Sample.self).count == 20)
    }
}
