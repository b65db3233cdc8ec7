import ArgumentParser
import Foundation
import GRDBSQLite
import TrancheStore

#if canImport(Glibc)
    import Glibc
#endif

/// `tranche bench`: end-to-end throughput of `tranche run` with `noop`
/// items in both durability modes, with peak RSS, beside the raw SQLite
/// rates of the same machine. Figures only: nothing is asserted.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure end-to-end throughput and the raw SQLite rates of this machine.")

    @Option(help: "Items in the end-to-end run, 1 to 100000000.")
    var items = 1_000_000

    @Option(
        help: """
            Chunk size for the end-to-end run, 1 to 100000 (default: automatic, as tranche run); \
            the raw claim/complete loop and --database use it or 1000.
            """)
    var chunkSize: Int?

    @Option(help: "Durability modes to measure, comma-separated: full, normal or both.")
    var modes = DurabilityModes([.full, .normal])

    @Flag(help: "Skip the raw SQLite measurements.")
    var skipRaw = false

    @Option(help: "Directory for the input and the state files (default: a new temporary directory).")
    var directory: String?

    @Option(
        help: ArgumentHelp(
            "A postgres:// URL: measure PostgreSQL instead, in a database of its own "
                + "(one with open batches is refused).")
    )
    var database: String?

    @Option(help: "With --database: worker-node counts to measure, comma-separated, each 1 to 64.")
    var nodes = "1,2"

    @Option(help: "With --database: workers per node, 1 to 100000.")
    var nodeWorkers = 16

    @Option(
        help: ArgumentHelp(
            "Measure the http strategy instead, at these concurrencies (comma-separated, each 1 to 1024), "
                + "against a local server answering in 20 ms, beside wrk.", valueName: "concurrencies"))
    var http: String?

    @Option(
        help:
            "With --http: seconds each wrk run lasts (tranche runs get as many items as 100% would do in it), 1 to 600."
    )
    var httpSeconds = 10

    @Option(help: "With --http: runs of each figure, 1 to 10.")
    var runs = 2

    @Option(help: "With --http: the tranche binary the runs use (default: this one), to compare two builds.")
    var runBinary: String?

    @Option(help: "With --http: the chunk size of the tranche runs (default: tranche run's).")
    var httpChunkSize: Int?

    @Option(help: "With --http: the paces of the tranche runs, comma-separated: fixed, adaptive or both.")
    var httpPaces = "fixed,adaptive"

    func validate() throws {
        try requireNumber(items, in: 1...100_000_000, flag: "--items")
        if let chunkSize { try requireNumber(chunkSize, in: BatchOptions.Limits.chunkSize, flag: "--chunk-size") }
        try requireNumber(nodeWorkers, in: NodeOptions.workersRange, flag: "--node-workers")
        _ = try nodeCounts()
        try requireNumber(httpSeconds, in: 1...600, flag: "--http-seconds")
        try requireNumber(runs, in: 1...10, flag: "--runs")
        if let httpChunkSize {
            try requireNumber(httpChunkSize, in: BatchOptions.Limits.chunkSize, flag: "--http-chunk-size")
        }
        _ = try paces()
        _ = try httpConcurrencies()
    }

    /// `--http-paces` as a list of `fixed` and `adaptive` (the http strategy's default).
    func paces() throws -> [String] {
        let paces = httpPaces.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !paces.isEmpty, paces.allSatisfy({ $0 == "fixed" || $0 == "adaptive" }) else {
            throw ValidationError("--http-paces must be fixed, adaptive or both, comma-separated; got '\(httpPaces)'")
        }
        return paces
    }

    /// `--http` as numbers, each within 1…1024; empty without `--http`.
    func httpConcurrencies() throws -> [Int] {
        guard let http else { return [] }
        return try http.split(separator: ",").map { text in
            guard let count = Int(text.trimmingCharacters(in: .whitespaces)), (1...1024).contains(count) else {
                throw ValidationError("--http must be concurrencies from 1 to 1024, comma-separated; got '\(http)'")
            }
            return count
        }
    }

    /// `--nodes` as numbers, each within 1…64.
    func nodeCounts() throws -> [Int] {
        try nodes.split(separator: ",").map { text in
            guard let count = Int(text.trimmingCharacters(in: .whitespaces)), (1...64).contains(count) else {
                throw ValidationError(
                    "--nodes must be worker-node counts from 1 to 64, comma-separated; got '\(nodes)'")
            }
            return count
        }
    }

    func run() async throws {
        if let database {
            let bench = PostgresBench(
                url: database, items: items, chunkSize: chunkSize ?? 1_000, nodeWorkers: nodeWorkers,
                nodeCounts: try nodeCounts())
            return try await bench.run()
        }
        let folder =
            directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("tranche-bench-\(getpid())").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        if http != nil {
            defer { try? FileManager.default.removeItem(atPath: folder) }
            return try await HTTPBench(
                folder: folder, concurrencies: try httpConcurrencies(), seconds: httpSeconds, runs: runs,
                paces: try paces(), runBinary: runBinary,
                chunkSize: httpChunkSize
            ).run()
        }
        let input = folder + "/items.ndjson"
        try Self.generateInput(count: items, path: input)
        print("| measurement | result |")
        print("|---|---|")
        for mode in modes.modes.map(\.rawValue) {
            let state = folder + "/bench-\(mode).db"
            for suffix in ["", "-wal", "-shm", ".lock"] { unlink(state + suffix) }
            let result = try measureRun(
                arguments: [
                    "run", "--input", input, "--type", "noop", "--durability", mode, "--state", state, "--json",
                    "--quiet",
                ] + (chunkSize.map { ["--chunk-size", String($0)] } ?? []))
            let rate = Double(items) / result.seconds
            let chunks = chunkSize.map { "chunks of \(format(Int64($0)))" } ?? "chunks automatic"
            print(
                "| `tranche run` \(format(Int64(items))) noop items, \(chunks), durability \(mode) | "
                    + "\(format(Int64.saturating(rate))) items/s (\(String(format: "%.2f", result.seconds)) s), peak RSS \(result.peakRSSKiB / 1024) MiB |"
            )
        }
        if !skipRaw {
            let raw = try RawSQLiteBench(folder: folder, rows: min(items, 1_000_000), chunkSize: chunkSize ?? 1_000)
            print(
                "| raw SQLite: prepared inserts, one transaction | \(format(Int64.saturating(try raw.inserts()))) rows/s |"
            )
            for mode in ["FULL", "NORMAL"] {
                print(
                    "| raw SQLite: claim + complete, 2 transactions per chunk of \(raw.chunkSize), synchronous=\(mode) | "
                        + "\(format(Int64.saturating(try raw.claimComplete(synchronous: mode)))) items/s |")
            }
            print(
                "| raw SQLite: one commit with synchronous=FULL (fsync) | \(String(format: "%.2f", try raw.commitMilliseconds())) ms |"
            )
        }
        try? FileManager.default.removeItem(atPath: folder)
    }

    static func generateInput(count: Int, path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil),
            let handle = FileHandle(forWritingAtPath: path)
        else { throw CLIError("cannot write \(path)") }
        defer { try? handle.close() }
        var block = ""
        for index in 0..<count {
            block += #"{"id":\#(index),"email":"user\#(index)@example.com"}"# + "\n"
            if block.utf8.count > 1 << 20 {
                try handle.write(contentsOf: Data(block.utf8))
                block = ""
            }
        }
        try handle.write(contentsOf: Data(block.utf8))
    }

    /// Runs this binary with `arguments`; returns the wall time and the child's peak RSS.
    func measureRun(arguments: [String]) throws -> (seconds: Double, peakRSSKiB: Int) {
        let started = ContinuousClock.now
        let pid = try Self.spawnSelf(arguments)
        let (status, peak) = Self.reap(pid)
        let elapsed = started.duration(to: .now)
        guard status == 0 else { throw CLIError("the benchmark run failed (status \(status))") }
        return (elapsed.seconds, peak)
    }

    /// Starts this binary with `arguments`, its stdout written to `stdout`
    /// (default: discarded).
    static func spawnSelf(_ arguments: [String], stdout: String = "/dev/null") throws -> pid_t {
        try spawn(FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"), arguments, stdout: stdout)
    }

    /// Starts `executable` with `arguments`, its stdout written to `stdout`.
    static func spawn(_ executable: String, _ arguments: [String], stdout: String) throws -> pid_t {
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var pid: pid_t = 0
        guard posix_spawn(&pid, executable, &actions, nil, argv, environ) == 0 else {
            throw CLIError("cannot start \(executable)")
        }
        return pid
    }

    /// Waits for a child; returns its exit status and peak RSS in KiB.
    static func reap(_ pid: pid_t) -> (status: Int32, peakRSSKiB: Int) {
        let (status, usage) = reapUsage(pid)
        return (status, Int(usage.ru_maxrss))
    }

    /// Waits for a child; returns its exit status and resource usage.
    static func reapUsage(_ pid: pid_t) -> (status: Int32, usage: rusage) {
        var status: Int32 = 0
        var usage = rusage()
        wait4(pid, &status, 0, &usage)
        return (status, usage)
    }
}

