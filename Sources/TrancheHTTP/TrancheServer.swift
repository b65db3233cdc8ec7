import Foundation
import HTTPTypes
public import Hummingbird
public import Logging
import NIOCore
public import Prometheus
public import TrancheEngine

/// The HTTP API of DESIGN.md over a ``TrancheEngine``.
public struct TrancheServer: Sendable {
    /// Server settings. Every field has a documented default.
    public struct Configuration: Sendable {
        /// Batches of at most this many items run at once in `mode: auto`. Default 200.
        public var syncThreshold: Int = 200
        /// Seconds a synchronous submit waits before it answers 202 instead. Default 30.
        public var syncTimeout: Double = 30
        /// The largest JSON body. Default 16 MiB.
        public var maxBodyBytes: Int = 16 << 20
        /// The largest streamed NDJSON upload. Default 4 GiB.
        public var maxUploadBytes: Int = 4 << 30
        /// The most items one request may carry inline. Default 100,000.
        public var maxInlineItems: Int = 100_000
        /// The largest single item. Default 1 MiB.
        public var maxItemBytes: Int = 1 << 20
        /// Requests in flight before the server answers 503. Default 1,024.
        public var maxRequestsInFlight: Int = 1_024
        /// Items one tenant may have queued (accepted, not yet finished)
        /// before submits and appends answer 429. Default 50,000,000.
        public var maxQueuedItemsPerTenant: Int64 = 50_000_000
        /// No API keys: every caller is the `local` tenant (loopback only).
        public var open: Bool = false
        /// Where `/metrics` reads from: the registry the process bootstrapped
        /// swift-metrics with. Nil: no `/metrics`.
        public var metrics: PrometheusCollectorRegistry?
        /// Hosts webhooks may call; nil allows any.
        public var webhookHosts: Set<String>?
        /// Seconds a webhook delivery is kept once it ended (delivered, or
        /// failed out of attempts). Default 7 days. Idempotency records need
        /// no setting: they go with their batch, when it expires or is deleted.
        public var deliveryRetention: Double = defaultDeliveryRetention

        /// 7 days.
        public static let defaultDeliveryRetention: Double = 7 * 86_400

        public init() {}
    }

    public let engine: TrancheEngine
    public let store: any ServerStore
    public let configuration: Configuration

    public init(engine: TrancheEngine, store: any ServerStore, configuration: Configuration = Configuration()) {
        self.engine = engine
        self.store = store
        self.configuration = configuration
    }

    /// The webhook dispatcher for this server: `settings` with the hosts the
    /// server allows (`webhookHosts`) and its `deliveryRetention`.
    public func webhookDispatcher(
        _ settings: WebhookDispatcher.Configuration = .init(), logger: Logger
    ) -> WebhookDispatcher {
        var settings = settings
        settings.allowedHosts = configuration.webhookHosts
        settings.retention = configuration.deliveryRetention
        settings.clock = engine.configuration.clock
        return WebhookDispatcher(store: store, configuration: settings, logger: logger)
    }

    /// The router with every route and middleware.
    public func router() -> Router<TrancheRequestContext> {
        let router = Router(context: TrancheRequestContext.self)
        router.add(middleware: ProblemMiddleware())
        if configuration.metrics != nil { router.add(middleware: MetricsMiddleware()) }
        router.add(middleware: BackpressureMiddleware(gate: RequestGate(limit: configuration.maxRequestsInFlight)))
        addAdminRoutes(router)
        let v1 = router.group("v1").add(middleware: APIKeyMiddleware(store: store, open: configuration.open))
        addBatchRoutes(v1)
        addItemRoutes(v1)
        addEventRoutes(v1)
        addWebhookRoutes(v1)
        v1.get("nodes") { _, _ in
            let nodes = try await engine.liveNodes()
            return Self.json(NodeList(nodes: nodes.map(NodeView.init)))
        }
        return router
    }

    // MARK: - Shared by the routes

    /// The batch named in the path, if it exists and belongs to the caller; 404 otherwise.
    func owned(_ context: TrancheRequestContext) async throws -> BatchRecord {
        let text = context.parameters.get("id") ?? ""
        guard let id = BatchID(text), let record = try await store.batch(id), record.owner == context.tenant else {
            throw Problem(.notFound, "no batch \(text)")
        }
        return record
    }

    /// The batch as the API shows it, with its first five item errors
    /// (in `seq` order) unless `withErrors` is false (lists).
    func batchView(_ record: BatchRecord, withErrors: Bool = true) async throws -> BatchView {
        var errors: [BatchErrorView] = []
        if withErrors, record.counts.skipped + record.counts.dead + record.counts.failed > 0 {
            for group in try await store.errorGroups(of: record.id, samples: 5) {
                errors += group.samples.map { BatchErrorView(seq: $0.seq, code: group.code, message: $0.message) }
            }
            errors = Array(Set(errors).sorted { $0.seq < $1.seq }.prefix(5))
        }
        let (rate, eta) = engine.throughput(of: record)
        return BatchView(record, rate: rate, eta: eta, errors: errors)
    }

    func batchResponse(_ record: BatchRecord, status: HTTPResponse.Status = .ok) async throws -> Response {
        Self.json(try await batchView(record), status: status)
    }

    func limit(_ request: Request, default value: Int) throws -> Int {
        guard let text = request.uri.queryParameters.get("limit") else { return value }
        guard let limit = Int(text), (1...1_000).contains(limit) else {
            throw Problem(.badRequest, "limit must be between 1 and 1000")
        }
        return limit
    }

    func itemStatus(_ text: String) throws -> ItemStatus {
        guard let status = ItemStatus(name: text) else {
            throw Problem(
                .badRequest, "status must be one of \(ItemStatus.allCases.map(\.name).joined(separator: ", "))")
        }
        return status
    }

    /// A JSON answer: one of the API's views, encoded with sorted keys.
    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let text = (try? JSONText(encoding: value).text) ?? "{}"
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

extension HTTPField.Name {
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let idempotentReplayed = HTTPField.Name("Idempotent-Replayed")!
}
