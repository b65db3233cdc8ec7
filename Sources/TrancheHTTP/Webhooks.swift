import Crypto
import Foundation
import HTTPTypes
import Hummingbird
public import Logging
import NIOCore
import NIOHTTP1
public import ServiceLifecycle
public import TrancheEngine
public import TrancheStrategies

/// Delivers events to webhooks: each stored event becomes a durable
/// delivery row (so a restart loses none), POSTed as JSON, signed with
/// HMAC-SHA256, and retried with backoff until the receiver answers 2xx.
///
/// Several nodes share the work: each delivery is leased to one dispatcher
/// while it is POSTed (``ServerStore/claimDeliveries(_:)``), and one whose
/// node died mid-POST is claimed again when its lease expires. Delivery is
/// therefore at least once: a receiver dedupes by the `Tranche-Delivery-Id`
/// header. Each webhook has its own few slots (``Configuration/perWebhookConcurrency``),
/// so one tenant's slow receiver holds only its own.
public final class WebhookDispatcher: Service, Sendable {
    /// Delivery settings. Every field has a documented default.
    public struct Configuration: Sendable {
        /// Which addresses webhooks may call: by default no internal one. The
        /// server passes its `outbound` policy (`--http-allow`).
        public var outbound: OutboundPolicy
        /// Attempts before a delivery is `failed`. Default 12.
        public var maxAttempts: Int = 12
        /// Waits between attempts. Default base 2 s, cap 10 min.
        public var backoff: Backoff = Backoff(base: 2, cap: 600)
        /// Seconds one POST may take. Default 10. A delivery's lease lasts
        /// this plus ``leaseMargin``.
        public var timeout: Double = 10
        /// Seconds a lease outlasts the POST's timeout, for recording its
        /// result. Default 30.
        public var leaseMargin: Double = 30
        /// POSTs one dispatcher has in flight at most. Default 32.
        public var concurrency: Int = 32
        /// POSTs to one webhook one dispatcher has in flight at most, so a
        /// slow receiver delays only its own tenant. Default 4.
        public var perWebhookConcurrency: Int = 4
        /// Seconds between looks for new events when idle. Default 0.2.
        public var pollInterval: Double = 0.2
        /// Seconds a delivery is kept once it ended (delivered, or failed out
        /// of attempts). Default 7 days. The server passes its `deliveryRetention`.
        public var retention: Double = TrancheServer.Configuration.defaultDeliveryRetention
        /// Seconds between prunings of ended deliveries and expired
        /// idempotency records. Default 60.
        public var pruneInterval: Double = 60
        /// Rows one pruning step deletes at most, per kind. Default 500.
        public var pruneBatchSize: Int = 500
        /// Where delivery times come from. The server passes its engine's clock.
        public var clock: WallClock = .system

        public init(outbound: OutboundPolicy = OutboundPolicy()) {
            self.outbound = outbound
        }

        /// These settings with every number held where the dispatcher can
        /// use it (NaN is the default): a library caller's value never traps
        /// a sleep and never spins the delivery loop.
        public func validated() -> Configuration {
            let defaults = Configuration()
            var valid = self
            valid.maxAttempts = maxAttempts.clamped(to: 1...1_000)
            valid.timeout = timeout.bounded(to: 0.1...3_600, nan: defaults.timeout)
            valid.leaseMargin = leaseMargin.bounded(to: 1...3_600, nan: defaults.leaseMargin)
            valid.concurrency = concurrency.clamped(to: 1...1_000)
            valid.perWebhookConcurrency = perWebhookConcurrency.clamped(to: 1...1_000)
            valid.pollInterval = pollInterval.bounded(to: 0.01...3_600, nan: defaults.pollInterval)
            valid.retention = retention.bounded(to: 0...BatchRules.maximumRetention, nan: defaults.retention)
            valid.pruneInterval = pruneInterval.bounded(to: 1...86_400, nan: defaults.pruneInterval)
            valid.pruneBatchSize = pruneBatchSize.clamped(to: 1...100_000)
            return valid
        }
    }

    let store: any ServerStore
    let configuration: Configuration
    let logger: Logger
    /// Who this dispatcher's leases name: unique to this instance.
    let owner = "dispatcher-" + UUID().uuidString.lowercased()

    public init(store: any ServerStore, configuration: Configuration = Configuration(), logger: Logger) {
        self.store = store
        self.configuration = configuration.validated()
        self.logger = logger
    }

    /// The `Tranche-Signature` header for `body` sent at `timestamp`:
    /// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    public static func signature(secret: String, timestamp: Int, body: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(
            for: Data("\(timestamp).\(body)".utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return "t=\(timestamp),v1=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    public func run() async throws {
        do {
            try await deliverUntilShutdown()
        } catch is CancellationError {
            // A graceful shutdown: deliveries not made yet stay stored for the next start.
        }
    }

    /// What ended in the delivery loop's task group.
    enum Finished: Sendable {
        /// A POST to this webhook ended (its result recorded).
        case delivery(webhookID: String)
        /// The idle wait ended.
        case tick
    }

