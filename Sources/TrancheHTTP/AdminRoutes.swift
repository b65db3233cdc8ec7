import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Prometheus
import TrancheEngine

/// What needs no API key (health, readiness, the dashboard and the OpenAPI
/// document), what needs an admin key once keys exist (`/metrics`,
/// `/v1/nodes`), and stream tokens.
extension TrancheServer {
    func addAdminRoutes(_ router: Router<TrancheRequestContext>, keys: APIKeyMiddleware) {
        router.get("healthz") { _, _ in Self.json(HealthView(status: "ok")) }
        router.get("readyz") { _, _ in
            do {
                _ = try await store.latestEventID()
                return Self.json(HealthView(status: "ready"))
            } catch {
                throw Problem(.serviceUnavailable, "the store is not reachable", retryAfter: 1)
            }
        }
        if let registry = configuration.metrics {
            router.get("metrics") { request, _ in
                try await keys.requireAdmin(request)
                return try await metrics(registry)
            }
        }
        router.get("/") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-cache"],
                body: .init(byteBuffer: ByteBuffer(bytes: PackageResources.dashboard_html)))
        }
        router.get("openapi.yaml") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/yaml"],
                body: .init(byteBuffer: ByteBuffer(bytes: PackageResources.openapi_yaml)))
        }
    }

    /// The routes behind the key check: `/v1/nodes` (admin keys only) and
    /// `POST /v1/stream-tokens`.
    func addKeyedAdminRoutes(_ v1: RouterGroup<TrancheRequestContext>, streamTokens: StreamTokens) {
        v1.get("nodes") { _, context in
            guard context.admin else {
                throw Problem(.forbidden, "this needs an admin key (`tranche keys create --admin`)")
            }
            let nodes = try await engine.liveNodes()
            return Self.json(NodeList(nodes: nodes.map(NodeView.init)))
        }
        v1.post("stream-tokens") { _, context in
            let (token, expiresAt) = try await streamTokens.make(tenant: context.tenant, keyID: context.keyID)
            return Self.json(
                StreamTokenView(token: token, expiresAt: expiresAt, expiresIn: Int(StreamTokens.lifetime)),
                status: .created)
        }
    }

    /// `GET /metrics`: what the process recorded, and the queue depth, read
    /// from the store at each scrape.
    func metrics(_ registry: PrometheusCollectorRegistry) async throws -> Response {
        var byStatus = Dictionary(uniqueKeysWithValues: BatchStatus.allCases.map { ($0, (Int64(0), Int64(0))) })
        for summary in try await store.statusSummary() {
            byStatus[summary.status] = (summary.batches, summary.waitingItems)
        }
        var waiting: Int64 = 0
        for (status, (batches, items)) in byStatus {
            registry.makeGauge(descriptor: Self.batchesGauge, labels: [("status", status.rawValue)])
                .set(Double(batches))
            if status.isRunnable || status == .paused || status == .created || status == .preProcessed {
                waiting += items
            }
        }
        registry.makeGauge(descriptor: Self.pendingGauge).set(Double(waiting))
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
    }

    static var batchesGauge: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "tranche_batches", unitName: "", helpText: "Batches by status")
    }

    static var pendingGauge: MetricNameDescriptor {
        MetricNameDescriptor(
            metricName: "tranche_pending_items", unitName: "",
            helpText: "Items of unfinished batches waiting to run (pending or waiting for a retry)")
    }
}

/// `POST /v1/stream-tokens`: a token for `?stream_token=` on the event-stream routes.
struct StreamTokenView: Encodable {
    var token: String
    var expiresAt: Date
    var expiresIn: Int

    enum CodingKeys: String, CodingKey {
        case token
        case expiresAt = "expires_at"
        case expiresIn = "expires_in"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(token, forKey: .token)
        try container.encodeTimestamp(expiresAt, forKey: .expiresAt)
        try container.encode(expiresIn, forKey: .expiresIn)
    }
}
