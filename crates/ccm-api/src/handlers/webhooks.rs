//! `GET /api/v1/system/webhooks`: the delivery state of every configured webhook.
//!
//! Viewer: like the rest of `/system`, it shows how ccm is doing, and it holds nothing secret —
//! never a webhook's secret, and of its URL only the origin (a path or query may carry a
//! token, as Slack's and Teams' URLs do).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::ApiState;

/// Every configured webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    /// In configuration order.
    pub items: Vec<WebhookView>,
}

/// One webhook's delivery state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// Its name (`[[webhooks]] name`).
    pub name: String,
    /// The URL's origin only (`https://hooks.example.com`).
    pub url: String,
    /// The event types or patterns it gets.
    pub events: Vec<String>,
    /// `starting`, `idle`, `delivering`, `failing` (an event keeps failing; later ones wait),
    /// `standby` (another replica delivers), `stopped`.
    pub state: String,
    /// The last event-log position handled.
    pub cursor: Option<u64>,
    /// The newest event-log position seen.
    pub head: Option<u64>,
    /// Positions between cursor and head (an upper bound of what is pending).
    pub lag: u64,
    /// Events delivered since ccm started.
    pub delivered: u64,
    /// Failed attempts since ccm started.
    pub failed_attempts: u64,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
    /// When an event was last delivered.
    pub last_delivered_at: Option<DateTime<Utc>>,
    /// When an attempt last failed.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// The receiver's last failure.
    pub last_error: Option<String>,
    /// The event it is stuck on while failing.
    pub blocked_on: Option<BlockedEventView>,
    /// When the next attempt is due while failing.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Its URL's circuit breaker: `closed`, `open`, `half_open`.
    pub breaker: String,
}

/// The event a failing webhook waits on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlockedEventView {
    /// Its event-log position.
    pub seq: u64,
    /// Its CloudEvents id.
    pub id: String,
    /// Its type.
    pub r#type: String,
    /// Attempts so far.
    pub attempts: u32,
}

impl From<ccm_webhooks::WebhookStatus> for WebhookView {
    fn from(s: ccm_webhooks::WebhookStatus) -> Self {
        let state = serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Self {
            name: s.name,
            url: s.url,
            events: s.events,
            state,
            cursor: s.cursor,
            head: s.head,
            lag: s.lag,
            delivered: s.delivered,
            failed_attempts: s.failed_attempts,
            consecutive_failures: s.consecutive_failures,
            last_delivered_at: s.last_delivered_at,
            last_failure_at: s.last_failure_at,
            last_error: s.last_error,
            blocked_on: s.blocked_on.map(|b| BlockedEventView {
                seq: b.seq,
                id: b.id,
                r#type: b.r#type,
                attempts: b.attempts,
            }),
            next_attempt_at: s.next_attempt_at,
            breaker: s.breaker,
        }
    }
}

/// Webhook deliveries: state, cursor, lag, failures (viewer; never the secret, only the URL's
/// origin). Empty when no `[[webhooks]]` are configured.
#[utoipa::path(
    get, path = "/api/v1/system/webhooks", tag = "system",
    responses((status = 200, body = WebhookList))
)]
pub(crate) async fn list(State(state): State<ApiState>) -> Json<WebhookList> {
    let items = state
        .webhooks()
        .map(|w| w.statuses().into_iter().map(WebhookView::from).collect())
        .unwrap_or_default();
    Json(WebhookList { items })
}
