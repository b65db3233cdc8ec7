import NIOCore
import Testing
import TrancheTestSupport

@testable import TrancheStrategies

@Suite("outbound HTTP client")
struct OutboundHTTPClientTests {
    /// Idle pooled connections to 127.0.0.1 at `port`.
    func idle(port: Int) -> Int {
        let key = ConnectionPool.Key(address: ip("127.0.0.1"), port: port, tls: false, serverName: nil)
        return OutboundHTTPClient.connections.state.withLock { $0.idle[key]?.count ?? 0 }
    }

    func get(_ url: String, deadline: NIODeadline? = nil) async throws -> OutboundResponse {
        try await OutboundHTTPClient.execute(
            OutboundRequest(url: url), policy: .loopback, deadline: deadline, maxRedirects: 0, maxBodyBytes: 100)
    }

    @Test("a connection is kept alive and reused; a cancelled request's connection is closed, not pooled")
    func keepAliveAndCancellation() async throws {
        let server = LoopbackHTTPServer { request, _ in
            request.uri == "/silent" ? .init(status: 200, silent: true) : .init(status: 200, body: "ok")
        }
        try await server.withRunning { port in
            for _ in 0..<3 {
                let response = try await get("http://127.0.0.1:\(port)/ok")
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == "ok")
                #expect(idle(port: port) == 1)
            }
            let waiting = Task { try await get("http://127.0.0.1:\(port)/silent") }
            try await waitUntil("the silent request to arrive") { server.requests.contains { $0.uri == "/silent" } }
            waiting.cancel()
            let outcome = try await withDeadline("the cancelled request to end") { await waiting.result }
            #expect(throws: CancellationError.self) { try outcome.get() }
            #expect(idle(port: port) == 0)
            #expect(try await get("http://127.0.0.1:\(port)/ok").status == .ok)
        }
    }

    @Test("a deadline ends a request a receiver never answers, as a transport error that names it")
    func deadline() async throws {
        let server = LoopbackHTTPServer { _, _ in .init(status: 200, silent: true) }
        try await server.withRunning { port in
            let error = try await withDeadline("the request to pass its deadline") { () async -> (any Error)? in
                do {
                    _ = try await get("http://127.0.0.1:\(port)/", deadline: .now() + .milliseconds(200))
                    return nil
                } catch {
                    return error
                }
            }
            #expect((error as? OutboundTransportError) == .deadline)
            #expect(idle(port: port) == 0)
        }
    }

    @Test("a body beyond the limit is counted, the kept part cut at the limit")
    func boundedBody() async throws {
        let server = LoopbackHTTPServer { _, _ in .init(status: 200, body: String(repeating: "z", count: 5_000)) }
        try await server.withRunning { port in
            let response = try await get("http://127.0.0.1:\(port)/")
            #expect(response.body.readableBytes == 100)
            #expect(response.bytes == 5_000)
            #expect(idle(port: port) == 1)
        }
    }
}
