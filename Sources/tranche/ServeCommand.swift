import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import TrancheEngine
import TrancheHTTP
import TrancheSQLite
import TrancheStrategies

/// `tranche serve`: the HTTP API and the workers, on one store.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the HTTP API and workers (SQLite by default).")

    @OptionGroup var database: DatabaseOptions

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one).")
    var port = 8080

    @Option(help: "Items running at once on this node (default 16).")
    var workers = 16

    @Flag(help: "Enable the exec strategy (it runs commands on this machine).")
    var allowExec = false

    @Option(help: "Hosts the http strategy and webhooks may call, comma-separated (default: none).")
    var httpAllow: String = ""

    @Option(help: "Batches of at most this many items run at once in mode auto.")
    var syncThreshold = 200

    @Option(help: "Seconds running items get to finish on shutdown.")
    var drainGrace: Double = 20

    func run() async throws {
        var logger = Logger(label: "tranche")
        logger.logLevel = .info
        let store = try database.open()
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
        var strategies = [BuiltinStrategies.noop, AnyBatchStrategy(SleepStrategy())]
        let allowed = Set(httpAllow.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
        strategies.append(AnyBatchStrategy(HTTPStrategy(configuration: .init(allowedHosts: allowed))))
        if allowExec { strategies.append(AnyBatchStrategy(ExecStrategy())) }
        var engineConfiguration = TrancheEngine.Configuration()
        engineConfiguration.workers = workers
        engineConfiguration.drainGracePeriod = drainGrace
        let engine = TrancheEngine(
            store: store, strategies: strategies, configuration: engineConfiguration, logger: logger)
        var serverConfiguration = TrancheServer.Configuration()
        serverConfiguration.syncThreshold = syncThreshold
        serverConfiguration.open = keys.isEmpty
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        serverConfiguration.metrics = registry
        serverConfiguration.webhookHosts = allowed
        let dispatcher = WebhookDispatcher(store: store, configuration: .init(allowedHosts: allowed), logger: logger)
        let server = TrancheServer(engine: engine, store: store, configuration: serverConfiguration)
        let host = self.host
        let application = Application(
            router: server.router(),
            configuration: .init(address: .hostname(host, port: port), serverName: "tranche"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                writeStandardOutput(
                    Data("tranche: listening on http://\(host):\(port) (database \(store.path))\n".utf8))
            },
            logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                // Shut down in reverse: the engine drains first and ends the
                // event streams, then the HTTP server finishes its requests.
                services: [.init(service: application), .init(service: dispatcher), .init(service: engine)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        let secondSignal = exitOnSecondSignal()
        defer { for source in secondSignal { source.cancel() } }
        try await group.run()
    }
}

/// `--database`: a SQLite path (PostgreSQL arrives with its own store).
struct DatabaseOptions: ParsableArguments {
    @Option(help: "SQLite file (default ./tranche.db).")
    var database = "tranche.db"

    @Option(help: "SQLite durability: full (default) or normal.")
    var durability = "full"

    func open() throws -> SQLiteBatchStore {
        if database.hasPrefix("postgres://") || database.hasPrefix("postgresql://") {
            throw CLIError("PostgreSQL is not supported by this build yet; use a SQLite path")
        }
        guard ["full", "normal"].contains(durability) else { throw CLIError("--durability must be full or normal") }
        return try SQLiteBatchStore(
            path: database, configuration: .init(durability: SQLiteBatchStore.Durability(rawValue: durability)))
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
        @Option(help: "The tenant the key belongs to.") var tenant: String

        func run() async throws {
            guard !tenant.isEmpty, tenant.count <= 100 else { throw CLIError("--tenant must be 1 to 100 characters") }
            let store = try database.open()
            let (record, key) = APIKeys.make(tenant: tenant)
            try await store.createAPIKey(record)
            print(key)
            printError("key \(record.id) for tenant \(tenant); store it now, it is not shown again")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (never the keys themselves).")
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let store = try database.open()
            for key in try await store.apiKeys() {
                let state = key.revokedAt.map { "revoked \($0.formatted(.iso8601))" } ?? "active"
                print("\(key.id)\t\(key.tenant)\t\(key.createdAt.formatted(.iso8601))\t\(state)")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by its id.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The key's id (the part after tr_).") var id: String

        func run() async throws {
            let store = try database.open()
            guard try await store.revokeAPIKey(id: id, at: Date()) else {
                throw CLIError("no active key \(id)")
            }
            print("revoked \(id)")
        }
    }
}
