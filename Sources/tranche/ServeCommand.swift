import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle
import TrancheEngine
import TrancheHTTP
import TranchePostgres
import TrancheSQLite
import TrancheStore
import TrancheStrategies

/// `tranche serve`: the HTTP API and the workers, on one store.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the HTTP API and workers (SQLite by default).")

    @OptionGroup var database: DatabaseOptions

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on, 0 to 65535 (0 picks a free one).")
    var port = 8080

    @OptionGroup var node: NodeOptions

    @Option(help: "Batches of at most this many items run at once in mode auto, 0 to 100000.")
    var syncThreshold = 200

    @Option(help: "Seconds running items get to finish on shutdown, 0 to 86400.")
    var drainGrace: Double = 20

    @Option(help: "A Host name the API answers to while it has no API keys, besides loopback ones (repeatable).")
    var trustedHost: [String] = []

    @Option(help: "Seconds a silent connection is kept open.")
    var idleTimeout: Double = 60

    @Option(help: "Seconds a request body may take to arrive; a slower one gets 408.")
    var bodyTimeout: Double = 600

    func validate() throws {
        try requireNumber(port, in: 0...65_535, flag: "--port")
        try requireNumber(syncThreshold, in: 0...100_000, flag: "--sync-threshold")
        try requireSeconds(drainGrace, in: NodeOptions.drainGraceRange, flag: "--drain-grace")
        try requireSeconds(idleTimeout, in: 0.1...86_400, flag: "--idle-timeout")
        try requireSeconds(bodyTimeout, in: 1...86_400, flag: "--body-timeout")
    }

    func run() async throws {
        let logger = nodeLogger()
        let store = try await database.open(logger: logger)
        do {
            try await runNode(store: store, drainGrace: drainGrace, logger: logger) {
                try await services(store: store, logger: logger)
            }
        } catch let error as IOError where [EADDRINUSE, EACCES, EADDRNOTAVAIL].contains(error.errnoCode) {
            let reason = error.errnoCode == EADDRINUSE ? "the port is already in use" : systemReason(error.errnoCode)
            throw CLIError("cannot listen on \(host) port \(port): \(reason); give another --port or --host")
        } catch is SocketAddressError.UnknownHost {
            throw CLIError("cannot listen on \(host): unknown host; give another --host")
        }
    }

    /// The node's services, built once the store runs: the HTTP server, the
    /// webhook dispatcher and the engine, in the order they start.
    func services(store: any ServerStore, logger: Logger) async throws -> [any Service] {
        let keys = try await store.apiKeys().filter { $0.revokedAt == nil }
        let loopback = ["127.0.0.1", "localhost", "::1"].contains(host)
        if keys.isEmpty {
            guard loopback else {
                printError(
                    "refusing to listen on \(host) without API keys; create one with `tranche keys create --tenant NAME`"
                )
                throw ExitCode(ExitCodes.failure)
            }
            logger.warning("no API keys: the API is open to anyone on this machine (loopback only)")
        }
        // One policy for the http strategy and webhooks: its trust (the CA
        // file read once) and so its connection pools are the same.
        let outbound = node.outboundPolicy
        let engine = TrancheEngine(
            store: store, strategies: node.strategies(outbound: outbound),
            configuration: node.engineConfiguration(role: "serve", drainGrace: drainGrace), logger: logger)
        var serverConfiguration = TrancheServer.Configuration()
        serverConfiguration.syncThreshold = syncThreshold
        serverConfiguration.open = keys.isEmpty
        serverConfiguration.idleTimeout = idleTimeout
        serverConfiguration.bodyTimeout = bodyTimeout
        serverConfiguration.trustedHosts = Set(trustedHost.map { $0.lowercased() })
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        serverConfiguration.metrics = registry
        serverConfiguration.outbound = outbound
        let server = TrancheServer(engine: engine, store: store, configuration: serverConfiguration)
        let dispatcher = server.webhookDispatcher(logger: logger)
        let (host, location) = (self.host, database.location(of: store))
        let application = server.application(
            host: host, port: port, serverName: "tranche", logger: logger,
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                writeStandardOutput(
                    Data(
                        "tranche \(Tranche.version): listening on http://\(host):\(port) (database \(location))\n"
                            .utf8))
            })
        // Shut down in reverse: the engine drains first and ends the event
        // streams, then the HTTP server finishes its requests.
        return [application, dispatcher, engine]
    }
}