/// `--modes`: durability modes, comma-separated.
struct DurabilityModes: ExpressibleByArgument {
    var modes: [DurabilityMode]

    init(_ modes: [DurabilityMode]) {
        self.modes = modes
    }

    init?(argument: String) {
        let modes = argument.split(separator: ",").map { DurabilityMode(rawValue: String($0)) }
        guard !modes.isEmpty, !modes.contains(nil) else { return nil }
        self.modes = modes.compactMap { $0 }
    }

    var defaultValueDescription: String { modes.map(\.rawValue).joined(separator: ",") }
}

/// The same work as Tranche's hot paths, straight on SQLite's C API: the
/// ceiling Tranche's figures are compared with.
struct RawSQLiteBench {
    let folder: String
    let rows: Int
    let chunkSize: Int

    final class Connection {
        var handle: OpaquePointer?

        init(path: String, synchronous: String) throws {
            for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
            guard sqlite3_open(path, &handle) == SQLITE_OK else { throw CLIError("cannot open \(path)") }
            try execute("PRAGMA journal_mode = WAL")
            try execute("PRAGMA synchronous = \(synchronous)")
            try execute(
                "CREATE TABLE items (batch_key INTEGER, seq INTEGER, status INTEGER, payload TEXT, PRIMARY KEY (batch_key, seq)) WITHOUT ROWID"
            )
            try execute(
                "CREATE TABLE chunks (id INTEGER PRIMARY KEY, first_seq INTEGER, last_seq INTEGER, state INTEGER)")
        }

