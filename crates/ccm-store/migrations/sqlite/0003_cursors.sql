-- Positions of consumers of the event log (webhook deliveries: `webhook:<name>`), so that a
-- restart resumes where delivery left off. `seq` only ever grows (see `CursorRepo`).
CREATE TABLE cursors (
    name          TEXT PRIMARY KEY,
    seq           BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
