//! Integration tests of ccm-cml: decoding CML's documented examples, the `[cml]` config, and
//! the client against the in-process CML simulator (`ccm-cml-sim`) over real loopback HTTP.
//!
//! Simulator tests run in real time with small timeouts and bounded polling loops: a client
//! with pooled keep-alive connections and per-attempt timeouts cannot run under paused tokio
//! time against real sockets (the clock would jump to the next timer while a socket is
//! merely waiting for loopback I/O). Each test binds its own 127.20.N.x base address on port
//! 0, so tests can run in parallel processes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code may panic"
)]

/// Shared fixtures: simulated fleets, clients, resilience configs, polling.
mod support;

/// The `[cml]` config: defaults, TOML, validation naming the key.
mod config;
/// Every JSON example of CML_API.md decodes and converts into the domain types.
mod conformance;
/// Random and truncated bytes never panic a decoder; they give a scrubbed decode error.
mod fuzz;
/// The client against the simulator: every endpoint, re-login, single flight, labs, licences,
/// faults, TLS.
mod sim_client;
/// The resilience wiring against the simulator: blackhole, 401 storm, flapping worker.
mod sim_resilience;
/// What the client trusts: no redirects, pinned certificates, warnings once at start.
mod trust;