/// `--database`: a SQLite path, or a `postgres://` URL for a store that
/// several nodes share.
struct DatabaseOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "SQLite file, or postgres://user:password@host:port/database.", valueName: "path-or-url"))
    var database = "tranche.db"

    @Option(help: "How hard a SQLite commit tries to reach the disk.")
    var durability = DurabilityMode.full

    @Option(help: "PostgreSQL connections in this process's pool, 2 to 500.")
    var poolSize = 10

    var isPostgres: Bool { database.hasPrefix("postgres://") || database.hasPrefix("postgresql://") }

    func validate() throws {
        try requireNumber(poolSize, in: 2...500, flag: "--pool-size")
    }

    func open(logger: Logger = Logger(label: "tranche")) async throws -> any ServerStore {
        if isPostgres {
            do {
                return try await PostgresBatchStore(
                    url: database, configuration: .init(maximumConnections: poolSize), logger: logger)
            } catch let error as StoreError {
                throw CLIError("cannot open \(PostgresBatchStore.redacted(database)): \(error.message)")
            }
        }
        return try Self.openSQLite(path: database, durability: durability)
    }

    /// Opens a SQLite store, or says why it cannot, naming the file: a
    /// missing directory, a directory in its place, or SQLite's reason.
    static func openSQLite(path: String, durability: DurabilityMode) throws -> SQLiteBatchStore {
        do {
            return try SQLiteBatchStore(path: path, configuration: .init(durability: durability.sqlite))
        } catch {
            let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
            var isDirectory: ObjCBool = false
            let reason: String
            if !FileManager.default.fileExists(atPath: directory) {
                reason = "the directory \(directory) does not exist"
            } else if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                reason = "it is a directory"
            } else {
                // GRDB's text is "SQLite error 14: unable to open database file": keep SQLite's words.
                let text = userMessage(for: error)
                let colon = text.hasPrefix("SQLite error ") ? text.firstIndex(of: ":") : nil
                reason = colon.map { text[text.index(after: $0)...].trimmingCharacters(in: .whitespaces) } ?? text
            }
            throw CLIError("cannot open the database \(path): \(reason)")
        }
    }

    /// Opens the store and runs `body` with it; a PostgreSQL store runs
    /// (its pool) while `body` does, and is closed afterwards.
    func withStore<T: Sendable>(
        logger: Logger = Logger(label: "tranche"), _ body: (any ServerStore) async throws -> T
    ) async throws -> T {
        let store = try await open(logger: logger)
        guard let postgres = store as? PostgresBatchStore else { return try await body(store) }
        return try await postgres.withRunning { try await body(postgres) }
    }

    /// Where the store lives, safe to print (no password).
    func location(of store: any ServerStore) -> String {
        (store as? PostgresBatchStore)?.location ?? (store as? SQLiteBatchStore)?.path ?? database
    }
}

/// `--durability`: how hard a SQLite commit tries to reach the disk.
enum DurabilityMode: String, CaseIterable, ExpressibleByArgument {
    case full, normal

    var sqlite: SQLiteBatchStore.Durability { SQLiteBatchStore.Durability(rawValue: rawValue) }

    static var allValueDescriptions: [String: String] {
        [
            "full": "every commit reaches the disk",
            "normal": "fewer fsyncs; a power loss may lose the last commits, a crash loses none",
        ]
    }
}

/// What a node runs: its workers and the strategies it enables.
struct NodeOptions: ParsableArguments {
    /// The engine's bounds on a node's settings (`TrancheEngine.Configuration.validated()`),
    /// refused here with the flag's name rather than clamped there.
    static let workersRange = TrancheEngine.Configuration.Limits.workers
    static let leaseDurationRange = TrancheEngine.Configuration.Limits.leaseDuration
    static let drainGraceRange = TrancheEngine.Configuration.Limits.drainGracePeriod

    @Option(help: "Items running at once on this node, 1 to 100000.")
    var workers = 16

