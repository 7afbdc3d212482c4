//! [`JobKind`]: the background jobs by name, with their schedule in the runtime settings.
//!
//! A leaf module: the job runner, the ownership seam and the board all name jobs, and none of
//! them should have to depend on another to do so.

use std::time::Duration;

use ccm_domain::settings::PollingSettings;
use serde::{Deserialize, Serialize};

/// The jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// EC2 state of every worker, batched per region.
    Ec2Sync,
    /// CML sync of every running worker.
    CmlSync,
    /// CloudWatch metrics of running workers, batched per region.
    Metrics,
    /// Labs of every running worker.
    Labs,
    /// Activity (telemetry) and the idle policy.
    Activity,
    /// Import of instances matching the `[import]` filter.
    AutoImport,
    /// Deletes events past their retention.
    EventRetention,
    /// Off-hours schedules: stops workers whose off-hours began, starts those they stopped
    /// once they end, warns before a stop.
    Schedules,
    /// Delivers the event log to webhooks. Run by `ccm-webhooks`' own loop, not by the
    /// engine's job runner, but granted through [`crate::Ownership`] like every fleet job
    /// (`Engine::ownership`), so that with several replicas exactly one delivers.
    Webhooks,
}

impl JobKind {
    /// Every job.
    pub const ALL: [JobKind; 9] = [
        Self::Ec2Sync,
        Self::CmlSync,
        Self::Metrics,
        Self::Labs,
        Self::Activity,
        Self::AutoImport,
        Self::EventRetention,
        Self::Schedules,
        Self::Webhooks,
    ];

    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ec2Sync => "ec2_sync",
            Self::CmlSync => "cml_sync",
            Self::Metrics => "metrics",
            Self::Labs => "labs",
            Self::Activity => "activity",
            Self::AutoImport => "auto_import",
            Self::EventRetention => "event_retention",
            Self::Schedules => "schedules",
            Self::Webhooks => "webhooks",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|j| j.as_str() == s)
    }

    /// (enabled, interval) from the settings.
    pub fn schedule(self, p: &PollingSettings) -> (bool, Duration) {
        match self {
            Self::Ec2Sync => (p.ec2_enabled, p.ec2_interval),
            Self::CmlSync => (p.cml_enabled, p.cml_interval),
            Self::Metrics => (p.metrics_enabled, p.metrics_interval),
            Self::Labs => (p.labs_enabled, p.labs_interval),
            Self::Activity => (p.activity_enabled, p.activity_interval),
            Self::AutoImport => (p.auto_import_enabled, p.auto_import_interval),
            Self::EventRetention => (true, Duration::from_secs(3600)),
            Self::Schedules => (p.activity_enabled, Duration::from_secs(60)),
            // Event-driven (woken by new events); the interval is its fallback poll.
            Self::Webhooks => (true, Duration::from_secs(5)),
        }
    }

    /// Whether the engine's job runner runs it (loops, the board, `trigger_job`). `Webhooks`
    /// is run by its own crate and only granted here.
    pub fn runs_in_engine(self) -> bool {
        !matches!(self, Self::Webhooks)
    }

    /// Polls each worker on its own schedule (otherwise: one run for the fleet).
    pub(crate) fn per_worker(self) -> bool {
        matches!(self, Self::CmlSync | Self::Labs | Self::Activity)
    }

    /// Runs once per region, each region under its own grant (EC2 and CloudWatch batches).
    pub(crate) fn per_region(self) -> bool {
        matches!(self, Self::Ec2Sync | Self::Metrics)
    }
}
