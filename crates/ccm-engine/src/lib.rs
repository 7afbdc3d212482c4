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
//!   once.
//! - **Writes** from polls are batched (one transaction per batch); commands write at once.
//! - **Shutdown** stops the jobs, lets in-flight work finish and drains the writer.
//!
//! Not here: HTTP (`ccm-api`), SQL (`ccm-store`), the CML and AWS protocols (`ccm-cml`,
//! `ccm-cloud`).
#![warn(missing_docs)]

mod bus;
mod clock;
mod config;
mod convert;
#[cfg(feature = "embedded")]
pub mod embedded;
mod engine;
mod error;
mod jobs;
mod licence;
pub mod metrics;
mod ops;
mod scheduler;
mod writer;

pub use bus::{BUS_CAPACITY, BusEvent, EventBus};
pub use clock::{Clock, ManualClock, TokioClock};
pub use config::{EngineConfig, ImportConfig, LicenceConfig, PricingConfig, ProvisioningConfig};
pub use engine::{
    AmiSelector, ComponentHealth, CreateWorker, Engine, EngineParts, FleetCounts, HealthReport,
    ImportReport, ImportRequest, ImportSelector, RefreshOutcome, ResilienceEvents,
    resilience_with_bus,
};
pub use error::EngineError;
pub use jobs::{CML_SYNC_CALLS, JobKind, JobStatus};
pub use ops::CycleReport;
