import Foundation
import HTTPTypes
public import Hummingbird
public import Logging
public import NIOCore
public import Prometheus
import Synchronization
import TrancheCore
public import TrancheEngine
public import TrancheStrategies

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
        /// A streamed answer (an event stream, an export) counts until its
        /// last byte is written.
        public var maxRequestsInFlight: Int = 1_024
        /// Event streams one tenant may hold open at once; one more answers
        /// 429 with `Retry-After`. Default 16.
        public var maxStreamsPerTenant: Int = 16
        /// Exports one tenant may run at once; one more answers 429 with
        /// `Retry-After`. Default 4.
        public var maxExportsPerTenant: Int = 4
        /// The most stored events one event stream replays after
        /// `Last-Event-ID`; a client further behind gets these, then the
        /// stream ends and its reconnect (with the newer id) goes on. Default 1,000.
        public var maxReplayedEvents: Int = 1_000
        /// Seconds a connection may send nothing (between requests, in a
        /// request's head or its body) before the server closes it. Default 60.
        public var idleTimeout: Double = 60
        /// Seconds a request body may take to arrive in full; a slower one
        /// answers 408 and its connection closes. Default 600.
        public var bodyTimeout: Double = 600
        /// Host names the API answers to in open mode besides loopback ones
        /// (`localhost`, `127.0.0.0/8`, `::1`): DNS-rebinding protection. Default none.
        public var trustedHosts: Set<String> = []
        /// Items one tenant may have queued (accepted, not yet finished)
        /// before submits and appends answer 429. Default 50,000,000.
        public var maxQueuedItemsPerTenant: Int64 = 50_000_000
        /// No API keys at start: every caller is the `local` tenant (loopback
        /// only) until a key is created (the server checks the key store at
        /// most once a second, so a key made by another process counts too).
        public var open: Bool = false
        /// Where `/metrics` reads from: the registry the process bootstrapped
        /// swift-metrics with. Nil: no `/metrics`.
        public var metrics: PrometheusCollectorRegistry?
        /// Which addresses webhooks may call: by default no internal one
        /// (loopback, private, link-local, metadata…) but for the hosts it
        /// allows (`--http-allow`).
        public var outbound = OutboundPolicy()
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

    /// The webhook dispatcher for this server: `settings` with the server's
    /// `outbound` policy and its `deliveryRetention`.
    public func webhookDispatcher(
        _ settings: WebhookDispatcher.Configuration = .init(), logger: Logger
    ) -> WebhookDispatcher {
        var settings = settings
        settings.outbound = configuration.outbound
        settings.retention = configuration.deliveryRetention
        settings.clock = engine.configuration.clock
        return WebhookDispatcher(store: store, configuration: settings, logger: logger)
    }

    /// The HTTP server for this API: its router, connections closed after
    /// `idleTimeout` seconds of silence, and a log that does not report a
    /// cancelled server (a normal stop) as an error.
    public func application(
        host: String, port: Int, serverName: String? = nil, logger: Logger = Logger(label: "Hummingbird"),
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) -> Application<RouterResponder<TrancheRequestContext>> {
        let setting = configuration.idleTimeout
        let idle = setting.isNaN ? 60 : setting.bounded(to: 0.001...Duration.longestBoundedWait)
        var quiet = logger
        quiet.handler = QuietCancellationLogHandler(base: logger.handler)
        return Application(
            router: router(),
            server: .http1(configuration: .init(idleTimeout: .milliseconds(Int64(idle * 1_000)))),
            configuration: .init(address: .hostname(host, port: port), serverName: serverName),
            onServerRunning: onServerRunning, logger: quiet)
    }

    /// The router with every route and middleware.
    public func router() -> Router<TrancheRequestContext> {
        let router = Router(context: TrancheRequestContext.self)
        router.add(middleware: ProblemMiddleware())
        if configuration.metrics != nil { router.add(middleware: MetricsMiddleware()) }
        router.add(middleware: BackpressureMiddleware(gate: RequestGate(limit: configuration.maxRequestsInFlight)))
        let openMode = OpenMode(store: store, open: configuration.open)
        router.add(middleware: SameSiteMiddleware(openMode: openMode, trustedHosts: configuration.trustedHosts))
        router.add(middleware: BodyDeadlineMiddleware(seconds: configuration.bodyTimeout))
        let streamTokens = StreamTokens(store: store)
        let keys = APIKeyMiddleware(store: store, openMode: openMode, streamTokens: streamTokens)
        addAdminRoutes(router, keys: keys)
        let v1 = router.group("v1").add(middleware: keys)
            .add(
                middleware: StreamLimitMiddleware(
                    streams: TenantSlots(limit: configuration.maxStreamsPerTenant),
                    exports: TenantSlots(limit: configuration.maxExportsPerTenant)))
        addBatchRoutes(v1)
        addLinkRoutes(v1)
        addPatchRoutes(v1)
        addItemRoutes(v1)
        addEventRoutes(v1)
        addWebhookRoutes(v1)
        addScheduleRoutes(v1)
        addKeyedAdminRoutes(v1, streamTokens: streamTokens)
        addTenantRoutes(v1)
        // Last: it applies to unmatched requests only, and needs every route.
        router.add(middleware: MethodNotAllowedMiddleware(routes: router.routes))
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
    /// (in `seq` order) unless `withErrors` is false (lists), and its
    /// progress and extras (read here unless a list read all its batches' at once).
    func batchView(
        _ record: BatchRecord, withErrors: Bool = true, progress: BatchProgress? = nil, extras: BatchExtras? = nil
    ) async throws -> BatchView {
        var errors: [BatchErrorView] = []
        if withErrors, record.counts.skipped + record.counts.dead + record.counts.failed > 0 {
            for group in try await store.errorGroups(of: record.id, samples: 5) {
                errors += group.samples.map { BatchErrorView(seq: $0.seq, code: group.code, message: $0.message) }
            }
            errors = Array(Set(errors).sorted { $0.seq < $1.seq }.prefix(5))
        }
        let progress = if let progress { progress } else { try await engine.progress(of: record) }
        var view = BatchView(record, context: engine.publicContext(of: record), progress: progress, errors: errors)
        let extras = if let extras { extras } else { try await self.extras(of: [record]) }
        extras.fill(&view, of: record)
        view.pace = paceView(of: record, stored: extras.paces[LimitKey.batch(record.id)])
        return view
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

/// Passes every log record on, except Hummingbird's report of a cancelled
/// accept loop ("Waiting on child channel: CancellationError()"): a server
/// task cancelled at shutdown is a normal stop, logged at debug.
struct QuietCancellationLogHandler: LogHandler {
    var base: any LogHandler

    var metadataProvider: Logger.MetadataProvider? {
        get { base.metadataProvider }
        set { base.metadataProvider = newValue }
    }
    var metadata: Logger.Metadata {
        get { base.metadata }
        set { base.metadata = newValue }
    }
    var logLevel: Logger.Level {
        get { base.logLevel }
        set { base.logLevel = newValue }
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { base[metadataKey: key] }
        set { base[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        var event = event
        if event.level == .error, event.message.description.hasPrefix("Waiting on child channel"),
            event.message.description.hasSuffix("CancellationError()")
        {
            guard base.logLevel <= .debug else { return }
            event.level = .debug
        }
        base.log(event: event)
    }
}

/// A held place (a request in flight, a tenant's stream): given back once,
/// by ``release()`` or, for an answer that was never written, when dropped.
final class Slot: Sendable {
    private let giveBack: Mutex<(@Sendable () -> Void)?>

    init(_ giveBack: @escaping @Sendable () -> Void) { self.giveBack = Mutex(giveBack) }

    func release() {
        let giveBack = self.giveBack.withLock { value in
            defer { value = nil }
            return value
        }
        giveBack?()
    }

    deinit { release() }
}

extension Response {
    /// Keeps `slot` until a streamed body has been written (or failed), and
    /// gives it back at once for a body that is already in memory.
    mutating func holding(_ slot: Slot) {
        guard body.contentLength == nil else { return slot.release() }
        let body = self.body
        self.body = ResponseBody { writer in
            defer { slot.release() }
            try await body.write(writer)
        }
    }
}

/// Counts what each tenant holds open (event streams, exports) against a limit.
final class TenantSlots: Sendable {
    let limit: Int
    private let counts = Mutex<[String: Int]>([:])

    init(limit: Int) { self.limit = max(0, limit) }

    /// A slot for `tenant`, or nil when it holds `limit` already.
    func acquire(_ tenant: String) -> Slot? {
        let granted = counts.withLock { counts in
            guard counts[tenant, default: 0] < limit else { return false }
            counts[tenant, default: 0] += 1
            return true
        }
        guard granted else { return nil }
        return Slot { [self] in
            counts.withLock { counts in
                let left = counts[tenant, default: 1] - 1
                counts[tenant] = left > 0 ? left : nil
            }
        }
    }

    /// What `tenant` holds now.
    func count(_ tenant: String) -> Int { counts.withLock { $0[tenant, default: 0] } }
}

/// Caps each tenant's open event streams and running exports; one over
/// answers 429 with `Retry-After`. The slot is held until the stream ends.
struct StreamLimitMiddleware: RouterMiddleware {
    typealias Context = TrancheRequestContext
    let streams: TenantSlots
    let exports: TenantSlots

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let path = context.endpointPath ?? request.uri.path
        let (slots, kind): (TenantSlots?, String) =
            path.hasSuffix("/events/stream")
            ? (streams, "event streams") : path.hasSuffix("/export") ? (exports, "exports") : (nil, "")
        guard let slots else { return try await next(request, context) }
        guard let slot = slots.acquire(context.tenant) else {
            throw Problem(
                .tooManyRequests, "at most \(slots.limit) \(kind) at once per tenant; close one first", retryAfter: 5)
        }
        var response = try await next(request, context)
        response.holding(slot)
        return response
    }
}

/// Bounds the time a request body may take to arrive: past `seconds` from
/// the request's start, reading it fails with 408 and the connection closes.
struct BodyDeadlineMiddleware<Context: RequestContext>: RouterMiddleware {
    let seconds: Double

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        // Only the methods whose bodies the API reads: an event stream (GET)
        // needs its body untouched to notice the client leaving.
        guard [.post, .put, .patch].contains(request.method), SameSiteMiddleware<Context>.hasBody(request) else {
            return try await next(request, context)
        }
        var request = request
        let deadline = ContinuousClock.now + .seconds(bounded: seconds)
        request.body = RequestBody(
            asyncSequence: DeadlineBody(base: request.body, deadline: deadline, seconds: seconds))
        do {
            return try await next(request, context)
        } catch let problem as Problem where problem.status == .requestTimeout {
            var response = try problem.response(from: request, context: context)
            response.headers[.connection] = "close"
            return response
        }
    }
}

/// A request body whose every read ends by `deadline`: a read still waiting
/// then is abandoned (which ends the connection's input) and fails with 408.
struct DeadlineBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let base: RequestBody
    let deadline: ContinuousClock.Instant
    let seconds: Double

    /// The body's iterator, handed to the task that reads it (one read at a time).
    final class Reader: @unchecked Sendable {
        var iterator: RequestBody.AsyncIterator
        init(_ iterator: RequestBody.AsyncIterator) { self.iterator = iterator }
        func next() async throws -> ByteBuffer? { try await iterator.next() }
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let reader: Reader
        let deadline: ContinuousClock.Instant
        let seconds: Double

        enum Outcome: Sendable {
            case read(ByteBuffer?)
            case late
        }

        mutating func next() async throws -> ByteBuffer? {
            let (reader, deadline) = (self.reader, self.deadline)
            let outcome = try await withThrowingTaskGroup(of: Outcome.self) { group in
                group.addTask { .read(try await reader.next()) }
                group.addTask {
                    try await Task.sleep(until: deadline)
                    return .late
                }
                defer { group.cancelAll() }
                return try await group.next() ?? .late
            }
            guard case .read(let buffer) = outcome else {
                throw Problem(
                    .requestTimeout,
                    "the request body did not arrive within \(Duration.seconds(bounded: seconds))")
            }
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(reader: Reader(base.makeAsyncIterator()), deadline: deadline, seconds: seconds)
    }
}
