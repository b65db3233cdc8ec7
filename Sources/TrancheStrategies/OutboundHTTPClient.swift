import Foundation
public import NIOCore
public import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// An outbound HTTP request: the URL, method, headers and body as sent.
/// `Host` and `Content-Length` are set by ``OutboundHTTPClient``.
public struct OutboundRequest: Sendable {
    public var url: String
    public var method: HTTPMethod
    public var headers: HTTPHeaders
    public var body: ByteBuffer?

    public init(url: String, method: HTTPMethod = .GET, headers: HTTPHeaders = [:], body: ByteBuffer? = nil) {
        self.url = url
        self.method = method
        self.headers = headers
        self.body = body
    }
}

/// A response as read by ``OutboundHTTPClient``: its status, headers and
/// body up to the caller's limit.
public struct OutboundResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    /// The body's first bytes, as many as the caller kept.
    public var body = ByteBuffer()
    /// Bytes of the body received, the kept part and the rest.
    public var bytes = 0
    /// Whether the connection may carry another request.
    var reusable = false
}

/// A request that failed on its way (no connection, TLS, a broken or
/// malformed response, its deadline). `description` names what happened and
/// nothing of the request.
public struct OutboundTransportError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String

    init(_ description: String) { self.description = description }

    static let closed = OutboundTransportError("the server closed the connection")
    static let deadline = OutboundTransportError("deadline exceeded")
}

/// Sends outbound HTTP/1.1 requests under an ``OutboundPolicy``: resolves
/// each host once, checks every address, and connects to a checked address
/// while the `Host` header and TLS server name stay the URL's. Redirects are
/// followed here, every hop checked the same way; a hop to another origin
/// drops the caller's sensitive headers.
///
/// Built on SwiftNIO directly: keep-alive connections pooled per address,
/// port and TLS server name; a request's head and body written with one
/// flush; the response read into a buffer by a channel handler. There is no
/// timer per request unless the caller gives a deadline: the engine cancels
/// an attempt past its own, which closes that request's connection.
///
/// Shared by the `http` strategy and the webhook dispatcher.
public enum OutboundHTTPClient {
    /// Sends `request`, following at most `maxRedirects` redirects, and
    /// returns the final response with at most `maxBodyBytes` of its body
    /// (the rest is read and counted, up to ``drainBytes`` more). Refusals
    /// throw ``OutboundRefusal``, failures on the way
    /// ``OutboundTransportError``, cancellation `CancellationError`.
    public static func execute(
        _ request: OutboundRequest, policy: OutboundPolicy, deadline: NIODeadline? = nil, maxRedirects: Int,
        sensitiveHeaders: Set<String> = [], maxBodyBytes: Int
    ) async throws -> OutboundResponse {
        var request = request
        var hops = 0
        while true {
            let target = try Target(request.url)
            let response = try await send(request, to: target, policy: policy, deadline: deadline, limit: maxBodyBytes)
            if hops < maxRedirects,
                let next = try redirect(after: response, of: request, from: target, sensitiveHeaders: sensitiveHeaders)
            {
                request = next
                hops += 1
                continue
            }
            return response
        }
    }

    /// Body bytes read past the kept part before the connection is closed
    /// instead (the count then says how far it got).
    static let drainBytes = 16 << 20

    /// The parts of a URL a request goes to.
    struct Target: Equatable {
        var scheme: String
        /// Without IPv6 brackets.
        var host: String
        var port: Int
        /// The path and query, as sent in the request line.
        var path: String
        /// The `Host` header: the host, and the port when the URL names one.
        var authority: String

        init(_ text: String) throws(OutboundRefusal) {
            guard let url = URL(string: text), let scheme = url.scheme?.lowercased(),
                scheme == "http" || scheme == "https", let host = url.host, !host.isEmpty
            else {
                throw OutboundRefusal(
                    code: "invalid_url", message: "only http and https URLs with a host are called", isPermanent: true)
            }
            self.scheme = scheme
            self.host = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
            self.port = url.port ?? (scheme == "https" ? 443 : 80)
            let path = url.path(percentEncoded: true)
            let query = url.query(percentEncoded: true)
            self.path = (path.isEmpty ? "/" : path) + (query.map { "?" + $0 } ?? "")
            let bracketed = self.host.contains(":") ? "[\(self.host)]" : self.host
            self.authority = url.port.map { "\(bracketed):\($0)" } ?? bracketed
        }

        var usesTLS: Bool { scheme == "https" }
    }

