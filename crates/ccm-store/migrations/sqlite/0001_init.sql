-- ccm schema, SQLite flavour. Portable SQL: BIGINT epoch milliseconds for times, TEXT ids and
-- JSON documents, ON CONFLICT upserts; a PostgreSQL flavour differs only in DDL (BIGSERIAL,
-- JSONB).

CREATE TABLE workers (
    id             TEXT PRIMARY KEY,
    instance_id    TEXT UNIQUE,          -- NULL while provisioning; one worker per instance
    name           TEXT NOT NULL,
    region         TEXT NOT NULL,
    ec2_state      TEXT NOT NULL,
    service_status TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    version        BIGINT NOT NULL,      -- optimistic concurrency
    doc            TEXT NOT NULL         -- the Worker aggregate as JSON
);
CREATE INDEX workers_region ON workers (region);
CREATE INDEX workers_ec2_state ON workers (ec2_state);
CREATE INDEX workers_service_status ON workers (service_status);
CREATE INDEX workers_name ON workers (name);

CREATE TABLE labs (
    worker_id      TEXT NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    lab_id         TEXT NOT NULL,
    title          TEXT NOT NULL,
    state          TEXT NOT NULL,
    observed_at_ms BIGINT NOT NULL,
    doc            TEXT NOT NULL,
    PRIMARY KEY (worker_id, lab_id)      -- one record per (worker, lab)
);

CREATE TABLE settings (
    key           TEXT PRIMARY KEY,
    value         TEXT NOT NULL,
    version       BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    updated_by    TEXT NOT NULL
);

CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- the SSE Last-Event-ID
    id         TEXT NOT NULL UNIQUE,
    time_ms    BIGINT NOT NULL,
    type       TEXT NOT NULL,
    subject    TEXT,
    body       TEXT NOT NULL                       -- the CloudEvent as JSON
);
CREATE INDEX events_subject ON events (subject, seq);
CREATE INDEX events_time ON events (time_ms);
CREATE INDEX events_type ON events (type, seq);

CREATE TABLE metrics (
    worker_id  TEXT NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    bucket_ms  BIGINT NOT NULL,          -- start of the bucket
    samples    BIGINT NOT NULL,
    cpu_sum    DOUBLE PRECISION NOT NULL DEFAULT 0,
    cpu_n      BIGINT NOT NULL DEFAULT 0,
    mem_sum    DOUBLE PRECISION NOT NULL DEFAULT 0,
    mem_n      BIGINT NOT NULL DEFAULT 0,
    cml_cpu_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
    cml_cpu_n  BIGINT NOT NULL DEFAULT 0,
    cml_mem_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
    cml_mem_n  BIGINT NOT NULL DEFAULT 0,
    nodes_max  BIGINT,
    PRIMARY KEY (worker_id, bucket_ms)
);
CREATE INDEX metrics_bucket ON metrics (bucket_ms);
