package import LibPQ

/// The versioned schema (docs/record.md, "Schema"), applied in order, each in its own transaction,
/// under an advisory lock so two orchestrators starting together do not race. Never edit a
/// migration that has shipped: add a new one.
package enum Migrations {
    package struct Migration: Sendable {
        package let version: Int
        package let name: String
        package let sql: String
    }

    package static let all: [Migration] = [
        Migration(
            version: 1, name: "alerts, decisions, invocations",
            sql: """
                CREATE TABLE alerts (
                    alert_id   uuid PRIMARY KEY,
                    tag        text NOT NULL,
                    topic      text NOT NULL,
                    kind       text NOT NULL,
                    severity   text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
                    state      text NOT NULL CHECK (state IN ('raised', 'cleared')),
                    ts         timestamptz NOT NULL,
                    raised_at  timestamptz NOT NULL,
                    cleared_at timestamptz,
                    acked_at   timestamptz,
                    value      double precision,
                    score      double precision,
                    message    text NOT NULL DEFAULT '',
                    cleared_value double precision,
                    cleared_message text
                );
                CREATE INDEX alerts_raised_at_idx ON alerts USING brin (raised_at);
                CREATE INDEX alerts_tag_raised_at_idx ON alerts (tag, raised_at DESC);
                CREATE INDEX alerts_open_idx ON alerts (raised_at) WHERE state = 'raised';

                CREATE TABLE decisions (
                    decision_id uuid PRIMARY KEY,
                    ts          timestamptz NOT NULL,
                    module      text,
                    action      text NOT NULL CHECK (action IN ('invoke', 'skip', 'defer')),
                    source      text NOT NULL CHECK (source IN ('rules', 'llm', 'api', 'schedule')),
                    trigger     jsonb NOT NULL DEFAULT '{}',
                    reasons     jsonb NOT NULL DEFAULT '[]',
                    confidence  double precision,
                    latency_us  bigint
                );
                CREATE INDEX decisions_ts_idx ON decisions (ts DESC);

                CREATE TABLE invocations (
                    invocation_id uuid PRIMARY KEY,
                    decision_id   uuid REFERENCES decisions (decision_id),
                    module        text NOT NULL,
                    params        jsonb NOT NULL DEFAULT '{}',
                    published_at  timestamptz,
                    completed_at  timestamptz,
                    status        text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'ok', 'error', 'timeout', 'expired')),
                    attempts      integer NOT NULL DEFAULT 0,
                    result        jsonb
                );
                CREATE INDEX invocations_decision_idx ON invocations (decision_id);
                CREATE INDEX invocations_published_at_idx ON invocations (published_at DESC);
                """),
        Migration(
            version: 2, name: "tag_state, outcomes, sessions, llm_exchanges",
            sql: """
                CREATE TABLE tag_state (
                    tag           text PRIMARY KEY,
                    ts            timestamptz NOT NULL,
                    value         double precision,
                    quality       text NOT NULL CHECK (quality IN ('good', 'uncertain', 'bad')),
                    samples       bigint NOT NULL,
                    ewma_mean     double precision,
                    ewma_variance double precision,
                    updated_at    timestamptz NOT NULL DEFAULT now()
                );

                CREATE TABLE outcomes (
                    trigger_kind   text NOT NULL,
                    module         text NOT NULL,
                    invocations    bigint NOT NULL DEFAULT 0,
                    successes      bigint NOT NULL DEFAULT 0,
                    benefit_sum    double precision NOT NULL DEFAULT 0,
                    benefit_sq_sum double precision NOT NULL DEFAULT 0,
                    updated_at     timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (trigger_kind, module)
                );

                CREATE TABLE sessions (
                    session_id uuid PRIMARY KEY,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    title      text
                );

                CREATE TABLE llm_exchanges (
                    exchange_id uuid PRIMARY KEY,
                    session_id  uuid REFERENCES sessions (session_id),
                    decision_id uuid REFERENCES decisions (decision_id),
                    ts          timestamptz NOT NULL,
                    provider    text NOT NULL,
                    model       text NOT NULL,
                    request     jsonb NOT NULL,
                    response    jsonb,
                    reasoning   text,
                    status      text NOT NULL,
                    latency_ms  integer,
                    error       text
                );
                CREATE INDEX llm_exchanges_ts_idx ON llm_exchanges (ts DESC);
                CREATE INDEX llm_exchanges_session_idx ON llm_exchanges (session_id, ts);
                CREATE INDEX decisions_module_ts_idx ON decisions (module, ts DESC);
                """),
        Migration(
            version: 3, name: "invocation scope and trigger kind, approvals",
            sql: """
                ALTER TABLE invocations ADD COLUMN trigger_kind text;
                ALTER TABLE invocations ADD COLUMN scope text;
                CREATE INDEX invocations_pending_idx ON invocations (module) WHERE status = 'pending';

                CREATE TABLE approvals (
                    decision_id uuid PRIMARY KEY REFERENCES decisions (decision_id) ON DELETE CASCADE,
                    state       text NOT NULL CHECK (state IN ('approved', 'rejected', 'expired')),
                    by_whom     text,
                    via         text NOT NULL CHECK (via IN ('mqtt', 'http', 'timer')),
                    at          timestamptz NOT NULL
                );
                """),
        Migration(
            version: 4, name: "alarm management, LLM sessions",
            sql: """
                ALTER TABLE alerts ADD COLUMN acked_by text;
                ALTER TABLE alerts ADD COLUMN shelved_until timestamptz;
                ALTER TABLE alerts ADD COLUMN shelved_by text;
                ALTER TABLE llm_exchanges ADD COLUMN question text;
                ALTER TABLE llm_exchanges ADD COLUMN answer text;
                """),
        Migration(
            version: 5, name: "chained decisions",
            sql: """
                ALTER TABLE decisions ADD COLUMN parent_decision_id uuid;
                CREATE INDEX decisions_parent_idx ON decisions (parent_decision_id) WHERE parent_decision_id IS NOT NULL;
                """),
        Migration(
            version: 6, name: "the alarm lifecycle: shelve reasons and unshelving",
            sql: """
                ALTER TABLE alerts ADD COLUMN shelve_reason text;
                ALTER TABLE alerts ADD COLUMN unshelved_at timestamptz;
                ALTER TABLE alerts ADD COLUMN unshelved_by text;
                ALTER TABLE alerts ADD COLUMN unshelve_reason text;
                """),
        Migration(
            version: 7, name: "suppressed alarms and tags out of service",
            sql: """
                ALTER TABLE alerts ADD COLUMN suppressed text CHECK (suppressed IN ('by_design', 'out_of_service'));
                CREATE TABLE out_of_service (
                    tag     text PRIMARY KEY,
                    since   timestamptz NOT NULL,
                    by_whom text,
                    reason  text
                );
                """),
        Migration(
            version: 8, name: "instances and the active lease",
            sql: """
                ALTER TABLE decisions ADD COLUMN instance text;
                ALTER TABLE invocations ADD COLUMN instance text;
                CREATE TABLE leases (
                    name       text PRIMARY KEY,
                    holder     text NOT NULL,
                    epoch      bigint NOT NULL,
                    expires_at timestamptz NOT NULL,
                    renewed_at timestamptz NOT NULL DEFAULT now()
                );
                """),
    ]

    /// The newest schema version this build knows.
    package static var latestVersion: Int { all.last?.version ?? 0 }

    /// What ``apply(on:)`` did.
    package struct Report: Sendable, Equatable {
        package var applied: [Int]
        package var current: Int
    }

    /// Applies every migration not yet recorded in `schema_migrations`. Idempotent. Refuses to run
    /// against a schema newer than this build (a newer orchestrator has migrated the database).
    @discardableResult
    package static func apply(on connection: PostgresConnection) throws -> Report {
        try connection.withTransaction { connection in
            // Serialise concurrent migrators (released at COMMIT), before anything else.
            try connection.query("SELECT pg_advisory_xact_lock($1)", [Int64(0x6461_6e67)])
            try connection.query(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer PRIMARY KEY,
                    name       text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """)
            let rows = try connection.query("SELECT coalesce(max(version), 0) FROM schema_migrations")
            let current = Int(rows.rows.first?.first.flatMap { $0 } ?? "0") ?? 0
            if current > Self.latestVersion {
                throw MigrationError(
                    message: "the database schema is at version \(current), newer than this build knows "
                        + "(\(Self.latestVersion)); upgrade dang instead of running an older one against it")
            }
            var applied: [Int] = []
            for migration in Self.all where migration.version > current {
                try connection.execute(script: migration.sql)
                try connection.query(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [migration.version, migration.name])
                applied.append(migration.version)
            }
            return Report(applied: applied, current: max(current, applied.last ?? current))
        }
    }
}

/// A migration that cannot run.
package struct MigrationError: Error, CustomStringConvertible, Sendable {
    package let message: String
    package var description: String { self.message }
}
