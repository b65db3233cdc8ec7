import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// `tranche bench --http`: the `http` strategy against a local server that
/// answers every request after a fixed delay, beside `wrk` against the same
/// server at the same concurrency. The server runs on one event-loop thread
/// of this process; `wrk` and `tranche run` are child processes, one at a time.
/// Figures only: nothing is asserted.
struct HTTPBench {
    let folder: String
    let concurrencies: [Int]
    let seconds: Int
    let runs: Int
    /// `fixed` and/or `adaptive`: the paces the tranche runs use.
    let paces: [String]
    /// The tranche binary the runs use; nil for this one.
    let runBinary: String?
    /// The runs' `--chunk-size`; nil for `tranche run`'s default.
    let chunkSize: Int?
    /// The server's answer time.
    let delay: TimeAmount = .milliseconds(20)

    /// The item every request carries (wrk posts the same body).
    static let sampleBody = #"{"id":1,"email":"user1@example.com"}"#

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server: DelayServer.Running
        do {
            server = try await DelayServer.start(on: group, delay: delay)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        do {
            try await measure(port: server.port)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    func measure(port: Int) async throws {
        guard let wrk = Self.which("wrk") else { throw CLIError("the http benchmark needs wrk (apt-get install wrk)") }
        let url = "http://127.0.0.1:\(port)/item"
        let script = folder + "/post.lua"
        try Data(
            """
            wrk.method = "POST"
            wrk.body = '\(Self.sampleBody)'
            wrk.headers["Content-Type"] = "application/json"
            """.utf8
        ).write(to: URL(fileURLWithPath: script))
        let ideal = 1000 / max(1, delay.nanoseconds / 1_000_000)
        print("Server answers in \(delay.nanoseconds / 1_000_000) ms; each run lasts about \(seconds) s.")
        print("CPU: user + system time of the client process per request or item.")
        print("")
        var header = "| concurrency | run | wrk req/s | wrk CPU/req |"
        var rule = "|---|---|---|---|"
        for pace in paces {
            header += " tranche items/s, pace \(pace) | ratio | CPU/item |"
            rule += "---|---|---|"
        }
        print(header)
        print(rule)
        for concurrency in concurrencies {
            let items = concurrency * Int(ideal) * seconds
            let input = folder + "/items-\(concurrency).ndjson"
            try BenchCommand.generateInput(count: items, path: input)
            for index in 1...runs {
                let wrk = try await Self.wrk(
                    wrk, arguments: ["-t2", "-c\(concurrency)", "-d\(seconds)s", "-s", script, url], folder: folder)
                var line = "| \(concurrency) | \(index) | \(format(Int64(wrk.rate.rounded()))) | \(wrk.cpuCell) |"
                for pace in paces {
                    let figure = try await trancheRun(
                        input: input, url: url, concurrency: concurrency,
                        pace: ["--pace", pace], tag: pace)
                    line +=
                        " \(format(Int64(figure.rate.rounded())))\(figure.stopped ? " (stopped)" : "") | "
                        + "\(Int((figure.rate / wrk.rate * 100).rounded()))% | \(figure.cpuCell) |"
                }
                print(line)
                fflush(nil)
            }
            unlink(input)
        }
    }

    /// A client's rate, the CPU it used per request, and whether it was stopped before its end.
    struct Figure {
        var rate: Double
        var cpuPerRequest: Double
        var stopped = false

        var cpuCell: String { "\(Int((cpuPerRequest * 1e6).rounded())) µs" }
    }

    /// CPU seconds (user and system) in a child's resource usage.
    static func cpuSeconds(_ usage: rusage) -> Double {
        Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    /// Waits for a child off the cooperative pool; SIGINT after `limit`.
    static func wait(for pid: pid_t, interruptAfter limit: Duration) async -> (
        status: Int32, usage: rusage, stopped: Bool
    ) {
        let watchdog = Task {
            try await Task.sleep(for: limit)
            kill(pid, SIGINT)
        }
        let (status, usage) = await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: BenchCommand.reapUsage(pid)) }
        }
        watchdog.cancel()
        return (status, usage, (try? await watchdog.value) != nil)
    }

