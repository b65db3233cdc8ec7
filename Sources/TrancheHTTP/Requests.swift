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
        case type, context, items, options, mode, priority
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
        mode = try container.decodeIfPresent(String.self, forKey: .mode)
        dryRun = try container.decodeIfPresent(Bool.self, forKey: .dryRun)
        priority = try container.decodeInteger(.priority, within: BatchOptions.Limits.priority)
        requireConfirmation = try container.decodeIfPresent(Bool.self, forKey: .requireConfirmation)
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
        let text = String(buffer: buffer)
        do {
            try JSONSyntax.validate(text)
        } catch {
            throw Problem(.badRequest, "the body is not valid JSON: \(error)")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(text.utf8))
        } catch {
            throw Problem.invalidRequest(error)
        }
    }
}
