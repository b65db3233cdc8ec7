import GRDB

/// Versioned migrations, run when a store opens.
enum Schema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE batches (
                        key INTEGER PRIMARY KEY,
                        id TEXT NOT NULL UNIQUE,
                        type TEXT NOT NULL,
                        owner TEXT NOT NULL,
                        status TEXT NOT NULL,
                        paused_from TEXT,
                        context TEXT NOT NULL,
                        options TEXT NOT NULL,
                        dry_run INTEGER NOT NULL,
                        priority INTEGER NOT NULL,
                        sealed INTEGER NOT NULL,
                        total INTEGER NOT NULL DEFAULT 0,
                        running INTEGER NOT NULL DEFAULT 0,
                        succeeded INTEGER NOT NULL DEFAULT 0,
                        failed INTEGER NOT NULL DEFAULT 0,
                        skipped INTEGER NOT NULL DEFAULT 0,
                        dead INTEGER NOT NULL DEFAULT 0,
                        canceled INTEGER NOT NULL DEFAULT 0,
                        retried INTEGER NOT NULL DEFAULT 0,
                        rescued INTEGER NOT NULL DEFAULT 0,
                        leased_chunks INTEGER NOT NULL DEFAULT 0,
                        max_chunks INTEGER NOT NULL,
                        last_claim_at INTEGER NOT NULL DEFAULT 0,
                        failure_reason TEXT,
                        result TEXT,
                        cursor TEXT,
                        created_at INTEGER NOT NULL,
                        confirmed_at INTEGER,
                        started_at INTEGER,
                        completed_at INTEGER,
                        expires_at INTEGER,
                        pruned INTEGER NOT NULL DEFAULT 0
                    );
                    CREATE INDEX batches_by_status ON batches(status, priority);
                    CREATE INDEX batches_by_expiry ON batches(expires_at) WHERE pruned = 0;
                    CREATE TABLE items (
                        batch_key INTEGER NOT NULL,
                        seq INTEGER NOT NULL,
                        status INTEGER NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        payload TEXT,
                        output TEXT,
                        error_code TEXT,
                        error_message TEXT,
                        error_category TEXT,
                        next_attempt_at INTEGER,
                        updated_at INTEGER,
                        PRIMARY KEY (batch_key, seq)
                    ) WITHOUT ROWID;
                    CREATE TABLE chunks (
                        id INTEGER PRIMARY KEY,
                        batch_key INTEGER NOT NULL,
                        first_seq INTEGER NOT NULL,
                        last_seq INTEGER NOT NULL,
                        state INTEGER NOT NULL DEFAULT 0,
                        ready_at INTEGER NOT NULL DEFAULT 0,
                        lease_owner TEXT,
                        lease_token INTEGER NOT NULL DEFAULT 0,
                        lease_expires_at INTEGER,
                        claimed_items INTEGER NOT NULL DEFAULT 0,
                        rescues INTEGER NOT NULL DEFAULT 0
                    );
                    CREATE INDEX chunks_to_claim ON chunks(batch_key, state, ready_at, first_seq);
                    CREATE INDEX chunks_leased ON chunks(state, lease_expires_at);
                    CREATE TABLE events (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        batch_key INTEGER NOT NULL,
                        type TEXT NOT NULL,
                        at INTEGER NOT NULL,
                        data TEXT NOT NULL
                    );
                    CREATE INDEX events_by_batch ON events(batch_key, id);
                    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
                    INSERT INTO counters(name, value) VALUES ('lease_token', 0);
                    """)
        }
        migrator.registerMigration("v2: api keys and idempotency") { db in
            try db.execute(
                sql: """
                    CREATE TABLE api_keys (
                        id TEXT PRIMARY KEY,
                        tenant TEXT NOT NULL,
                        hash TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        revoked_at INTEGER
                    );
                    CREATE TABLE idempotency (
                        tenant TEXT NOT NULL,
                        key TEXT NOT NULL,
                        fingerprint TEXT NOT NULL,
                        status INTEGER,
                        body TEXT,
                        created_at INTEGER NOT NULL,
                        PRIMARY KEY (tenant, key)
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v3: webhooks") { db in
            try db.execute(
                sql: """
                    CREATE TABLE webhooks (
                        id TEXT PRIMARY KEY,
                        tenant TEXT NOT NULL,
                        url TEXT NOT NULL,
                        events TEXT NOT NULL,
                        secret TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    );
                    CREATE TABLE deliveries (
                        id INTEGER PRIMARY KEY,
                        webhook_id TEXT NOT NULL,
                        event_id INTEGER NOT NULL,
                        status TEXT NOT NULL DEFAULT 'pending',
                        attempts INTEGER NOT NULL DEFAULT 0,
                        last_status_code INTEGER,
                        last_error TEXT,
                        next_attempt_at INTEGER,
                        delivered_at INTEGER,
                        UNIQUE (webhook_id, event_id)
                    );
                    CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
                    INSERT INTO counters(name, value) VALUES ('delivery_cursor', (SELECT coalesce(max(id), 0) FROM events));
                    """)
        }
        migrator.registerMigration("v4: nodes and leadership") { db in
            try db.execute(
                sql: """
                    CREATE TABLE nodes (
                        id TEXT PRIMARY KEY,
                        role TEXT NOT NULL,
                        host TEXT NOT NULL,
                        pid INTEGER NOT NULL,
                        workers INTEGER NOT NULL,
                        started_at INTEGER NOT NULL,
                        heartbeat_at INTEGER NOT NULL
                    );
                    CREATE TABLE leader (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        node TEXT NOT NULL,
                        expires_at INTEGER NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v5: processing clock, summaries, retention") { db in
            try db.execute(
                sql: """
                    ALTER TABLE batches ADD COLUMN processing_ms INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE batches ADD COLUMN running_since INTEGER;
                    ALTER TABLE batches ADD COLUMN summary TEXT;
                    UPDATE batches SET running_since = coalesce(started_at, confirmed_at, created_at)
                    WHERE status = 'processing';
                    CREATE INDEX batches_by_completion ON batches(completed_at) WHERE completed_at IS NOT NULL;
                    """)
        }
        // Server records (TrancheHTTP): an idempotency record names the batch
        // it created in the same transaction; deliveries keep their last attempt's time for pruning.
        migrator.registerMigration("v6: idempotency records name their batch") { db in
            try db.execute(
                sql: """
                    CREATE TABLE idempotency_v6 (
                        tenant TEXT NOT NULL,
                        key TEXT NOT NULL,
                        fingerprint TEXT NOT NULL,
                        batch_id TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        PRIMARY KEY (tenant, key)
                    ) WITHOUT ROWID;
                    INSERT INTO idempotency_v6(tenant, key, fingerprint, batch_id, created_at)
                    SELECT tenant, key, fingerprint, json_extract(body, '$.id'), created_at FROM idempotency
                    WHERE status IS NOT NULL AND json_valid(body) AND json_extract(body, '$.id') IS NOT NULL;
                    DROP TABLE idempotency;
                    ALTER TABLE idempotency_v6 RENAME TO idempotency;
                    CREATE INDEX idempotency_by_batch ON idempotency(batch_id);
                    ALTER TABLE deliveries ADD COLUMN last_attempt_at INTEGER;
                    UPDATE deliveries
                    SET last_attempt_at = coalesce(delivered_at, (SELECT at FROM events WHERE id = event_id), 0)
                    WHERE status <> 'pending';
                    CREATE INDEX deliveries_ended ON deliveries(last_attempt_at) WHERE status <> 'pending';
                    """)
        }
        // Webhook deliveries are leased to one dispatcher at a time, like chunks.
        migrator.registerMigration("v7: delivery leases") { db in
            try db.execute(
                sql: """
                    ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
                    ALTER TABLE deliveries ADD COLUMN lease_expires_at INTEGER;
                    """)
        }
        // Admin keys (`/metrics`, `/v1/nodes`) and the secret that signs stream tokens.
        migrator.registerMigration("v8: admin keys") { db in
            try db.execute(
                sql: """
                    ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
                    CREATE TABLE server_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                    """)
        }
        // Tenants' weights and quotas; the claim sums each owner's open batches.
        migrator.registerMigration("v9: tenants") { db in
            try db.execute(
                sql: """
                    CREATE TABLE tenants (
                        name TEXT PRIMARY KEY,
                        weight_millis INTEGER NOT NULL DEFAULT 1000,
                        max_running INTEGER,
                        max_queued INTEGER,
                        max_open_batches INTEGER,
                        updated_at INTEGER NOT NULL
                    ) WITHOUT ROWID;
                    CREATE INDEX batches_by_owner ON batches(owner, status);
                    """)
        }
        // Linked batches: a child's parent (resubmit, chain) and a batch's
        // `then`, marked with the successor it started (once).
        migrator.registerMigration("v10: linked batches") { db in
            try db.execute(
                sql: """
                    CREATE TABLE batch_links (
                        child_id TEXT PRIMARY KEY,
                        parent_id TEXT NOT NULL,
                        kind TEXT NOT NULL,
                        created_at INTEGER NOT NULL
                    ) WITHOUT ROWID;
                    CREATE INDEX batch_links_by_parent ON batch_links(parent_id, created_at);
                    CREATE TABLE batch_successors (
                        batch_id TEXT PRIMARY KEY,
                        type TEXT NOT NULL,
                        context TEXT NOT NULL,
                        options TEXT NOT NULL,
                        successor_id TEXT
                    ) WITHOUT ROWID;
                    """)
        }
        // Schedules (`POST /v1/schedules`), the batches they created, and
        // each ended batch's finalize step, leased like a chunk.
        migrator.registerMigration("v11: schedules and results") { db in
            try db.execute(
                sql: """
                    CREATE TABLE schedules (
                        id TEXT PRIMARY KEY,
                        tenant TEXT NOT NULL,
                        batch TEXT NOT NULL,
                        cron TEXT,
                        time_zone TEXT NOT NULL,
                        every_ms INTEGER,
                        catch_up TEXT NOT NULL,
                        overlap INTEGER NOT NULL,
                        paused INTEGER NOT NULL DEFAULT 0,
                        next_run_at INTEGER,
                        last_run_at INTEGER,
                        last_batch_id TEXT,
                        runs INTEGER NOT NULL DEFAULT 0,
                        skipped INTEGER NOT NULL DEFAULT 0,
                        created_at INTEGER NOT NULL
                    ) WITHOUT ROWID;
                    CREATE INDEX schedules_due ON schedules(next_run_at) WHERE paused = 0;
                    CREATE INDEX schedules_by_tenant ON schedules(tenant, created_at);
                    CREATE TABLE schedule_runs (
                        batch_id TEXT PRIMARY KEY,
                        schedule_id TEXT NOT NULL
                    ) WITHOUT ROWID;
                    CREATE TABLE finalizations (
                        batch_key INTEGER PRIMARY KEY,
                        type TEXT NOT NULL,
                        state TEXT NOT NULL DEFAULT 'pending',
                        attempts INTEGER NOT NULL DEFAULT 0,
                        lease_owner TEXT,
                        lease_expires_at INTEGER,
                        queued_at INTEGER NOT NULL,
                        finished_at INTEGER
                    );
                    CREATE INDEX finalizations_to_claim ON finalizations(type, state, lease_expires_at);
                    INSERT INTO counters(name, value) VALUES ('finalize_cursor', (SELECT coalesce(max(id), 0) FROM events));
                    """)
        }
        // Limits that hold across nodes: shared token buckets, concurrency
        // slots per node, and the pace an adaptive batch or host has learned.
        migrator.registerMigration("v12: cluster limits") { db in
            try db.execute(
                sql: """
                    CREATE TABLE rate_grants (
                        key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated_at INTEGER NOT NULL
                    ) WITHOUT ROWID;
                    CREATE TABLE limit_slots (
                        key TEXT NOT NULL, node TEXT NOT NULL, held INTEGER NOT NULL, expires_at INTEGER NOT NULL,
                        PRIMARY KEY (key, node)
                    ) WITHOUT ROWID;
                    CREATE INDEX limit_slots_by_node ON limit_slots(node);
                    CREATE TABLE pace (
                        key TEXT PRIMARY KEY, rate REAL NOT NULL, reason TEXT NOT NULL, changed_at INTEGER NOT NULL,
                        throttled INTEGER NOT NULL DEFAULT 0, paused_until INTEGER
                    ) WITHOUT ROWID;
                    """)
        }
        // Progress samples the leader takes about once a second per batch in
        // progress: rate and ETA are read from here, the same on every node.
        migrator.registerMigration("v13: progress samples") { db in
            try db.execute(
                sql: """
                    CREATE TABLE progress_samples (
                        batch_key INTEGER NOT NULL, at INTEGER NOT NULL, done INTEGER NOT NULL,
                        PRIMARY KEY (batch_key, at)
                    ) WITHOUT ROWID;
                    CREATE INDEX progress_samples_by_time ON progress_samples(at);
                    """)
        }
        // Strategy `prepare` hooks: the types that have one, and each of
        // their batches' prepare step, leased like a chunk.
        migrator.registerMigration("v14: preparations") { db in
            try db.execute(
                sql: """
                    CREATE TABLE prepare_types (type TEXT PRIMARY KEY) WITHOUT ROWID;
                    CREATE TABLE preparations (
                        batch_key INTEGER PRIMARY KEY,
                        type TEXT NOT NULL,
                        state TEXT NOT NULL DEFAULT 'pending',
                        attempts INTEGER NOT NULL DEFAULT 0,
                        lease_owner TEXT,
                        lease_expires_at INTEGER,
                        preview TEXT,
                        queued_at INTEGER NOT NULL,
                        finished_at INTEGER
                    );
                    CREATE INDEX preparations_to_claim ON preparations(type, state, lease_expires_at);
                    """)
        }
        // A pace learned once for the cluster: when it was last cut, and
        // whether its rate is still the first cut's sum of nodes' shares.
        migrator.registerMigration("v17: cluster pace") { db in
            try db.execute(
                sql: """
                    ALTER TABLE pace ADD COLUMN cut_at INTEGER;
                    ALTER TABLE pace ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
                    """)
        }
        // Pruned batches by when they ended: the sweep that forgets them
        // read every batch row.
        migrator.registerMigration("v18: pruned batches by completion") { db in
            try db.execute(
                sql: "CREATE INDEX batches_pruned_by_completion ON batches(completed_at) WHERE pruned = 1")
        }
        return migrator
    }
}
