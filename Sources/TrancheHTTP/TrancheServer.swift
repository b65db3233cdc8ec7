import CompressNIO
import Foundation
import HTTPTypes
public import Hummingbird
public import Logging
import NIOCore
public import Prometheus
import Synchronization
public import TrancheEngine

/// Counts requests in flight, for backpressure.
final class RequestGate: Sendable {
    let limit: Int
    private let count = Mutex(0)

    init(limit: Int) { self.limit = limit }

    func enter() -> Bool {
        count.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func leave() { count.withLock { $0 -= 1 } }
}

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

    /// The webhook dispatcher for this server: it delivers to the hosts the
    /// server allows and prunes what the server's retention lets go.
    public func webhookDispatcher(logger: Logger) -> WebhookDispatcher {
        var dispatcher = WebhookDispatcher.Configuration(allowedHosts: configuration.webhookHosts)
        dispatcher.retention = configuration.deliveryRetention
        return WebhookDispatcher(store: store, configuration: dispatcher, logger: logger)
    }

    /// The router with every route and middleware.
    public func router() -> Router<TrancheRequestContext> {
        let router = Router(context: TrancheRequestContext.self)
        router.add(middleware: ProblemMiddleware())
        if configuration.metrics != nil { router.add(middleware: MetricsMiddleware()) }
        router.add(middleware: BackpressureMiddleware(gate: RequestGate(limit: configuration.maxRequestsInFlight)))
        router.get("healthz") { _, _ in Self.json(["status": "ok"]) }
        router.get("readyz") { _, _ in
            do {
                _ = try await store.latestEventID()
                return Self.json(["status": "ready"])
            } catch {
                throw Problem(.serviceUnavailable, "the store is not reachable", retryAfter: 1)
            }
        }
        if let registry = configuration.metrics {
            router.get("metrics") { _, _ in
                // Queue depth is read from the store at each scrape.
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
        let v1 = router.group("v1").add(middleware: APIKeyMiddleware(store: store, open: configuration.open))
        v1.post("batches") { request, context in try await create(request, context) }
        v1.get("batches") { request, context in try await list(request, context) }
        v1.get("batches/:id") { _, context in try await show(context) }
        v1.delete("batches/:id") { _, context in
            let record = try await owned(context)
            try await store.deleteBatch(record.id)
            return Response(status: .noContent)
        }
        v1.post("batches/:id/items") { request, context in try await append(request, context) }
        v1.post("batches/:id/seal") { _, context in
            let record = try await owned(context)
            return try await batchResponse(try await engine.seal(record.id))
        }
        for action in ["confirm", "pause", "resume", "cancel"] {
            v1.post("batches/:id/\(action)") { _, context in
                let record = try await owned(context)
                let updated: BatchRecord
                switch action {
                case "confirm": updated = try await engine.confirm(record.id)
                case "pause": updated = try await engine.pause(record.id)
                case "resume": updated = try await engine.resume(record.id)
                default: updated = try await engine.cancel(record.id)
                }
                return try await batchResponse(updated)
            }
        }
        v1.post("batches/:id/retry") { request, context in try await retry(request, context) }
        v1.get("nodes") { _, _ in
            let nodes = try await engine.liveNodes()
            return Self.json(["nodes": .array(nodes.map(Views.node))])
        }
        v1.get("batches/:id/items") { request, context in try await items(request, context) }
        v1.get("batches/:id/errors") { _, context in
            let record = try await owned(context)
            let groups = try await store.errorGroups(of: record.id, samples: 5)
            return Self.json(["errors": .array(groups.map(Views.errorGroup))])
        }
        v1.get("batches/:id/events") { request, context in
            let record = try await owned(context)
            let after = Int64(request.uri.queryParameters.get("after") ?? "0") ?? 0
            let limit = try limit(request, default: 1_000)
            let events = try await store.events(of: record.id, afterID: after, limit: limit)
            return Self.json(["events": .array(events.map(Views.event))])
        }
        v1.get("batches/:id/export") { request, context in try await export(request, context) }
        v1.get("batches/:id/events/stream") { request, context in
            try await eventStream(request, context, batch: try await owned(context))
        }
        v1.get("events/stream") { request, context in try await eventStream(request, context, batch: nil) }
        addWebhookRoutes(v1)
        return router
    }

    // MARK: - Handlers

    /// `POST /v1/batches`. With an idempotency key (the `Idempotency-Key`
    /// header or `options.idempotency_key`), the key's record and the batch
    /// are stored in one transaction: a repeat of the request, even after a
    /// crash, answers the batch the key names; the same key with a different
    /// body is a 422.
    func create(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let buffer = try await request.collectBody(limit: configuration.maxBodyBytes)
        var creation = try creationRequest(request.decodeJSON(CreateBatchBody.self, from: buffer), context)
        let key = try idempotencyKey(request, creation, fingerprint: Self.fingerprint(of: String(buffer: buffer)))
        creation.submission.options.idempotencyKey = key?.key
        if let key, let found = try await store.idempotencyRecord(tenant: key.tenant, key: key.key),
            let existing = try await store.batch(found.batchID)
        {
            guard found.fingerprint == key.fingerprint else { throw Self.idempotencyMismatch }
            return try await answer(creation, existing, replayed: true)
        }
        if let items = creation.items { try await admit(items.count, tenant: context.tenant) }
        let prepared = try engine.prepareBatch(creation.submission, items: creation.items)
        guard let key else {
            let record = try await store.createBatch(prepared.batch, items: prepared.items)
            return try await answer(creation, try await engine.accept(record), replayed: false)
        }
        switch try await store.createBatch(prepared.batch, items: prepared.items, idempotency: key) {
        case .created(let record):
            return try await answer(creation, try await engine.accept(record), replayed: false)
        case .existing(let record):
            return try await answer(creation, record, replayed: true)
        case .mismatch:
            throw Self.idempotencyMismatch
        }
    }

    /// A checked `POST /v1/batches` body: what to store and how to answer.
    struct CreationRequest {
        var submission: Submission
        /// Nil: an open batch, filled by uploads.
        var items: [JSONText]?
        var synchronous: Bool
    }

    func creationRequest(_ body: CreateBatchBody, _ context: TrancheRequestContext) throws -> CreationRequest {
        let mode = body.mode ?? "auto"
        guard ["auto", "sync", "async"].contains(mode) else {
            throw Problem(.unprocessableContent, "mode must be auto, sync or async, got '\(mode)'")
        }
        var options = body.options ?? BatchOptions()
        if let confirm = body.requireConfirmation { options.requireConfirmation = confirm }
        let submission = Submission(
            type: body.type, context: try JSONText(encoding: body.context ?? [:]), options: options,
            dryRun: body.dryRun ?? false, priority: body.priority ?? 0, owner: context.tenant)
        guard let values = body.items else {
            return CreationRequest(submission: submission, items: nil, synchronous: false)
        }
        guard values.count <= configuration.maxInlineItems else {
            throw Problem(
                .contentTooLarge,
                "\(values.count) items inline; at most \(configuration.maxInlineItems) — upload more with POST /v1/batches/{id}/items"
            )
        }
        let items = try values.enumerated().map { index, value in
            let text = try JSONText(encoding: value)
            guard text.text.utf8.count <= configuration.maxItemBytes else {
                throw Problem(.contentTooLarge, "item \(index) is larger than \(configuration.maxItemBytes) bytes")
            }
            return text
        }
        let synchronous = mode == "sync" || (mode == "auto" && items.count <= configuration.syncThreshold)
        return CreationRequest(submission: submission, items: items, synchronous: synchronous)
    }

    /// The request's idempotency key: the `Idempotency-Key` header or
    /// `options.idempotency_key` (the same key if both are given), which the
    /// batch's options then carry. Nil without either.
    func idempotencyKey(_ request: Request, _ creation: CreationRequest, fingerprint: String) throws
        -> IdempotencyKey?
    {
        let header = request.headers[.idempotencyKey]
        let option = creation.submission.options.idempotencyKey
        if let header, let option, header != option {
            throw Problem(
                .unprocessableContent, "the Idempotency-Key header and options.idempotency_key must be the same key")
        }
        guard let key = header ?? option else { return nil }
        guard !key.isEmpty, key.utf8.count <= 255 else {
            throw Problem(.badRequest, "Idempotency-Key must be 1 to 255 bytes")
        }
        return IdempotencyKey(tenant: creation.submission.owner, key: key, fingerprint: fingerprint)
    }

    static let idempotencyMismatch = Problem(
        .unprocessableContent, "this Idempotency-Key was used with a different request body")

    /// The answer to a create, and to its repeats: an open batch, a queued
    /// one or one waiting for confirmation is a 202; a dry run answers its
    /// report; a synchronous batch is waited for (at most `syncTimeout`)
    /// and answered whole with its outcomes.
    func answer(_ creation: CreationRequest, _ record: BatchRecord, replayed: Bool) async throws -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if replayed { headers[.idempotentReplayed] = "true" }
        func reply(_ status: HTTPResponse.Status, _ view: JSONValue) -> Response {
            let text = (try? JSONText(encoding: view).text) ?? "{}"
            return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        guard creation.items != nil else { return reply(.accepted, accepted(record)) }
        if record.dryRun { return reply(.ok, try await batchView(record)) }
        guard creation.synchronous, !record.options.requireConfirmation,
            let ended = try await waitForEnd(record.id, seconds: configuration.syncTimeout)
        else { return reply(.accepted, accepted(record)) }
        return reply(.ok, try await synchronousResult(ended))
    }

    /// A finished batch with every item's outcome and the error groups.
    func synchronousResult(_ ended: BatchRecord) async throws -> JSONValue {
        var outcomes: [JSONValue] = []
        var after: Int64? = nil
        while true {
            let page = try await store.items(of: ended.id, status: nil, afterSeq: after, limit: 1_000)
            outcomes += page.map { WireFormat.item($0, includingPayload: false) }
            guard page.count == 1_000, let last = page.last else { break }
            after = last.seq
        }
        let groups = try await store.errorGroups(of: ended.id, samples: 5)
        guard case .object(var view) = try await batchView(ended) else { return [:] }
        view["queued"] = false
        view["items"] = .array(outcomes)
        view["error_groups"] = .array(groups.map(Views.errorGroup))
        return .object(view)
    }

    /// Answers 429 at once when `count` more items would put the tenant over its queue limit.
    func admit(_ count: Int, tenant: String) async throws {
        let queued = try await store.queuedItems(owner: tenant)
        guard queued + Int64(count) <= configuration.maxQueuedItemsPerTenant else {
            throw Problem(
                .tooManyRequests,
                "\(queued) items are queued for this tenant; the limit is \(configuration.maxQueuedItemsPerTenant)",
                retryAfter: 5)
        }
    }

    func waitForEnd(_ id: BatchID, seconds: Double) async throws -> BatchRecord? {
        try await withThrowingTaskGroup(of: BatchRecord?.self) { group in
            group.addTask { try await engine.waitForEnd(id) }
            group.addTask {
                try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    func accepted(_ record: BatchRecord) -> JSONValue {
        [
            "queued": true,
            "id": .string(record.id.rawValue),
            "status": .string(record.status.rawValue),
            "status_url": .string("/v1/batches/\(record.id.rawValue)"),
            "total": Views.number(record.counts.total),
            "sealed": .bool(record.sealed),
        ]
    }

    func list(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        var status: BatchStatus?
        if let text = query.get("status") {
            guard let parsed = BatchStatus(rawValue: text) else {
                throw Problem(
                    .badRequest, "status must be one of \(BatchStatus.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            status = parsed
        }
        var before: BatchID?
        if let cursor = query.get("cursor") {
            guard let id = BatchID(cursor) else { throw Problem(.badRequest, "cursor is not valid") }
            before = id
        }
        let limit = try limit(request, default: 50)
        let records = try await store.batches(
            BatchQuery(owner: context.tenant, type: query.get("type"), status: status, before: before, limit: limit))
        var views: [JSONValue] = []
        for record in records { views.append(try await batchView(record, withErrors: false)) }
        let next: JSONValue = records.count == limit ? records.last.map { .string($0.id.rawValue) } ?? .null : .null
        return Self.json(["batches": .array(views), "next_cursor": next])
    }

    func show(_ context: TrancheRequestContext) async throws -> Response {
        try await batchResponse(try await owned(context))
    }

    func items(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let record = try await owned(context)
        let query = request.uri.queryParameters
        let status = try query.get("status").map(itemStatus)
        var after: Int64?
        if let cursor = query.get("cursor") {
            guard let seq = Int64(cursor) else { throw Problem(.badRequest, "cursor is not valid") }
            after = seq
        }
        let limit = try limit(request, default: 100)
        let page = try await store.items(of: record.id, status: status, afterSeq: after, limit: limit)
        let payload = query.get("include") == "item"
        let next: JSONValue = page.count == limit ? page.last.map { .string(String($0.seq)) } ?? .null : .null
        return Self.json([
            "items": .array(page.map { WireFormat.item($0, includingPayload: payload) }), "next_cursor": next,
        ])
    }

    func retry(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let record = try await owned(context)
        let buffer = try await request.collectBody(limit: 64 << 10)
        var statuses: Set<ItemStatus>?
        if buffer.readableBytes > 0 {
            let body = try request.decodeJSON(RetryBody.self, from: buffer)
            statuses = try body.statuses.map { Set(try $0.map(itemStatus)) }
        }
        let (updated, count) = try await engine.retry(record.id, statuses: statuses)
        guard case .object(var view) = try await batchView(updated) else { return Self.json([:]) }
        view["retried_items"] = Views.number(count)
        return Self.json(.object(view))
    }

    func append(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let record = try await owned(context)
        let query = request.uri.queryParameters
        var seq = record.counts.total
        if let start = query.get("start_seq") {
            guard let value = Int64(start), value >= 0 else {
                throw Problem(.badRequest, "start_seq must be 0 or more")
            }
            seq = value
        }
        let contentType = request.headers[.contentType]?.lowercased() ?? "application/json"
        var inserted = 0
        var rejected = 0
        var errors: [JSONValue] = []
        var total = record.counts.total
        func flush(_ items: inout [NewItem]) async throws {
            guard !items.isEmpty else { return }
            try await admit(items.count, tenant: context.tenant)
            let result = try await engine.append(to: record.id, startSeq: seq, items: items)
            inserted += result.inserted
            total = result.total
            seq += Int64(items.count)
            items.removeAll(keepingCapacity: true)
        }
        var pending: [NewItem] = []
        if contentType.hasPrefix("application/x-ndjson") || contentType.hasPrefix("application/jsonl") {
            var splitter = LineSplitter(maxLine: configuration.maxItemBytes)
            var received = 0
            for try await buffer in request.body {
                received += buffer.readableBytes
                guard received <= configuration.maxUploadBytes else {
                    try await flush(&pending)
                    throw Problem(.contentTooLarge, "the upload is larger than \(configuration.maxUploadBytes) bytes")
                }
                try splitter.feed(buffer) { line, number in
                    let item = Self.ndjsonItem(line, number: number)
                    if let rejection = item.rejection {
                        rejected += 1
                        if errors.count < 10 {
                            errors.append(["line": .number(Double(number)), "message": .string(rejection.message)])
                        }
                    }
                    pending.append(item)
                }
                if pending.count >= 5_000 { try await flush(&pending) }
            }
            try splitter.finish { line, number in pending.append(Self.ndjsonItem(line, number: number)) }
            try await flush(&pending)
        } else {
            let values = try await request.decodeJSON([JSONValue].self, limit: configuration.maxBodyBytes)
            guard values.count <= configuration.maxInlineItems else {
                throw Problem(
                    .contentTooLarge, "at most \(configuration.maxInlineItems) items per JSON request; use NDJSON")
            }
            pending = try values.map { NewItem(payload: try JSONText(encoding: $0)) }
            try await flush(&pending)
        }
        let updated = try await store.batch(record.id) ?? record
        return Self.json([
            "inserted": .number(Double(inserted)),
            "rejected": .number(Double(rejected)),
            "total": Views.number(max(total, updated.counts.total)),
            "errors": .array(errors),
            "status": .string(updated.status.rawValue),
        ])
    }

    static func ndjsonItem(_ line: [UInt8], number: Int) -> NewItem {
        let text = String(decoding: line, as: UTF8.self)
        do {
            try JSONSyntax.validate(text)
            return NewItem(payload: JSONText(unchecked: text))
        } catch {
            return NewItem(
                payload: (try? JSONText(encoding: JSONValue.string(text))) ?? .null,
                rejection: .permanent("invalid_json", "line \(number): \(error.description)"))
        }
    }

    func export(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let record = try await owned(context)
        let query = request.uri.queryParameters
        let format = query.get("format") ?? "ndjson"
        guard let kind = ExportFormat(rawValue: format) else {
            throw Problem(.badRequest, "format must be ndjson, csv or json")
        }
        let status = try query.get("status").map(itemStatus)
        let gzip = request.headers[.acceptEncoding]?.lowercased().contains("gzip") == true
        var headers: HTTPFields = [
            .contentType: kind.contentType,
            .contentDisposition: "attachment; filename=\"\(record.id.rawValue).\(kind.rawValue)\"",
        ]
        if gzip { headers[.contentEncoding] = "gzip" }
        let store = self.store
        let body = ResponseBody { writer in
            let compressor = gzip ? try ZlibCompressor(algorithm: .gzip) : nil
            func emit(_ text: String, final: Bool = false) async throws {
                var buffer = ByteBuffer(string: text)
                if let compressor {
                    let compressed = try buffer.compressStream(with: compressor, flush: final ? .finish : .sync)
                    try await writer.write(compressed)
                } else if buffer.readableBytes > 0 {
                    try await writer.write(buffer)
                }
            }
            try await emit(kind.header)
            var after: Int64? = nil
            var first = true
            while true {
                let page = try await store.items(of: record.id, status: status, afterSeq: after, limit: 1_000)
                var text = ""
                for item in page {
                    text += kind.row(item, first: first)
                    first = false
                }
                try await emit(text)
                guard page.count == 1_000, let last = page.last else { break }
                after = last.seq
            }
            try await emit(kind.footer, final: true)
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    // MARK: - Helpers

    static var batchesGauge: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "tranche_batches", unitName: "", helpText: "Batches by status")
    }

    static var pendingGauge: MetricNameDescriptor {
        MetricNameDescriptor(
            metricName: "tranche_pending_items", unitName: "",
            helpText: "Items of unfinished batches waiting to run (pending or waiting for a retry)")
    }

    /// What identifies a request body for `Idempotency-Key`: its SHA-256.
    public static func fingerprint(of body: String) -> String {
        APIKeys.hash(body)
    }

    /// The batch named in the path, if it exists and belongs to the caller; 404 otherwise.
    func owned(_ context: TrancheRequestContext) async throws -> BatchRecord {
        let text = context.parameters.get("id") ?? ""
        guard let id = BatchID(text), let record = try await store.batch(id), record.owner == context.tenant else {
            throw Problem(.notFound, "no batch \(text)")
        }
        return record
    }

    func batchView(_ record: BatchRecord, withErrors: Bool = true) async throws -> JSONValue {
        var errors: [ErrorSample: String] = [:]
        if withErrors, record.counts.skipped + record.counts.dead + record.counts.failed > 0 {
            for group in try await store.errorGroups(of: record.id, samples: 5) {
                for sample in group.samples { errors[sample] = group.code }
            }
            if errors.count > 5 {
                errors = Dictionary(
                    uniqueKeysWithValues: errors.sorted { $0.key.seq < $1.key.seq }.prefix(5).map { ($0.key, $0.value) }
                )
            }
        }
        let (rate, eta) = engine.throughput(of: record)
        return Views.batch(record, rate: rate, eta: eta, errors: errors)
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

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
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
