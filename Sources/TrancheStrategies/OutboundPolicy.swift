import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Which addresses outbound calls (the `http` strategy and webhooks) may
/// reach: every address a host resolves to is checked, and loopback,
/// private, shared (CGNAT), link-local (the cloud metadata address
/// 169.254.169.254 among them), unspecified, multicast, broadcast and
/// reserved addresses are refused unless the host is on the allow-list
/// (`--http-allow HOST[:PORT]`). An IPv4 address inside an IPv6 one
/// (`::ffff:a.b.c.d`, NAT64, 6to4) is checked as that IPv4 address.
///
/// One policy serves both callers, so a rule changes in one place. The
/// checked addresses are the ones connected to (``OutboundHTTPClient``):
/// a name that resolves elsewhere a moment later (DNS rebinding) changes
/// nothing.
public struct OutboundPolicy: Sendable {
    /// A host (and optionally a port) whose internal addresses may be called.
    public struct Allowance: Sendable, Hashable, CustomStringConvertible {
        /// The host as a URL names it, lowercased, IPv6 without brackets.
        public var host: String
        /// The one port allowed; nil allows every port.
        public var port: Int?

        public init(host: String, port: Int? = nil) {
            self.host = OutboundPolicy.normalized(host)
            self.port = port
        }

        /// Reads `HOST`, `HOST:PORT`, `[IPV6]:PORT` or a bare IPv6 address;
        /// nil for anything else (a scheme, a path, a port outside 1…65535).
        public init?(parsing text: String) {
            let text = text.trimmingCharacters(in: .whitespaces)
            var host = Substring(text)
            var port: Int?
            if text.hasPrefix("[") {
                guard let close = text.firstIndex(of: "]") else { return nil }
                host = text[text.index(after: text.startIndex)..<close]
                let rest = text[text.index(after: close)...]
                if !rest.isEmpty {
                    guard rest.hasPrefix(":"), let number = Int(rest.dropFirst()) else { return nil }
                    port = number
                }
            } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
                host = text[..<colon]
                guard let number = Int(text[text.index(after: colon)...]) else { return nil }
                port = number
            }
            guard !host.isEmpty, port.map({ (1...65_535).contains($0) }) ?? true,
                host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-._:".contains($0)) })
            else { return nil }
            self.init(host: String(host), port: port)
        }

        public var description: String {
            let shown = host.contains(":") ? "[\(host)]" : host
            return port.map { "\(shown):\($0)" } ?? shown
        }

        func matches(host: String, port: Int) -> Bool {
            self.host == host && (self.port == nil || self.port == port)
        }
    }

    /// Turns a host name into addresses.
    public struct Resolver: Sendable {
        /// The addresses of a host name (never an IP literal: those are read
        /// without asking).
        public var resolve: @Sendable (String) async throws -> [IPAddress]

        public init(resolve: @escaping @Sendable (String) async throws -> [IPAddress]) {
            self.resolve = resolve
        }

        /// The system's resolver (`getaddrinfo`), run off the cooperative
        /// pool. An answer is kept 10 seconds (``LookupCache``), so a batch
        /// calling one host does not ask DNS once per item; the addresses
        /// kept are still the ones checked and connected to.
        public static let system = Resolver { host in
            if let addresses = LookupCache.shared.addresses(of: host) { return addresses }
            let addresses = try await withCheckedThrowingContinuation { continuation in
                DispatchQueue.global().async {
                    continuation.resume(with: Result { try IPAddress.lookUp(host) })
                }
            }
            LookupCache.shared.keep(addresses, for: host)
            return addresses
        }

        /// Fixed answers, for tests: a name not in `table` goes to the system resolver.
        public static func fixed(_ table: [String: [IPAddress]]) -> Resolver {
            Resolver { host in
                if let addresses = table[OutboundPolicy.normalized(host)] { return addresses }
                return try await system.resolve(host)
            }
        }
    }

    /// Hosts whose internal addresses may be called.
    public var allowed: Set<Allowance>
    /// False: every address may be called (`tranche run`, on the user's own machine).
    public var checksAddresses: Bool
    /// True: only the hosts in `allowed` are called, public or not
    /// (`--http-only-allowed`). Default false.
    public var onlyAllowed = false
    /// How names become addresses.
    public var resolver: Resolver
    /// The authorities https calls trust: the system's roots, and the CA
    /// certificates of `--http-ca-file`. Default ``OutboundTrust/system``.
    public var trust: OutboundTrust = .system

    /// Refuses internal addresses except for the hosts in `allowed`.
    public init(allowing allowed: some Sequence<Allowance> = [Allowance](), resolver: Resolver = .system) {
        self.allowed = Set(allowed)
        self.checksAddresses = true
        self.resolver = resolver
    }

    /// Allows every address: for a process on the user's own machine.
    public static var unrestricted: OutboundPolicy {
        var policy = OutboundPolicy()
        policy.checksAddresses = false
        return policy
    }

    /// Whether `host` (as a URL names it) on `port` is on the allow-list, or
    /// the policy checks nothing.
    public func allows(host: String, port: Int) -> Bool {
        let host = Self.normalized(host)
        return !checksAddresses || allowed.contains { $0.matches(host: host, port: port) }
    }

    /// A check without I/O, for submissions: an IP literal or a `localhost`
    /// name that is refused whatever DNS says. Other names are checked when called.
    public func checkLiteral(host: String, port: Int) throws(OutboundRefusal) {
        guard !allows(host: host, port: port) else { return }
        if onlyAllowed { throw .unlisted(host: host) }
        let name = Self.normalized(host)
        if let address = IPAddress(name), let kind = AddressClass(of: address) {
            throw .refused(host: host, address: address, kind: kind)
        }
        if name == "localhost" || name.hasSuffix(".localhost") {
            throw .refused(host: host, address: IPAddress([127, 0, 0, 1]), kind: .loopback)
        }
    }

    /// The addresses to connect to for `host` on `port`: every one it
    /// resolves to, each checked. One refused address refuses the host, so
    /// a name cannot mix a public address with an internal one.
    public func addresses(host: String, port: Int) async throws(OutboundRefusal) -> [IPAddress] {
        let name = Self.normalized(host)
        if onlyAllowed && !allows(host: host, port: port) { throw .unlisted(host: host) }
        let addresses: [IPAddress]
        if let literal = IPAddress(name) {
            addresses = [literal]
        } else {
            do {
                addresses = try await resolver.resolve(name)
            } catch {
                throw OutboundRefusal(
                    code: "dns_error", message: "cannot resolve '\(host)': \(error)", isPermanent: false)
            }
            guard !addresses.isEmpty else {
                throw OutboundRefusal(code: "dns_error", message: "'\(host)' has no address", isPermanent: false)
            }
        }
        if !allows(host: host, port: port) {
            for address in addresses {
                if let kind = AddressClass(of: address) { throw .refused(host: host, address: address, kind: kind) }
            }
        }
        return addresses
    }

    /// A host as compared: lowercased, without IPv6 brackets or a trailing dot.
    static func normalized(_ host: String) -> String {
        var name = host.lowercased()
        if name.hasPrefix("["), name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
        if name.hasSuffix("."), name.count > 1 { name.removeLast() }
        return name
    }
}

