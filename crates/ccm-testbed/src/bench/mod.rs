//! The benchmark harnesses behind `ccm bench` (BENCHMARKS.md): each runs one reproducible
//! measurement and returns a report that serialises to the JSON `ccm bench` prints.
//!
//! - [`sync()`] — full CML sync cycles of a simulated fleet through a real engine: the CML
//!   simulator runs in its own processes (started with the caller's [`SimLauncher`]), the
//!   workers are registered in a temporary SQLite store, and the report gives cycle times,
//!   the requests the simulator received, ccm's peak memory and CPU time, and the statuses;
//!   optionally the Python seed-poller ([`SeedPoller`]) runs on the same fleet.
//! - [`api()`] — the API under load: HTTP clients (worker list and detail) and event-stream
//!   subscribers of the real API, with a viewer token, while a full CML cycle of the same
//!   fleet runs; latencies and errors of each.
//! - [`sse()`] — live events fanned out to many SSE clients of the real API, every event
//!   counted at every client, with its latency.
//! - [`idle::idle()`] — the economics of idle policies: a usage trace of a fleet replayed
//!   over simulated days through the real engine (and baselines), with the idle hours each
//!   policy stopped, its wrongful pauses, users' waits and the money saved.
//!
//! Nothing here parses a command line or prints a report: the binary does (thin glue). The
//! runs write their progress to standard error.
//!
//! [`SimLauncher`]: ccm_cml_sim::SimLauncher

mod api;
mod error;
mod floor;
pub mod idle;
mod peer;
mod procstat;
mod report;
mod sim_process;
mod sse;
mod sync;

pub use api::{
    ApiOptions, ApiReport, DEFAULT_LIST_QUERY, EventStats, RequestStats, RuntimeLayout, StreamKind,
    api,
};
pub use error::BenchError;
pub use peer::{PeerReport, SEED_POLLER_DIR, SeedPoller, locate_seed_poller};
pub use report::{Statuses, Summary};
pub use sim_process::{SimProcess, SimSpec};
pub use sse::{SseOptions, SseReport, sse};
pub use sync::{
    BenchStore, BlackholeReport, PostgresRun, SyncOptions, SyncReport, sync, throwaway_postgres,
};
