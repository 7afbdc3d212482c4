//! The replica registry and the leases of several `ccm serve` replicas on one database
//! ([`ClusterRepo`], implemented by [`crate::PgStore`]).
//!
//! Every time here is judged by the **database's clock** (`now()` on the server), never by a
//! replica's: a heartbeat is "now" when the server says so, a lease expires when the server's
//! clock passes its `expires_at`. Replicas with skewed clocks therefore agree on who is live
//! and which lease is free.
//!
//! A lease row is never deleted: its `fence` only grows (every acquisition adds one), so a
//! token names one holding forever, and a write carrying an older token can always be refused
//! ([`crate::Fence`]).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;

/// What a replica says about itself when it beats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
    /// Its id (unique per process).
    pub id: String,
    /// Where its API listens (as configured).
    pub address: String,
    /// Its ccm version.
    pub version: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// A replica as registered, with the age of its last heartbeat by the database's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    /// What it said about itself.
    pub record: ReplicaRecord,
    /// Time since its last heartbeat, by the database's clock.
    pub heartbeat_age: Duration,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Its key (`part:0042`, `job:ec2_sync:eu-west-1`, …).
    pub key: String,
    /// The replica holding it (empty once released).
    pub holder: String,
    /// Its fencing token.
    pub fence: u64,
    /// Time left until it expires, by the database's clock (zero when expired).
    pub remaining: Duration,
}

/// A lease just acquired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    /// Its key.
    pub key: String,
    /// The new fencing token.
    pub fence: u64,
    /// The holder before (empty: never held or released; otherwise it expired under them —
    /// a takeover).
    pub previous_holder: String,
}

/// The replica registry and leases (several replicas on one database).
#[async_trait]
pub trait ClusterRepo: Send + Sync {
    /// Registers this replica or refreshes its row; its heartbeat becomes the database's
    /// `now()`.
    async fn heartbeat(&self, me: &ReplicaRecord) -> Result<()>;
    /// Every registered replica, with its heartbeat age (the caller decides who is live).
    async fn replicas(&self) -> Result<Vec<ReplicaRow>>;
    /// Removes a replica's row (clean shutdown) and the rows of replicas silent for longer
    /// than `forget_after`.
    async fn forget(&self, id: &str, forget_after: Duration) -> Result<()>;
    /// Takes each of `keys` that is free or expired, for `ttl`, each with its fence raised by
    /// one. Returns the ones taken (the rest are held by someone).
    async fn acquire(&self, holder: &str, keys: &[String], ttl: Duration) -> Result<Vec<Acquired>>;
    /// Extends the leases `holder` still holds under these tokens and that have not expired,
    /// to `ttl` from now. Returns the ones extended; any other is lost.
    async fn renew(
        &self,
        holder: &str,
        held: &[(String, u64)],
        ttl: Duration,
    ) -> Result<Vec<String>>;
    /// Gives up leases (they expire now, and the holder is cleared) if still held under these
    /// tokens. Returns how many.
    async fn release(&self, holder: &str, held: &[(String, u64)]) -> Result<u64>;
    /// Every unexpired lease.
    async fn leases(&self) -> Result<Vec<LeaseRecord>>;
    /// A dedicated connection listening on `channels` (e.g. [`crate::EVENTS_CHANNEL`],
    /// [`crate::SESSIONS_CHANNEL`]). Notifications are hints: some may be lost while it
    /// reconnects, so readers also look at the tables themselves now and then.
    async fn listen(&self, channels: &[&str]) -> Result<Box<dyn Notifications>>;
}

/// Notifications from other replicas (PostgreSQL `LISTEN`).
#[async_trait]
pub trait Notifications: Send {
    /// The next notification: (channel, payload). `Err`: the connection is gone for good
    /// (listen again).
    async fn recv(&mut self) -> Result<(String, String)>;
}
