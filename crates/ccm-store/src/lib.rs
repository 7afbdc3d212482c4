//! Persistence: repository traits for workers, lab records, settings, the append-only event
//! log and the bounded metrics history, with an SQLite implementation (sqlx, embedded
//! migrations, WAL). The SQL is written so that a PostgreSQL implementation can follow.
#![warn(missing_docs)]