/// Why an outbound call was not made. `code` is the item error's code:
/// `address_refused`, `host_not_allowed` (permanent), `dns_error`
/// (retryable), `invalid_url`, `redirect_refused` (permanent).
public struct OutboundRefusal: Error, Sendable, CustomStringConvertible {
    public var code: String
    public var message: String
    /// Whether trying again cannot help.
    public var isPermanent: Bool

    public init(code: String, message: String, isPermanent: Bool) {
        self.code = code
        self.message = message
        self.isPermanent = isPermanent
    }

    static func refused(host: String, address: IPAddress, kind: AddressClass) -> OutboundRefusal {
        let resolved = IPAddress(OutboundPolicy.normalized(host)) == address ? " is" : " resolves to \(address),"
        return OutboundRefusal(
            code: "address_refused",
            message: "'\(host)'\(resolved) \(kind.article) \(kind) address: refused unless the host is on the "
                + "outbound allow-list (--http-allow)",
            isPermanent: true)
    }

    static func unlisted(host: String) -> OutboundRefusal {
        OutboundRefusal(
            code: "host_not_allowed",
            message: "'\(host)' is not on the outbound allow-list (--http-allow), and no other host is called "
                + "(--http-only-allowed)",
            isPermanent: true)
    }

    public var description: String { message }
}

/// The kind of an address outbound calls refuse by default.
public struct AddressClass: Sendable, Hashable, CustomStringConvertible {
    public let name: String

    init(name: String) {
        self.name = name
    }

    public static let loopback = AddressClass(name: "loopback")
    /// 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10.
    public static let privateNetwork = AddressClass(name: "private")
    /// 100.64/10, carrier-grade NAT.
    public static let shared = AddressClass(name: "shared (CGNAT)")
    /// 169.254/16, fe80::/10.
    public static let linkLocal = AddressClass(name: "link-local")
    /// 169.254.169.254, where clouds answer with a machine's credentials.
    public static let metadata = AddressClass(name: "cloud metadata")
    /// 0.0.0.0/8 and `::`.
    public static let unspecified = AddressClass(name: "unspecified")
    public static let multicast = AddressClass(name: "multicast")
    public static let broadcast = AddressClass(name: "broadcast")
    /// 192.0.0/24, 198.18/15, 240/4, 100::/64 and other ranges no public host uses.
    public static let reserved = AddressClass(name: "reserved")

    public var description: String { name }
    var article: String { ["a", "e", "i", "o", "u"].contains(name.first.map(String.init) ?? "") ? "an" : "a" }

