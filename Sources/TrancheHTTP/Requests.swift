import Foundation
import Hummingbird
import NIOCore
public import TrancheEngine

/// The body of `POST /v1/batches`. Unknown fields are refused.
public struct CreateBatchRequest: Codable, Sendable {
    /// The strategy.
    public var type: String
    /// The strategy's settings (a JSON object).
    public var context: JSONValue?
    /// Items inline; none: an open batch, filled by uploads and sealed.
    public var items: [JSONValue]?
    public var options: BatchOptions?
    /// `auto` (the default), `sync` or `async`.
    public var mode: String?
    public var dryRun: Bool?
    public var priority: Int?
    public var requireConfirmation: Bool?
    /// What runs on the succeeded items' outputs once the batch completes.
    public var then: SuccessorRequest?

    public init(
        type: String, context: JSONValue? = nil, items: [JSONValue]? = nil, options: BatchOptions? = nil,
        mode: String? = nil, dryRun: Bool? = nil, priority: Int? = nil, requireConfirmation: Bool? = nil
    ) {
        self.type = type
        self.context = context
        self.items = items
        self.options = options
        self.mode = mode
        self.dryRun = dryRun
        self.priority = priority
        self.requireConfirmation = requireConfirmation
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case type, context, items, options, mode, priority, then
        case dryRun = "dry_run"
        case requireConfirmation = "require_confirmation"
    }

    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.stringValue), what: "field")
        let container = try decoder.container(keyedBy: CodingKeys.self)
        type = try container.decode(String.self, forKey: .type)
        context = try container.decodeIfPresent(JSONValue.self, forKey: .context)
        items = try container.decodeIfPresent([JSONValue].self, forKey: .items)
        options = try container.decodeIfPresent(BatchOptions.self, forKey: .options)
        // Absent, these take their defaults; null is refused, as the OpenAPI document says.
        mode = try container.decodeUnlessNull(String.self, forKey: .mode)
        dryRun = try container.decodeUnlessNull(Bool.self, forKey: .dryRun)
        try container.refuseNull(.priority, as: Int.self)
        priority = try container.decodeInteger(.priority, within: BatchOptions.Limits.priority)
        requireConfirmation = try container.decodeUnlessNull(Bool.self, forKey: .requireConfirmation)
        then = try container.decodeIfPresent(SuccessorRequest.self, forKey: .then)
    }
}

/// The body of `POST /v1/batches/{id}/retry` (optional).
public struct RetryRequest: Codable, Sendable {
    /// Item statuses to run again; default failed, skipped and dead.
    public var statuses: [String]?

    public init(statuses: [String]? = nil) { self.statuses = statuses }
}

extension Request {
    /// Reads a JSON body of at most `limit` bytes and decodes it, with a
    /// precise 4xx for a body that is too large, not JSON, or of the wrong shape.
    func decodeJSON<T: Decodable>(_ type: T.Type, limit: Int) async throws -> T {
        let buffer = try await collectBody(limit: limit)
        return try decodeJSON(type, from: buffer)
    }

    func collectBody(limit: Int) async throws -> ByteBuffer {
        do {
            return try await body.collect(upTo: limit)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw Problem(.contentTooLarge, "the request body is larger than \(limit) bytes")
        }
    }

    func decodeJSON<T: Decodable>(_ type: T.Type, from buffer: ByteBuffer) throws -> T {
        do {
            try JSONSyntax.validate(buffer.readableBytesView)
        } catch {
            throw Problem(error)
        }
        do {
            return try JSONDecoder.clientRequest().decode(T.self, from: Data(buffer.readableBytesView))
        } catch {
            throw Problem.invalidRequest(error)
        }
    }

    /// A `POST /v1/batches` body. Its `items` and `context` come from the
    /// exact tree (``parseJSON(_:)``), so no number in them is rounded; the
    /// other fields are decoded as ``CreateBatchRequest``, unknown ones refused.
    func decodeCreation(from buffer: ByteBuffer) throws -> CreateBatchRequest {
        guard case .object(var fields) = try parseJSON(buffer) else {
            throw Problem(.unprocessableContent, "the body is not a valid request: it should be a JSON object")
        }
        let items = fields.removeValue(forKey: CreateBatchRequest.CodingKeys.items.stringValue)
        let context = fields.removeValue(forKey: CreateBatchRequest.CodingKeys.context.stringValue)
        var body: CreateBatchRequest
        do {
            body = try JSONDecoder.clientRequest().decode(
                CreateBatchRequest.self, from: Data(JSONValue.object(fields).jsonText.utf8))
        } catch {
            throw Problem.invalidRequest(error)
        }
        switch items {
        case nil, .null?: break
        case .array(let values)?: body.items = values
        default: throw Problem(.unprocessableContent, "the body is not a valid request: 'items' should be an array")
        }
        if let context, context != .null { body.context = context }
        return body
    }

    /// The body as a tree whose numbers keep their text: the items and
    /// contexts of a request are read this way, since `JSONDecoder` would
    /// round `9007199254740993` and refuse `1e400`.
    func parseJSON(_ buffer: ByteBuffer) throws -> JSONValue {
        do {
            return try JSONSyntax.parse(buffer.readableBytesView)
        } catch {
            throw Problem(error)
        }
    }
}

extension Problem {
    /// A 400 for a body that is not UTF-8 or not JSON, naming the byte.
    init(_ error: JSONSyntaxError) {
        if error.isInvalidUTF8 {
            self.init(.badRequest, "the body is not valid UTF-8 at byte \(error.offset)")
        } else {
            self.init(.badRequest, "the body is not valid JSON: \(error)")
        }
    }
}
