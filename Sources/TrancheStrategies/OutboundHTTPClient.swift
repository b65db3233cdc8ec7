public import AsyncHTTPClient
import Foundation
public import NIOCore
import NIOHTTP1
import Synchronization

/// Sends outbound HTTP requests under an ``OutboundPolicy``: resolves each
/// host once, checks every address, and connects to a checked address while
/// the `Host` header and TLS server name stay the URL's (AsyncHTTPClient's
/// `dnsOverride`, one pooled client per host and address). Redirects are
/// followed here, not by AsyncHTTPClient, so every hop is checked the same
/// way; a hop to another origin drops the caller's sensitive headers.
///
/// Shared by the `http` strategy and the webhook dispatcher.
public enum OutboundHTTPClient {
    /// Sends `request`, following at most `maxRedirects` redirects, and hands
    /// the final response to `consume` (its body is read there, while the
    /// connection is held). Refusals throw ``OutboundRefusal``; transport
    /// failures throw AsyncHTTPClient's errors.
    public static func execute<T: Sendable>(
        _ request: HTTPClientRequest, policy: OutboundPolicy, deadline: NIODeadline, maxRedirects: Int,
        sensitiveHeaders: Set<String> = [],
        consume: (HTTPClientResponse) async throws -> T
    ) async throws -> T {
        var request = request
        var hops = 0
        while true {
            let target = try Target(request.url)
            let (response, key) = try await send(request, to: target, policy: policy, deadline: deadline)
            let next: HTTPClientRequest?
            do {
                next =
                    hops < maxRedirects
                    ? try redirect(after: response, of: request, from: target, sensitiveHeaders: sensitiveHeaders) : nil
            } catch {
                clients.release(key)
                throw error
            }
            if let next {
                // Read the hop's body away (bounded) so its connection can be reused.
                var drained = 0
                do {
                    for try await part in response.body {
                        drained += part.readableBytes
                        if drained > 1 << 20 { break }
                    }
                } catch {}
                clients.release(key)
                request = next
                hops += 1
                continue
            }
            do {
                let value = try await consume(response)
                clients.release(key)
                return value
            } catch {
                clients.release(key)
                throw error
            }
        }
    }

    /// The parts of a URL a request goes to.
    struct Target: Equatable {
        var scheme: String
        /// As AsyncHTTPClient names it: `url.host` without IPv6 brackets.
        var host: String
        var port: Int

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
        }
    }

    /// Sends one hop: to each checked address in turn until one connects.
    /// The returned key's client is held until released.
    static func send(
        _ request: HTTPClientRequest, to target: Target, policy: OutboundPolicy, deadline: NIODeadline
    ) async throws -> (HTTPClientResponse, ClientCache.Key) {
        // Resolved (and checked, unless the policy allows everything) once; an
        // IP literal is connected to as it is, a name through its addresses in turn.
        let addresses = try await policy.addresses(host: target.host, port: target.port)
        let keys =
            IPAddress(target.host) != nil
            ? [ClientCache.Key(host: nil, address: nil)]
            : addresses.map { ClientCache.Key(host: target.host, address: $0) }
        for (index, key) in keys.enumerated() {
            let (client, retired) = clients.acquire(key)
            for old in retired { try? await old.shutdown() }
            do {
                return (try await client.execute(request, deadline: deadline), key)
            } catch {
                clients.release(key)
                if index == keys.count - 1 || !isConnectFailure(error) { throw error }
            }
        }
        throw CancellationError()  // Not reached: the loop returns or throws on its last key.
    }

    /// Whether `error` says no connection was made (so nothing was sent).
    static func isConnectFailure(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError { return error == .connectTimeout }
        if case ChannelError.connectTimeout = error { return true }
        if let error = error as? IOError {
            return [ECONNREFUSED, ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL, ETIMEDOUT].contains(error.errnoCode)
        }
        return false
    }

    /// The next request when `response` is a redirect (301, 302, 303, 307,
    /// 308 with a `Location`); nil otherwise. 303, and 301 or 302 after a
    /// POST, continue as a GET without a body.
    static func redirect(
        after response: HTTPClientResponse, of request: HTTPClientRequest, from target: Target,
        sensitiveHeaders: Set<String>
    ) throws(OutboundRefusal) -> HTTPClientRequest? {
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
            request.headers.remove(name: "Content-Length")
        }
        if next != target {
            for name in sensitiveHeaders.union(["authorization", "cookie", "proxy-authorization"]) {
                request.headers.remove(name: name)
            }
        }
        return request
    }

    static let clients = ClientCache()
}

/// AsyncHTTPClient instances for the life of the process, one per host and
/// checked address (its `dnsOverride`), plus one without an override for IP
/// literals. A client idle for 90 seconds is shut down by
/// the next caller; one in use never is.
final class ClientCache: Sendable {
    struct Key: Hashable {
        /// The name overridden; nil for the plain client.
        var host: String?
        var address: IPAddress?
    }

    struct Entry {
        var client: HTTPClient
        var users: Int
        var lastUsed: ContinuousClock.Instant
    }

    /// Clients idle this long are shut down. Kept beyond AsyncHTTPClient's
    /// own idle connection timeout, so a cached client rarely holds a connection.
    static let idleTime: Duration = .seconds(90)
    /// Idle clients kept at most.
    static let capacity = 256

    struct State {
        var entries: [Key: Entry] = [:]
        /// When idle clients were last looked for.
        var lastSweep = ContinuousClock.now
    }

    let state = Mutex(State())

    /// The client for `key`, marked in use, and clients to shut down. Idle
    /// clients are looked for at most every 10 seconds, or when there are
    /// more than ``capacity``, so the common call is one dictionary lookup.
    func acquire(_ key: Key) -> (HTTPClient, retired: [HTTPClient]) {
        let now = ContinuousClock.now
        return state.withLock { state in
            var retired: [HTTPClient] = []
            let surplus = max(0, state.entries.count - Self.capacity)
            if surplus > 0 || now - state.lastSweep > .seconds(10) {
                state.lastSweep = now
                let idle = state.entries.filter { $0.value.users == 0 && $0.key != key }
                for (index, (old, entry)) in idle.sorted(by: { $0.value.lastUsed < $1.value.lastUsed }).enumerated()
                where index < surplus || now - entry.lastUsed > Self.idleTime {
                    retired.append(entry.client)
                    state.entries[old] = nil
                }
            }
            if var entry = state.entries[key] {
                entry.users += 1
                state.entries[key] = entry
                return (entry.client, retired)
            }
            let client = Self.makeClient(key)
            state.entries[key] = Entry(client: client, users: 1, lastUsed: now)
            return (client, retired)
        }
    }

    func release(_ key: Key) {
        state.withLock { state in
            guard var entry = state.entries[key] else { return }
            entry.users = max(0, entry.users - 1)
            entry.lastUsed = .now
            state.entries[key] = entry
        }
    }

    /// A refused connection fails at once (the caller retries with backoff),
    /// many connections per host are allowed (the batch's concurrency is the
    /// limit), and redirects are left to ``OutboundHTTPClient``.
    /// No tracer: AsyncHTTPClient would otherwise make a span (of the global
    /// no-op tracer) and its attributes for every request.
    static func makeClient(_ key: Key) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(10), read: .seconds(300))
        configuration.tracing.tracer = nil
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        configuration.connectionPool.retryConnectionEstablishment = false
        if let host = key.host, let address = key.address {
            configuration.dnsOverride = [host: address.description]
        }
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }
}
