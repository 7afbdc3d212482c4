//! Outbound events: every matching CloudEvent of ccm's event log is POSTed to the configured
//! webhooks (`[[webhooks]]`), signed, at least once, in order, resuming after a restart.
//!
//! Newcomers start with [`Webhooks::start`]: given the running engine and the validated
//! [`WebhookConfig`]s, it spawns one delivery loop per webhook under the engine's supervisor
//! (`webhook:<name>`) and returns a handle whose [`Webhooks::statuses`] the API shows at
//! `GET /api/v1/system/webhooks`.
//!
//! # Delivery
//!
//! - **From the event log**, not from the live bus: each webhook has a cursor (a log position)
//!   stored in the database ([`ccm_store::CursorRepo`], `webhook:<name>`); a loop reads the
//!   matching events after it in batches, delivers them one by one, and moves the cursor. The
//!   bus only wakes the loop. A restart resumes at the stored cursor; a new webhook starts at
//!   the log's end (no history flood). Transient event types are never in the log, so a filter
//!   naming only transient types is refused.
//! - **At least once**: an event counts as delivered when the receiver answers 2xx. The cursor
//!   is stored after each batch and before every wait for a retry, so a crash re-sends at most
//!   the unacknowledged part of one batch. Receivers de-duplicate by the CloudEvent `id`.
//! - **In order, per webhook**: a failing event blocks every later event of that webhook
//!   (so, a fortiori, per worker), and is retried until the receiver accepts it — nothing is
//!   skipped. Other webhooks are not affected (one loop each).
//! - **Retries** use `ccm-resilience`: a per-attempt timeout, full-jitter exponential backoff
//!   ([`ccm_resilience::Backoff`], `retry_base` doubling up to `retry_max`, at least the
//!   receiver's `Retry-After`), and a circuit breaker per webhook URL in the shared registry
//!   (key `webhook:<origin>#<hash of the URL>`, so no path or query — which may hold a token
//!   — shows in breaker views or events).
//! - **One replica delivers**: each batch runs under a grant of [`ccm_engine::JobKind::Webhooks`]
//!   from the engine's [`ccm_engine::Ownership`]; without one the loop stands by, and it stops
//!   moving the cursor as soon as the grant is no longer held. Cursors only move forward, so a
//!   stale holder can cause a re-delivery, never a loss.
//! - **Never blocking the engine**: the loops read the store and their own HTTP clients; the
//!   bus subscription only wakes them (a lagging one just wakes).
//!
//! # The request (CloudEvents HTTP binding, structured mode)
//!
//! `POST <url>` with `Content-Type: application/cloudevents+json; charset=utf-8`, the event as
//! JSON in the body (exactly the envelope of `GET /api/v1/events`), and:
//!
//! | header | value |
//! |---|---|
//! | `X-Ccm-Signature-256` | `sha256=<hex HMAC-SHA256 of the raw body, keyed with the webhook's secret>` |
//! | `X-Ccm-Delivery` | a new UUID per attempt (to correlate with ccm's logs) |
//! | `X-Ccm-Webhook` | the webhook's name |
//! | `User-Agent` | `ccm/<version>` |
//!
//! Verify by computing the HMAC over the bytes received (before any JSON parsing) and
//! comparing in constant time ([`signature::verify`]); e.g. in a shell:
//! `printf %s "$BODY" | openssl dgst -sha256 -hmac "$SECRET"`.
//!
//! # Safety of the target
//!
//! URLs must be `http` or `https` without credentials; link-local addresses (169.254.0.0/16
//! with the cloud metadata service, fe80::/10, fd00:ec2::254), unspecified, broadcast and
//! multicast addresses are refused — in the URL and in what its host name resolves to at
//! every connection (a custom resolver, so DNS rebinding cannot reach them) — unless the
//! webhook sets `allow_link_local`. Redirects are never followed; proxies from the
//! environment are not used.
//!
//! Not here: the event catalogue (`ccm-domain`), the HTTP API (`ccm-api`).
#![warn(missing_docs)]

mod config;
mod delivery;
mod error;
pub mod metrics;
mod net;
pub mod signature;
mod status;

pub use config::{ConfigError, EventFilter, WebhookConfig, validate_all};
pub use delivery::Webhooks;
pub use error::{DeliveryError, StartError};
pub use status::{BlockedEvent, DeliveryState, WebhookStatus};
