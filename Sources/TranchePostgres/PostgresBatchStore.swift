import Foundation
public import Logging
import NIOCore
import PostgresNIO
import Synchronization
public import TrancheStore

/// The shared store: batches in PostgreSQL, for several Tranche processes on
/// several machines. Chunks are claimed with `FOR UPDATE SKIP LOCKED`, items
/// are inserted in bulk with `UNNEST`, and nodes learn of new work through
/// `LISTEN/NOTIFY`.
///
/// Every method is one transaction, retried on a deadlock or serialization
/// failure; a lost connection surfaces as `StoreError.storage` and the pool
/// reconnects on the next call.
public final class PostgresBatchStore: ServerStore, WorkNotifying {
    /// Settings for connecting.
    public struct Configuration: Sendable {
        /// Connections in the pool. Default 10 (see docs/operations.md for sizing).
        public var maximumConnections: Int = 10
        /// Seconds to wait for a connection. Default 10.
        public var connectTimeout: Double = 10
        /// Seconds one store call (waiting for a connection included) may
        /// take before it fails and the pool is replaced: a lost server can
        /// leave a query unanswered forever. Default 30.
        public var operationTimeout: Double = 30

        public init(maximumConnections: Int = 10, connectTimeout: Double = 10, operationTimeout: Double = 30) {
            self.maximumConnections = maximumConnections
            self.connectTimeout = connectTimeout
            self.operationTimeout = operationTimeout
        }
    }

    /// The channel that tells nodes there is work to claim or events to read.
    static let channel = "tranche_work"

    /// The pool in use; replaced when it stops handing out connections.
    private let pool: Mutex<Pool>
    let logger: Logger
    private let clientConfiguration: PostgresClient.Configuration
    /// Seconds one call may hold a connection before the connection is closed.
    private let operationTimeout: Double
    /// A safe description of where the store lives (no password).
    public let location: String

    /// One `PostgresClient` and the task running it.
    struct Pool: Sendable {
        var client: PostgresClient
        var runner: Task<Void, Never>
        var generation: Int
    }

    /// Connects to `url` (`postgres://user:password@host:port/database`,
    /// `?sslmode=disable|prefer|require`) and runs the migrations.
    public init(
        url: String, configuration: Configuration = Configuration(), logger: Logger = Logger(label: "tranche.postgres")
    ) async throws {
        let parsed = try PostgresURL(url)
        var clientConfiguration = PostgresClient.Configuration(
            host: parsed.host, port: parsed.port, username: parsed.user, password: parsed.password,
            database: parsed.database, tls: parsed.tls)
        clientConfiguration.options.maximumConnections = max(2, configuration.maximumConnections)
        clientConfiguration.options.connectTimeout = .milliseconds(Int64(configuration.connectTimeout * 1000))
        clientConfiguration.options.keepAliveBehavior = .init(frequency: .seconds(15))
        self.clientConfiguration = clientConfiguration
        self.logger = logger
        self.location = parsed.safeDescription
        self.operationTimeout = max(1, configuration.operationTimeout)
        self.pool = Mutex(await Self.startPool(clientConfiguration, logger: logger, generation: 0))
        do {
            try await Self.mapErrors { try await PostgresSchema.migrate(currentPool.client, logger: logger) }
        } catch {
            close()
            throw error
        }
    }

    /// Starts a client and waits until it runs (a lease before `run()` only warns, but noisily).
    private static func startPool(
        _ configuration: PostgresClient.Configuration, logger: Logger, generation: Int
    ) async -> Pool {
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let (started, signal) = AsyncStream.makeStream(of: Void.self)
        let runner = Task {
            signal.finish()
            await client.run()
        }
        for await _ in started {}
        await Task.yield()
        return Pool(client: client, runner: runner, generation: generation)
    }

    var currentPool: Pool { pool.withLock { $0 } }

    deinit {
        pool.withLock { $0.runner.cancel() }
    }

    /// `url` with its password hidden, for messages.
    public static func redacted(_ url: String) -> String {
        (try? PostgresURL(url))?.safeDescription ?? "the PostgreSQL URL"
    }

