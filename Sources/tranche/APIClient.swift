import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TrancheCore
import TrancheHTTP

/// A typed client of the HTTP API for the command line. It sends the
/// server's request types and decodes the server's own views
/// (`TrancheHTTP`), so client and server share one definition of the wire.
struct APIClient {
    var base: String
    var token: String?

    /// One client for the process. A refused connection is reported at
    /// once: by default the pool would retry it until its connect timeout
    /// (10 s) and only then say "connection refused".
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    /// A decoded answer and the bytes it came from (what `--json` prints).
    struct Reply<Value: Decodable> {
        var value: Value
        var data: Data
    }

    // MARK: - Batches

    /// `POST /v1/batches` for a batch whose items are uploaded next (`mode: async`).
    func openBatch(_ request: CreateBatchRequest) async throws -> AcceptedView {
        try await call(.POST, "/v1/batches", body: Self.body(request)).value
    }

    /// `POST /v1/batches/{id}/items` with NDJSON lines, from `startSeq`.
    func appendLines(_ lines: [String], to id: String, startSeq: Int) async throws -> AppendView {
        try await call(
            .POST, "/v1/batches/\(id)/items?start_seq=\(startSeq)", body: Data(lines.joined(separator: "\n").utf8),
            contentType: "application/x-ndjson"
        ).value
    }

    func batch(_ id: String) async throws -> Reply<BatchView> {
        try await call(.GET, "/v1/batches/\(id)")
    }

    func batches(type: String?, status: String?, limit: Int) async throws -> Reply<BatchPage> {
        var query = "?limit=\(limit)"
        if let type { query += "&type=\(type.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? type)" }
        if let status { query += "&status=\(status)" }
        return try await call(.GET, "/v1/batches\(query)")
    }

    /// `POST /v1/batches/{id}/{action}`: seal, confirm, pause, resume, cancel or retry.
    func perform(_ action: String, on id: String) async throws -> Reply<BatchView> {
        try await call(.POST, "/v1/batches/\(id)/\(action)")
    }

    func events(of id: String) async throws -> Reply<EventList> {
        try await call(.GET, "/v1/batches/\(id)/events")
    }

    func nodes() async throws -> Reply<NodeList> {
        try await call(.GET, "/v1/nodes")
    }

    /// Streams `GET /v1/batches/{id}/export` to stdout.
    func export(_ id: String, format: String, status: String?) async throws {
        let path = "/v1/batches/\(id)/export?format=\(format)\(status.map { "&status=\($0)" } ?? "")"
        let response = try await execute(self.request(.GET, path), timeout: .hours(24))
        guard response.status == .ok else {
            throw problem(Data(try await response.body.collect(upTo: 1 << 20).readableBytesView), response.status)
        }
        for try await part in response.body {
            writeStandardOutput(Data(part.readableBytesView))
        }
    }

    // MARK: - Transport

    /// A request body with every number as written (`JSONText(encoding:)`):
    /// `JSONEncoder` would round `-9223372036854775809` and refuse `1e400`
    /// in a context or an item.
    static func body(_ value: some Encodable) throws -> Data {
        Data(try JSONText(encoding: value).text.utf8)
    }

    /// Sends a request and decodes a 2xx answer as `Value`, its numbers
    /// exact (``JSONValue/decoded(as:userInfo:)``: an item, output, context or
    /// result keeps `9007199254740993` and `1e400` as the server sent them);
    /// any other answer is a `CLIError` with the server's `detail`.
    func call<Value: Decodable>(
        _ method: HTTPMethod, _ path: String, body: Data? = nil, contentType: String = "application/json"
    ) async throws -> Reply<Value> {
        var request = self.request(method, path)
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await execute(request, timeout: .seconds(300))
        let data = Data(try await response.body.collect(upTo: 1 << 30).readableBytesView)
        guard (200..<300).contains(Int(response.status.code)) else { throw problem(data, response.status) }
        do {
            return Reply(value: try JSONSyntax.parse(data).decoded(as: Value.self), data: data)
        } catch {
            throw CLIError("the server's answer to \(method) \(path) is not what it should be: \(error)")
        }
    }

    func request(_ method: HTTPMethod, _ path: String) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        return request
    }

    func execute(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> HTTPClientResponse {
        do {
            return try await Self.http.execute(request, timeout: timeout)
        } catch {
            throw CLIError("cannot reach the server at \(base): \(Self.reason(error))")
        }
    }

    /// Why a request got no answer, in a few words: "connection refused",
    /// "unknown host", "no answer within the timeout", "not an http:// or
    /// https:// URL". The cause may sit inside a wrapping error (NIO's
    /// connection error holds the DNS and connect errors); it is looked for there.
    static func reason(_ error: any Error) -> String {
        switch error {
        case let error as IOError:
            return systemReason(error.errnoCode)
        case is SocketAddressError.UnknownHost:
            return "unknown host"
        case let error as HTTPClientError:
            switch error {
            case .connectTimeout, .deadlineExceeded, .readTimeout, .writeTimeout, .getConnectionFromPoolTimeout,
                .tlsHandshakeTimeout:
                return "no answer within the timeout"
            case .invalidURL, .emptyHost, .emptyScheme:
                return "not an http:// or https:// URL"
            case .remoteConnectionClosed:
                return "the server closed the connection"
            default:
                if error.shortDescription == HTTPClientError.unsupportedScheme("").shortDescription {
                    return "not an http:// or https:// URL"
                }
                return error.shortDescription.prefix(1).lowercased() + error.shortDescription.dropFirst()
            }
        default:
            return cause(in: error, depth: 0).map(reason) ?? "the connection failed"
        }
    }

    /// The first I/O or unknown-host error held by `value` (its fields,
    /// arrays and optionals), at most a few levels down.
    static func cause(in value: Any, depth: Int) -> (any Error)? {
        guard depth < 4 else { return nil }
        for child in Mirror(reflecting: value).children {
            if let error = child.value as? IOError { return error }
            if let error = child.value as? SocketAddressError.UnknownHost { return error }
            if let found = cause(in: child.value, depth: depth + 1) { return found }
        }
        return nil
    }

    /// The error for a non-2xx answer: its problem `detail`, or its status.
    func problem(_ data: Data, _ status: HTTPResponseStatus) -> CLIError {
        let details = try? JSONSyntax.parse(data).decoded(as: ProblemDetails.self)
        return CLIError(details?.detail ?? "the server answered \(status.code)")
    }
}
