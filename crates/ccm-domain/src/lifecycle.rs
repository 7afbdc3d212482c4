//! Small enums naming what happens to workers and labs, shared by commands and events.

use serde::{Deserialize, Serialize};

/// Why a worker was stopped ("paused").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// ccm stopped it because nobody used it for the idle timeout.
    IdleTimeout,
    /// An operator stopped or paused it through ccm.
    Manual,
    /// Its off-hours schedule began (it is started again when the window ends).
    Schedule,
    /// It was stopped outside ccm (console, CLI, scheduled action…).
    External,
}

impl PauseReason {
    /// Whether ccm itself stopped the worker (these hours count as savings).
    pub fn is_by_ccm(self) -> bool {
        !matches!(self, Self::External)
    }
}

/// Why a worker was started again ("resumed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeReason {
    /// An operator started or resumed it through ccm.
    Manual,
    /// The off-hours window that stopped it ended.
    Schedule,
    /// It was started outside ccm.
    External,
}

/// An action on a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerAction {
    /// Provision a new instance.
    Create,
    /// Import an existing instance.
    Import,
    /// Start a stopped instance.
    Start,
    /// Stop a running instance.
    Stop,
    /// Stop with a reason (idle or manual).
    Pause,
    /// Start a paused instance.
    Resume,
    /// Terminate the instance.
    Terminate,
    /// Delete the record only.
    Delete,
    /// Set or remove tags.
    UpdateTags,
    /// Enable detailed monitoring.
    EnableDetailedMonitoring,
    /// Refresh now.
    Refresh,
    /// Register or deregister the licence.
    Licence,
}

impl WorkerAction {
    /// Every action, in declaration order (for tables and exhaustive checks).
    pub const ALL: [WorkerAction; 12] = [
        WorkerAction::Create,
        WorkerAction::Import,
        WorkerAction::Start,
        WorkerAction::Stop,
        WorkerAction::Pause,
        WorkerAction::Resume,
        WorkerAction::Terminate,
        WorkerAction::Delete,
        WorkerAction::UpdateTags,
        WorkerAction::EnableDetailedMonitoring,
        WorkerAction::Refresh,
        WorkerAction::Licence,
    ];
}

/// An action on a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabAction {
    /// Start.
    Start,
    /// Stop.
    Stop,
    /// Wipe (back to DEFINED_ON_CORE).
    Wipe,
    /// Delete.
    Delete,
    /// Download the topology YAML.
    Download,
    /// Import a topology.
    Import,
}

/// Why an on-demand refresh was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshSkip {
    /// The worker is not running: there is no CML to ask.
    NotRunning,
    /// A refresh ran too recently.
    Throttled,
    /// A refresh is running right now; the request joined it.
    AlreadyRunning,
}
