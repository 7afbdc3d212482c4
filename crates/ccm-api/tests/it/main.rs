//! Integration tests of the API against the embedded fleet (CML simulator, simulated cloud,
//! real engine, in-memory SQLite). One binary; each module covers one concern.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

/// Fixtures: the fleet, the API, tokens, request helpers.
mod support;

/// The deployment files' metric names against a running ccm's /metrics.
mod deploy;
/// The event schemas of the OpenAPI document against real events.
mod event_schemas;
/// Guardrails (image owners, instance types, the fleet cap, imports below admin) and EC2
/// status checks, through the API.
mod guardrails;
/// Labs and licences.
mod labs;
/// The route × role × no-token matrix, and the OpenAPI document against the routes.
mod matrix;
/// OIDC bearer tokens and the browser sign-in, against a fake provider.
mod oidc;
/// Garbage in never yields 500; secrets never come out.
mod robustness;
/// The listener: slow clients, the connection limit, shutdown, HTTPS.
mod server;
/// Cookie sessions, CSRF, sign-out, the sign-in rate limit.
mod session;
/// The event stream: filters, snapshot, heartbeat, resume, slow clients.
mod sse;
/// System, settings, probes, metrics.
mod system;
/// Rendered worker views kept for reuse: never older than the store.
mod views;
/// Workers: every route, happy paths and errors.
mod workers;