    /// The class of `address`; nil for a public address.
    public init?(of address: IPAddress) {
        let b = address.bytes
        if b.count == 4 {
            guard let kind = Self.ipv4(b[0], b[1], b[2], b[3]) else { return nil }
            self = kind
            return
        }
        guard b.count == 16 else { return nil }
        if let inner = address.embeddedIPv4 {
            guard let kind = AddressClass(of: inner) else { return nil }
            self = kind
            return
        }
        if b.allSatisfy({ $0 == 0 }) {
            self = .unspecified
        } else if b.dropLast().allSatisfy({ $0 == 0 }) && b[15] == 1 {
            self = .loopback
        } else if b[0] & 0xFE == 0xFC || (b[0] == 0xFE && b[1] & 0xC0 == 0xC0) {
            self = .privateNetwork
        } else if b[0] == 0xFE && b[1] & 0xC0 == 0x80 {
            self = .linkLocal
        } else if b[0] == 0xFF {
            self = .multicast
        } else if b[0] == 0x01 && b[1...7].allSatisfy({ $0 == 0 }) {
            self = .reserved
        } else {
            return nil
        }
    }

    static func ipv4(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> AddressClass? {
        switch (a, b) {
        case (0, _): return .unspecified
        case (10, _), (172, 16...31), (192, 168): return .privateNetwork
        case (100, 64...127): return .shared
        case (127, _): return .loopback
        case (169, 254): return c == 169 && d == 254 ? .metadata : .linkLocal
        case (192, 0) where c == 0: return .reserved
        case (198, 18...19): return .reserved
        case (224...239, _): return .multicast
        case (255, 255) where c == 255 && d == 255: return .broadcast
        case (240...255, _): return .reserved
        default: return nil
        }
    }
}

/// An IPv4 (4 bytes) or IPv6 (16 bytes) address.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// An address from its 4 or 16 bytes; nil for another count.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Bytes known to be 4 or 16 long.
    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Reads the strict text forms (`inet_pton`): `10.0.0.1`, `::ffff:127.0.0.1`.
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
            return
        }
        return nil
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let written = bytes.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count))
        }
        guard written != nil else { return bytes.map(String.init).joined(separator: ".") }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The IPv4 address an IPv6 one carries and reaches: mapped
    /// (`::ffff:0:0/96`), compatible (`::/96`, but `::` and `::1`), NAT64
    /// (`64:ff9b::/96`) and 6to4 (`2002::/16`).
    var embeddedIPv4: IPAddress? {
        guard bytes.count == 16 else { return nil }
        let head = bytes[0..<12]
        let tail = Array(bytes[12..<16])
        if head.dropLast(2).allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
            return IPAddress(tail)
        }
        if head.allSatisfy({ $0 == 0 }) && !(tail[0...2].allSatisfy { $0 == 0 } && tail[3] <= 1) {
            return IPAddress(tail)
        }
        if bytes[0...3] == [0x00, 0x64, 0xFF, 0x9B] && bytes[4..<12].allSatisfy({ $0 == 0 }) {
            return IPAddress(tail)
        }
        if bytes[0] == 0x20 && bytes[1] == 0x02 {
            return IPAddress(Array(bytes[2..<6]))
        }
        return nil
    }

    /// Every address `getaddrinfo` gives for `host`, in its order, without repeats.
    static func lookUp(_ host: String) throws -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
            hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let first = list else {
            throw LookupError(reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(first) }
        var addresses: [IPAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let entry = cursor {
            if let socketAddress = entry.pointee.ai_addr {
                var address: IPAddress?
                switch entry.pointee.ai_family {
                case AF_INET:
                    address = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                        withUnsafeBytes(of: pointer.pointee.sin_addr) { IPAddress(Array($0)) }
                    }
                case AF_INET6:
                    address = socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                        withUnsafeBytes(of: pointer.pointee.sin6_addr) { IPAddress(Array($0)) }
                    }
                default: break
                }
                if let address, !addresses.contains(address) { addresses.append(address) }
            }
            cursor = entry.pointee.ai_next
        }
        return addresses
    }

    struct LookupError: Error, CustomStringConvertible {
        var reason: String
        var description: String { reason }
    }
}

/// Recent answers of the system resolver: at most ``capacity`` names, each
/// for ``lifetime``. Failures are not kept.
final class LookupCache: Sendable {
    static let shared = LookupCache()
    static let lifetime: Duration = .seconds(10)
    static let capacity = 1_024

    let answers = Mutex<[String: (addresses: [IPAddress], until: ContinuousClock.Instant)]>([:])

    func addresses(of host: String) -> [IPAddress]? {
        answers.withLock { answers in
            guard let answer = answers[host] else { return nil }
            guard answer.until > .now else {
                answers[host] = nil
                return nil
            }
            return answer.addresses
        }
    }

    func keep(_ addresses: [IPAddress], for host: String) {
        guard !addresses.isEmpty else { return }
        let now = ContinuousClock.now
        answers.withLock { answers in
            if answers.count >= Self.capacity {
                answers = answers.filter { $0.value.until > now }
                if answers.count >= Self.capacity { answers.removeAll() }
            }
            answers[host] = (addresses, now + Self.lifetime)
        }
    }
}