    /// Sends one hop: to each checked address in turn until one connects.
    static func send(
        _ request: OutboundRequest, to target: Target, policy: OutboundPolicy, deadline: NIODeadline?, limit: Int
    ) async throws -> OutboundResponse {
        // Resolved (and checked, unless the policy allows everything) once; an
        // IP literal is connected to as it is, a name through its addresses in turn.
        let addresses = try await policy.addresses(host: target.host, port: target.port)
        let serverName = target.usesTLS && IPAddress(target.host) == nil ? target.host : nil
        var head = HTTPRequestHead(
            version: .http1_1, method: request.method, uri: target.path, headers: request.headers)
        if !head.headers.contains(name: "Host") { head.headers.replaceOrAdd(name: "Host", value: target.authority) }
        head.headers.remove(name: "Transfer-Encoding")
        if let body = request.body {
            head.headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
        } else {
            head.headers.remove(name: "Content-Length")
        }
        let exchange = Exchange(head: head, body: request.body, limit: max(0, limit), deadline: deadline)
        for (index, address) in addresses.enumerated() {
            let key = ConnectionPool.Key(
                address: address, port: target.port, tls: target.usesTLS, serverName: serverName,
                trust: target.usesTLS ? policy.trust.id : 0)
            do {
                return try await connections.exchange(exchange, on: key, trust: policy.trust)
            } catch {
                if Task.isCancelled { throw CancellationError() }
                if index == addresses.count - 1 || !isConnectFailure(error) { throw transportError(error) }
            }
        }
        throw CancellationError()  // Not reached: the loop returns or throws on its last address.
    }

    /// Whether `error` says no connection was made (so nothing was sent).
    static func isConnectFailure(_ error: any Error) -> Bool {
        if case ChannelError.connectTimeout = error { return true }
        if let error = error as? IOError {
            return [ECONNREFUSED, ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL, ETIMEDOUT].contains(error.errnoCode)
        }
        return false
    }

    /// `error` as the caller sees it: refusals and cancellation as they are,
    /// anything else an ``OutboundTransportError`` that names what failed.
    static func transportError(_ error: any Error) -> any Error {
        switch error {
        case is OutboundRefusal, is CancellationError, is OutboundTransportError: return error
        case ChannelError.connectTimeout: return OutboundTransportError("connect timeout")
        case let error as IOError where error.errnoCode == ECONNREFUSED:
            return OutboundTransportError("connection refused")
        case let error as IOError where [ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL].contains(error.errnoCode):
            return OutboundTransportError("no route to the host")
        case is IOError, ChannelError.ioOnClosedChannel, ChannelError.eof: return OutboundTransportError.closed
        case is NIOSSLError, is BoringSSLError, is NIOSSLExtraError: return OutboundTransportError("TLS failed")
        case is HTTPParserError: return OutboundTransportError("malformed response")
        default: return OutboundTransportError("connection error")
        }
    }

    /// The next request when `response` is a redirect (301, 302, 303, 307,
    /// 308 with a `Location`); nil otherwise. 303, and 301 or 302 after a
    /// POST, continue as a GET without a body.
    static func redirect(
        after response: OutboundResponse, of request: OutboundRequest, from target: Target,
        sensitiveHeaders: Set<String>
    ) throws(OutboundRefusal) -> OutboundRequest? {
        let code = response.status.code
        guard [301, 302, 303, 307, 308].contains(code), let location = response.headers.first(name: "Location"),
            let base = URL(string: request.url)
        else { return nil }
        guard let url = URL(string: location, relativeTo: base)?.absoluteURL else {
            throw OutboundRefusal(
                code: "redirect_refused", message: "HTTP \(code) to a Location that is no URL", isPermanent: true)
        }
        let next = try Target(url.absoluteString)
        var request = request
        request.url = url.absoluteString
        if code == 303 && request.method != .HEAD || (code == 301 || code == 302) && request.method == .POST {
            request.method = .GET
            request.body = nil
            request.headers.remove(name: "Content-Type")
        }
        if next.scheme != target.scheme || next.host != target.host || next.port != target.port {
            for name in sensitiveHeaders.union(["authorization", "cookie", "proxy-authorization"]) {
                request.headers.remove(name: name)
            }
        }
        // The next hop's `Host` is its own.
        request.headers.remove(name: "Host")
        return request
    }

    static let connections = ConnectionPool()
}

/// One request on a connection: what to write, and how to read the answer.
struct Exchange: Sendable {
    var head: HTTPRequestHead
    var body: ByteBuffer?
    var limit: Int
    var deadline: NIODeadline?
}

