import Foundation
import Logging
import PostgresNIO
public import TranchePostgres

/// The PostgreSQL server the tests use: `scripts/test` starts a throwaway
/// cluster and exports its URL. Without it, PostgreSQL tests fail (never skip).
public enum TestPostgres {
    public struct Missing: Error, CustomStringConvertible {
        public var description: String {
            "TRANCHE_TEST_POSTGRES_URL is not set: run scripts/test, which starts a throwaway PostgreSQL cluster"
        }
    }

    /// The server's URL (its `postgres` database).
    public static func serverURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["TRANCHE_TEST_POSTGRES_URL"], !url.isEmpty else {
            throw Missing()
        }
        return url
    }

    /// Creates an empty database and returns its URL: each test gets its own.
    public static func freshDatabaseURL() async throws -> String {
        let server = try serverURL()
        guard var components = URLComponents(string: server), let host = components.host else { throw Missing() }
        let name = "tranche_test_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let configuration = PostgresConnection.Configuration(
            host: host, port: components.port ?? 5432, username: components.user ?? "postgres",
            password: components.password, database: "postgres", tls: .disable)
        let logger = Logger(label: "tranche.test.postgres")
        let connection = try await PostgresConnection.connect(
            configuration: configuration, id: 1, logger: logger)
        do {
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger)
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
        components.path = "/" + name
        components.query = "sslmode=disable"
        return components.string!
    }

    /// Opens the store at `url` (a fresh database by default), runs `body`
    /// while the store runs, then closes it.
    public static func withStore<T>(
        url: String? = nil, isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresBatchStore) async throws -> T
    ) async throws -> T {
        let url = if let url { url } else { try await freshDatabaseURL() }
        let store = try await PostgresBatchStore(url: url)
        return try await store.withRunning { try await body(store) }
    }

    /// Restarts the throwaway cluster (`pg_ctl restart -m fast`): every
    /// connection drops. Returns `pg_ctl`'s exit status.
    ///
    /// Spawned and reaped with `posix_spawn`/`waitpid`: Foundation's `Process`
    /// never saw `runuser` exit here, as the server it starts outlives it.
    public static func restart() async throws -> Int32 {
        let environment = ProcessInfo.processInfo.environment
        guard let pgctl = environment["TRANCHE_TEST_PGCTL"], let data = environment["TRANCHE_TEST_PGDATA"] else {
            throw Missing()
        }
        // Up to 600 s for each of stop and start: a shutdown waits for a
        // checkpoint in progress, which on a busy disk, after a suite's
        // hundreds of fresh databases, took 375 s (pg_ctl's default is 60).
        let arguments =
            pgctl.split(separator: " ").map(String.init) + ["-D", data, "restart", "-m", "fast", "-w", "-t", "600"]
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var pid: pid_t = 0
                let argv = arguments.map { strdup($0) } + [nil]
                defer { for pointer in argv { free(pointer) } }
                var actions = posix_spawn_file_actions_t()
                posix_spawn_file_actions_init(&actions)
                posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
                defer { posix_spawn_file_actions_destroy(&actions) }
                guard let program = argv[0], posix_spawnp(&pid, program, &actions, nil, argv, environ) == 0 else {
                    continuation.resume(returning: -1)
                    return
                }
                var status: Int32 = 0
                waitpid(pid, &status, 0)
                continuation.resume(returning: (status >> 8) & 0xff)
            }
        }
    }
}