    @Option(
        help: ArgumentHelp(
            "Registers a command the exec strategy may run, as NAME=COMMAND (COMMAND runs with /bin/sh -c; "
                + "repeatable). A batch names it: {\"command\": \"NAME\"}. Without one, exec is off.",
            valueName: "name=command"))
    var execCommand: [String] = []

    @Option(
        help: ArgumentHelp(
            "A variable of this environment passed on to exec commands (repeatable).", valueName: "name"))
    var execEnv: [String] = []

    @Option(
        help: ArgumentHelp(
            "A host (optionally with a port) whose internal addresses (loopback, private, link-local, metadata) "
                + "the http strategy and webhooks may call; repeatable, or comma-separated. Public addresses "
                + "need no entry.",
            valueName: "host[:port]"))
    var httpAllow: [String] = []

    @Flag(help: "Call only the hosts --http-allow names, public ones too (the http strategy and webhooks).")
    var httpOnlyAllowed = false

    @Option(
        name: .customLong("http-ca-file"),
        help: ArgumentHelp(
            "A PEM file of CA certificates the http strategy and webhooks trust for https, besides the "
                + "system's roots (internal APIs signed by a private CA).",
            valueName: "path"))
    var httpCAFile: String?

    @Option(help: "This node's name in leases and `tranche nodes` (default host-pid).")
    var nodeID: String?

    @Option(
        help: ArgumentHelp(
            "A limit every batch calling HOST shares across the cluster: HOST=RATE[,max=N], RATE like 20/s "
                + "(repeatable).",
            valueName: "host=rate[,max=n]"))
    var hostLimit: [String] = []

    @Option(
        help:
            "Seconds a chunk's lease lasts without a checkpoint, 2 to 31536000; a dead node's chunks run again after it."
    )
    var leaseDuration: Double = 30

    @Option(
        help: ArgumentHelp(
            "How long an ended batch's summary and history are kept once its items were pruned (at its ttl): "
                + "seconds, or with a unit (90m, 12h, 30d).",
            valueName: "duration"))
    var retention: RetentionPeriod = RetentionPeriod(seconds: 30 * 86_400)

    func validate() throws {
        try requireNumber(workers, in: Self.workersRange, flag: "--workers")
        try requireSeconds(leaseDuration, in: Self.leaseDurationRange, flag: "--lease-duration")
        _ = try execCommands()
        try Self.requireVariableNames(execEnv, flag: "--exec-env")
        _ = try allowances()
        _ = try Self.trust(caFile: httpCAFile)
        _ = try HostLimits.parse(hostLimit)
    }

    /// `--http-ca-file` read: the system's roots, and the file's CA
    /// certificates (`serve`, `worker` and `run` take the flag).
    static func trust(caFile: String?) throws -> OutboundTrust {
        guard let caFile else { return .system }
        do {
            return try OutboundTrust(caFile: caFile)
        } catch {
            throw ValidationError("--http-ca-file: \(error)")
        }
    }

    /// `--http-allow`, each entry read; a malformed one is refused.
    func allowances() throws -> [OutboundPolicy.Allowance] {
        try httpAllow.flatMap { $0.split(separator: ",") }.map { entry in
            guard let allowance = OutboundPolicy.Allowance(parsing: String(entry)) else {
                throw ValidationError("--http-allow takes HOST or HOST:PORT ([IPV6]:PORT), got \(entry)")
            }
            return allowance
        }
    }

