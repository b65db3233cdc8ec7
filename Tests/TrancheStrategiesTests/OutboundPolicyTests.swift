import Foundation
import Testing
import TrancheEngine
import TrancheStrategies
import TrancheTestSupport

extension OutboundPolicy {
    /// Internal addresses refused, but 127.0.0.1 (where the tests' receivers listen) allowed.
    static let loopback = OutboundPolicy(allowing: [.init(host: "127.0.0.1")])
}

/// An address the test writes as text.
func ip(_ text: String) -> IPAddress {
    guard let address = IPAddress(text) else { fatalError("\(text) is no IP address") }
    return address
}

@Suite("outbound address checks")
struct OutboundPolicyTests {
    static let classified: [(String, AddressClass?)] = [
        ("8.8.8.8", nil), ("1.1.1.1", nil), ("172.32.0.1", nil), ("100.128.0.1", nil), ("192.169.0.1", nil),
        ("10.0.0.1", .privateNetwork), ("172.16.0.1", .privateNetwork), ("172.31.255.255", .privateNetwork),
        ("192.168.1.1", .privateNetwork), ("100.64.0.1", .shared), ("100.127.255.254", .shared),
        ("127.0.0.1", .loopback), ("127.255.0.9", .loopback), ("169.254.169.254", .metadata),
        ("169.254.1.1", .linkLocal), ("0.0.0.0", .unspecified), ("0.1.2.3", .unspecified),
        ("224.0.0.1", .multicast), ("239.255.255.250", .multicast), ("255.255.255.255", .broadcast),
        ("240.0.0.1", .reserved), ("198.18.0.1", .reserved),
        ("::", .unspecified), ("::1", .loopback), ("::ffff:127.0.0.1", .loopback), ("::ffff:10.1.2.3", .privateNetwork),
        ("::ffff:169.254.169.254", .metadata), ("::ffff:8.8.8.8", nil), ("64:ff9b::a9fe:a9fe", .metadata),
        ("2002:a00:1::", .privateNetwork), ("fc00::1", .privateNetwork), ("fd00:ec2::254", .privateNetwork),
        ("fe80::1", .linkLocal), ("ff02::1", .multicast), ("2606:4700::1111", nil), ("2001:4860:4860::8888", nil),
    ]

    @Test("addresses are classified, an IPv4 address inside an IPv6 one as that IPv4 address")
    func classification() throws {
        var wrong: [String] = []
        for (text, expected) in Self.classified {
            let address = try #require(IPAddress(text), "\(text) parses")
            let kind = AddressClass(of: address)
            if kind != expected {
                wrong.append("\(text): \(kind?.name ?? "public"), not \(expected?.name ?? "public")")
            }
        }
        #expect(wrong.isEmpty, "\(wrong.joined(separator: "; "))")
        #expect(IPAddress("127.1") == nil)
        #expect(IPAddress("::ffff:127.0.0.1")?.description == "::ffff:127.0.0.1")
        #expect(IPAddress(bytes: [1, 2, 3]) == nil)
    }

    @Test("allow-list entries are a host with an optional port")
    func allowances() {
        #expect(OutboundPolicy.Allowance(parsing: "API.test") == .init(host: "api.test"))
        #expect(OutboundPolicy.Allowance(parsing: "api.test:8080") == .init(host: "api.test", port: 8080))
        #expect(OutboundPolicy.Allowance(parsing: "[::1]:9000") == .init(host: "::1", port: 9000))
        #expect(OutboundPolicy.Allowance(parsing: "::1") == .init(host: "::1"))
        #expect(OutboundPolicy.Allowance(parsing: "[::1]:9000")?.description == "[::1]:9000")
        for bad in ["", "api.test:0", "api.test:65536", "api.test:x", "http://api.test", "a/b", "[::1", "a b", "u@h"] {
            #expect(OutboundPolicy.Allowance(parsing: bad) == nil, "\(bad)")
        }
        let policy = OutboundPolicy(allowing: [.init(host: "api.test", port: 8080), .init(host: "any.test")])
        #expect(policy.allows(host: "API.test", port: 8080))
        #expect(!policy.allows(host: "api.test", port: 8081))
        #expect(policy.allows(host: "any.test.", port: 1))
        #expect(OutboundPolicy.unrestricted.allows(host: "x", port: 1))
    }

