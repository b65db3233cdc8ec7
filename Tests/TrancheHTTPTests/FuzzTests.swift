import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TrancheTestSupport

/// Hostile requests against every operation of `docs/openapi.yaml`, sent to
/// a real `tranche serve` process: extreme and non-finite numbers, deep
/// nesting, huge strings, invalid UTF-8, NUL bytes, wrong types, random bytes
/// and a trickled body, in bodies, parameters and headers. No answer may be a
/// 5xx, every 4xx is `application/problem+json`, nothing hangs, and the
/// process is alive afterwards; a restart on the same database answers.
///
/// The seed is fixed (`TRANCHE_FUZZ_SEED`, default 13); `TRANCHE_FUZZ_CASES`
/// sets the number of random cases after the fixed corpus (default 300):
/// `TRANCHE_FUZZ_CASES=20000 scripts/test --filter FuzzTests` for a long run.
@Suite("Fuzzing the API")
struct FuzzTests {
    @Test("no hostile request answers 5xx, breaks the problem format, hangs or takes the server down")
    func hostileRequests() async throws {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["TRANCHE_FUZZ_SEED"].flatMap { UInt64($0) } ?? 13
        let cases = environment["TRANCHE_FUZZ_CASES"].flatMap { Int($0) } ?? 300
        let operations = try FuzzOperation.all(in: await openAPIDocument())
        #expect(operations.count >= 20, "the document lists \(operations.count) operations")

        try await withTemporaryDirectory("tranche-fuzz") { directory in
            let database = directory.appendingPathComponent("fuzz.db").path
            let key = try await ServeProcess.createKey(database: database, in: directory)
            var server = try await ServeProcess.start(database: database, in: directory)
            var fuzzer = Fuzzer(port: server.port, key: key, seed: seed)
            for operation in operations {
                // A fresh open batch: the previous operation's cases may have sealed or canceled the last.
                try await fuzzer.prepare()
                for body in Hostile.corpus(for: operation) {
                    await fuzzer.send(operation, body: body, note: "corpus")
                }
                for value in Hostile.scalars {
                    await fuzzer.send(operation, parameters: value, note: "parameters")
                }
            }
            await fuzzer.trickle()
            for index in 0..<cases {
                if index % 50 == 0 { try await fuzzer.prepare() }
                let operation = operations[fuzzer.random.below(operations.count)]
                await fuzzer.send(operation, random: index)
            }

            print("FuzzTests: \(fuzzer.sent) requests, \(fuzzer.failures.count) failed (seed \(seed))")
            #expect(fuzzer.sent >= operations.count * Hostile.scalars.count, "too few requests were sent")
            for failure in fuzzer.failures.prefix(40) { Issue.record(Comment(rawValue: failure)) }
            #expect(
                fuzzer.failures.isEmpty, "\(fuzzer.failures.count) of \(fuzzer.sent) requests failed (seed \(seed))")
            #expect(server.isRunning, "the server died during the run: \(server.stderrTail)")
            let list = try await fuzzer.request("GET", "/v1/batches", key: key)
            #expect(list?.status == 200, "GET /v1/batches after the run answered \(list?.status ?? 0)")

            try await server.stop()
            server = try await ServeProcess.start(database: database, in: directory)
            defer { server.kill() }
            let restarted = Fuzzer(port: server.port, key: key, seed: seed)
            let again = try await restarted.request("GET", "/v1/batches", key: key)
            #expect(again?.status == 200, "GET /v1/batches after a restart answered \(again?.status ?? 0)")
            #expect(server.isRunning, "the restarted server died: \(server.stderrTail)")
            try await server.stop()
        }
    }

    /// The document as JSON, converted by `scripts/check_openapi.py` (Swift has no YAML parser here).
    func openAPIDocument() async throws -> [String: Any] {
        let (status, text) = try await runScript(
            "check_openapi.py", ["--json", repositoryRoot.appendingPathComponent("docs/openapi.yaml").path])
        try #require(status == 0, "\(text)")
        return try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }
}

/// One operation of the document: its method, path template, parameters and whether it takes a body.
struct FuzzOperation: CustomStringConvertible {
    var method: String
    var path: String
    var query: [String]
    var headers: [String]
    var bodyFields: [String]
    var takesBody: Bool
    var ndjson: Bool
    var streams: Bool

    var description: String { "\(method) \(path)" }

