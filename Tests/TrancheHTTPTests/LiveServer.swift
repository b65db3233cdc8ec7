import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import Testing
import TrancheEngine
import TrancheHTTP
import TrancheSQLite
import TrancheStrategies
import TrancheTestSupport

/// A real `tranche` HTTP server on 127.0.0.1 with a fresh SQLite store.
struct LiveServer {
    let port: Int
    let store: SQLiteBatchStore
    let engine: TrancheEngine

    struct Reply {
        var status: Int
        var headers: [String: String]
        var body: Data

        var text: String { String(decoding: body, as: UTF8.self) }
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
    }

    /// Runs `body` against a live server; `keyed` makes tenants with keys "a"
    /// and "b"; `strategies` are registered besides noop, sleep and exec.
    static func with(
        keyed: Bool = false, strategies: [AnyBatchStrategy] = [], maxBodyBytes: Int? = nil,
        maxQueuedItems: Int64? = nil, deliveryRetention: Double? = nil,
        configure: @Sendable (inout TrancheServer.Configuration) -> Void = { _ in },
        _ body: @Sendable (LiveServer, [String: String]) async throws -> Void
    ) async throws {
        try await withTemporaryDirectory("tranche-http") { directory in
            let store = try SQLiteBatchStore(path: directory.appendingPathComponent("api.db").path)
            var keys: [String: String] = [:]
            if keyed {
                for tenant in ["a", "b"] {
                    let (record, key) = APIKeys.make(tenant: tenant)
                    try await store.createAPIKey(record)
                    keys[tenant] = key
                }
            }
            var engineConfiguration = TrancheEngine.Configuration()
            engineConfiguration.sweepInterval = 0.05
            engineConfiguration.checkpointInterval = 0.1
            // Long enough that no lease expires on a busy machine: an item
            // runs twice only when a test means it to.
            engineConfiguration.leaseDuration = 60
            let engine = TrancheEngine(
                store: store,
                strategies: [
                    BuiltinStrategies.noop, AnyBatchStrategy(SleepStrategy()), AnyBatchStrategy(ExecStrategy()),
                ] + strategies,
                configuration: engineConfiguration)
            var configuration = TrancheServer.Configuration()
            configuration.open = !keyed
            if let maxBodyBytes { configuration.maxBodyBytes = maxBodyBytes }
            if let maxQueuedItems { configuration.maxQueuedItemsPerTenant = maxQueuedItems }
            configuration.outbound = .loopback
            if let deliveryRetention { configuration.deliveryRetention = deliveryRetention }
            configure(&configuration)
            var webhooks = WebhookDispatcher.Configuration()
            webhooks.backoff = Backoff(base: 0.05, cap: 0.1)
            webhooks.pollInterval = 0.05
            webhooks.pruneInterval = 0.05
            let server = TrancheServer(engine: engine, store: store, configuration: configuration)
            let dispatcher = server.webhookDispatcher(webhooks, logger: Logger(label: "test"))
            let (ports, continuation) = AsyncStream<Int>.makeStream()
            let application = server.application(
                host: "127.0.0.1", port: 0,
                onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) })
            let tenantKeys = keys
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await application.run() }
                group.addTask { try await dispatcher.run() }
                defer { group.cancelAll() }
                // The engine drains and stops before the server and the
                // dispatcher are canceled: no chunk sees a canceled store.
                try await withRunning(engine) { engine in
                    var iterator = ports.makeAsyncIterator()
                    let port = try #require(await iterator.next())
                    try await body(LiveServer(port: port, store: store, engine: engine), tenantKeys)
                }
            }
        }
    }

    /// A client that leaves compressed bodies compressed (the shared one inflates them).
    static let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: .init())

    /// Sends a request; `body` is sent as is.
    func request(
        _ method: NIOHTTP1.HTTPMethod, _ path: String, body: String? = nil, key: String? = nil,
        headers: [String: String] = [:]
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await Self.client.execute(request, timeout: .seconds(120))
        let buffer = try await response.body.collect(upTo: 512 << 20)
        var replyHeaders: [String: String] = [:]
        for header in response.headers { replyHeaders[header.name.lowercased()] = header.value }
        return Reply(status: Int(response.status.code), headers: replyHeaders, body: Data(buffer.readableBytesView))
    }

    /// Polls the batch until `condition` holds; records an issue naming the
    /// batch and its last state after ``defaultDeadline`` seconds.
    func waitFor(_ id: String, key: String? = nil, _ condition: ([String: Any]) -> Bool) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + .seconds(defaultDeadline)
        while true {
            let reply = try await request(.GET, "/v1/batches/\(id)", key: key)
            if condition(reply.json) { return reply.json }
            if ContinuousClock.now > deadline {
                Issue.record("waited \(Int(defaultDeadline)) s for batch \(id) to reach the condition: \(reply.text)")
                return reply.json
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

func items(_ count: Int) -> String {
    "[" + (0..<count).map { #"{"n":\#($0)}"# }.joined(separator: ",") + "]"
}

extension [String: Any] {
    func int(_ key: String) -> Int? { self[key] as? Int }
    subscript(path first: String, _ second: String) -> Any? { (self[first] as? [String: Any])?[second] }
}

extension OutboundPolicy {
    /// Internal addresses refused, but 127.0.0.1 (where the tests' receivers listen) allowed.
    static let loopback = OutboundPolicy(allowing: [.init(host: "127.0.0.1")])
}