    /// `--exec-command`, by name; a malformed or repeated name is refused.
    func execCommands() throws -> [String: String] {
        var commands: [String: String] = [:]
        for entry in execCommand {
            let (name, command) = (entry.prefix { $0 != "=" }, entry.drop { $0 != "=" }.dropFirst())
            guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }),
                entry.contains("="), !command.allSatisfy(\.isWhitespace)
            else {
                throw ValidationError(
                    "--exec-command takes NAME=COMMAND, NAME of letters, digits, '_', '.' or '-': \(entry)")
            }
            guard commands.updateValue(String(command), forKey: String(name)) == nil else {
                throw ValidationError("--exec-command registers \(name) twice")
            }
        }
        return commands
    }

    /// `--exec-env` of `serve`, `worker` and `run`: names of environment variables.
    static func requireVariableNames(_ names: [String], flag: String) throws {
        for name in names
        where name.isEmpty || name.first?.isNumber == true
            || !name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
        {
            throw ValidationError("\(flag) takes the name of an environment variable, got \(name)")
        }
    }

    /// What outbound calls may reach: no internal address but on the hosts `--http-allow` names.
    var outboundPolicy: OutboundPolicy {
        var policy = OutboundPolicy(allowing: (try? allowances()) ?? [])
        policy.onlyAllowed = httpOnlyAllowed
        // Read by validate() already; the system's roots alone fail closed.
        policy.trust = (try? Self.trust(caFile: httpCAFile)) ?? .system
        return policy
    }

    /// The strategies a node runs, the http strategy calling out under `outbound`.
    func strategies(outbound: OutboundPolicy) -> [AnyBatchStrategy] {
        var strategies = [BuiltinStrategies.noop, AnyBatchStrategy(SleepStrategy())]
        strategies.append(AnyBatchStrategy(HTTPStrategy(configuration: .init(outbound: outbound))))
        if let commands = try? execCommands(), !commands.isEmpty {
            strategies.append(AnyBatchStrategy(ExecStrategy(commands: commands, passing: execEnv)))
        }
        return strategies
    }

    func engineConfiguration(role: String, drainGrace: Double) -> TrancheEngine.Configuration {
        var configuration = TrancheEngine.Configuration()
        configuration.workers = workers
        configuration.drainGracePeriod = drainGrace
        configuration.role = role
        configuration.leaseDuration = leaseDuration
        configuration.retention = retention.seconds
        configuration.hostLimits = (try? HostLimits.parse(hostLimit)) ?? [:]
        configuration.nodeID = nodeID ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
        return configuration
    }
}

/// `tranche worker`: a node with workers and no HTTP, sharing a PostgreSQL
/// store with the other nodes.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Run workers only (no HTTP), on a store shared with other nodes.")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var node: NodeOptions

    @Option(help: "Seconds running items get to finish on shutdown, 0 to 86400.")
    var drainGrace: Double = 20

    func validate() throws {
        try requireSeconds(drainGrace, in: NodeOptions.drainGraceRange, flag: "--drain-grace")
    }

    func run() async throws {
        let logger = nodeLogger()
        let store = try await database.open(logger: logger)
        let configuration = node.engineConfiguration(role: "worker", drainGrace: drainGrace)
        let (workers, location) = (node.workers, database.location(of: store))
        let strategies = node.strategies(outbound: node.outboundPolicy)
        try await runNode(store: store, drainGrace: drainGrace, logger: logger) {
            let engine = TrancheEngine(
                store: store, strategies: strategies, configuration: configuration, logger: logger)
            writeStandardOutput(
                Data(
                    "tranche \(Tranche.version): worker \(configuration.nodeID) with \(workers) workers (database \(location))\n"
                        .utf8))
            return [engine]
        }
    }
}

/// The log of a long-running node: info, or `TRANCHE_LOG_LEVEL` (trace … critical).
func nodeLogger() -> Logger {
    var logger = Logger(label: "tranche")
    logger.logLevel = Logger.Level(rawValue: ProcessInfo.processInfo.environment["TRANCHE_LOG_LEVEL"] ?? "") ?? .info
    return logger
}

/// Runs a node in one `ServiceGroup` until SIGTERM or SIGINT: first the
/// store's own service (PostgreSQL's pool and `LISTEN` connection), then the
/// services `start` builds once the store runs. A signal shuts them down in
/// reverse order, the store last: the engine drains for `drainGrace`, the
/// whole shutdown is bounded by ``NodeShutdown``, and a second signal exits at once.
func runNode(
    store: any ServerStore, drainGrace: Double, logger: Logger,
    start: @escaping @Sendable () async throws -> [any Service]
) async throws {
    let storeServices = (store as? any Service).map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0)] }
    var configuration = ServiceGroupConfiguration(
        services: storeServices ?? [], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    configuration.maximumGracefulShutdownDuration = NodeShutdown.gracefulBound(drainGrace: drainGrace)
    let group = ServiceGroup(configuration: configuration)
    await group.addServiceUnlessShutdown(
        ServiceGroupConfiguration.ServiceConfiguration(
            service: NodeStartup(group: group, start: start), failureTerminationBehavior: .gracefullyShutdownGroup))
    let secondSignal = exitOnSecondSignal(
        orAfter: NodeShutdown.gracefulBound(drainGrace: drainGrace) + NodeShutdown.cancellationBound)
    defer { for source in secondSignal { source.cancel() } }
    try await group.run()
}

