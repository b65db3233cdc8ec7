import Foundation
public import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A real HTTP server on 127.0.0.1 for the `http` strategy's tests.
public final class LoopbackHTTPServer: Sendable {
    public struct Request: Sendable {
        public var method: String
        public var uri: String
        public var headers: [String: String]
        public var body: String
    }

    public struct Response: Sendable {
        public var status: Int
        public var headers: [String: String]
        public var body: String
        /// A receiver that never answers (the request is recorded, the
        /// connection stays open until the client gives up).
        public var silent: Bool

        public init(status: Int, headers: [String: String] = [:], body: String = "", silent: Bool = false) {
            self.status = status
            self.headers = headers
            self.body = body
            self.silent = silent
        }
    }

    public typealias Respond = @Sendable (Request, Int) -> Response

    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let channel: Mutex<(any Channel)?> = Mutex(nil)
    private let recorded = Mutex<[Request]>([])
    let respond: Respond
    let prepare: (@Sendable (any Channel) throws -> Void)?

    /// A server answering with `respond`. `prepare` runs on each accepted
    /// connection before its HTTP handlers (a TLS handler, for https tests).
    public init(prepare: (@Sendable (any Channel) throws -> Void)? = nil, respond: @escaping Respond) {
        self.prepare = prepare
        self.respond = respond
    }

    public var requests: [Request] { recorded.withLock { $0 } }

    /// Starts listening on a free port and returns it; ``stop()`` ends it.
    public func start() async throws -> Int {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try self.prepare?(channel)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(server: self))
                }
            }
        let channel = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
        self.channel.withLock { $0 = channel }
        return channel.localAddress!.port!
    }

    /// Starts the server, runs `body` with its port, and stops the server
    /// afterwards, also when `body` throws.
    public func withRunning<T>(
        isolation: isolated (any Actor)? = #isolation, _ body: (Int) async throws -> T
    ) async throws -> T {
        let port = try await start()
        let result: Result<T, any Error>
        do {
            result = .success(try await body(port))
        } catch {
            result = .failure(error)
        }
        try await stop()
        return try result.get()
    }

    /// Stops listening and shuts the server's event loop down.
    public func stop() async throws {
        let channel = self.channel.withLock { $0 }
        try await channel?.close()
        try await group.shutdownGracefully()
    }

    fileprivate func handle(_ request: Request) -> Response {
        let index = recorded.withLock { requests -> Int in
            requests.append(request)
            return requests.count
        }
        return respond(request, index)
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let server: LoopbackHTTPServer
        var head: HTTPRequestHead?
        var body = ""

        init(server: LoopbackHTTPServer) {
            self.server = server
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body = ""
            case .body(let buffer):
                body += String(buffer: buffer)
            case .end:
                guard let head else { return }
                var headers: [String: String] = [:]
                for (name, value) in head.headers { headers[name.lowercased()] = value }
                let response = server.handle(
                    Request(method: head.method.rawValue, uri: head.uri, headers: headers, body: body))
                if !response.silent { answer(head, response, context: context) }
            }
        }

        func answer(_ head: HTTPRequestHead, _ response: Response, context: ChannelHandlerContext) {
            var responseHeaders = HTTPHeaders()
            for (name, value) in response.headers { responseHeaders.add(name: name, value: value) }
            responseHeaders.add(name: "Content-Length", value: String(response.body.utf8.count))
            context.write(
                wrapOutboundOut(
                    .head(
                        HTTPResponseHead(
                            version: head.version, status: .init(statusCode: response.status),
                            headers: responseHeaders))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: response.body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