    /// A body the operation accepts, for cases whose hostile part is elsewhere.
    var validBody: FuzzBody? {
        guard takesBody else { return nil }
        switch path {
        case "/v1/batches": return .json(#"{"type":"noop","items":[1,2]}"#)
        case "/v1/batches/{id}/items": return .json("[null,null]")
        case "/v1/webhooks": return .json(#"{"url":"http://127.0.0.1:9/hook"}"#)
        default: return .json("{}")
        }
    }

    static func all(in document: [String: Any]) throws -> [FuzzOperation] {
        let paths = try #require(document["paths"] as? [String: Any])
        func resolve(_ node: Any?) -> [String: Any] {
            var node = node as? [String: Any] ?? [:]
            while let ref = node["$ref"] as? String {
                var target: Any? = document
                for part in ref.dropFirst(2).split(separator: "/") {
                    target = (target as? [String: Any])?[String(part)]
                }
                node = target as? [String: Any] ?? [:]
            }
            return node
        }
        var operations: [FuzzOperation] = []
        for (path, item) in paths.sorted(by: { $0.key < $1.key }) {
            let item = resolve(item)
            let shared = (item["parameters"] as? [Any] ?? []).map(resolve)
            for method in ["get", "post", "put", "patch", "delete"] {
                guard let operation = item[method] as? [String: Any] else { continue }
                let parameters = shared + (operation["parameters"] as? [Any] ?? []).map(resolve)
                let names = { (place: String) in
                    parameters.filter { $0["in"] as? String == place }.compactMap { $0["name"] as? String }
                }
                let content = resolve(operation["requestBody"])["content"] as? [String: Any] ?? [:]
                var schema = resolve((content["application/json"] as? [String: Any])?["schema"])
                // A choice of shapes (the batch kinds): the first one's fields.
                if let first = (schema["oneOf"] as? [Any])?.first { schema = resolve(first) }
                var fields = (schema["properties"] as? [String: Any] ?? [:]).keys.sorted()
                let options = resolve((schema["properties"] as? [String: Any])?["options"])
                fields += (options["properties"] as? [String: Any] ?? [:]).keys.sorted().map { "options." + $0 }
                let responses = operation["responses"] as? [String: Any] ?? [:]
                let streams = (resolve(responses["200"])["content"] as? [String: Any])?["text/event-stream"] != nil
                operations.append(
                    FuzzOperation(
                        method: method.uppercased(), path: path, query: names("query"), headers: names("header"),
                        bodyFields: fields, takesBody: !content.isEmpty || method == "post",
                        ndjson: content["application/x-ndjson"] != nil, streams: streams))
            }
        }
        return operations
    }
}

/// A deterministic generator (SplitMix64), so that a failing run can be repeated.
struct SeededRandom {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `0..<count` (`count` > 0).
    mutating func below(_ count: Int) -> Int { Int(next() % UInt64(max(count, 1))) }

    mutating func pick<T>(_ values: [T]) -> T { values[below(values.count)] }

    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }
}

/// The hostile values and bodies.
enum Hostile {
    /// Values for query and path parameters and headers (as text; percent-encoded where they go in a URL).
    static let scalars: [[UInt8]] =
        [
            "", "0", "-1", "1e300", "-1e300", "1e400", "-1e400", "NaN", "nan", "Infinity", "-Infinity", "inf",
            "9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616",
            "1.5", "0x10", " 1", "1 ", "+1", "-0", "null", "true", "[]", "{}", "😀", "../../etc/passwd",
            "' OR 1=1 --", "%", "00000000-0000-0000-0000-000000000000",
            String(repeating: "9", count: 4_000), String(repeating: "a", count: 4_000),
        ].map { Array($0.utf8) } + [[0xFF, 0xFE, 0xC3], [0x61, 0x00, 0x62], [0xC0, 0x80], [0xED, 0xA0, 0x80]]

    /// JSON values (as text) put in every field of a body.
    static let values: [String] = [
        "1e300", "-1e300", "1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity", "\"NaN\"", "\"Infinity\"",
        "\"-Infinity\"", "\"1e400\"", "9223372036854775808", "-9223372036854775809", "1.5", "-1", "0", "-0", "null",
        "true", "\"\"", "[]", "{}", "[null]", "{\"\":null}", "\"\\u0000\"", "\"\\ud800\"", "{\"base\":{}}",
        String(repeating: "1", count: 400), "\"" + String(repeating: "x", count: 70_000) + "\"",
        nested(2_000, open: "[", close: "]"),
    ]

    static func nested(_ depth: Int, open: String, close: String, inner: String = "1") -> String {
        String(repeating: open, count: depth) + inner + String(repeating: close, count: depth)
    }