    /// Closes the pool. The store cannot be used afterwards.
    public func close() {
        pool.withLock { $0.runner.cancel() }
    }

    /// Leases a connection for `body`, within `operationTimeout`.
    ///
    /// A call the server never answers (seen when PostgreSQL restarts: a
    /// query sent as its connection dies, or a connection attempt that never
    /// completes) would otherwise wait forever; closing the connection does
    /// not end it. Past the deadline the call fails as a storage error, is
    /// abandoned, and the pool is replaced by a fresh one; the caller's retry
    /// runs on the new pool.
    func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let current = currentPool
        let race = DeadlineRace<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                race.continuation = continuation
                race.call = Task {
                    do {
                        let value = try await current.client.withConnection { connection in
                            try await body(connection)
                        }
                        race.finish(.success(value))
                    } catch {
                        race.finish(.failure(error))
                    }
                }
                race.timer = Task { [weak self, operationTimeout] in
                    try? await Task.sleep(for: .milliseconds(Int(operationTimeout * 1000)))
                    let message = "the database did not answer within \(Int(operationTimeout)) s"
                    guard !Task.isCancelled, race.finish(.failure(StoreError(.storage, message)), byTimer: true) else {
                        return
                    }
                    race.cancel()
                    await self?.replacePool(generation: current.generation)
                }
            }
        } onCancel: {
            race.cancel()
        }
    }

    /// Replaces the pool of `generation` (once, whoever notices first).
    private func replacePool(generation: Int) async {
        let fresh = await Self.startPool(clientConfiguration, logger: logger, generation: generation + 1)
        let old = pool.withLock { pool -> Pool? in
            guard pool.generation == generation else { return nil }
            defer { pool = fresh }
            return pool
        }
        if let old {
            logger.warning("no connection from the pool; replaced it", metadata: ["generation": "\(generation + 1)"])
            old.runner.cancel()
        } else {
            fresh.runner.cancel()
        }
    }

    // MARK: - Transactions

    /// Runs `body` in one transaction, retried on deadlocks and serialization
    /// failures; database failures become `StoreError.storage`.
    func write<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await Self.mapErrors {
                    try await withConnection { connection in
                        try await connection.run("BEGIN")
                        do {
                            let value = try await body(connection)
                            try await connection.run("COMMIT")
                            return value
                        } catch {
                            try? await connection.run("ROLLBACK")
                            throw error
                        }
                    }
                }
            } catch let error as RetryableConflict where attempt < 20 {
                attempt += 1
                logger.debug("transaction conflict; retrying", metadata: ["sqlstate": "\(error.sqlState)"])
                try await Task.sleep(for: .milliseconds(Int.random(in: 1...(5 * min(attempt, 10)))))
            }
        }
    }

    /// Runs `body` on a pooled connection outside a transaction.
    func read<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await Self.mapErrors { try await withConnection(body) }
    }

    /// A conflict PostgreSQL resolves by aborting one transaction: run it again.
    struct RetryableConflict: Error {
        var sqlState: String
    }

    /// Maps driver errors to `StoreError.storage` (or `RetryableConflict`),
    /// leaving the store's own errors as they are.
    static func mapErrors<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as PSQLError {
            let state = error.serverInfo?[.sqlState]
            if let state, state == "40001" || state == "40P01" { throw RetryableConflict(sqlState: state) }
            let detail = state.map { "SQLSTATE \($0)" } ?? "\(error.code)"
            throw StoreError(.storage, "the database failed (\(detail))")
        } catch let error as PostgresDecodingError {
            throw StoreError(.storage, "the database returned an unexpected value (\(error.columnName))")
        } catch let error as PostgresTransactionError {
            throw StoreError(.storage, "the database failed (\(String(describing: error).prefix(120)))")
        }
    }

    /// Lowers the write barrier for benchmarks: commits return before the WAL
    /// reaches the disk. Only for a session's own transactions; never the default.
    static let relaxedCommit: PostgresQuery = "SET LOCAL synchronous_commit = off"
}

