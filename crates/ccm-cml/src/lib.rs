//! The typed CML 2.9 REST client that the whole fleet shares.
//!
//! # Overview
//!
//! Newcomers start with [`CmlClient`]: built once per process from the `[cml]` section
//! ([`CmlConfig`]) and the process's [`Resilience`](ccm_resilience::Resilience) policies, it
//! calls every CML endpoint ccm uses (authentication, system information/health/stats,
//! licensing, labs, import/download, telemetry) against a [`Target`] — one worker's base URL,
//! [`Credentials`] and [`TlsMode`].
//!
//! - **Transport**: one `reqwest` client (rustls, keep-alive, small pool per host) per distinct
//!   TLS mode, never one per request or per worker; response bodies are capped; redirects
//!   are never followed (a 3xx is [`CmlError::Redirect`]); certificates are checked against
//!   system roots, a CA file or a pinned SHA-256 ([`CertFingerprint`]), and insecure TLS or
//!   plain http is warned about once when the client is built.
//! - **Sessions**: a tiny per-worker session caches the token and ccm's own CML user id
//!   (learnt from `/auth_extended`, see [`CmlClient::own_user_id`]). On 401 the client logs in
//!   once and repeats the request once; concurrent callers of one worker share one login.
//! - **Resilience**: every call runs through `Resilience::call` keyed by the worker's base URL
//!   (timeouts, retries of idempotent calls, budget, breaker, bulkheads); [`CmlError`]
//!   implements [`Classify`](ccm_resilience::Classify) so the policies know what to retry and
//!   what to count.
//! - **Models**: the [`models`] module holds lenient wire types (optional fields are
//!   `Option`, unknown enum values kept, timestamps parsed in every shape CML sends — see
//!   [`timestamp`]), each converting into its `ccm-domain` summary.
//! - **Errors**: [`CmlError`] is typed (connect, timeout, TLS, pinned-certificate mismatch,
//!   redirect, HTTP status with CML's
//!   `{code, description}`, decode with a scrubbed snippet, unauthorized, forbidden, not found,
//!   not supported, and the resilience rejections) and maps to a domain
//!   [`Reason`](ccm_domain::service::Reason) with [`CmlError::reason`]; [`call_outcome`] turns
//!   a result into the sync's `CallOutcome` (a 404 on an optional endpoint is "not
//!   supported", not a failure).
//!
//! Secrets (passwords, tokens, licence tokens) never appear in logs, errors or `Debug`
//! output: they are held in [`Secret`] (ccm's one secret type, from `ccm-domain`) or the
//! private token type, and error snippets and redirect locations are scrubbed.
//!
//! # Not for
//!
//! This crate does not decide anything: it does not poll, schedule, derive statuses, wait for
//! a licence registration to settle or keep history (that is `ccm-engine` and `ccm-domain`),
//! and it implements no retry or breaker logic of its own (that is `ccm-resilience`). It does
//! not serve CML either: the simulator is `ccm-cml-sim`.
#![warn(missing_docs)]

mod client;
mod config;
mod endpoint;
mod error;
mod http;
pub mod models;
mod pin;
mod secret;
mod sessions;
mod target;
pub mod timestamp;

pub use client::{CmlClient, Deregistration};
pub use config::{CmlConfig, CmlConfigError, TlsConfig};
pub use endpoint::Endpoint;
pub use error::{CmlError, call_outcome};
pub use http::{SyncOrder, http_client, sync_order, user_agent};
pub use pin::{CertFingerprint, InvalidFingerprint};
pub use secret::Secret;
pub use target::{Credentials, InvalidBaseUrl, Target, TlsMode};
