import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TrancheCore
public import TrancheEngine

/// One HTTP request per item, built from templates in the context.
///
/// `{{field}}` in the URL, headers and body is replaced by the item's field
/// (`{{a.b}}` for nested fields), `{{item}}` by the whole item, and
/// `{{seq}}`, `{{attempt}}`, `{{batch_id}}`, `{{idempotency_key}}` by the
/// item's identity; values are percent-encoded in the URL. Without a body
/// template, POST, PUT and PATCH send the item's JSON. Every request carries
/// `Idempotency-Key` so a receiver can deduplicate retries.
///
/// Statuses in `success_codes` (default 2xx) succeed with `{status, body}`
/// as output; 401 and 403 are fatal; 408, 429 and 5xx are retryable
/// (honouring `Retry-After`); other statuses are permanent. A failed
/// request's error message carries at most ``ErrorExcerpt/maxBytes`` bytes
/// of the response body.
///
/// `headers` are secret (they carry tokens): used as given, shown as `"***"`.
/// So is `body` when the context sets `secret_body: true`.
public struct HTTPStrategy: BatchStrategy {
    /// What the operator allows.
    public struct Configuration: Sendable {
        /// Hosts requests may go to; nil allows any host.
        public var allowedHosts: Set<String>?
        /// The largest response body kept as output. Default 64 KiB.
        public var maxResponseBytes: Int = 64 << 10

        public init(allowedHosts: Set<String>? = nil, maxResponseBytes: Int = 64 << 10) {
            self.allowedHosts = allowedHosts
            self.maxResponseBytes = maxResponseBytes
        }
    }

    public struct Context: Codable, Sendable {
        public var url: String
        public var method: String?
        public var headers: [String: String]?
        public var body: String?
        /// Whether `body` is a secret, shown as `"***"` like `headers`.
        public var secretBody: Bool?
        public var successCodes: [Int]?
        public var maxResponseBytes: Int?

        public init(
            url: String, method: String? = nil, headers: [String: String]? = nil, body: String? = nil,
            secretBody: Bool? = nil, successCodes: [Int]? = nil, maxResponseBytes: Int? = nil
        ) {
            self.url = url
            self.method = method
            self.headers = headers
            self.body = body
            self.secretBody = secretBody
            self.successCodes = successCodes
            self.maxResponseBytes = maxResponseBytes
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case url, method, headers, body
            case secretBody = "secret_body"
            case successCodes = "success_codes"
            case maxResponseBytes = "max_response_bytes"
        }

        /// Decodes the context; an unknown field is refused by name.
        public init(from decoder: any Decoder) throws {
            let container = try decoder.contextContainer(keyedBy: CodingKeys.self)
            url = try container.decode(String.self, forKey: .url)
            method = try container.decodeIfPresent(String.self, forKey: .method)
            headers = try container.decodeIfPresent([String: String].self, forKey: .headers)
            body = try container.decodeIfPresent(String.self, forKey: .body)
            secretBody = try container.decodeIfPresent(Bool.self, forKey: .secretBody)
            successCodes = try container.decodeIfPresent([Int].self, forKey: .successCodes)
            maxResponseBytes = try container.decodeIfPresent(Int.self, forKey: .maxResponseBytes)
        }
    }

    public typealias Item = JSONValue
    public typealias Output = JSONValue

    public let configuration: Configuration
    let client: HTTPClient