extension PostgresConnection {
    static let quiet = Logger(label: "tranche.postgres.query", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Runs a statement, discarding its rows.
    func run(_ query: PostgresQuery) async throws {
        let rows = try await self.query(query, logger: Self.quiet)
        for try await _ in rows {}
    }

    /// Every row of a query.
    func rows(_ query: PostgresQuery) async throws -> [PostgresRandomAccessRow] {
        var result: [PostgresRandomAccessRow] = []
        for try await row in try await self.query(query, logger: Self.quiet) {
            result.append(row.makeRandomAccess())
        }
        return result
    }

    /// The first row of a query, if any.
    func one(_ query: PostgresQuery) async throws -> PostgresRandomAccessRow? {
        try await rows(query).first
    }

    /// How many rows a statement returned (use `RETURNING 1` to count changes).
    func count(_ query: PostgresQuery) async throws -> Int {
        var count = 0
        for try await _ in try await self.query(query, logger: Self.quiet) { count += 1 }
        return count
    }

    /// Queues a wake-up for other nodes, sent when the transaction commits.
    func notifyWork() async throws {
        try await run("SELECT pg_notify('tranche_work', '')")
    }
}

extension PostgresRandomAccessRow {
    /// The value of column `index`.
    func get<T: PostgresDecodable>(_ index: Int, as type: T.Type = T.self) throws -> T {
        try self[index].decode(T.self)
    }
}

/// A `postgres://` URL taken apart.
struct PostgresURL {
    var host: String
    var port: Int
    var user: String
    var password: String?
    var database: String?
    var sslMode: String

    init(_ text: String) throws {
        guard let components = URLComponents(string: text),
            components.scheme == "postgres" || components.scheme == "postgresql",
            let host = components.host, !host.isEmpty
        else {
            throw StoreError(
                .storage, "not a PostgreSQL URL: expected postgres://user:password@host:port/database")
        }
        self.host = host
        self.port = components.port ?? 5432
        self.user = components.user.flatMap { $0.removingPercentEncoding } ?? "postgres"
        self.password = components.password.flatMap { $0.removingPercentEncoding }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        self.database = path.isEmpty ? nil : path
        self.sslMode = components.queryItems?.first { $0.name == "sslmode" }?.value ?? "prefer"
        guard ["disable", "prefer", "require"].contains(sslMode) else {
            throw StoreError(.storage, "sslmode must be disable, prefer or require, got \(sslMode)")
        }
    }

    var tls: PostgresClient.Configuration.TLS {
        switch sslMode {
        case "disable": .disable
        case "require": .require(.makeClientConfiguration())
        default: .prefer(.makeClientConfiguration())
        }
    }

    /// The URL without its password.
    var safeDescription: String {
        "postgres://\(user)@\(host):\(port)/\(database ?? "")"
    }
}

/// A call racing its deadline: the first to finish resumes the caller.
final class DeadlineRace<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var call: Task<Void, Never>?
        var timer: Task<Void, Never>?
        var done = false
    }

    private let state = Mutex(State())

    var continuation: CheckedContinuation<T, any Error>? {
        get { state.withLock { $0.continuation } }
        set { state.withLock { $0.continuation = newValue } }
    }

    var call: Task<Void, Never>? {
        get { state.withLock { $0.call } }
        set { state.withLock { $0.call = newValue } }
    }

    var timer: Task<Void, Never>? {
        get { state.withLock { $0.timer } }
        set {
            let done = state.withLock { state in
                state.timer = newValue
                return state.done
            }
            if done { newValue?.cancel() }
        }
    }

    /// Resumes the caller unless it was resumed already; returns whether this
    /// call did. The first to finish stops the deadline's timer.
    @discardableResult
    func finish(_ result: Result<T, any Error>, byTimer: Bool = false) -> Bool {
        let (continuation, timer) = state.withLock {
            state -> (CheckedContinuation<T, any Error>?, Task<Void, Never>?) in
            guard !state.done else { return (nil, nil) }
            state.done = true
            return (state.continuation, state.timer)
        }
        continuation?.resume(with: result)
        if !byTimer { timer?.cancel() }
        return continuation != nil
    }

    func cancel() {
        state.withLock { $0.call }?.cancel()
    }
}