/// How long a node's shutdown may take: it must end within an
/// orchestrator's grace period (30 s by default in Kubernetes) with the
/// default drain grace of 20 s.
enum NodeShutdown {
    /// Seconds after the drain grace for releasing leases, finishing HTTP
    /// requests and closing the store.
    static let afterDrain: Double = 5

    /// The bound on the graceful shutdown: past it the services are cancelled.
    static func gracefulBound(drainGrace: Double) -> Duration {
        .seconds(bounded: drainGrace.bounded(to: NodeOptions.drainGraceRange) + afterDrain)
    }

    /// Cancelled services that have not ended after this more end with the
    /// process (status 1). PostgreSQL calls sent as the server went away can
    /// stay unanswered for good (postgres-nio drops them), and a task waiting
    /// on one cannot end.
    static let cancellationBound: Duration = .seconds(3)
}

/// Builds a node's services once the store runs and adds them to the group
/// (after the store, so that they shut down before it); then waits for the
/// shutdown, which reaches it after them.
struct NodeStartup: Service {
    let group: ServiceGroup
    let start: @Sendable () async throws -> [any Service]

    func run() async throws {
        for service in try await start() {
            await group.addServiceUnlessShutdown(service)
        }
        try await gracefulShutdown()
    }
}

/// `tranche keys create|list|revoke`.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage API keys (stored hashed).",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key for a tenant; it is shown once.")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "The tenant the key belongs to (default for --admin: admin).") var tenant: String?
        @Flag(help: "An admin key: it may also read /metrics and /v1/nodes, which need one once keys exist.")
        var admin = false

        func run() async throws {
            guard let tenant = tenant ?? (admin ? "admin" : nil) else { throw CLIError("--tenant is required") }
            guard !tenant.isEmpty, tenant.count <= 100 else { throw CLIError("--tenant must be 1 to 100 characters") }
            let (record, key) = APIKeys.make(tenant: tenant, admin: admin)
            try await database.withStore { store in try await store.createAPIKey(record) }
            print(key)
            let kind = admin ? "admin key" : "key"
            printError("\(kind) \(record.id) for tenant \(tenant); store it now, it is not shown again")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (never the keys themselves).")
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            for key in try await database.withStore({ store in try await store.apiKeys() }) {
                let state = key.revokedAt.map { "revoked \($0.formatted(.iso8601))" } ?? "active"
                let role = key.admin ? "admin" : "tenant"
                print("\(key.id)\t\(key.tenant)\t\(role)\t\(key.createdAt.formatted(.iso8601))\t\(state)")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by its id.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The key's id (the part after tr_).") var id: String

        func run() async throws {
            guard try await database.withStore({ store in try await store.revokeAPIKey(id: id, at: Date()) }) else {
                throw CLIError("no active key \(id)")
            }
            print("revoked \(id)")
        }
    }
}

/// A retention period on the command line: seconds, or a number with a unit
/// (`s`, `m`, `h`, `d`), at most 100 years.
struct RetentionPeriod: ExpressibleByArgument, Sendable {
    var seconds: Double

    init(seconds: Double) {
        self.seconds = seconds
    }

    init?(argument: String) {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3_600, "d": 86_400]
        var text = Substring(argument.trimmingCharacters(in: .whitespaces))
        var unit = 1.0
        if let last = text.last, let factor = units[last] {
            unit = factor
            text = text.dropLast()
        }
        guard let number = Double(text), number.isFinite, number >= 0, number * unit <= 100 * 365 * 86_400 else {
            return nil
        }
        seconds = number * unit
    }

    var defaultValueDescription: String { "30d" }
}
