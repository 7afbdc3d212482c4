//! What `GET /api/v1/system/webhooks` shows of each webhook (never its secret, nor the URL's
//! path or query).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a webhook's loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Loading its cursor.
    Starting,
    /// Caught up, waiting for events.
    Idle,
    /// Sending events.
    Delivering,
    /// An event keeps failing; later events wait behind it.
    Failing,
    /// Another replica holds the delivery lease.
    Standby,
    /// Stopped (shutdown).
    Stopped,
}

/// The event a failing webhook is stuck on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedEvent {
    /// Its position in the log.
    pub seq: u64,
    /// Its CloudEvents `id`.
    pub id: String,
    /// Its type.
    pub r#type: String,
    /// Attempts made so far.
    pub attempts: u32,
}

/// One webhook's delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStatus {
    /// Its name.
    pub name: String,
    /// The URL's origin only (its path or query may hold a token).
    pub url: String,
    /// The event patterns it gets.
    pub events: Vec<String>,
    /// What its loop is doing.
    pub state: DeliveryState,
    /// The last log position delivered (or skipped as not matching).
    pub cursor: Option<u64>,
    /// The newest log position seen.
    pub head: Option<u64>,
    /// Log positions between the cursor and the head (an upper bound of what is pending).
    pub lag: u64,
    /// Events delivered since start.
    pub delivered: u64,
    /// Failed attempts since start.
    pub failed_attempts: u64,
    /// Failed attempts in a row (0 once one succeeds).
    pub consecutive_failures: u32,
    /// When an event was last delivered.
    pub last_delivered_at: Option<DateTime<Utc>>,
    /// When an attempt last failed.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// The receiver's last failure (`HTTP 500: …`, `transport: …`); attempts refused by the
    /// open breaker keep it (see `breaker`).
    pub last_error: Option<String>,
    /// The event it is stuck on, while failing.
    pub blocked_on: Option<BlockedEvent>,
    /// When the next attempt is due, while failing.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The state of its URL's circuit breaker (`closed`, `open`, `half_open`).
    pub breaker: String,
}
