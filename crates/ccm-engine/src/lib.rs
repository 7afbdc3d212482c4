//! The fleet monitor: keeps the picture of every worker current and acts on it.
//!
//! Newcomers start with [`Engine`]: built from [`EngineParts`] (store, cloud provider, CML
//! client, resilience policies, configuration, clock), it runs the background jobs
//! ([`JobKind`]) and offers every command (create, import, start, stop, pause, resume,
//! terminate, tags, labs, licences, refresh) and query the API needs. Changes are applied to
//! the domain's [`ccm_domain::Worker`] through its methods, stored through `ccm-store`, and
//! published as CloudEvents on the [`EventBus`].
//!
//! - **Jobs**: per-worker polls (CML sync, labs, activity and idle) spread evenly over their
//!   interval, never overlapping for one worker, under bulkheads; fleet jobs (EC2 sync and
//!   CloudWatch, batched per region; auto-import; event retention). Settings changes apply at
//!   once. Jobs get a small context, never the engine.
//! - **Ownership**: which workers this process polls and which fleet jobs it runs is asked of
//!   an [`Ownership`] ([`SingleNode`]: everything) — the seam for several replicas.
//! - **Writes** from polls are batched (one transaction per batch); commands write at once.
//! - **Supervision**: the writer, the job loops and the forwarders restart after a panic or an
//!   unexpected end; a critical one down makes [`Engine::is_running`] false.
//! - **Errors**: upstream failures are classified once ([`UpstreamError`]); jobs fail with a
//!   [`JobError`].
//! - **Shutdown** stops the jobs, lets in-flight work finish and drains the writer.
//! - **Runtimes**: the engine's background work runs on the runtime it was started on —
//!   its own, apart from the API's, at a lower OS priority ([`runtime`], `[engine]`).
//!
//! Not here: HTTP (`ccm-api`), SQL (`ccm-store`), the CML and AWS protocols (`ccm-cml`,
//! `ccm-cloud`).
#![warn(missing_docs)]

mod bus;
mod clock;
pub mod cluster;
mod cml_commands;
mod commands;
mod config;
mod convert;
mod engine;
mod error;
mod fleet;
mod job_kind;
mod jobs;
mod licence;
pub mod metrics;
mod ownership;
mod provisioning;
mod resilience_events;
pub mod runtime;
mod scheduler;
mod state;
mod supervisor;
mod types;
mod writer;

pub use bus::{BUS_CAPACITY, BusEvent, EventBus};
pub use clock::{Clock, ManualClock, TokioClock};
pub use cluster::{ClusterConfig, ClusterView, LeaseOwnership};
pub use config::{EngineConfig, ImportConfig, LicenceConfig, PricingConfig, ProvisioningConfig};
pub use engine::{Engine, EngineParts};
pub use error::{EngineError, JobError, PolicyRefusal, RefusalKind, UpstreamError, UpstreamKind};
pub use job_kind::JobKind;
pub use jobs::{CML_SYNC_CALLS, JobStatus};
pub use ownership::{FencingToken, Grant, GrantScope, Ownership, SingleNode};
pub use resilience_events::{ResilienceEvents, resilience_with_bus};
pub use runtime::EngineRuntimeConfig;
pub use supervisor::{Criticality, TaskState, TaskStatus};
pub use types::{
    AmiSelector, ComponentHealth, CreateWorker, CycleReport, FleetCounts, HealthReport,
    ImportCandidate, ImportPreview, ImportReport, ImportRequest, ImportSelector,
    ProvisioningOptions, RefreshOutcome,
};
