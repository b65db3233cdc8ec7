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
/// Every host is resolved and checked by the configuration's
/// ``OutboundPolicy`` before it is called, and so is every hop of the up to
/// ``maxRedirects`` redirects followed: an internal address not on the
/// allow-list fails the item as `address_refused` (permanent). A redirect to
/// another origin drops the context's `headers`.
///
/// `headers` are secret (they carry tokens): used as given, shown as `"***"`.
/// So is `body` when the context sets `secret_body: true`.
public struct HTTPStrategy: BatchStrategy {
    /// What the operator allows.
    public struct Configuration: Sendable {
        /// Which addresses requests may reach. Default: internal addresses
        /// (loopback, private, link-local, metadata…) are refused, as on a
        /// server; `tranche run` passes ``OutboundPolicy/unrestricted``.
        public var outbound: OutboundPolicy
        /// The largest response body kept as output. Default 64 KiB.
        public var maxResponseBytes: Int = 64 << 10

        public init(outbound: OutboundPolicy = OutboundPolicy(), maxResponseBytes: Int = 64 << 10) {
            self.outbound = outbound
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

    public var type: String { "http" }

    /// Redirects followed per request, each hop checked by the policy.
    public static let maxRedirects = 5

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
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
            do {
                try configuration.outbound.checkLiteral(host: host, port: url.port ?? (scheme == "https" ? 443 : 80))
            } catch {
                throw OptionsError("context.url: \(error.message)")
            }
        }
        if let codes = context.successCodes, codes.isEmpty || codes.contains(where: { !(100...599).contains($0) }) {
            throw OptionsError("context.success_codes must be HTTP statuses between 100 and 599")
        }
        return context
    }

    public func secretFields(of context: Context) -> Set<String> {
        context.secretBody == true ? ["headers", "body"] : ["headers"]
    }

    public func process(_ item: JSONValue, context: Context, input: ItemInput) async throws -> JSONValue {
        let template = Template(item: item, input: input)
        // Checked once, by OutboundHTTPClient: a URL without an http(s) scheme
        // and a host is `invalid_url` (permanent) there.
        let urlText = template.render(context.url, encode: true)
        let method = context.method ?? "POST"
        var request = OutboundRequest(url: urlText, method: HTTPMethod(rawValue: method))
        for (name, value) in context.headers ?? [:] {
            request.headers.add(name: name, value: template.render(value, encode: false))
        }
        if !request.headers.contains(name: "Idempotency-Key") {
            request.headers.add(name: "Idempotency-Key", value: input.idempotencyKey)
        }
        request.headers.add(name: "X-Tranche-Attempt", value: String(input.attempt))
        if let body = context.body {
            request.body = ByteBuffer(string: template.render(body, encode: false))
        } else if method == "POST" || method == "PUT" || method == "PATCH" {
            request.body = ByteBuffer(string: input.payload.text)
            if !request.headers.contains(name: "Content-Type") {
                request.headers.add(name: "Content-Type", value: "application/json")
            }
        }
        let limit = min(context.maxResponseBytes ?? configuration.maxResponseBytes, configuration.maxResponseBytes)
        let received: OutboundResponse
        do {
            // No deadline here: the engine cancels an attempt past the item
            // timeout, which closes its connection.
            received = try await OutboundHTTPClient.execute(
                request, policy: configuration.outbound, maxRedirects: Self.maxRedirects,
                sensitiveHeaders: context.headers.map { Set($0.keys.map { $0.lowercased() }) } ?? [],
                maxBodyBytes: limit)
        } catch is CancellationError {
            throw CancellationError()
        } catch let refusal as OutboundRefusal {
            throw refusal.isPermanent
                ? ItemError.permanent(refusal.code, refusal.message)
                : ItemError.retryable(refusal.code, refusal.message)
        } catch {
            if Task.isCancelled { throw CancellationError() }
            let reason = (error as? OutboundTransportError)?.description ?? "connection error"
            throw ItemError.retryable("connection_error", "the request failed: \(reason)")
        }
        let status = Int(received.status.code)
        let (headers, body) = (received.headers, received.body)
        let text = String(buffer: body)
        let bodyValue: JSONValue = (try? JSONText(unchecked: text).value()) ?? (text.isEmpty ? .null : .string(text))
        if context.successCodes.map({ $0.contains(status) }) ?? (200...299).contains(status) {
            return ["status": .number(Double(status)), "body": bodyValue]
        }
        let message =
            "HTTP \(status)" + (text.isEmpty ? "" : ": " + ErrorExcerpt.head(of: text, totalBytes: received.bytes))
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
        // Most URLs and headers name no field: nothing to scan for.
        guard template.utf8.contains(UInt8(ascii: "{")) else { return template }
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
