import Logging
import PostgresNIO

/// Versioned migrations, run at start-up under an advisory lock so that
/// nodes starting together migrate once.
enum PostgresSchema {
    /// The advisory lock key that serialises migrations ("tranche" in ASCII, folded).
    static let migrationLock: Int64 = 0x7472_616e_6368_6501

    static let migrations: [(version: Int, sql: [String])] = [
        (
            1,
            [
                """
                CREATE TABLE batches (
                    key BIGSERIAL PRIMARY KEY,
                    id TEXT NOT NULL UNIQUE,
                    type TEXT NOT NULL,
                    owner TEXT NOT NULL,
                    status TEXT NOT NULL,
                    paused_from TEXT,
                    context TEXT NOT NULL,
                    options TEXT NOT NULL,
                    dry_run BOOLEAN NOT NULL,
                    priority INTEGER NOT NULL,
                    sealed BOOLEAN NOT NULL,
                    total BIGINT NOT NULL DEFAULT 0,
                    running BIGINT NOT NULL DEFAULT 0,
                    succeeded BIGINT NOT NULL DEFAULT 0,
                    failed BIGINT NOT NULL DEFAULT 0,
                    skipped BIGINT NOT NULL DEFAULT 0,
                    dead BIGINT NOT NULL DEFAULT 0,
                    canceled BIGINT NOT NULL DEFAULT 0,
                    retried BIGINT NOT NULL DEFAULT 0,
                    rescued BIGINT NOT NULL DEFAULT 0,
                    leased_chunks INTEGER NOT NULL DEFAULT 0,
                    max_chunks INTEGER NOT NULL,
                    last_claim_at BIGINT NOT NULL DEFAULT 0,
                    failure_reason TEXT,
                    result TEXT,
                    cursor TEXT,
                    created_at BIGINT NOT NULL,
                    confirmed_at BIGINT,
                    started_at BIGINT,
                    completed_at BIGINT,
                    expires_at BIGINT,
                    pruned BOOLEAN NOT NULL DEFAULT false
                )
                """,
                "CREATE INDEX batches_runnable ON batches(priority DESC, leased_chunks, last_claim_at, key) WHERE status IN ('confirmed', 'processing')",
                "CREATE INDEX batches_by_status ON batches(status)",
                "CREATE INDEX batches_by_owner ON batches(owner, status)",
                "CREATE INDEX batches_by_expiry ON batches(expires_at) WHERE NOT pruned",
                """
                CREATE TABLE items (
                    batch_key BIGINT NOT NULL,
                    seq BIGINT NOT NULL,
                    status SMALLINT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    payload TEXT,
                    output TEXT,
                    error_code TEXT,
                    error_message TEXT,
                    error_category TEXT,
                    next_attempt_at BIGINT,
                    updated_at BIGINT,
                    PRIMARY KEY (batch_key, seq)
                ) WITH (fillfactor = 80)
                """,
                """
                CREATE TABLE chunks (
                    id BIGSERIAL PRIMARY KEY,
                    batch_key BIGINT NOT NULL,
                    first_seq BIGINT NOT NULL,
                    last_seq BIGINT NOT NULL,
                    state SMALLINT NOT NULL DEFAULT 0,
                    ready_at BIGINT NOT NULL DEFAULT 0,
                    lease_owner TEXT,
                    lease_token BIGINT NOT NULL DEFAULT 0,
                    lease_expires_at BIGINT,
                    claimed_items BIGINT NOT NULL DEFAULT 0,
                    rescues INTEGER NOT NULL DEFAULT 0
                )
                """,
                "CREATE INDEX chunks_by_batch ON chunks(batch_key, first_seq)",
                "CREATE INDEX chunks_to_claim ON chunks(batch_key, ready_at, first_seq) WHERE state = 0",
                "CREATE INDEX chunks_leased ON chunks(lease_expires_at) WHERE state = 1",
                "CREATE SEQUENCE lease_tokens",
                """
                CREATE TABLE events (
                    id BIGSERIAL PRIMARY KEY,
                    batch_key BIGINT NOT NULL,
                    type TEXT NOT NULL,
                    at BIGINT NOT NULL,
                    data TEXT NOT NULL
                )
                """,
                "CREATE INDEX events_by_batch ON events(batch_key, id)",
                "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
                """
                CREATE TABLE api_keys (
                    id TEXT PRIMARY KEY,
                    tenant TEXT NOT NULL,
                    hash TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    revoked_at BIGINT
                )
                """,
                """
                CREATE TABLE idempotency (
                    tenant TEXT NOT NULL,
                    key TEXT NOT NULL,
                    fingerprint TEXT NOT NULL,
                    status INTEGER,
                    body TEXT,
                    created_at BIGINT NOT NULL,
                    PRIMARY KEY (tenant, key)
                )
                """,
                """
                CREATE TABLE webhooks (
                    id TEXT PRIMARY KEY,
                    tenant TEXT NOT NULL,
                    url TEXT NOT NULL,
                    events TEXT NOT NULL,
                    secret TEXT NOT NULL,
                    created_at BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE deliveries (
                    id BIGSERIAL PRIMARY KEY,
                    webhook_id TEXT NOT NULL,
                    event_id BIGINT NOT NULL,
                    status TEXT NOT NULL DEFAULT 'pending',
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_status_code INTEGER,
                    last_error TEXT,
                    next_attempt_at BIGINT,
                    delivered_at BIGINT,
                    UNIQUE (webhook_id, event_id)
                )
                """,
                "CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at)",
                "INSERT INTO counters(name, value) VALUES ('delivery_cursor', 0)",
                """
                CREATE TABLE nodes (
                    id TEXT PRIMARY KEY,
                    role TEXT NOT NULL,
                    host TEXT NOT NULL,
                    pid INTEGER NOT NULL,
                    workers INTEGER NOT NULL,
                    started_at BIGINT NOT NULL,
                    heartbeat_at BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE leader (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    node TEXT NOT NULL,
                    expires_at BIGINT NOT NULL
                )
                """,
            ]
        ),
        // Server records (TrancheHTTP): an idempotency record names the batch
        // it created in the same transaction; deliveries keep their last attempt's time for pruning.
        (
            2,
            [
                "ALTER TABLE idempotency ADD COLUMN batch_id TEXT",
                """
                UPDATE idempotency SET batch_id = body::jsonb->>'id'
                WHERE status IS NOT NULL AND body IS NOT NULL AND body LIKE '{%'
                """,
                "DELETE FROM idempotency WHERE batch_id IS NULL",
                "ALTER TABLE idempotency ALTER COLUMN batch_id SET NOT NULL, DROP COLUMN status, DROP COLUMN body",
                "CREATE INDEX idempotency_by_batch ON idempotency(batch_id)",
                "ALTER TABLE deliveries ADD COLUMN last_attempt_at BIGINT",
                """
                UPDATE deliveries d
                SET last_attempt_at = coalesce(d.delivered_at, (SELECT e.at FROM events e WHERE e.id = d.event_id), 0)
                WHERE d.status <> 'pending'
                """,
                "CREATE INDEX deliveries_ended ON deliveries(last_attempt_at) WHERE status <> 'pending'",
            ]
        ),
        // Batches: the batch-timeout clock and the summary kept after pruning.
        (
            3,
            [
                "ALTER TABLE batches ADD COLUMN processing_ms BIGINT NOT NULL DEFAULT 0",
                "ALTER TABLE batches ADD COLUMN running_since BIGINT",
                "ALTER TABLE batches ADD COLUMN summary TEXT",
                """
                UPDATE batches SET running_since = coalesce(started_at, confirmed_at, created_at)
                WHERE status = 'processing'
                """,
                "CREATE INDEX batches_by_completion ON batches(completed_at) WHERE completed_at IS NOT NULL",
            ]
        ),
        // Webhook deliveries are leased to one node at a time, like chunks.
        (
            4,
            [
                "ALTER TABLE deliveries ADD COLUMN lease_owner TEXT",
                "ALTER TABLE deliveries ADD COLUMN lease_expires_at BIGINT",
            ]
        ),
        // Admin keys (`/metrics`, `/v1/nodes`) and the secret that signs stream tokens.
        (
            5,
            [
                "ALTER TABLE api_keys ADD COLUMN admin BOOLEAN NOT NULL DEFAULT false",
                "CREATE TABLE server_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            ]
        ),
        // Tenants' weights and quotas; the claim sums each owner's open
        // batches (batches_by_owner, version 1).
        (
            6,
            [
                """
                CREATE TABLE tenants (
                    name TEXT PRIMARY KEY,
                    weight_millis BIGINT NOT NULL DEFAULT 1000,
                    max_running BIGINT,
                    max_queued BIGINT,
                    max_open_batches BIGINT,
                    updated_at BIGINT NOT NULL
                )
                """
            ]
        ),
        // Linked batches: a child's parent (resubmit, chain) and a batch's
        // `then`, marked with the successor it started (once).
        (
            7,
            [
                """
                CREATE TABLE batch_links (
                    child_id TEXT PRIMARY KEY, parent_id TEXT NOT NULL, kind TEXT NOT NULL, created_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX batch_links_by_parent ON batch_links(parent_id, created_at)",
                """
                CREATE TABLE batch_successors (
                    batch_id TEXT PRIMARY KEY, type TEXT NOT NULL, context TEXT NOT NULL, options TEXT NOT NULL,
                    successor_id TEXT
                )
                """,
            ]
        ),
        // Schedules (`POST /v1/schedules`), the batches they created, and
        // each ended batch's finalize step, leased like a chunk.
        (
            8,
            [
                """
                CREATE TABLE schedules (
                    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, batch TEXT NOT NULL, cron TEXT,
                    time_zone TEXT NOT NULL, every_ms BIGINT, catch_up TEXT NOT NULL, overlap BOOLEAN NOT NULL,
                    paused BOOLEAN NOT NULL DEFAULT false, next_run_at BIGINT, last_run_at BIGINT, last_batch_id TEXT,
                    runs BIGINT NOT NULL DEFAULT 0, skipped BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX schedules_due ON schedules(next_run_at) WHERE NOT paused",
                "CREATE INDEX schedules_by_tenant ON schedules(tenant, created_at)",
                "CREATE TABLE schedule_runs (batch_id TEXT PRIMARY KEY, schedule_id TEXT NOT NULL)",
                """
                CREATE TABLE finalizations (
                    batch_key BIGINT PRIMARY KEY, type TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
                    attempts INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_expires_at BIGINT,
                    queued_at BIGINT NOT NULL, finished_at BIGINT
                )
                """,
                "CREATE INDEX finalizations_to_claim ON finalizations(type, state, lease_expires_at)",
                "INSERT INTO counters(name, value) VALUES ('finalize_cursor', (SELECT coalesce(max(id), 0) FROM events))",
            ]
        ),
        // Limits that hold across nodes: shared token buckets, concurrency
        // slots per node, and the pace an adaptive batch or host has learned.
        (
            9,
            [
                "CREATE TABLE rate_grants (key TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, updated_at BIGINT NOT NULL)",
                """
                CREATE TABLE limit_slots (
                    key TEXT NOT NULL, node TEXT NOT NULL, held INTEGER NOT NULL, expires_at BIGINT NOT NULL,
                    PRIMARY KEY (key, node)
                )
                """,
                "CREATE INDEX limit_slots_by_node ON limit_slots(node)",
                """
                CREATE TABLE pace (
                    key TEXT PRIMARY KEY, rate DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL,
                    changed_at BIGINT NOT NULL, throttled BIGINT NOT NULL DEFAULT 0, paused_until BIGINT
                )
                """,
            ]
        ),
        // Progress samples the leader takes about once a second per batch in
        // progress: rate and ETA are read from here, the same on every node.
        (
            10,
            [
                """
                CREATE TABLE progress_samples (
                    batch_key BIGINT NOT NULL, at BIGINT NOT NULL, done BIGINT NOT NULL,
                    PRIMARY KEY (batch_key, at)
                )
                """,
                "CREATE INDEX progress_samples_by_time ON progress_samples(at)",
            ]
        ),
        // Strategy `prepare` hooks: the types that have one, and each of
        // their batches' prepare step, leased like a chunk.
        (
            11,
            [
                "CREATE TABLE prepare_types (type TEXT PRIMARY KEY)",
                """
                CREATE TABLE preparations (
                    batch_key BIGINT PRIMARY KEY, type TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
                    attempts INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_expires_at BIGINT, preview TEXT,
                    queued_at BIGINT NOT NULL, finished_at BIGINT
                )
                """,
                "CREATE INDEX preparations_to_claim ON preparations(type, state, lease_expires_at)",
            ]
        ),
        // Counter shards (BatchShards): claims and checkpoints of one batch
        // move its counters and chunks in flight on one of 16 rows instead
        // of the batch row, so they do not wait on each other; readers sum
        // them through `batch_load`. A chunk remembers the shard of its
        // lease; leases in flight at the upgrade move to shard 0.
        (
            13,
            [
                """
                CREATE TABLE batch_shards (
                    batch_key BIGINT NOT NULL, shard SMALLINT NOT NULL,
                    leased INTEGER NOT NULL DEFAULT 0, running BIGINT NOT NULL DEFAULT 0,
                    succeeded BIGINT NOT NULL DEFAULT 0, failed BIGINT NOT NULL DEFAULT 0,
                    skipped BIGINT NOT NULL DEFAULT 0, dead BIGINT NOT NULL DEFAULT 0,
                    canceled BIGINT NOT NULL DEFAULT 0, retried BIGINT NOT NULL DEFAULT 0,
                    rescued BIGINT NOT NULL DEFAULT 0, last_claim_at BIGINT NOT NULL DEFAULT 0,
                    PRIMARY KEY (batch_key, shard)
                )
                """,
                "ALTER TABLE chunks ADD COLUMN shard SMALLINT",
                "CREATE INDEX chunks_open ON chunks(batch_key) WHERE state <> 2",
                "INSERT INTO batch_shards(batch_key, shard) SELECT key, s FROM batches, generate_series(0, 15) s",
                "UPDATE chunks SET shard = 0 WHERE state = 1",
                """
                UPDATE batch_shards s SET leased = b.leased_chunks FROM batches b
                WHERE s.batch_key = b.key AND s.shard = 0
                """,
                "UPDATE batches SET leased_chunks = 0",
                """
                CREATE VIEW batch_load AS
                SELECT b.key, b.id, b.owner, b.status, b.priority, b.max_chunks, b.total,
                    b.leased_chunks + s.leased AS leased_chunks, greatest(0, b.running + s.running) AS running,
                    b.succeeded + s.succeeded AS succeeded, b.failed + s.failed AS failed,
                    b.skipped + s.skipped AS skipped, b.dead + s.dead AS dead, b.canceled + s.canceled AS canceled,
                    b.retried + s.retried AS retried, b.rescued + s.rescued AS rescued,
                    greatest(b.last_claim_at, s.last_claim_at) AS last_claim_at
                FROM batches b CROSS JOIN LATERAL (
                    SELECT coalesce(sum(leased), 0)::bigint AS leased, coalesce(sum(running), 0)::bigint AS running,
                        coalesce(sum(succeeded), 0)::bigint AS succeeded, coalesce(sum(failed), 0)::bigint AS failed,
                        coalesce(sum(skipped), 0)::bigint AS skipped, coalesce(sum(dead), 0)::bigint AS dead,
                        coalesce(sum(canceled), 0)::bigint AS canceled, coalesce(sum(retried), 0)::bigint AS retried,
                        coalesce(sum(rescued), 0)::bigint AS rescued, coalesce(max(last_claim_at), 0) AS last_claim_at
                    FROM batch_shards WHERE batch_key = b.key) s
                """,
            ]
        ),
        // A pace learned once for the cluster: when it was last cut, and
        // whether its rate is still the first cut's sum of nodes' shares.
        (
            14,
            [
                "ALTER TABLE pace ADD COLUMN cut_at BIGINT",
                "ALTER TABLE pace ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT false",
            ]
        ),
        // Pruned batches by when they ended: the sweep that forgets them
        // read every batch row (80–200 ms a sweep at 200,000 batches).
        (15, ["CREATE INDEX batches_pruned_by_completion ON batches(completed_at) WHERE pruned"]),
        // Item pages half filled by inserts: a checkpoint's outcomes then
        // update a page's items in place (heap-only tuples: no new index
        // entry, less WAL) instead of moving each to a new page. New pages
        // only; the table is not rewritten.
        (16, ["ALTER TABLE items SET (fillfactor = 50)"]),
    ]

    /// Brings the database to the newest version, once, whatever other nodes do meanwhile.
    static func migrate(_ client: PostgresClient, logger: Logger) async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLock))", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS tranche_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                logger: logger)
            var applied = Set<Int>()
            for try await version in try await connection.query(
                "SELECT version FROM tranche_migrations", logger: logger
            ).decode(Int.self) {
                applied.insert(version)
            }
            for migration in migrations where !applied.contains(migration.version) {
                for statement in migration.sql {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    "INSERT INTO tranche_migrations(version) VALUES (\(migration.version))", logger: logger)
                logger.info("migrated the PostgreSQL schema", metadata: ["version": "\(migration.version)"])
            }
        }
    }
}
