import PostgresNIO
import Synchronization
import TrancheStore

/// Statements that every claim and checkpoint runs, prepared once per
/// connection and then only bound and executed.
///
/// Sent as plain queries, each was parsed and planned again on every call:
/// in `tranche bench --database` planning took 7.0 s of the server's 22.3 s
/// in statements, the claim's candidate query alone 1.0 ms to plan for
/// 1.1 ms to run. Prepared, PostgreSQL plans a statement for its first five
/// calls on a connection and then keeps one generic plan if it costs no
/// more. A generic plan does not see bound values, so a value that picks a
/// partial index (a chunk's state: `chunks_to_claim`, `chunks_open`) is
/// written into the text as a literal (``ChunkState/literal``): bound, it
/// made the generic plan scan every chunk of a batch (45–108 ms against
/// 0.1 ms for a batch of 10,000 chunks), and PostgreSQL kept planning the
/// candidate query on every call. Plain queries are still planned with
/// their values on every call (the checkpoint's outcome statement needs
/// its chunk's range seen as constants).
///
/// Each site is a type (postgres-nio names a prepared statement after a
/// type), and its SQL is the text its query builds: the text of a site
/// must not vary between calls, only its bound values. A site called with
/// another text runs that text as a plain query.
protocol PreparedSite {}

/// The sites, one per statement.
enum Prepared {
    enum ClaimCandidates: PreparedSite {}
    enum ClaimGate: PreparedSite {}
    enum ClaimChunk: PreparedSite {}
    enum LeaseChunk: PreparedSite {}
    enum FenceLease: PreparedSite {}
    enum BatchByKey: PreparedSite {}
    enum ShardCounts: PreparedSite {}
    enum SettleChunk: PreparedSite {}
    enum OpenChunk: PreparedSite {}
    enum TenantCap: PreparedSite {}
}

extension ChunkState {
    /// The state as a SQL literal, for prepared statements whose plan must
    /// see it (see ``PreparedSite``).
    var literal: String { String(rawValue) }
}

/// The text of each site, as its first call built it.
private let preparedTexts = Mutex<[ObjectIdentifier: String]>([:])

/// A site's query as a postgres-nio prepared statement.
private struct PreparedQuery<Site: PreparedSite>: PostgresPreparedStatement {
    typealias Row = PostgresRow

    static var name: String { "tranche.\(Site.self)" }
    static var sql: String { preparedTexts.withLock { $0[ObjectIdentifier(Site.self)] } ?? "" }

    var bindings: PostgresBindings

    func makeBindings() -> PostgresBindings { bindings }
    func decodeRow(_ row: PostgresRow) -> PostgresRow { row }
}

extension PostgresConnection {
    /// Every row of `query`, run as the prepared statement of `site`.
    func rows<Site: PreparedSite>(_ site: Site.Type, _ query: PostgresQuery) async throws
        -> [PostgresRandomAccessRow]
    {
        var result: [PostgresRandomAccessRow] = []
        try await forEachRow(site, query) { result.append($0.makeRandomAccess()) }
        return result
    }

    /// The first row of `query`, run as the prepared statement of `site`.
    func one<Site: PreparedSite>(_ site: Site.Type, _ query: PostgresQuery) async throws -> PostgresRandomAccessRow? {
        try await rows(site, query).first
    }

    /// Runs `query` as the prepared statement of `site`, discarding its rows.
    func run<Site: PreparedSite>(_ site: Site.Type, _ query: PostgresQuery) async throws {
        try await forEachRow(site, query) { _ in }
    }

    /// Calls `body` with each row of `query`, run as the prepared statement of `site`.
    func forEachRow<Site: PreparedSite>(
        _ site: Site.Type, _ query: PostgresQuery, _ body: (PostgresRow) throws -> Void
    ) async throws {
        let key = ObjectIdentifier(site)
        let prepared = preparedTexts.withLock { texts in
            if let text = texts[key] { return text == query.sql }
            texts[key] = query.sql
            return true
        }
        guard prepared else {
            assertionFailure("the prepared statement \(site) was called with another text")
            for try await row in try await self.query(query, logger: Self.quiet) { try body(row) }
            return
        }
        for try await row in try await execute(PreparedQuery<Site>(bindings: query.binds), logger: Self.quiet) {
            try body(row)
        }
    }
}
