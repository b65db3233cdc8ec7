import Foundation
import Synchronization
import Testing
import TrancheEngine
import TrancheSQLite
import TrancheStrategies
import TrancheTestSupport

@Suite("http strategy")
struct HTTPStrategyTests {
    func bind(
        _ context: JSONValue, configuration: HTTPStrategy.Configuration = .init(outbound: .loopback)
    ) throws -> BoundStrategy {
        let strategy = AnyBatchStrategy(HTTPStrategy(configuration: configuration))
        return try strategy.bind(context: try strategy.prepare(context: try JSONText(encoding: context)))
    }

    func input(_ payload: String, seq: Int64 = 7, attempt: Int = 1) -> ItemInput {
        ItemInput(
            batchID: BatchID("01234567-89ab-7def-8123-456789abcdef")!, seq: seq, payload: JSONText(unchecked: payload),
            attempt: attempt)
    }

    @Test("requests are built from templates and succeed with status and body as output")
    func success() async throws {
        let server = LoopbackHTTPServer { request, _ in
            .init(status: 201, headers: ["Content-Type": "application/json"], body: #"{"created":"\#(request.uri)"}"#)
        }
        try await server.withRunning { port in
            let bound = try bind([
                "url": .string("http://127.0.0.1:\(port)/users/{{id}}?name={{name}}"),
                "headers": ["Authorization": "Bearer {{token}}", "X-Seq": "{{seq}}"],
            ])
            let result = await bound.process(input(#"{"id": 42, "name": "Ana María", "token": "t0k"}"#))
            let output = try result.get()
            #expect(try output.value() == ["status": 201, "body": ["created": "/users/42?name=Ana%20Mar%C3%ADa"]])
            let request = try #require(server.requests.first)
            #expect(request.method == "POST")
            #expect(request.headers["authorization"] == "Bearer t0k")
            #expect(request.headers["x-seq"] == "7")
            #expect(request.headers["idempotency-key"] == "01234567-89ab-7def-8123-456789abcdef:7")
            #expect(request.headers["x-tranche-attempt"] == "1")
            #expect(request.headers["content-type"] == "application/json")
            #expect(request.body == #"{"id": 42, "name": "Ana María", "token": "t0k"}"#)
        }
    }

    @Test("statuses are classified: 5xx and 429 retryable with Retry-After, 4xx permanent, 401/403 fatal")
    func classification() async throws {
        let server = LoopbackHTTPServer { request, _ in
            let status = Int(request.uri.dropFirst())!
            return .init(
                status: status, headers: status == 503 || status == 429 ? ["Retry-After": "7"] : [:],
                body: "nope \(status)")
        }
        try await server.withRunning { port in
            let bound = try bind(["url": .string("http://127.0.0.1:\(port)/{{status}}"), "method": "GET"])
            func error(_ status: Int) async -> ItemError? {
                if case .failure(let error) = await bound.process(input(#"{"status": \#(status)}"#)) { return error }
                return nil
            }
            let unavailable = try #require(await error(503))
            #expect(unavailable.category == .retryable)
            #expect(unavailable.code == "http_503")
            #expect(unavailable.retryAfter == 7)
            #expect(unavailable.message == "HTTP 503: nope 503")
            #expect(await error(429)?.category == .retryable)
            #expect(await error(500)?.category == .retryable)
            #expect(await error(404)?.category == .permanent)
            #expect(await error(422)?.code == "http_422")
            #expect(await error(401)?.category == .fatal)
            #expect(await error(403)?.category == .fatal)
        }
    }

    @Test("success codes are configurable and response bodies are bounded")
    func bounded() async throws {
        let server = LoopbackHTTPServer { _, _ in .init(status: 302, body: String(repeating: "x", count: 200_000)) }
        try await server.withRunning { port in
            let bound = try bind([
                "url": .string("http://127.0.0.1:\(port)/"), "method": "GET", "success_codes": [302],
                "max_response_bytes": 1000,
            ])
            let output = try await bound.process(input("{}")).get().value()
            #expect(output["status"] == 302)
            #expect(output["body"]?.stringValue?.count == 1000)
        }
    }

    @Test("a failed request's error carries a bounded excerpt of the body: 512 bytes and the size of the rest")
    func boundedErrorExcerpt() async throws {
        let size = 1 << 20
        let server = LoopbackHTTPServer { _, _ in .init(status: 500, body: String(repeating: "y", count: size)) }
        try await server.withRunning { port in
            let bound = try bind(["url": .string("http://127.0.0.1:\(port)/"), "method": "GET"])
            guard case .failure(let error) = await bound.process(input("{}")) else {
                Issue.record("a 500 succeeded")
                return
            }
            #expect(error.code == "http_500")
            #expect(error.category == .retryable)
            let excerpt = String(repeating: "y", count: ErrorExcerpt.maxBytes)
            #expect(error.message == "HTTP 500: \(excerpt)…(\(size - ErrorExcerpt.maxBytes) bytes more)")
        }
    }

    @Test("excerpts are cut at a character boundary, from the head or the tail")
    func excerptBoundaries() {
        let text = "a" + String(repeating: "é", count: 300)  // 601 bytes; byte 512 is inside an é.
        #expect(ErrorExcerpt.head(of: text) == "a" + String(repeating: "é", count: 255) + "…(90 bytes more)")
        #expect(ErrorExcerpt.tail(of: text) == "(89 bytes before)…" + String(repeating: "é", count: 256))
        #expect(ErrorExcerpt.head(of: "short") == "short")
        #expect(ErrorExcerpt.head(of: "cut", totalBytes: 1_000) == "cut…(997 bytes more)")
    }

    @Test("headers are secret, and the body when the context says so; the rest shows as given")
    func secretFields() throws {
        let strategy = AnyBatchStrategy(HTTPStrategy())
        let plain = try strategy.prepare(
            context: JSONText(unchecked: #"{"url": "http://h/", "headers": {"A": "t0k"}, "body": "b"}"#))
        #expect(
            strategy.publicContext(plain)
                == ["url": "http://h/", "method": "POST", "headers": "***", "body": "b"])
        let secret = try strategy.prepare(
            context: JSONText(unchecked: #"{"url": "http://h/", "body": "b", "secret_body": true}"#))
        #expect(
            strategy.publicContext(secret) == [
                "url": "http://h/", "method": "POST", "body": "***", "secret_body": true,
            ])
        // A context the strategy cannot read hides every field.
        #expect(strategy.publicContext(JSONText(unchecked: #"{"nourl": "x"}"#)) == ["nourl": "***"])
    }

    @Test("a refused connection is retryable and says nothing of the request")
    func refused() async throws {
        let bound = try bind(["url": "http://127.0.0.1:1/secret-path?token=abc"])
        guard case .failure(let error) = await bound.process(input("{}")) else {
            Issue.record("a refused connection succeeded")
            return
        }
        #expect(error.category == .retryable)
        #expect(error.code == "connection_error")
        #expect(!error.message.contains("abc"))
    }

    @Test("bad contexts and internal IP literals off the allow-list are refused at submission")
    func prepare() throws {
        let strategy = AnyBatchStrategy(
            HTTPStrategy(configuration: .init(outbound: OutboundPolicy(allowing: [.init(host: "10.0.0.2")]))))
        #expect(throws: OptionsError.self) {
            try strategy.prepare(context: JSONText(unchecked: #"{"url": "ftp://x/"}"#))
        }
        #expect(throws: OptionsError.self) {
            try strategy.prepare(context: JSONText(unchecked: #"{"url": "http://10.0.0.1/"}"#))
        }
        #expect(throws: OptionsError.self) {
            try strategy.prepare(context: JSONText(unchecked: #"{"url": "http://api.example.com/", "method": "BREW"}"#))
        }
        #expect(throws: OptionsError.self) { try strategy.prepare(context: JSONText(unchecked: #"{"nourl": 1}"#)) }
        #expect(throws: OptionsError.self) {
            try strategy.prepare(context: JSONText(unchecked: #"{"url": "http://localhost:8080/"}"#))
        }
        #expect(throws: OptionsError.self) {
            try strategy.prepare(context: JSONText(unchecked: #"{"url": "http://[::ffff:169.254.169.254]/"}"#))
        }
        _ = try strategy.prepare(context: JSONText(unchecked: #"{"url": "https://api.example.com/u/{{id}}"}"#))
        _ = try strategy.prepare(context: JSONText(unchecked: #"{"url": "http://10.0.0.2:8080/"}"#))
        // A host from the item is checked when called.
        _ = try strategy.prepare(context: JSONText(unchecked: #"{"url": "http://{{host}}/"}"#))
    }

    @Test("through the engine, a flaky server's items all end up succeeded")
    func engineRun() async throws {
        // Every third item's first request fails with 503 and a short
        // Retry-After. (Failing every third request instead can meet the same
        // item again and again when the pace sends one call at a time.)
        let seen = Mutex<Set<String>>([])
        let server = LoopbackHTTPServer { request, _ in
            let first = seen.withLock { $0.insert(request.uri).inserted }
            let seq = request.uri.split(separator: "/").last.flatMap { Int($0) } ?? 0
            return first && seq % 3 == 0
                ? .init(status: 503, headers: ["Retry-After": "0"]) : .init(status: 200, body: #"{"ok":true}"#)
        }
        try await server.withRunning { port in
            try await withTemporaryDirectory("tranche-http") { directory in
                let store = try SQLiteBatchStore(path: directory.appendingPathComponent("h.db").path)
                var configuration = TrancheEngine.Configuration()
                configuration.sweepInterval = 0.05
                let engine = TrancheEngine(
                    store: store, strategies: BuiltinStrategies.all(), configuration: configuration)
                var options = BatchOptions()
                options.chunkSize = 10
                options.backoff = Backoff(base: 0.01, cap: 0.02)
                let report = try await withRunning(engine) { [options] engine in
                    try await engine.execute(
                        Submission(
                            type: "http",
                            context: try JSONText(encoding: [
                                "url": JSONValue.string("http://127.0.0.1:\(port)/items/{{seq}}")
                            ]
                            ),
                            options: options),
                        items: (0..<60).map { JSONText(unchecked: #"{"n":\#($0)}"#) })
                }
                #expect(report.batch.status == .completed)
                #expect(report.batch.counts.succeeded == 60)
                #expect(report.batch.counts.retried > 0)
                #expect(server.requests.count == 60 + Int(report.batch.counts.retried))
                #expect(Set(server.requests.compactMap { $0.headers["idempotency-key"] }).count == 60)
            }
        }
    }
}