    /// Items a second of one `tranche run` of the input (from its summary).
    func trancheRun(input: String, url: String, concurrency: Int, pace: [String], tag: String) async throws -> Figure {
        let state = folder + "/http-\(concurrency)-\(tag).db"
        let summary = folder + "/summary.json"
        for suffix in ["", "-wal", "-shm", ".lock"] { unlink(state + suffix) }
        defer { for suffix in ["", "-wal", "-shm", ".lock"] { unlink(state + suffix) } }
        let executable =
            try runBinary ?? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let pid = try BenchCommand.spawn(
            executable,
            [
                "run", "--input", input, "--url", url, "--concurrency", String(concurrency), "--state", state, "--json",
                "--quiet",
            ] + pace + (chunkSize.map { ["--chunk-size", String($0)] } ?? []), stdout: summary)
        // A run far slower than the server allows is interrupted (SIGINT: it
        // stops starting items and prints its summary) and counted as far as it got.
        let (status, usage, stopped) = await Self.wait(for: pid, interruptAfter: .seconds(3 * seconds + 5))
        guard status == 0 || stopped && status == 130 << 8 else {
            throw CLIError("the tranche run at concurrency \(concurrency) failed (\(status))")
        }
        guard let data = FileManager.default.contents(atPath: summary),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let succeeded = object["succeeded"] as? Double, succeeded > 0,
            let duration = object["duration_seconds"] as? Double, duration > 0
        else { throw CLIError("cannot read the summary of the tranche run at concurrency \(concurrency)") }
        return Figure(rate: succeeded / duration, cpuPerRequest: Self.cpuSeconds(usage) / succeeded, stopped: stopped)
    }

    /// Requests a second `wrk` reports, and its CPU per request.
    static func wrk(_ executable: String, arguments: [String], folder: String) async throws -> Figure {
        let report = folder + "/wrk.txt"
        let pid = try BenchCommand.spawn(executable, arguments, stdout: report)
        let (status, usage, _) = await wait(for: pid, interruptAfter: .seconds(3600))
        let output = (FileManager.default.contents(atPath: report)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        guard status == 0,
            let line = output.split(separator: "\n").first(where: { $0.hasPrefix("Requests/sec:") }),
            let rate = Double(line.dropFirst("Requests/sec:".count).trimmingCharacters(in: .whitespaces)),
            let total = output.split(separator: "\n").first(where: { $0.contains("requests in") })?
                .split(separator: " ").first.flatMap({ Double($0) }), total > 0
        else { throw CLIError("wrk failed: \(output)") }
        return Figure(rate: rate, cpuPerRequest: cpuSeconds(usage) / total)
    }

    static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { access($0, X_OK) == 0 }
    }
}

/// An HTTP/1.1 server that answers every request `{}` after a fixed delay.
enum DelayServer {
    struct Running {
        var channel: any Channel
        var port: Int
    }

    static func start(on group: MultiThreadedEventLoopGroup, delay: TimeAmount) async throws -> Running {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(DelayedReply(delay: delay))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        guard let port = channel.localAddress?.port else { throw CLIError("the benchmark server has no port") }
        return Running(channel: channel, port: port)
    }

    final class DelayedReply: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let delay: TimeAmount
        var keepAlive = true
        var version = HTTPVersion.http1_1

        init(delay: TimeAmount) {
            self.delay = delay
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                keepAlive = head.isKeepAlive
                version = head.version
            case .body:
                break
            case .end:
                let (keepAlive, version) = (self.keepAlive, self.version)
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
                    let context = bound.value
                    var headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", "2")])
                    if !keepAlive { headers.add(name: "Connection", value: "close") }
                    context.write(
                        NIOAny(
                            HTTPServerResponsePart.head(
                                HTTPResponseHead(version: version, status: .ok, headers: headers))),
                        promise: nil)
                    context.write(
                        NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "{}")))), promise: nil)
                    let done = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
                    if !keepAlive { done.whenComplete { _ in bound.value.close(promise: nil) } }
                }
            }
        }
    }
}
