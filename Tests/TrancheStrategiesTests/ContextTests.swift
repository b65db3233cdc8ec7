import Testing
import TrancheEngine
import TrancheStrategies

@Suite("strategy contexts")
struct ContextTests {
    @Test(
        "an unknown context field is refused at submission, by name, for every built-in strategy with a context",
        arguments: [
            ("http", #"{"url": "https://api.example.com/", "header": {"A": "b"}}"#, "header"),
            ("exec", #"{"command": "true", "environment": {"A": "b"}}"#, "environment"),
            ("sleep", #"{"ms": 1, "msec": 2}"#, "msec"),
        ])
    func unknownField(type: String, context: String, field: String) throws {
        let strategy = try #require(BuiltinStrategies.all().first { $0.type == type })
        #expect {
            try strategy.prepare(context: JSONText(unchecked: context))
        } throws: { error in
            (error as? OptionsError)?.message.contains("unknown context field '\(field)'") == true
        }
    }

    @Test("the known fields still pass and survive preparation")
    func knownFields() throws {
        let strategies = BuiltinStrategies.all()
        let http = try #require(strategies.first { $0.type == "http" })
        let prepared = try http.prepare(
            context: JSONText(
                unchecked:
                    #"{"url": "https://api.example.com/", "headers": {"A": "b"}, "body": "{{item}}", "method": "put", "success_codes": [200], "max_response_bytes": 10}"#
            ))
        #expect(try prepared.value()["headers"] == ["A": "b"])
        #expect(try prepared.value()["method"] == "PUT")
        let exec = try #require(strategies.first { $0.type == "exec" })
        let command = try exec.prepare(
            context: JSONText(unchecked: #"{"argv": ["/bin/true"], "env": {"A": "b"}, "max_output_bytes": 10}"#))
        #expect(try command.value()["env"] == ["A": "b"])
    }
}
