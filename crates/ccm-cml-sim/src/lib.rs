//! A fleet of simulated CML 2.9 controllers, each on its own loopback address, with fault
//! injection per worker and per endpoint. Used by `ccm sim`, `ccm demo`, the tests and the
//! benchmarks, so that ccm can be built and measured on one machine against workers that
//! behave like real ones, sick ones included.
//!
//! # Brief overview
//!
//! - [`SimFleet`] starts N workers in this process (`SimFleet::start(CmlSimConfig)`), gives their
//!   base URLs ([`SimFleet::endpoints`]) and a cheap handle per worker ([`SimWorker`]), and
//!   shuts them down cleanly. Good for up to a few thousand workers.
//! - [`SimWorker`] sets faults, powers the worker off and on (with a boot delay), expires
//!   tokens, reads request counters, and acts as a non-admin CML user (login, import and
//!   start labs) so that idle detection has real activity to see.
//! - [`WorkerFaults`] and [`FaultSpec`] are faults as data; [`faults`] documents the
//!   `--faults` grammar (worker selectors `*`, `3`, `10-20`, `30%`; endpoint selectors; rates)
//!   and the `demo` preset.
//! - [`cli`] is `ccm sim` ([`cli::SimArgs`], [`cli::run`]); above `--shard-size` workers it
//!   starts itself again as child processes (the open-file limit) with the [`SimLauncher`] its
//!   host binary gives it, and forwards the control API.
//! - [`control`] documents the control API (JSON over HTTP).
//!
//! What each worker models (see `shared/cml/CML_API.md` §7): users and HS256 JWTs with a
//! configurable lifetime, the 401/403 rules, the lab and node state machine on a clock,
//! the licensing state machine, `system_stats` derived from running nodes, the telemetry
//! event log, `{code, description}` error bodies, 400 for bad input and 413 over nginx's
//! size limits. Every clock (node boot, licence delay, token expiry, boot after power-on)
//! is `tokio::time`, so tests can run under paused time.
//!
//! # Design
//!
//! One axum `Router` serves every worker; the accept loop of each worker's listener knows
//! which worker a connection belongs to and puts it in the request extensions. Per-worker
//! state is created on first use and advanced lazily on access: no task or timer runs per
//! worker besides its accept loop, which is what lets 10,000 idle workers fit in little
//! memory.
//!
//! # What it is not
//!
//! Not a CML emulator beyond the endpoints ccm uses: no node consoles, no topology editing,
//! no groups or resource pools. It is not a client either (that is `ccm-cml`).
#![warn(missing_docs)]

mod activity;
mod api;
pub mod cli;
mod clock;
mod cml_error;
mod config;
pub mod control;
mod endpoint;
mod error;
pub mod faults;
mod fleet;
mod launcher;
mod server;
mod shard;
mod signal;
mod state;
mod tls;
mod worker;

pub use config::{ActivityConfig, CmlSimConfig, HostResources, NodeTiming, Password};
pub use control::{Action, WorkerReport};
pub use endpoint::{Endpoint, UnknownEndpoint};
pub use error::SimError;
pub use faults::{
    EndpointFaults, ErrorFault, FaultSpec, FaultSpecError, Latency, RedirectFault, WorkerFaults,
    WorkerSelector,
};
pub use fleet::SimFleet;
pub use launcher::SimLauncher;
pub use worker::{
    CounterSnapshot, DEFAULT_DOUBLE_POLL_WINDOW, DoublePoll, NO_AGENT, OTHER_AGENT, SimWorker,
};

/// The id of the built-in admin user on every simulated controller.
pub const ADMIN_USER_ID: uuid::Uuid = state::ADMIN_ID;
/// The id of the simulated non-admin user (`student`/`student`) on every simulated controller.
pub const STUDENT_USER_ID: uuid::Uuid = state::STUDENT_ID;
/// A small two-node topology (YAML), handy for tests and demos.
pub const SAMPLE_LAB_YAML: &str = activity::DEMO_LAB;