        deinit { sqlite3_close(handle) }

        func execute(_ sql: String) throws {
            guard sqlite3_exec(handle, sql, nil, nil, nil) == SQLITE_OK else {
                throw CLIError("SQLite: \(String(cString: sqlite3_errmsg(handle)))")
            }
        }

        func prepare(_ sql: String) throws -> OpaquePointer {
            var statement: OpaquePointer?
            guard sqlite3_prepare_v2(handle, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
                throw CLIError("SQLite: \(String(cString: sqlite3_errmsg(handle)))")
            }
            return statement
        }
    }

    init(folder: String, rows: Int, chunkSize: Int) throws {
        self.folder = folder
        self.rows = rows
        self.chunkSize = chunkSize
    }

    static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    func fill(_ connection: Connection) throws {
        let insert = try connection.prepare("INSERT INTO items VALUES (1, ?, 0, ?)")
        defer { sqlite3_finalize(insert) }
        try connection.execute("BEGIN")
        for seq in 0..<rows {
            let payload = #"{"id":\#(seq),"email":"user\#(seq)@example.com"}"#
            sqlite3_bind_int64(insert, 1, Int64(seq))
            sqlite3_bind_text(insert, 2, payload, -1, Self.transient)
            guard sqlite3_step(insert) == SQLITE_DONE else { throw CLIError("insert failed") }
            sqlite3_reset(insert)
        }
        var first = 0
        while first < rows {
            try connection.execute(
                "INSERT INTO chunks(first_seq, last_seq, state) VALUES (\(first), \(min(rows, first + chunkSize) - 1), 0)"
            )
            first += chunkSize
        }
        try connection.execute("COMMIT")
    }

    /// Prepared inserts in one transaction, rows a second.
    func inserts() throws -> Double {
        let connection = try Connection(path: folder + "/raw-insert.db", synchronous: "FULL")
        let started = ContinuousClock.now
        try fill(connection)
        return Double(rows) / started.duration(to: .now).seconds
    }

    /// Claim (one transaction) and complete (another) per chunk, items a second.
    func claimComplete(synchronous: String) throws -> Double {
        let connection = try Connection(path: folder + "/raw-claim.db", synchronous: synchronous)
        try fill(connection)
        let claim = try connection.prepare("UPDATE chunks SET state = 1 WHERE id = ?")
        let read = try connection.prepare("SELECT seq, payload FROM items WHERE batch_key = 1 AND seq BETWEEN ? AND ?")
        let complete = try connection.prepare("UPDATE items SET status = 2 WHERE batch_key = 1 AND seq = ?")
        let done = try connection.prepare("UPDATE chunks SET state = 2 WHERE id = ?")
        defer { for statement in [claim, read, complete, done] { sqlite3_finalize(statement) } }
        let chunks = (rows + chunkSize - 1) / chunkSize
        let started = ContinuousClock.now
        for chunk in 1...chunks {
            let first = Int64((chunk - 1) * chunkSize)
            let last = Int64(min(rows, chunk * chunkSize) - 1)
            try connection.execute("BEGIN IMMEDIATE")
            sqlite3_bind_int64(claim, 1, Int64(chunk))
            _ = sqlite3_step(claim)
            sqlite3_reset(claim)
            sqlite3_bind_int64(read, 1, first)
            sqlite3_bind_int64(read, 2, last)
            var seqs: [Int64] = []
            while sqlite3_step(read) == SQLITE_ROW { seqs.append(sqlite3_column_int64(read, 0)) }
            sqlite3_reset(read)
            try connection.execute("COMMIT")
            try connection.execute("BEGIN IMMEDIATE")
            for seq in seqs {
                sqlite3_bind_int64(complete, 1, seq)
                _ = sqlite3_step(complete)
                sqlite3_reset(complete)
            }
            sqlite3_bind_int64(done, 1, Int64(chunk))
            _ = sqlite3_step(done)
            sqlite3_reset(done)
            try connection.execute("COMMIT")
        }
        return Double(rows) / started.duration(to: .now).seconds
    }

    /// The cost of one small durable commit, in milliseconds.
    func commitMilliseconds() throws -> Double {
        let connection = try Connection(path: folder + "/raw-commit.db", synchronous: "FULL")
        let count = 200
        let started = ContinuousClock.now
        for index in 0..<count {
            try connection.execute("INSERT INTO chunks(first_seq, last_seq, state) VALUES (\(index), \(index), 0)")
        }
        return started.duration(to: .now).seconds * 1000 / Double(count)
    }
}