    public var type: String { "http" }

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        self.client = configuration.allowedHosts == nil ? Self.followingClient : Self.fencedClient
    }

    /// Clients for the life of the process: a refused connection fails at
    /// once (the engine retries the item with backoff), many connections per
    /// host are allowed (the batch's concurrency is the limit), and redirects
    /// are followed only when no allow-list is in force.
    static let followingClient = makeClient(redirects: .follow(max: 5, allowCycles: false))
    static let fencedClient = makeClient(redirects: .disallow)

    static func makeClient(redirects: HTTPClient.Configuration.RedirectConfiguration) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = redirects
        configuration.timeout = .init(connect: .seconds(10), read: .seconds(300))
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    static let methods: Set<String> = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]

    public func prepare(_ context: Context) throws -> Context {
        var context = context
        let method = (context.method ?? "POST").uppercased()
        guard Self.methods.contains(method) else {
            throw OptionsError("context.method must be one of \(Self.methods.sorted().joined(separator: ", "))")
        }
        context.method = method
        let probe = context.url.replacingOccurrences(of: "{{", with: "x").replacingOccurrences(of: "}}", with: "x")
        guard let url = URL(string: probe), let scheme = url.scheme?.lowercased(),
            scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty
        else {
            throw OptionsError("context.url must be an http or https URL template, got '\(context.url)'")
        }
        if !context.url.hasPrefix("http://{{"), !context.url.hasPrefix("https://{{") {
            try checkHost(host)
        }
        if let codes = context.successCodes, codes.isEmpty || codes.contains(where: { !(100...599).contains($0) }) {
            throw OptionsError("context.success_codes must be HTTP statuses between 100 and 599")
        }
        return context
    }

    public func secretFields(of context: Context) -> Set<String> {
        context.secretBody == true ? ["headers", "body"] : ["headers"]
    }

    func checkHost(_ host: String) throws {
        if let allowed = configuration.allowedHosts, !allowed.contains(host.lowercased()) {
            throw OptionsError("host '\(host)' is not on this server's outbound allow-list")
        }
    }

    public func process(_ item: JSONValue, context: Context, input: ItemInput) async throws -> JSONValue {
        let template = Template(item: item, input: input)
        let urlText = template.render(context.url, encode: true)
        guard let url = URL(string: urlText), let host = url.host else {
            throw ItemError.permanent("invalid_url", "the URL for this item is not valid")
        }
        do {
            try checkHost(host)
        } catch let error as OptionsError {
            throw ItemError.fatal("host_not_allowed", error.message)
        }
        let method = context.method ?? "POST"
        var request = HTTPClientRequest(url: urlText)
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in context.headers ?? [:] {
            request.headers.add(name: name, value: template.render(value, encode: false))
        }
        if !request.headers.contains(name: "Idempotency-Key") {
            request.headers.add(name: "Idempotency-Key", value: input.idempotencyKey)
        }
        request.headers.add(name: "X-Tranche-Attempt", value: String(input.attempt))
        if let body = context.body {
            request.body = .bytes(ByteBuffer(string: template.render(body, encode: false)))
        } else if ["POST", "PUT", "PATCH"].contains(method) {
            request.body = .bytes(ByteBuffer(string: input.payload.text))
            if !request.headers.contains(name: "Content-Type") {
                request.headers.add(name: "Content-Type", value: "application/json")
            }
        }
        let limit = min(context.maxResponseBytes ?? configuration.maxResponseBytes, configuration.maxResponseBytes)
        let status: Int
        let headers: HTTPHeaders
        var body = ByteBuffer()
        var received = 0
        do {
            let response = try await client.execute(request, timeout: .hours(1))
            status = Int(response.status.code)
            headers = response.headers
            for try await var part in response.body {
                received += part.readableBytes
                let room = limit - body.readableBytes
                if room > 0, let slice = part.readSlice(length: min(room, part.readableBytes)) {
                    body.writeImmutableBuffer(slice)
                }
            }
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as HTTPClientError {
            throw ItemError.retryable("connection_error", "the request failed: \(error.shortDescription)")
        } catch {
            throw ItemError.retryable(
                "connection_error", "the request failed (\(String(describing: Swift.type(of: error))))")
        }
        let text = String(buffer: body)
        let bodyValue: JSONValue = (try? JSONText(validating: text).value()) ?? (text.isEmpty ? .null : .string(text))
        if context.successCodes.map({ $0.contains(status) }) ?? (200...299).contains(status) {
            return ["status": .number(Double(status)), "body": bodyValue]
        }
        let message = "HTTP \(status)" + (text.isEmpty ? "" : ": " + ErrorExcerpt.head(of: text, totalBytes: received))
        switch status {
        case 401, 403:
            throw ItemError.fatal("http_\(status)", message)
        case 408, 429, 500...599:
            throw ItemError.retryable(
                "http_\(status)", message, retryAfter: headers.first(name: "Retry-After").flatMap(Self.retryAfter))
        default:
            throw ItemError.permanent("http_\(status)", message)
        }
    }

    /// Seconds from a `Retry-After` value: delta-seconds or an HTTP date,
    /// held within `0…BatchOptions.Limits.backoffCap` (the engine clamps it
    /// further to the batch's backoff cap). Nil when it is neither.
    static func retryAfter(_ value: String) -> Double? {
        let text = value.trimmingCharacters(in: .whitespaces)
        let longest = BatchOptions.Limits.backoffCap.upperBound
        if let seconds = Double(text), seconds >= 0 {
            // `1e300`, `inf` or a hundred digits: at most the longest wait.
            return min(seconds, longest)
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text).map { $0.timeIntervalSinceNow.bounded(to: 0...longest) }
    }
}

extension HTTPClientError {
    /// A description without the request's details.
    var shortDescription: String {
        switch self {
        case .connectTimeout: return "connect timeout"
        case .readTimeout: return "read timeout"
        case .remoteConnectionClosed: return "the server closed the connection"
        case .deadlineExceeded: return "deadline exceeded"
        default: return "HTTP client error"
        }
    }
}

/// `{{name}}` substitution over an item.
struct Template {
    var item: JSONValue
    var input: ItemInput

    func value(of name: String) -> String? {
        switch name {
        case "seq": return String(input.seq)
        case "attempt": return String(input.attempt)
        case "batch_id": return input.batchID.rawValue
        case "idempotency_key": return input.idempotencyKey
        case "item": return input.payload.text
        default:
            var current: JSONValue? = item
            for part in name.split(separator: ".") {
                if part == "item", current == item, name.hasPrefix("item.") { continue }
                current = current?[String(part)]
            }
            return current?.templateText
        }
    }

    func render(_ template: String, encode: Bool) -> String {
        var result = ""
        var rest = Substring(template)
        while let open = rest.range(of: "{{") {
            result += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                result += rest[open.lowerBound...]
                return result
            }
            let name = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            let value = self.value(of: name) ?? ""
            result +=
                encode
                ? (value.addingPercentEncoding(
                    withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?&=#+"))) ?? value)
                : value
            rest = rest[close.upperBound...]
        }
        result += rest
        return result
    }
}
