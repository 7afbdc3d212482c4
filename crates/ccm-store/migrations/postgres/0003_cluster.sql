-- Several `ccm serve` replicas on one database: who is there, and who holds what.
-- Times here are the database's own (timestamptz from now()), never a replica's clock.

-- One row per replica process, refreshed every renew interval. Live = heartbeat within the
-- lease TTL, judged by the database's clock.
CREATE TABLE replicas (
    id            TEXT COLLATE "C" PRIMARY KEY,
    address       TEXT NOT NULL,
    version       TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    heartbeat_at  TIMESTAMPTZ NOT NULL
);

-- Leases: worker partitions (`part:0042`) and fleet jobs (`job:ec2_sync:eu-west-1`).
-- A row is never deleted, so `fence` only grows: every acquisition adds one, and a write
-- carrying an older fence is refused in its own transaction (fencing).
CREATE TABLE leases (
    key        TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT COLLATE "C" NOT NULL,          -- '' once released
    fence      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX leases_holder ON leases (holder);
