import Foundation
public import HTTPTypes
public import Hummingbird
import NIOCore
import TrancheEngine

/// An error answer in `application/problem+json` (RFC 9457): a status, a
/// short title and a precise, safe `detail`.
public struct Problem: HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var detail: String
    /// Seconds, for 429 and 503.
    public var retryAfter: Int?

    public init(_ status: HTTPResponse.Status, _ detail: String, retryAfter: Int? = nil) {
        self.status = status
        self.detail = detail
        self.retryAfter = retryAfter
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = ProblemDetails(
            type: "about:blank", title: status.reasonPhrase, status: Int(status.code), detail: detail)
        var headers: HTTPFields = [.contentType: "application/problem+json"]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        let text = (try? JSONText(encoding: body).text) ?? "{}"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// The 422 for a body that is JSON but not a valid request: the
    /// decoder's complaint, naming the field (`'options.chunk_size' should be a number`).
    public static func invalidRequest(_ error: any Error) -> Problem {
        Problem(.unprocessableContent, "the body is not a valid request: \(describeDecodingError(error))")
    }

    /// The answer for any error a handler throws: known errors map to their
    /// status with their safe message; anything else is a 500 that says nothing.
    static func from(_ error: any Error) -> Problem {
        switch error {
        case let problem as Problem:
            return problem
        case let error as EngineError:
            return Problem(error.code == .unknownStrategy ? .unprocessableContent : .badRequest, error.message)
        case let error as StoreError:
            switch error.code {
            case .batchNotFound: return Problem(.notFound, error.message)
            case .invalidAppend, .conflict, .illegalTransition: return Problem(.conflict, error.message)
            case .storage: return Problem(.serviceUnavailable, "the store is failing; try again", retryAfter: 1)
            default: return Problem(.internalServerError, "the request failed")
            }
        case let error as IllegalTransition:
            return Problem(.conflict, error.description)
        case let error as OptionsError:
            return Problem(.badRequest, error.message)
        case let error as HTTPError:
            let detail = error.body ?? error.status.reasonPhrase
            return Problem(
                error.status,
                error.status == .contentTooLarge ? "the request body is larger than the server accepts" : detail)
        case let error as any HTTPResponseError where error.status.code < 500:
            return Problem(
                error.status,
                error.status == .contentTooLarge
                    ? "the request body is larger than the server accepts" : error.status.reasonPhrase)
        default:
            return Problem(.internalServerError, "the request failed")
        }
    }
}

/// The body of every error answer (`application/problem+json`, RFC 9457).
public struct ProblemDetails: Codable, Sendable, Hashable {
    /// `about:blank`: the status says what kind of problem it is.
    public var type: String
    /// The status's reason phrase.
    public var title: String
    public var status: Int
    /// What went wrong, precisely and safely.
    public var detail: String

    public init(type: String, title: String, status: Int, detail: String) {
        self.type = type
        self.title = title
        self.status = status
        self.detail = detail
    }
}

/// Turns every error into a problem answer, and logs the unexpected ones.
struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            let problem = Problem.from(error)
            if problem.status == .internalServerError {
                context.logger.error("request failed", metadata: ["error": "\(String(reflecting: type(of: error)))"])
            }
            return try problem.response(from: request, context: context)
        }
    }
}
