-- Browser sessions of the API, so that they survive a restart. `key` is the SHA-256 of the
-- session id (hex): the database never holds a usable id. `doc` is the API's JSON.
CREATE TABLE sessions (
    key           TEXT PRIMARY KEY,
    doc           TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at_ms);