/// Keep-alive connections for the life of the process, idle ones pooled per
/// checked address, port and TLS server name. A connection carries one
/// request at a time; one that failed, was cancelled, or whose response
/// ended it is closed instead of pooled. Idle connections are dropped after
/// ``idleTime`` by the next caller, and when the server closes them.
final class ConnectionPool: Sendable {
    struct Key: Hashable {
        var address: IPAddress
        var port: Int
        var tls: Bool
        /// The TLS server name (SNI, and the name the certificate must hold);
        /// nil without TLS or for an IP literal.
        var serverName: String?
        /// The ``OutboundTrust`` the certificate was verified under (its
        /// `id`): a connection is reused only under the same trust.
        var trust = 0
    }

    struct Idle {
        var channel: any Channel
        var since: ContinuousClock.Instant
    }

    struct State {
        var idle: [Key: [Idle]] = [:]
        var lastSweep = ContinuousClock.now
    }

    /// Idle connections older than this are closed.
    static let idleTime: Duration = .seconds(60)
    /// Idle connections kept per key at most.
    static let capacity = 1024

    let state = Mutex(State())
    let group = MultiThreadedEventLoopGroup.singleton

    /// Sends `exchange` on an idle connection for `key` or a new one, and
    /// returns the response. Cancellation closes the connection.
    func exchange(_ exchange: Exchange, on key: Key, trust: OutboundTrust) async throws -> OutboundResponse {
        let channel: any Channel
        if let idle = take(key) {
            channel = idle
        } else {
            channel = try await connect(key, trust: trust, deadline: exchange.deadline)
        }
        let promise = channel.eventLoop.makePromise(of: OutboundResponse.self)
        let response: OutboundResponse
        do {
            response = try await withTaskCancellationHandler {
                channel.writeAndFlush(Request(exchange: exchange, promise: promise)).whenFailure { promise.fail($0) }
                return try await promise.futureResult.get()
            } onCancel: {
                channel.close(promise: nil)
            }
        } catch {
            channel.close(promise: nil)
            throw error
        }
        if response.reusable {
            park(channel, key)
        } else {
            channel.close(promise: nil)
        }
        return response
    }

    /// An idle connection for `key` that is still open; closes expired ones.
    func take(_ key: Key) -> (any Channel)? {
        let now = ContinuousClock.now
        var expired: [any Channel] = []
        let channel: (any Channel)? = state.withLock { state in
            if now - state.lastSweep > .seconds(10) {
                state.lastSweep = now
                for (other, idle) in state.idle {
                    let (old, fresh) = (
                        idle.filter { now - $0.since > Self.idleTime || !$0.channel.isActive },
                        idle.filter { now - $0.since <= Self.idleTime && $0.channel.isActive }
                    )
                    expired += old.map(\.channel)
                    state.idle[other] = fresh.isEmpty ? nil : fresh
                }
            }
            while let idle = state.idle[key]?.popLast() {
                if idle.channel.isActive && now - idle.since <= Self.idleTime { return idle.channel }
                expired.append(idle.channel)
            }
            return nil
        }
        for channel in expired { channel.close(promise: nil) }
        return channel
    }

    func park(_ channel: any Channel, _ key: Key) {
        let kept = state.withLock { state in
            guard state.idle[key, default: []].count < Self.capacity else { return false }
            state.idle[key, default: []].append(Idle(channel: channel, since: .now))
            return true
        }
        if !kept { channel.close(promise: nil) }
    }

    /// A new connection to `key`'s address, with TLS verified under `trust`
    /// when the key says so: returned once the handshake ended, which takes
    /// until `deadline` and at most ``handshakeTime``. Cancellation closes
    /// the connection being made.
    func connect(_ key: Key, trust: OutboundTrust, deadline: NIODeadline?) async throws -> any Channel {
        let address = try SocketAddress(ipAddress: key.address.description, port: key.port)
        let tls = key.tls ? try trust.context() : nil
        let made = Connecting()
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let cancelled = made.state.withLock { made in
                        made.channel = channel
                        return made.cancelled
                    }
                    if cancelled { throw CancellationError() }
                    let pipeline = channel.pipeline.syncOperations
                    if let tls {
                        // Completed by the handler once added, failed here if it cannot be.
                        let handshake = channel.eventLoop.makePromise(of: Void.self)
                        do {
                            try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: key.serverName))
                            try pipeline.addHandler(TLSHandshakeHandler(promise: handshake, deadline: deadline))
                        } catch {
                            handshake.fail(error)
                            throw error
                        }
                        made.state.withLock { $0.handshake = handshake }
                    }
                    try pipeline.addHTTPClientHandlers()
                    try pipeline.addHandler(ExchangeHandler())
                }
            }
        return try await withTaskCancellationHandler {
            let channel = try await bootstrap.connect(to: address).get()
            if let handshake = made.state.withLock({ $0.handshake }) {
                do {
                    try await handshake.futureResult.get()
                } catch {
                    channel.close(promise: nil)
                    throw error
                }
            }
            return channel
        } onCancel: {
            let channel = made.state.withLock { made in
                made.cancelled = true
                return made.channel
            }
            channel?.close(promise: nil)
        }
    }
}

