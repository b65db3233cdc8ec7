import PostgresNIO
import Synchronization

/// Statements that every claim and checkpoint runs, prepared once per
/// connection and then only bound and executed.
///
/// Sent as plain queries, each was parsed and planned again on every call:
/// in `tranche bench --database` planning took 7.0 s of the server's 22.3 s
/// in statements, the claim's candidate query alone 1.0 ms to plan for
/// 1.1 ms to run. Prepared, each is planned once per connection: the store's
/// connections use generic plans (`plan_cache_mode = force_generic_plan`),
/// since PostgreSQL's own choice went back to planning every call in some
/// runs. Every site reads or writes a few rows through an index, which a
/// generic plan does as well. The checkpoint's outcome statement is not a
/// site: its plan depends on the range of the chunk's items, bound as
/// constants for the planner to see.
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
    enum ClaimStartingGate: PreparedSite {}
    enum ClaimChunk: PreparedSite {}
    enum ClaimItems: PreparedSite {}
    enum TakeShard: PreparedSite {}
    enum RecordLease: PreparedSite {}
    enum FenceLease: PreparedSite {}
    enum BatchByKey: PreparedSite {}
    enum StatusByKey: PreparedSite {}
    enum ShardCounts: PreparedSite {}
    enum SettleRead: PreparedSite {}
    enum SettleWrite: PreparedSite {}
    enum OpenChunk: PreparedSite {}
    enum TenantCap: PreparedSite {}
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