    /// The bodies every operation gets once.
    static func corpus(for operation: FuzzOperation) -> [FuzzBody] {
        guard operation.takesBody else { return [] }
        let deepArray = nested(10_000, open: "[", close: "]")
        let deepObject = nested(10_000, open: "{\"a\":", close: "}")
        let huge = String(repeating: "x", count: 5 << 20)
        var bodies: [FuzzBody] = [
            .json("1e400"), .json("NaN"), .json("-Infinity"), .json("null"), .json("\"text\""), .json("[]"),
            .json("{}"), .json("{"), .json(""), .json(deepArray), .json(deepObject),
            .json(#"{"type":"noop","items":\#(deepArray)}"#),
            .json(#"{"type":"noop","context":\#(deepObject)}"#),
            .json(#"{"type":"\#(huge)"}"#),
            .json(#"{"type":"noop","items":["\#(huge)"]}"#),
            .json(#"{"url":"http://\#(huge)"}"#),
            .json(#"{"statuses":["\#(huge)"]}"#),
            .bytes(Array(#"{"type":"noop","items":["\#u{FF}\#u{FE}"]}"#.utf8.map { $0 == 0xC3 ? 0xFF : $0 })),
            .bytes(Array(#"{"type":"noop"#.utf8) + [0xFF, 0xFE, 0x22, 0x7D]),
            .bytes(Array(#"{"type":"noop"#.utf8) + [0x00] + Array(#"","items":[1]}"#.utf8)),
            .bytes(Array("[1,2".utf8) + [0x00, 0x00, 0xFF]),
            .bytes([UInt8](repeating: 0, count: 4_096)),
            .json("{" + (0..<50_000).map { "\"k\($0)\":\($0)" }.joined(separator: ",") + "}"),
            .json(#"{"type":"noop","items":[\#((0..<100_001).map { _ in "1" }.joined(separator: ","))]}"#),
            .json(String(repeating: " ", count: 20 << 20) + "{}"),
            .json(
                #"{"type":"noop","options":{"chunk_size":1e300,"concurrency":-1e300,"max_attempts":1e400,"#
                    + #""item_timeout":1e400,"batch_timeout":-1e400,"ttl":1e-400,"priority":1e300}}"#),
            .json(#"{"type":"sleep","context":{"ms":1e400},"items":[{"ms":-1e300},{"ms":"NaN"},{"ms":NaN}]}"#),
            .json(#"{"type":"noop","options":{"backoff":{"base":"NaN","cap":Infinity},"rate_limit":{"rate":1e-300}}}"#),
            .json(#"{"type":"noop","items":[1e400,-1e400,NaN,Infinity,"\u0000",{"":[]}],"mode":"sync"}"#),
            .json(#"{"statuses":[1e400,"NaN",null,{}]}"#),
            .json(#"{"url":"http://127.0.0.1:9/\u0000","events":[1e400],"secret":{}}"#),
        ]
        if operation.ndjson {
            let line = #"{"n":1}"#
            bodies += [
                .ndjson(Array((line + "\n" + deepArray + "\n" + line + "\n").utf8)),
                .ndjson(Array((line + "\n1e400\nNaN\n-Infinity\n\"\(huge)\"\n").utf8)),
                .ndjson([0xFF, 0xFE, 0x0A, 0x00, 0x0A] + Array(line.utf8) + [0x0A, 0x7B]),
                .ndjson(Array(String(repeating: "\n", count: 100_000).utf8)),
                .ndjson(Array(String(repeating: "x", count: 3 << 20).utf8)),
            ]
        }
        return bodies
    }
}

/// A request body and how it is labelled.
enum FuzzBody {
    case json(String)
    case bytes([UInt8])
    case ndjson([UInt8])

    var data: [UInt8] {
        switch self {
        case .json(let text): Array(text.utf8)
        case .bytes(let bytes), .ndjson(let bytes): bytes
        }
    }

    var contentType: String { if case .ndjson = self { "application/x-ndjson" } else { "application/json" } }

    var label: String {
        let data = self.data
        let head = String(decoding: data.prefix(60), as: UTF8.self).replacingOccurrences(of: "\n", with: "\\n")
        return "\(contentType) body of \(data.count) bytes starting \(head.debugDescription)"
    }
}

/// Sends the cases and collects what went wrong.
struct Fuzzer {
    let port: Int
    let key: String
    var random: SeededRandom
    var failures: [String] = []
    var sent = 0
    /// A request went unanswered: the server may be down, and each further
    /// request would wait out its timeout, so the run stops sending.
    var unanswered = false
    /// A real batch (open, unsealed) and webhook, so that path parameters also reach past the lookup.
    var batchID = "00000000-0000-0000-0000-000000000000"
    var hookID = "0"

    init(port: Int, key: String, seed: UInt64) {
        self.port = port
        self.key = key
        self.random = SeededRandom(state: seed)
    }

    struct Answer {
        var status: Int
        var contentType: String
        var body: Data
    }

    mutating func prepare() async throws {
        let batch = try await request("POST", "/v1/batches", key: key, body: .json(#"{"type":"noop"}"#))
        let batchJSON = (try? JSONSerialization.jsonObject(with: batch?.body ?? Data())) as? [String: Any]
        batchID = try #require(batchJSON?["id"] as? String, "creating a batch: \(String(describing: batch))")
        let hook = try await request(
            "POST", "/v1/webhooks", key: key, body: .json(#"{"url":"http://127.0.0.1:9/hook"}"#))
        let hookJSON = (try? JSONSerialization.jsonObject(with: hook?.body ?? Data())) as? [String: Any]
        hookID = try #require(hookJSON?["id"] as? String, "creating a webhook: \(String(describing: hook))")
    }

    /// The path with its parameters filled in: the real batch and webhook, or `value`.
    func path(_ operation: FuzzOperation, value: [UInt8]? = nil) -> String {
        operation.path.replacingOccurrences(of: "{id}", with: value.map(Self.percentEncoded) ?? batchID)
            .replacingOccurrences(of: "{hook}", with: value.map(Self.percentEncoded) ?? hookID)
    }

    static func percentEncoded(_ bytes: [UInt8]) -> String {
        bytes.map { byte in
            let unreserved =
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || [0x2D, 0x2E, 0x5F, 0x7E].contains(byte)
            return unreserved ? String(UnicodeScalar(byte)) : String(format: "%%%02X", byte)
        }.joined()
    }

    /// Header values must be visible ASCII or obs-text for the client to send them; others are left out.
    static func headerValue(_ bytes: [UInt8]) -> String? {
        guard bytes.allSatisfy({ $0 == 0x09 || (0x20...0x7E).contains($0) || $0 >= 0x80 }) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    mutating func send(_ operation: FuzzOperation, body: FuzzBody, note: String) async {
        let query = operation.query.isEmpty ? "" : "?\(operation.query[0])=1"
        await check(operation, path: path(operation) + query, headers: [:], body: body, note: note)
    }

    /// Every parameter of the operation (path, query, headers) set to `value`.
    mutating func send(_ operation: FuzzOperation, parameters value: [UInt8], note: String) async {
        let query = operation.query.map { "\($0)=\(Self.percentEncoded(value))" }.joined(separator: "&")
        var headers: [String: String] = [:]
        if let text = Self.headerValue(value) {
            for name in operation.headers { headers[name] = text }
        }
        let body = operation.validBody
        let target = path(operation, value: operation.path.contains("{") ? value : nil)
        await check(
            operation, path: target + (query.isEmpty ? "" : "?" + query), headers: headers, body: body, note: note)
        await check(
            operation, path: path(operation) + (query.isEmpty ? "" : "?" + query), headers: headers,
            body: body, note: note)
    }

    /// One random case: a field of the body, a parameter or a header set to a hostile value, or random bytes.
    mutating func send(_ operation: FuzzOperation, random index: Int) async {
        var headers: [String: String] = [:]
        var target = path(operation)
        var body: FuzzBody? = nil
        switch random.below(5) {
        case 0 where !operation.bodyFields.isEmpty:
            let field = random.pick(operation.bodyFields)
            let value = random.pick(Hostile.values)
            let inner =
                field.hasPrefix("options.")
                ? #""options":{"\#(field.dropFirst(8))":\#(value)}"# : #""\#(field)":\#(value)"#
            let type = field == "type" ? "" : #""type":"\#(random.pick(["noop", "sleep", "http"]))","#
            body = .json("{\(type)\(inner)}")
        case 1:
            body = .bytes(random.bytes(random.below(4_096)))
        case 2 where !operation.query.isEmpty:
            let name = random.pick(operation.query)
            target += "?\(name)=\(Self.percentEncoded(random.pick(Hostile.scalars)))"
        case 3:
            let name = random.pick(operation.headers + ["Content-Type", "Authorization", "Accept-Encoding", "Accept"])
            if let value = Self.headerValue(random.pick(Hostile.scalars)) { headers[name] = value }
            body = operation.validBody
        default:
            body = .json(random.pick(Hostile.values))
        }
        if !operation.takesBody, random.below(2) == 0 { body = nil }
        await check(operation, path: target, headers: headers, body: body, note: "random case \(index)")
    }

    /// A valid submit whose body arrives a few bytes at a time; the server meanwhile answers others.
    mutating func trickle() async {
        let text = Array(#"{"type":"noop","items":[1,2,3]}"#.utf8)
        let port = self.port
        let key = self.key
        let stream = AsyncStream<ByteBuffer> { continuation in
            let task = Task {
                for start in stride(from: 0, to: text.count, by: 4) {
                    continuation.yield(ByteBuffer(bytes: text[start..<min(start + 4, text.count)]))
                    try? await Task.sleep(for: .milliseconds(150))
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
        async let slow: Answer? = {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/batches")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(key)")
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .stream(stream, length: .known(Int64(text.count)))
            return try? await Self.execute(request)
        }()
        let others = try? await request("GET", "/healthz", key: nil)
        sent += 2
        if others?.status != 200 { failures.append("GET /healthz during a trickled body: \(others?.status ?? 0)") }
        let answer = await slow
        if answer.map({ (200..<300).contains($0.status) }) != true {
            failures.append("a trickled POST /v1/batches answered \(answer?.status ?? 0), not 2xx")
        }
    }

    mutating func check(
        _ operation: FuzzOperation, path: String, headers: [String: String], body: FuzzBody?, note: String
    )
        async
    {
        guard !unanswered else { return }
        sent += 1
        let shownHeaders = headers.mapValues { $0.prefix(40) }
        let what =
            "\(operation.method) \(path.prefix(200)) [\(note)] \(body?.label ?? "no body") headers \(shownHeaders)"
        let keyed = random.below(10) != 0
        var headers = headers
        if let body, headers["Content-Type"] == nil { headers["Content-Type"] = body.contentType }
        let answer: Answer?
        do {
            answer = try await request(
                operation.method, path, key: keyed && headers["Authorization"] == nil ? key : nil, headers: headers,
                body: body, streaming: operation.streams)
        } catch {
            failures.append("\(what): no answer (\(error))")
            unanswered = true
            return
        }
        guard let answer else { return }
        let text = String(decoding: answer.body.prefix(300), as: UTF8.self)
        if answer.status >= 500 {
            failures.append("\(what): \(answer.status) \(text)")
        } else if answer.status >= 400 {
            let problem = (try? JSONSerialization.jsonObject(with: answer.body)) as? [String: Any]
            if !answer.contentType.hasPrefix("application/problem+json") || problem?["status"] as? Int != answer.status
                || problem?["detail"] as? String == nil
            {
                failures.append("\(what): \(answer.status) as \(answer.contentType): \(text)")
            }
        }
    }

    /// Sends one request; a streamed answer (an event stream) is judged by its head alone. Nil: not sendable.
    func request(
        _ method: String, _ path: String, key: String?, headers: [String: String] = [:], body: FuzzBody? = nil,
        streaming: Bool = false
    ) async throws -> Answer? {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = HTTPMethod(rawValue: method)
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body.data)) }
        return try await Self.execute(request, streaming: streaming)
    }

    static func execute(_ request: HTTPClientRequest, streaming: Bool = false) async throws -> Answer {
        let response = try await LiveServer.client.execute(request, timeout: .seconds(60))
        let contentType = response.headers.first(name: "content-type") ?? ""
        if streaming, response.status == .ok {
            return Answer(status: 200, contentType: contentType, body: Data())
        }
        let buffer = try await response.body.collect(upTo: 64 << 20)
        return Answer(
            status: Int(response.status.code), contentType: contentType, body: Data(buffer.readableBytesView))
    }
}

/// A `tranche serve` process on a SQLite database, on a free port.
struct ServeProcess {
    let process: TrancheProcess
    let port: Int

    static func createKey(database: String, in directory: URL) async throws -> String {
        let created = try await tranche(["keys", "create", "--database", database, "--tenant", "fuzz"], in: directory)
        let key = created.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(created.status == 0 && !key.isEmpty, "tranche keys create failed: \(created.stderr)")
        return key
    }

    /// Starts `tranche serve` and waits (60 s at most) for the port it prints.
    static func start(database: String, in directory: URL) async throws -> ServeProcess {
        let (process, url) = try await startServer(
            ["--database", database, "--drain-grace", "1", "--http-allow", "127.0.0.1"], in: directory)
        let port = try #require(URLComponents(string: url)?.port, "no port in \(url)")
        return ServeProcess(process: process, port: port)
    }

    var isRunning: Bool { process.process.isRunning }

    var stderrTail: String { String(process.stderr.suffix(2_000)) }

    /// SIGTERM, then waits (60 s at most) for the exit.
    func stop() async throws {
        guard isRunning else { return }
        process.process.terminate()
        _ = try await process.wait(seconds: 60)
    }

    func kill() {
        if isRunning { process.kill9() }
    }
}
