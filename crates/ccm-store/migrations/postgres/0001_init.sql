-- ccm schema, PostgreSQL flavour: the same tables and columns as the SQLite one (times as
-- BIGINT epoch milliseconds, TEXT ids), so both backends run the same queries.
--
-- * Text columns use the "C" collation: sorting by name is bytewise, as in SQLite, whatever
--   locale the server was initialised with.
-- * Documents are TEXT, not JSONB: they are rewritten on every poll and never queried inside,
--   and JSONB would cost a parse per write (and reorder keys).
-- * events.seq is a BIGSERIAL; appends commit in sequence order because every append takes
--   one transaction-scoped advisory lock (see EVENT_APPEND_LOCK in src/postgres.rs).

CREATE TABLE workers (
    id             TEXT COLLATE "C" PRIMARY KEY,
    instance_id    TEXT COLLATE "C" UNIQUE,        -- NULL while provisioning; one worker per instance
    name           TEXT COLLATE "C" NOT NULL,
    region         TEXT COLLATE "C" NOT NULL,
    ec2_state      TEXT COLLATE "C" NOT NULL,
    service_status TEXT COLLATE "C" NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    version        BIGINT NOT NULL,                -- optimistic concurrency
    doc            TEXT NOT NULL                   -- the Worker aggregate as JSON (schema_version inside)
);
CREATE INDEX workers_region ON workers (region);
CREATE INDEX workers_ec2_state ON workers (ec2_state);
CREATE INDEX workers_service_status ON workers (service_status);
CREATE INDEX workers_name ON workers (name);

CREATE TABLE labs (
    worker_id      TEXT COLLATE "C" NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    lab_id         TEXT COLLATE "C" NOT NULL,
    title          TEXT COLLATE "C" NOT NULL,
    state          TEXT COLLATE "C" NOT NULL,
    observed_at_ms BIGINT NOT NULL,
    doc            TEXT NOT NULL,
    PRIMARY KEY (worker_id, lab_id)                -- one record per (worker, lab)
);

CREATE TABLE settings (
    key           TEXT COLLATE "C" PRIMARY KEY,
    value         TEXT NOT NULL,                   -- JSON, schema_version inside
    version       BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    updated_by    TEXT NOT NULL
);

CREATE TABLE events (
    seq        BIGSERIAL PRIMARY KEY,              -- the SSE Last-Event-ID
    id         TEXT COLLATE "C" NOT NULL UNIQUE,
    time_ms    BIGINT NOT NULL,
    type       TEXT COLLATE "C" NOT NULL,
    subject    TEXT COLLATE "C",
    body       TEXT NOT NULL                       -- the CloudEvent as JSON
);
CREATE INDEX events_subject ON events (subject, seq);
CREATE INDEX events_time ON events (time_ms);
CREATE INDEX events_type ON events (type, seq);

CREATE TABLE metrics (
    worker_id   TEXT COLLATE "C" NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    bucket_ms   BIGINT NOT NULL,                   -- start of the bucket
    samples     BIGINT NOT NULL,
    cpu_sum     DOUBLE PRECISION NOT NULL DEFAULT 0,
    cpu_n       BIGINT NOT NULL DEFAULT 0,
    mem_sum     DOUBLE PRECISION NOT NULL DEFAULT 0,
    mem_n       BIGINT NOT NULL DEFAULT 0,
    cml_cpu_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
    cml_cpu_n   BIGINT NOT NULL DEFAULT 0,
    cml_mem_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
    cml_mem_n   BIGINT NOT NULL DEFAULT 0,
    nodes_max   BIGINT,
    PRIMARY KEY (worker_id, bucket_ms)
);
CREATE INDEX metrics_bucket ON metrics (bucket_ms);

-- Browser sessions of the API. `key` is the SHA-256 of the session id (hex): the database
-- never holds a usable id. `doc` is the API's JSON (schema_version inside).
CREATE TABLE sessions (
    key           TEXT COLLATE "C" PRIMARY KEY,
    doc           TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at_ms);