    /// Names that resolve (through the test resolver) to each refused kind.
    /// Checked by the policy alone: a test never connects to these addresses.
    static let resolver = OutboundPolicy.Resolver.fixed([
        "private.test": [ip("10.0.0.1")],
        "metadata.test": [ip("169.254.169.254")],
        "mapped.test": [ip("::ffff:127.0.0.1")],
        "zero.test": [ip("0.0.0.0")],
        "unspecified.test": [ip("::")],
        "cgnat.test": [ip("100.64.1.2")],
        "ula.test": [ip("fd00::1")],
        "linklocal.test": [ip("fe80::1")],
        "broadcast.test": [ip("255.255.255.255")],
        "multicast.test": [ip("224.0.0.251")],
        "mixed.test": [ip("93.184.215.14"), ip("192.168.0.1")],
        "public.test": [ip("93.184.215.14")],
        "empty.test": [],
    ])

    @Test("a name resolving to a refused address is refused, whichever of its addresses it is")
    func resolvedNames() async throws {
        let policy = OutboundPolicy(allowing: [.init(host: "metadata.test", port: 8080)], resolver: Self.resolver)
        let refused: [(String, String)] = [
            ("private.test", "private"), ("metadata.test", "cloud metadata"), ("mapped.test", "loopback"),
            ("zero.test", "unspecified"), ("unspecified.test", "unspecified"), ("cgnat.test", "shared (CGNAT)"),
            ("ula.test", "private"), ("linklocal.test", "link-local"), ("broadcast.test", "broadcast"),
            ("multicast.test", "multicast"), ("mixed.test", "private"), ("localhost", "loopback"),
        ]
        for (name, kind) in refused {
            do {
                let addresses = try await policy.addresses(host: name, port: 80)
                Issue.record("\(name) was allowed: \(addresses)")
            } catch {
                #expect(error.code == "address_refused", "\(name)")
                #expect(error.isPermanent)
                #expect(error.message.contains(" \(kind) address"), "\(name): \(error.message)")
                #expect(error.message.contains("--http-allow"))
            }
        }
        #expect(try await policy.addresses(host: "public.test", port: 80) == [ip("93.184.215.14")])
        // The allow-list names the host and port: that pair alone passes.
        #expect(try await policy.addresses(host: "metadata.test", port: 8080) == [ip("169.254.169.254")])
        await #expect(throws: OutboundRefusal.self) { try await policy.addresses(host: "metadata.test", port: 80) }
        // Literals are refused the same way, and need no resolver.
        await #expect(throws: OutboundRefusal.self) { try await policy.addresses(host: "[::ffff:a9fe:a9fe]", port: 80) }
        do {
            _ = try await policy.addresses(host: "empty.test", port: 80)
            Issue.record("a name without addresses was allowed")
        } catch {
            #expect(error.code == "dns_error")
            #expect(!error.isPermanent)
        }
        #expect(try await OutboundPolicy.unrestricted.addresses(host: "127.0.0.1", port: 1) == [ip("127.0.0.1")])
    }

    @Test("with only allowed hosts, a public name off the list is refused too, at submission and when called")
    func onlyAllowed() async throws {
        var policy = OutboundPolicy(allowing: [.init(host: "public.test")], resolver: Self.resolver)
        policy.onlyAllowed = true
        #expect(try await policy.addresses(host: "public.test", port: 443) == [ip("93.184.215.14")])
        do {
            _ = try await policy.addresses(host: "other.test", port: 443)
            Issue.record("a host off the list was called")
        } catch {
            #expect(error.code == "host_not_allowed")
            #expect(error.isPermanent)
        }
        #expect(throws: OutboundRefusal.self) { try policy.checkLiteral(host: "8.8.8.8", port: 80) }
        try policy.checkLiteral(host: "public.test", port: 80)
    }

    func input(_ item: String) -> ItemInput {
        ItemInput(
            batchID: BatchID("01234567-89ab-7def-8123-456789abcdef")!, seq: 1, payload: JSONText(unchecked: item),
            attempt: 1)
    }

    /// Runs one item of an `http` batch to `url` (a template) under `policy`.
    func call(_ url: String, policy: OutboundPolicy, headers: JSONValue = [:], item: String = "{}") async throws
        -> Result<
            JSONValue, ItemError
        >
    {
        let strategy = AnyBatchStrategy(HTTPStrategy(configuration: .init(outbound: policy)))
        let context = try strategy.prepare(
            context: JSONText(encoding: ["url": .string(url), "headers": headers] as JSONValue))
        let bound = try strategy.bind(context: context)
        return await bound.process(input(item)).map { (try? $0.value()) ?? .null }
    }