/// A connection being made, so that cancellation can close it, and its
/// TLS handshake's end.
final class Connecting: Sendable {
    struct State {
        var channel: (any Channel)?
        var cancelled = false
        var handshake: EventLoopPromise<Void>?
    }

    let state = Mutex(State())
}

/// Completes `promise` when a new connection's TLS handshake ends: with the
/// error that ended it (a refused certificate is a TLS failure, not a closed
/// connection), or at the deadline. Removes itself once the handshake is done.
final class TLSHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    /// How long a handshake may take without a caller's deadline.
    static let handshakeTime: TimeAmount = .seconds(10)

    private let promise: EventLoopPromise<Void>
    private let deadline: NIODeadline?
    private var timeout: Scheduled<Void>?
    private var ended = false

    init(promise: EventLoopPromise<Void>, deadline: NIODeadline?) {
        self.promise = promise
        self.deadline = deadline
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let limit = NIODeadline.now() + Self.handshakeTime
        let (deadline, error) =
            if let deadline = self.deadline, deadline < limit {
                (deadline, OutboundTransportError.deadline)
            } else {
                (limit, OutboundTransportError("TLS handshake timeout"))
            }
        timeout = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            self?.end(.failure(error), context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        end(.failure(OutboundTransportError.closed), context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        if case TLSUserEvent.handshakeCompleted = event {
            end(.success(()), context: context)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        end(.failure(error), context: context)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        end(.failure(OutboundTransportError.closed), context: context)
        context.fireChannelInactive()
    }

    private func end(_ result: Result<Void, any Error>, context: ChannelHandlerContext) {
        timeout?.cancel()
        timeout = nil
        guard !ended else { return }
        ended = true
        promise.completeWith(result)
        if case .failure = result { context.close(promise: nil) }
    }
}

/// What ``ConnectionPool`` writes to a connection: an exchange and the
/// promise its response completes.
struct Request: Sendable {
    var exchange: Exchange
    var promise: EventLoopPromise<OutboundResponse>
}

/// Writes a request (head, body and end, flushed once by the caller) and
/// reads its response into an ``OutboundResponse``, keeping the body's first
/// `limit` bytes. Anything unexpected (data while idle, an error, the
/// connection closing mid-response) fails the exchange and closes the
/// connection.
final class ExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Request
    typealias OutboundOut = HTTPClientRequestPart

    private var current: Request?
    private var response: OutboundResponse?
    private var keepAlive = false
    private var timeout: Scheduled<Void>?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard current == nil else {
            request.promise.fail(OutboundTransportError("connection busy"))
            promise?.fail(ChannelError.inappropriateOperationForState)
            return
        }
        current = request
        keepAlive = request.exchange.head.isKeepAlive
        if let deadline = request.exchange.deadline {
            timeout = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
                self?.fail(OutboundTransportError.deadline, context: context)
            }
        }
        context.write(wrapOutboundOut(.head(request.exchange.head)), promise: nil)
        if let body = request.exchange.body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let request = current else {
            // A server speaking unasked: this connection is no longer usable.
            context.close(promise: nil)
            return
        }
        switch unwrapInboundIn(data) {
        case .head(let head):
            keepAlive = keepAlive && head.isKeepAlive
            response = OutboundResponse(status: head.status, headers: head.headers)
        case .body(var part):
            guard var received = response else { return }
            // Cleared first so the kept buffer is not copied when appended to.
            response = nil
            let limit = request.exchange.limit
            received.bytes += part.readableBytes
            let room = limit - received.body.readableBytes
            if room > 0, let slice = part.readSlice(length: min(room, part.readableBytes)) {
                received.body.writeImmutableBuffer(slice)
            }
            response = received
            if received.bytes - limit > OutboundHTTPClient.drainBytes {
                keepAlive = false
                finish(context: context)
            }
        case .end:
            finish(context: context)
        }
    }

    /// Completes the exchange with the response read so far.
    private func finish(context: ChannelHandlerContext) {
        guard let request = current, var received = response else { return }
        received.reusable = keepAlive
        reset()
        request.promise.succeed(received)
        if !received.reusable { context.close(promise: nil) }
    }

    private func fail(_ error: any Error, context: ChannelHandlerContext) {
        if let request = current {
            reset()
            request.promise.fail(error)
        }
        context.close(promise: nil)
    }

    private func reset() {
        current = nil
        response = nil
        timeout?.cancel()
        timeout = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(OutboundTransportError.closed, context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error, context: context)
    }
}
