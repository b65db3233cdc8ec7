import Foundation
import Logging
import Testing
import TrancheHTTP
import TranchePostgres
import TrancheStore
import TrancheStrategies
import TrancheTestSupport

/// Webhook deliveries with several nodes (two dispatchers over two stores on
/// one PostgreSQL database) and with a receiver that never answers.
@Suite("Webhooks across nodes")
struct WebhookClusterTests {
    /// Runs two dispatchers (two nodes) over two stores on one fresh
    /// PostgreSQL database, with `body` given the first store, and stops them after.
    func withTwoNodes(
        timeout: Double = 10, _ body: @escaping @Sendable (PostgresBatchStore) async throws -> Void
    ) async throws {
        let url = try await TestPostgres.freshDatabaseURL()
        try await TestPostgres.withStore(url: url) { first in
            try await TestPostgres.withStore(url: url) { second in
                var configuration = WebhookDispatcher.Configuration(outbound: .loopback)
                configuration.timeout = timeout
                configuration.pollInterval = 0.05
                let dispatchers = [first, second].map { store in
                    WebhookDispatcher(
                        store: store, configuration: configuration, logger: Logger(label: "tranche.test.webhooks"))
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for dispatcher in dispatchers { group.addTask { try await dispatcher.run() } }
                    defer { group.cancelAll() }
                    try await body(first)
                }
            }
        }
    }

    /// Creates `count` batches of `tenant` (each records a few events) and
    /// returns how many events they recorded.
    func recordEvents(_ store: PostgresBatchStore, tenant: String, batches count: Int) async throws -> Int {
        var events = 0
        for _ in 0..<count {
            let batch = try await store.createBatch(NewBatch(type: "t", owner: tenant), items: [])
            events += try await store.events(of: batch.id, afterID: 0, limit: 100).count
        }
        return events
    }

    @Test("two nodes on one PostgreSQL database deliver each event exactly once")
    func twoNodesDeliverOnce() async throws {
        let receiver = LoopbackHTTPServer { _, _ in .init(status: 204) }
        try await receiver.withRunning { port in
            try await withDeadline(seconds: 300, "two nodes delivering, then stopping") {
                try await withTwoNodes { store in
                    try await store.createWebhook(
                        WebhookRecord(
                            id: "w1", tenant: "t1", url: "http://127.0.0.1:\(port)/hook", events: [], secret: "s",
                            createdAt: Date()))
                    let expected = try await recordEvents(store, tenant: "t1", batches: 8)
                    try await waitUntil("every event's delivery recorded as delivered") {
                        let deliveries = try await store.deliveries(webhookID: "w1", limit: 1_000)
                        return deliveries.count == expected && deliveries.allSatisfy { $0.status == "delivered" }
                    }
                    let requests = receiver.requests
                    let ids = requests.compactMap { $0.headers["tranche-delivery-id"] }
                    #expect(ids.count == requests.count, "every request names its delivery")
                    #expect(Set(ids).count == expected)
                    #expect(requests.count == expected, "no delivery was POSTed twice")
                    #expect(Set(requests.compactMap { $0.headers["tranche-event-id"] }).count == expected)
                    let attempts = try await store.deliveries(webhookID: "w1", limit: 1_000).map(\.attempts)
                    #expect(attempts.allSatisfy { $0 == 1 })
                }
            }
        }
    }

    @Test("a receiver that never answers holds only its own webhook's slots")
    func silentReceiverDelaysNoOneElse() async throws {
        let silent = LoopbackHTTPServer { _, _ in .init(status: 204, silent: true) }
        let prompt = LoopbackHTTPServer { _, _ in .init(status: 204) }
        try await silent.withRunning { silentPort in
            try await prompt.withRunning { promptPort in
                try await withDeadline(seconds: 300, "deliveries beside a silent receiver, then stopping") {
                    // The silent receiver's requests time out only after 10 minutes.
                    try await withTwoNodes(timeout: 600) { store in
                        try await store.createWebhook(
                            WebhookRecord(
                                id: "slow", tenant: "a", url: "http://127.0.0.1:\(silentPort)/hook", events: [],
                                secret: "s", createdAt: Date()))
                        try await store.createWebhook(
                            WebhookRecord(
                                id: "fast", tenant: "b", url: "http://127.0.0.1:\(promptPort)/hook", events: [],
                                secret: "s", createdAt: Date()))
                        // Tenant a's receiver is flooded first, then tenant b's events come.
                        _ = try await recordEvents(store, tenant: "a", batches: 20)
                        try await waitUntil("the silent receiver holding requests") { !silent.requests.isEmpty }
                        let expected = try await recordEvents(store, tenant: "b", batches: 4)
                        try await waitUntil("tenant b's deliveries all delivered while a's receiver is silent") {
                            let deliveries = try await store.deliveries(webhookID: "fast", limit: 1_000)
                            return deliveries.count == expected && deliveries.allSatisfy { $0.status == "delivered" }
                        }
                        // Two nodes, each at most its per-webhook cap of slots on the silent receiver.
                        let cap = WebhookDispatcher.Configuration().perWebhookConcurrency
                        #expect(silent.requests.count <= 2 * cap)
                        let slow = try await store.deliveries(webhookID: "slow", limit: 1_000)
                        #expect(slow.allSatisfy { $0.status != "delivered" })
                    }
                }
            }
        }
    }
}
