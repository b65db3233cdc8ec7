import Foundation
public import Logging
import NIOCore
import PostgresNIO
public import ServiceLifecycle
import Synchronization
public import TrancheStore

/// The shared store: batches in PostgreSQL, for several Tranche processes on
/// several machines. Chunks are claimed with `FOR UPDATE SKIP LOCKED`, items
/// are inserted in bulk with `UNNEST`, and nodes learn of new work through
/// `LISTEN/NOTIFY`.
///
/// Opening the store checks the database and runs the migrations. Its
/// background work (the connection pool, the `LISTEN` connection, the
/// deadlines of calls) runs in ``run()``, like `PostgresClient`'s: add the
/// store to the process's `ServiceGroup` before the services that use it
/// (it shuts down after them), or wrap the code that uses it in
/// ``withRunning(_:)``. Calls made before `run()` starts wait for it.
///
/// Every method is one transaction, retried on a deadlock or serialization
/// failure; a lost connection surfaces as `StoreError.storage` and the pool
/// reconnects on the next call.
public final class PostgresBatchStore: ServerStore, WorkNotifying, Service {
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

        /// Settings with the documented defaults unless given.
        public init(maximumConnections: Int = 10, connectTimeout: Double = 10, operationTimeout: Double = 30) {
            self.maximumConnections = maximumConnections
            self.connectTimeout = connectTimeout
            self.operationTimeout = operationTimeout
        }
    }

    /// The channel that tells nodes there is work to claim or events to read.
    static let channel = "tranche_work"

    let logger: Logger
    private let clientConfiguration: PostgresClient.Configuration
    /// Seconds one call may hold a connection before the connection is closed.
    private let operationTimeout: Double
    /// A safe description of where the store lives (no password).
    public let location: String

    /// Work for `run()`: calls to carry out and pools to replace.
    private let commands: AsyncStream<Command>
    private let commandSink: AsyncStream<Command>.Continuation
    private let state = Mutex(State())
    /// Fires at the first `workNotifications()`: only then does `run()` listen.
    private let subscribed = Latch()
    /// Fires when `run()` closes its connections: the listener's error then is expected.
    private let stopping = Latch()
    /// Wake-ups to send after commits (``PendingWake``), coalesced.
    private let wakeRequests: AsyncStream<Void>
    private let wakeSink: AsyncStream<Void>.Continuation

    /// What `run()` is asked to do.
    private enum Command: Sendable {
        /// Carry out a call on the current pool.
        case call(@Sendable (Pool) async -> Void)
        /// Replace the pool of this generation, which stopped answering.
        case replacePool(generation: Int)
    }

    private struct State {
        var phase = Phase.idle
        /// The pool calls use; set while `run()` runs.
        var pool: Pool?
        var subscribers: [Int: AsyncStream<Void>.Continuation] = [:]
        var nextSubscriber = 0
        /// Calls in flight in `run()`, for the shutdown's log.
        var callsRunning = 0
    }

    private enum Phase {
        case idle, running, ended
    }

    /// One `PostgresClient`, run by a child task of `run()` until retired.
    struct Pool: Sendable {
        var client: PostgresClient
        var generation: Int
        /// Fires just before the client's `run()` starts.
        let started = Latch()
        /// Fires to stop the client (it closes its connections).
        let retired = Latch()
    }

    /// Connects to `url` (`postgres://user:password@host:port/database`,
    /// `?sslmode=disable|prefer|require`) and runs the migrations, on a
    /// connection of its own that is closed before this returns.
    public init(
        url: String, configuration: Configuration = Configuration(), logger: Logger = Logger(label: "tranche.postgres")
    ) async throws {
        let parsed = try PostgresURL(url)
        var clientConfiguration = PostgresClient.Configuration(
            host: parsed.host, port: parsed.port, username: parsed.user, password: parsed.password,
            database: parsed.database, tls: parsed.tls)
        // Settings from a flag or a library caller: held where the pool and the sleeps can use them.
        clientConfiguration.options.maximumConnections = configuration.maximumConnections.clamped(to: 2...10_000)
        let connectTimeout = configuration.connectTimeout.bounded(to: 0.1...3_600, nan: Configuration().connectTimeout)
        clientConfiguration.options.connectTimeout = .milliseconds(Int64.saturating(connectTimeout * 1000))
        clientConfiguration.options.keepAliveBehavior = .init(frequency: .seconds(15))
        // Every statement of the store is short and touches few rows; JIT
        // compilation only ever cost time here (a checkpoint whose estimate
        // crossed `jit_above_cost` spent 0.5–0.9 s compiling a 25 ms update).
        clientConfiguration.options.additionalStartupParameters = [("jit", "off")]
        self.clientConfiguration = clientConfiguration
        self.logger = logger
        self.location = parsed.safeDescription
        self.operationTimeout = configuration.operationTimeout.bounded(
            to: 1...86_400, nan: Configuration().operationTimeout)
        (commands, commandSink) = AsyncStream.makeStream(of: Command.self)
        (wakeRequests, wakeSink) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        try await Self.migrate(clientConfiguration, timeout: operationTimeout, logger: logger)
    }

    /// Brings the schema up to date with a short-lived client of its own.
    private static func migrate(
        _ configuration: PostgresClient.Configuration, timeout: Double, logger: Logger
    ) async throws {
        var configuration = configuration
        configuration.options.minimumConnections = 0
        configuration.options.maximumConnections = 1
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                await client.run()
                return false
            }
            group.addTask {
                try await mapErrors { try await PostgresSchema.migrate(client, logger: logger) }
                return true
            }
            group.addTask {
                try await Task.sleep(for: .seconds(bounded: timeout))
                throw StoreError(.storage, "the database did not answer within \(timeout.shortText) s")
            }
            defer { group.cancelAll() }
            while let migrated = try await group.next() {
                if migrated { return }
            }
        }
    }

    /// `url` with its password hidden, for messages.
    public static func redacted(_ url: String) -> String {
        (try? PostgresURL(url))?.safeDescription ?? "the PostgreSQL URL"
    }

    // MARK: - Running

    /// Runs the store's background work until a graceful shutdown or
    /// ``close()``: the connection pool (replaced when it stops answering),
    /// the `LISTEN` connection behind ``workNotifications()``, and the calls
    /// themselves. On shutdown it stops taking calls, lets those in flight
    /// finish, then closes every connection. A store runs once.
    ///
    /// A call that postgres-nio never completes (a query sent just as the
    /// server went away can be dropped) fails its caller at its deadline but
    /// keeps `run()` from returning; `tranche serve` and `tranche worker`
    /// bound their shutdown for that reason.
    public func run() async throws {
        let starting = state.withLock { state -> Bool in
            guard state.phase == .idle else { return false }
            state.phase = .running
            return true
        }
        guard starting else { throw StoreError(.storage, "the PostgreSQL store runs only once") }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                let first = Pool(
                    client: PostgresClient(configuration: clientConfiguration, backgroundLogger: logger), generation: 0)
                state.withLock { $0.pool = first }
                group.addTask { await Self.runPool(first, logger: self.logger) }
                group.addTask { await self.listenForWork() }
                group.addTask { await self.sendWakes() }
                await withDiscardingTaskGroup { calls in
                    for await command in commands {
                        switch command {
                        case .call(let call):
                            guard let pool = state.withLock({ $0.pool }) else { continue }
                            calls.addTask {
                                self.state.withLock { $0.callsRunning += 1 }
                                defer { self.state.withLock { $0.callsRunning -= 1 } }
                                await call(pool)
                            }
                        case .replacePool(let generation):
                            if let fresh = replacePool(generation: generation) {
                                group.addTask { await Self.runPool(fresh, logger: self.logger) }
                            }
                        }
                    }
                    let running = state.withLock { $0.callsRunning }
                    logger.debug("store closing", metadata: ["calls_running": "\(running)"])
                }
                // No more calls, and those in flight ended: close the connections.
                logger.debug("store closing its connections")
                stopping.fire()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.close()
        }
        let subscribers = state.withLock { state in
            state.phase = .ended
            state.pool = nil
            defer { state.subscribers = [:] }
            return state.subscribers.values
        }
        for subscriber in subscribers { subscriber.finish() }
        commandSink.finish()
        wakeSink.finish()
        logger.debug("store closed")
    }

    /// Runs `pool`'s client until the pool is retired or `run()` ends.
    private static func runPool(_ pool: Pool, logger: Logger) async {
        await withDiscardingTaskGroup { group in
            group.addTask {
                pool.started.fire()
                await pool.client.run()
                logger.debug("pool closed", metadata: ["generation": "\(pool.generation)"])
            }
            await pool.retired.wait()
            group.cancelAll()
        }
    }

    /// Swaps in a fresh pool for the one of `generation`, unless that was
    /// done already; returns the fresh pool for `run()` to start.
    private func replacePool(generation: Int) -> Pool? {
        // Only run() swaps pools, one command at a time: the check and the swap cannot interleave.
        guard let old = state.withLock({ $0.pool }), old.generation == generation else { return nil }
        let fresh = Pool(
            client: PostgresClient(configuration: clientConfiguration, backgroundLogger: logger),
            generation: generation + 1)
        state.withLock { $0.pool = fresh }
        logger.warning("no connection from the pool; replaced it", metadata: ["generation": "\(fresh.generation)"])
        old.retired.fire()
        return fresh
    }

    /// Runs `body` while the store runs, then closes the store and waits for
    /// ``run()`` to end: for tests and programs without a `ServiceGroup`.
    public func withRunning<T>(
        isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.run() }
            let result: Result<T, any Error>
            do {
                result = .success(try await body())
            } catch {
                result = .failure(error)
            }
            close()
            try await group.waitForAll()
            return try result.get()
        }
    }

    /// Stops taking calls: ``run()`` ends once the calls in flight finish.
    /// Later calls fail at once. A graceful shutdown does the same.
    public func close() {
        commandSink.finish()
    }

    deinit {
        commandSink.finish()
        wakeSink.finish()
    }

    // MARK: - Calls

    /// Leases a connection for `body`, within `operationTimeout`.
    ///
    /// The call runs in a task of ``run()``, so that the caller can leave it.
    /// A call the server never answers (seen when PostgreSQL restarts: a
    /// query sent as its connection dies, or a connection attempt that never
    /// completes) would otherwise wait forever; closing the connection does
    /// not end it. Past the deadline the call fails as a storage error, is
    /// cancelled, and the pool is replaced by a fresh one; the caller's retry
    /// runs on the new pool. A call made before `run()` starts waits for it,
    /// within the same deadline.
    func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let call = PendingCall<T>()
        let queued = commandSink.yield(
            .call { pool in
                await call.run(generation: pool.generation) {
                    await pool.started.wait()
                    return try await pool.client.withConnection { connection in
                        // A query written to a connection that closed is dropped unanswered
                        // (postgres-nio): do not start on one the pool has not noticed yet.
                        guard !connection.isClosed else {
                            throw StoreError(.storage, "the database connection was closed")
                        }
                        // A query in flight ignores cancellation, and a connection that died as it was
                        // sent may never answer: closing the connection at once fails the query.
                        return try await withTaskCancellationHandler {
                            try await body(connection)
                        } onCancel: {
                            connection.close().whenComplete { _ in }
                        }
                    }
                }
            })
        guard case .enqueued = queued else { throw StoreError(.storage, "the PostgreSQL store is closed") }
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [operationTimeout] in
                try? await Task.sleep(for: .seconds(bounded: operationTimeout))
                guard !Task.isCancelled else { return }
                guard let generation = call.generation else {
                    let message =
                        self.state.withLock { $0.phase == .ended }
                        ? "the PostgreSQL store is closed"
                        : "the PostgreSQL store is not running: run it in a ServiceGroup or inside withRunning"
                    call.resolve(.failure(StoreError(.storage, message)))
                    return
                }
                let message = "the database did not answer within \(operationTimeout.shortText) s"
                if call.resolve(.failure(StoreError(.storage, message))) {
                    self.commandSink.yield(.replacePool(generation: generation))
                }
            }
            defer { group.cancelAll() }
            return try await call.value()
        }
    }

    // MARK: - Work notifications

    /// Yields when another process made work claimable or recorded events:
    /// `run()` listens on the work channel with one pooled connection; when
    /// the connection drops it reconnects after a short pause and yields
    /// once, since notifications sent meanwhile were lost. The stream ends
    /// when `run()` does.
    public func workNotifications() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { state -> Int? in
            guard state.phase != .ended else { return nil }
            defer { state.nextSubscriber += 1 }
            state.subscribers[state.nextSubscriber] = continuation
            return state.nextSubscriber
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        subscribed.fire()
        return stream
    }

    /// Wakes every subscriber.
    private func broadcastWork() {
        for subscriber in state.withLock({ Array($0.subscribers.values) }) { subscriber.yield() }
    }

    /// Sends the wake-ups transactions asked for once they committed
    /// (``PendingWake``), one at a time, until `run()` ends.
    private func sendWakes() async {
        for await _ in wakeRequests {
            do {
                try await read { connection in
                    try await connection.run(
                        "SELECT set_config('synchronous_commit', 'off', true), pg_notify(\(Self.channel), '')")
                }
            } catch {
                if Task.isCancelled || stopping.hasFired { return }
                // Other nodes find the work when they next look for it.
                logger.debug("waking other nodes failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Listens on the work channel from the first subscription until `run()` ends.
    private func listenForWork() async {
        await subscribed.wait()
        while !Task.isCancelled {
            guard let pool = state.withLock({ $0.pool }) else { return }
            await pool.started.wait()
            do {
                // No deadline here: a listening connection stays leased as long as it listens.
                try await pool.client.withConnection { connection in
                    try await connection.listen(on: Self.channel) { notifications in
                        self.broadcastWork()
                        for try await _ in notifications { self.broadcastWork() }
                    }
                }
            } catch {
                if Task.isCancelled || stopping.hasFired { return }
                logger.warning("listening for work failed; reconnecting", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
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
                        // Read committed whatever the server's default: the
                        // store's statements rely on each one seeing what
                        // committed before it (a status read after a lock).
                        try await connection.run("BEGIN ISOLATION LEVEL READ COMMITTED")
                        let wake = PendingWake()
                        do {
                            let value = try await PendingWake.$current.withValue(wake) { try await body(connection) }
                            try await connection.run("COMMIT")
                            if wake.isRequested { self.wakeSink.yield() }
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

    /// Wakes other nodes: after the commit of the transaction running in
    /// this task (``PendingWake``), at once outside one.
    func notifyWork() async throws {
        if let pending = PendingWake.current {
            pending.request()
            return
        }
        try await run("SELECT pg_notify(\(PostgresBatchStore.channel), '')")
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