    func deliverUntilShutdown() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Finished.self) { group in
                var nextPruning = ContinuousClock.now
                var inFlight: [String: Int] = [:]
                var ticking = false
                while !Task.isCancelled {
                    var moreQueued = false
                    do {
                        if ContinuousClock.now >= nextPruning {
                            try await self.pruneRecords()
                            nextPruning = .now + .seconds(bounded: self.configuration.pruneInterval)
                        }
                        moreQueued =
                            try await self.store.queueDeliveries(limit: 500, now: self.configuration.clock.now()) > 0
                        for (delivery, hook, event) in try await self.claim(inFlight: inFlight) {
                            inFlight[hook.id, default: 0] += 1
                            group.addTask {
                                await self.deliver(delivery, hook, event)
                                return .delivery(webhookID: hook.id)
                            }
                        }
                    } catch {
                        if Task.isCancelled { break }
                        self.logger.warning("webhook delivery failed", metadata: ["error": "\(error)"])
                    }
                    let total = inFlight.values.reduce(0, +)
                    if moreQueued && total < self.configuration.concurrency { continue }
                    // Wait for a POST to end or the poll interval to pass, whichever comes first.
                    if !ticking {
                        ticking = true
                        group.addTask {
                            try? await Task.sleep(for: .seconds(bounded: self.configuration.pollInterval))
                            return .tick
                        }
                    }
                    switch await group.next() {
                    case .delivery(let webhookID):
                        let left = (inFlight[webhookID] ?? 0) - 1
                        inFlight[webhookID] = left > 0 ? left : nil
                    case .tick: ticking = false
                    case nil: break
                    }
                }
            }
        }
    }

    /// Leases due deliveries for the free slots, each webhook's within its own cap.
    func claim(inFlight: [String: Int]) async throws -> [(DeliveryRecord, WebhookRecord, BatchEvent)] {
        let free = configuration.concurrency - inFlight.values.reduce(0, +)
        guard free > 0 else { return [] }
        let now = configuration.clock.now()
        return try await store.claimDeliveries(
            DeliveryClaim(
                owner: owner, now: now,
                leaseUntil: now.addingTimeInterval(configuration.timeout + configuration.leaseMargin), limit: free,
                perWebhook: configuration.perWebhookConcurrency,
                busy: inFlight))
    }

    /// Deletes ended deliveries older than the retention and idempotency
    /// records whose batch expired, in small steps (at most 100 per call).
    func pruneRecords() async throws {
        for _ in 0..<100 where !Task.isCancelled {
            let now = configuration.clock.now()
            let pruned = try await store.pruneServerRecords(
                now: now, deliveriesEndedBefore: now.addingTimeInterval(-configuration.retention),
                limit: configuration.pruneBatchSize)
            guard pruned >= configuration.pruneBatchSize else { return }
        }
    }

    func deliver(_ delivery: DeliveryRecord, _ hook: WebhookRecord, _ event: BatchEvent) async {
        let body = (try? JSONText(encoding: EventView(event)).text) ?? "{}"
        var statusCode: Int?
        var failure: String?
        var permanent = false
        do {
            var request = OutboundRequest(url: hook.url, method: .POST)
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "User-Agent", value: "tranche-webhooks")
            request.headers.add(name: "Tranche-Delivery-Id", value: String(delivery.id))
            request.headers.add(name: "Tranche-Event-Id", value: String(event.id))
            request.headers.add(name: "Tranche-Event-Type", value: event.type.rawValue)
            request.headers.add(
                name: "Tranche-Signature",
                value: Self.signature(
                    secret: hook.secret, timestamp: Int(saturating: configuration.clock.now().timeIntervalSince1970),
                    body: body))
            request.body = ByteBuffer(string: body)
            // Redirects are not followed: a 3xx is a failed delivery.
            statusCode = Int(
                try await OutboundHTTPClient.execute(
                    request, policy: configuration.outbound,
                    deadline: .now() + .milliseconds(Int64.saturating(configuration.timeout * 1000)), maxRedirects: 0,
                    maxBodyBytes: 0
                ).status.code)
            if !(200..<300).contains(statusCode ?? 0) { failure = "the receiver answered \(statusCode ?? 0)" }
        } catch let refusal as OutboundRefusal {
            failure = refusal.message
            permanent = refusal.isPermanent
        } catch {
            // A transport error says what failed and nothing of the request
            // (its URL, headers or signature); anything else is named by its type.
            let reason = (error as? OutboundTransportError)?.description ?? String(describing: type(of: error))
            failure = "the request failed: \(reason)"
        }
        // A node that stops records nothing: the delivery's lease expires and
        // another node (or this one, restarted) sends it again.
        if Task.isCancelled {
            logger.debug("a webhook delivery stopped with its node", metadata: ["delivery_id": "\(delivery.id)"])
            return
        }
        // The stored count may hold anything; one more never traps.
        let attempt = delivery.attempts.adding(saturating: 1)
        var next: Date?
        // A refused address fails the delivery at once: trying again cannot help.
        if failure != nil, !permanent, attempt < configuration.maxAttempts {
            next = configuration.clock.now().addingTimeInterval(
                configuration.backoff.delay(afterAttempt: attempt, retryAfter: nil, random: Double.random(in: 0..<1)))
        }
        do {
            let recorded = try await store.recordDelivery(
                id: delivery.id, owner: owner, delivered: failure == nil, statusCode: statusCode, error: failure,
                nextAttemptAt: next, now: configuration.clock.now())
            if !recorded {
                logger.info(
                    "a webhook delivery's lease expired before its result was recorded",
                    metadata: ["delivery_id": "\(delivery.id)"])
            }
        } catch {
            logger.warning("recording a webhook delivery failed", metadata: ["error": "\(error)"])
        }
    }
}