    @Test("the http strategy refuses names that resolve to this machine, and calls them once allowed with the port")
    func strategyRefusesLocalNames() async throws {
        let server = LoopbackHTTPServer { _, _ in .init(status: 200, body: #"{"ok":true}"#) }
        try await server.withRunning { port in
            let resolver = OutboundPolicy.Resolver.fixed([
                "mapped.test": [ip("::ffff:127.0.0.1")],
                "zero.test": [ip("0.0.0.0")],
                "here.test": [ip("127.0.0.1")],
            ])
            let closed = OutboundPolicy(resolver: resolver)
            // `localhost` is refused at submission already; names from DNS when called.
            await #expect(throws: OptionsError.self) { try await call("http://localhost:\(port)/", policy: closed) }
            for host in ["mapped.test", "zero.test", "here.test", "{{host}}"] {
                guard
                    case .failure(let error) = try await call(
                        "http://\(host):\(port)/", policy: closed, item: #"{"host": "localhost"}"#)
                else {
                    Issue.record("\(host) was called")
                    continue
                }
                #expect(error.code == "address_refused", "\(host)")
                #expect(error.category == .permanent)
            }
            #expect(server.requests.isEmpty)
            // Allowed with its port, a name is called at the address checked, not resolved again
            // (the system resolver knows no `here.test`).
            let open = OutboundPolicy(
                allowing: [.init(host: "here.test", port: port), .init(host: "localhost", port: port)],
                resolver: resolver)
            #expect(try await call("http://here.test:\(port)/", policy: open).get()["status"] == 200)
            #expect(server.requests.last?.headers["host"] == "here.test:\(port)")
            // `localhost` may resolve to ::1 first; the server listens on 127.0.0.1 alone.
            #expect(try await call("http://localhost:\(port)/", policy: open).get()["status"] == 200)
            guard case .failure(let other) = try await call("http://here.test:\(port + 1)/", policy: open) else {
                Issue.record("another port of an allowed host was called")
                return
            }
            #expect(other.code == "address_refused")
        }
    }

    @Test("every redirect hop is checked; a hop to another origin drops the context's headers")
    func redirects() async throws {
        let target = LoopbackHTTPServer { _, _ in .init(status: 200, body: "landed") }
        try await target.withRunning { targetPort in
            let start = LoopbackHTTPServer { request, _ in
                switch request.uri {
                case "/to-refused": .init(status: 302, headers: ["Location": "http://refused.test:\(targetPort)/x"])
                case "/to-literal": .init(status: 307, headers: ["Location": "http://127.0.0.1:\(targetPort)/x"])
                case "/to-allowed": .init(status: 302, headers: ["Location": "http://allowed.test:\(targetPort)/ok"])
                case "/to-file": .init(status: 302, headers: ["Location": "file:///etc/passwd"])
                default: .init(status: 301, headers: ["Location": "/loop"])
                }
            }
            try await start.withRunning { startPort in
                let resolver = OutboundPolicy.Resolver.fixed([
                    "refused.test": [ip("127.0.0.1")], "allowed.test": [ip("127.0.0.1")],
                ])
                let policy = OutboundPolicy(
                    allowing: [
                        .init(host: "127.0.0.1", port: startPort), .init(host: "allowed.test", port: targetPort),
                    ],
                    resolver: resolver)
                let secret: JSONValue = ["Authorization": "Bearer s3cret", "X-Token": "t0k"]
                for path in ["to-refused", "to-literal"] {
                    guard
                        case .failure(let error) = try await call(
                            "http://127.0.0.1:\(startPort)/\(path)", policy: policy, headers: secret)
                    else {
                        Issue.record("the redirect \(path) was followed")
                        continue
                    }
                    #expect(error.code == "address_refused", "\(path)")
                    #expect(error.category == .permanent)
                }
                #expect(target.requests.isEmpty)
                let landed = try await call("http://127.0.0.1:\(startPort)/to-allowed", policy: policy, headers: secret)
                #expect(try landed.get() == ["status": 200, "body": "landed"])
                let hop = try #require(target.requests.first)
                #expect(hop.uri == "/ok")
                #expect(hop.method == "GET")
                #expect(hop.headers["authorization"] == nil)
                #expect(hop.headers["x-token"] == nil)
                #expect(hop.headers["idempotency-key"] != nil)
                guard case .failure(let file) = try await call("http://127.0.0.1:\(startPort)/to-file", policy: policy)
                else {
                    Issue.record("a redirect to file: was followed")
                    return
                }
                #expect(file.code == "invalid_url")
                // A redirect loop ends after the limit with the 3xx itself.
                guard case .failure(let loop) = try await call("http://127.0.0.1:\(startPort)/loop", policy: policy)
                else {
                    Issue.record("a redirect loop succeeded")
                    return
                }
                #expect(loop.code == "http_301")
                #expect(start.requests.filter { $0.uri == "/loop" }.count == HTTPStrategy.maxRedirects + 1)
            }
        }
    }
}
