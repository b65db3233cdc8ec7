public import Foundation
import Hummingbird
public import TrancheEngine
import TrancheStrategies

/// The body of `POST /v1/webhooks`.
public struct CreateWebhookRequest: Codable, Sendable {
    /// An http or https URL on a host the server allows.
    public var url: String
    /// Event types to deliver; none or empty: all.
    public var events: [String]?
    /// The HMAC key for `Tranche-Signature`; the server makes one when absent.
    public var secret: String?

    public init(url: String, events: [String]? = nil, secret: String? = nil) {
        self.url = url
        self.events = events
        self.secret = secret
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case url, events, secret
    }

    /// Decodes a request body, refusing fields it does not know (a 422).
    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "field")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        url = try container.decode(String.self, forKey: .url)
        events = try container.decodeIfPresent([String].self, forKey: .events)
        secret = try container.decodeIfPresent(String.self, forKey: .secret)
    }
}

/// A webhook; its `secret` is shown once, when it is created.
public struct WebhookView: Codable, Sendable, Hashable {
    public var id: String
    public var url: String
    /// Event types delivered; empty: all.
    public var events: [String]
    public var createdAt: Date
    public var secret: String?

    public init(_ hook: WebhookRecord, showingSecret: Bool) {
        id = hook.id
        url = hook.url
        events = hook.events
        createdAt = hook.createdAt
        secret = showingSecret ? hook.secret : nil
    }

    enum CodingKeys: String, CodingKey {
        case id, url, events, secret
        case createdAt = "created_at"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        url = try container.decode(String.self, forKey: .url)
        events = try container.decode([String].self, forKey: .events)
        createdAt = try container.decodeTimestamp(forKey: .createdAt)
        secret = try container.decodeIfPresent(String.self, forKey: .secret)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(url, forKey: .url)
        try container.encode(events, forKey: .events)
        try container.encodeTimestamp(createdAt, forKey: .createdAt)
        try container.encodeIfPresent(secret, forKey: .secret)
    }
}

/// `GET /v1/webhooks`.
public struct WebhookList: Codable, Sendable, Hashable {
    public var webhooks: [WebhookView]

    public init(webhooks: [WebhookView]) { self.webhooks = webhooks }
}

/// One event owed to a webhook, and how its delivery went.
public struct DeliveryView: Codable, Sendable, Hashable {
    public var id: Int64
    public var eventID: Int64
    /// `pending`, `delivered` or `failed` (out of attempts).
    public var status: String
    public var attempts: Int
    public var lastStatusCode: Int?
    public var lastError: String?
    public var nextAttemptAt: Date?
    public var deliveredAt: Date?
    public var lastAttemptAt: Date?

    public init(_ delivery: DeliveryRecord) {
        id = delivery.id
        eventID = delivery.eventID
        status = delivery.status
        attempts = delivery.attempts
        lastStatusCode = delivery.lastStatusCode
        lastError = delivery.lastError
        nextAttemptAt = delivery.nextAttemptAt
        deliveredAt = delivery.deliveredAt
        lastAttemptAt = delivery.lastAttemptAt
    }

    enum CodingKeys: String, CodingKey {
        case id, status, attempts
        case eventID = "event_id"
        case lastStatusCode = "last_status_code"
        case lastError = "last_error"
        case nextAttemptAt = "next_attempt_at"
        case deliveredAt = "delivered_at"
        case lastAttemptAt = "last_attempt_at"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(Int64.self, forKey: .id)
        eventID = try container.decode(Int64.self, forKey: .eventID)
        status = try container.decode(String.self, forKey: .status)
        attempts = try container.decode(Int.self, forKey: .attempts)
        lastStatusCode = try container.decodeIfPresent(Int.self, forKey: .lastStatusCode)
        lastError = try container.decodeIfPresent(String.self, forKey: .lastError)
        nextAttemptAt = try container.decodeTimestampIfPresent(forKey: .nextAttemptAt)
        deliveredAt = try container.decodeTimestampIfPresent(forKey: .deliveredAt)
        lastAttemptAt = try container.decodeTimestampIfPresent(forKey: .lastAttemptAt)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(eventID, forKey: .eventID)
        try container.encode(status, forKey: .status)
        try container.encode(attempts, forKey: .attempts)
        try container.encodeNullable(lastStatusCode, forKey: .lastStatusCode)
        try container.encodeNullable(lastError, forKey: .lastError)
        try container.encodeTimestamp(nextAttemptAt, forKey: .nextAttemptAt)
        try container.encodeTimestamp(deliveredAt, forKey: .deliveredAt)
        try container.encodeTimestamp(lastAttemptAt, forKey: .lastAttemptAt)
    }
}

/// `GET /v1/webhooks/{id}/deliveries`, newest first.
public struct DeliveryList: Codable, Sendable, Hashable {
    public var deliveries: [DeliveryView]

    public init(deliveries: [DeliveryView]) { self.deliveries = deliveries }
}

/// `/v1/webhooks`: a tenant's subscriptions and their delivery logs.
extension TrancheServer {
    func addWebhookRoutes(_ v1: RouterGroup<TrancheRequestContext>) {
        v1.post("webhooks") { request, context in
            let body = try await request.decodeJSON(CreateWebhookRequest.self, limit: 64 << 10)
            let hook = try webhook(body, tenant: context.tenant)
            try await store.createWebhook(hook)
            return Self.json(WebhookView(hook, showingSecret: true), status: .created)
        }
        v1.get("webhooks") { _, context in
            let hooks = try await store.webhooks(tenant: context.tenant)
            return Self.json(WebhookList(webhooks: hooks.map { WebhookView($0, showingSecret: false) }))
        }
        v1.delete("webhooks/:hook") { _, context in
            let id = context.parameters.get("hook") ?? ""
            guard try await store.deleteWebhook(id: id, tenant: context.tenant) else {
                throw Problem(.notFound, "no webhook \(id)")
            }
            return Response(status: .noContent)
        }
        v1.get("webhooks/:hook/deliveries") { _, context in
            let id = context.parameters.get("hook") ?? ""
            guard try await store.webhooks(tenant: context.tenant).contains(where: { $0.id == id }) else {
                throw Problem(.notFound, "no webhook \(id)")
            }
            let deliveries = try await store.deliveries(webhookID: id, limit: 100)
            return Self.json(DeliveryList(deliveries: deliveries.map(DeliveryView.init)))
        }
    }

    /// A checked webhook definition: an http(s) URL whose host is no refused
    /// IP literal or `localhost` (names are checked when called), known event types.
    func webhook(_ body: CreateWebhookRequest, tenant: String) throws -> WebhookRecord {
        guard let url = URL(string: body.url), let scheme = url.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = url.host
        else { throw Problem(.unprocessableContent, "url must be an http or https URL") }
        do {
            try configuration.outbound.checkLiteral(host: host, port: url.port ?? (scheme == "https" ? 443 : 80))
        } catch {
            throw Problem(.unprocessableContent, "url: \(error.message)")
        }
        let known = Set(Self.webhookEventTypes)
        if let unknown = body.events?.first(where: { !known.contains($0) }) {
            throw Problem(
                .unprocessableContent,
                "unknown event type '\(unknown)'; known: \(Self.webhookEventTypes.joined(separator: ", "))")
        }
        return WebhookRecord(
            id: APIKeys.randomHex(bytes: 8), tenant: tenant, url: body.url, events: body.events ?? [],
            secret: body.secret ?? APIKeys.randomHex(bytes: 24), createdAt: engine.configuration.clock.now())
    }

    static let webhookEventTypes = BatchEventType.stored.map(\.rawValue)
}
