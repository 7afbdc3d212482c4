//! The public request and report types of [`crate::Engine`]'s commands and queries.

use std::collections::BTreeMap;

use ccm_domain::{AmiId, InstanceId, InstanceType, Region, WorkerId};
use serde::{Deserialize, Serialize};

use crate::supervisor::TaskStatus;

/// How to pick the image of a new worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmiSelector {
    /// The configured default (`[provisioning] ami_id` or `ami_name_pattern`).
    Default,
    /// This image.
    Id(AmiId),
    /// The newest image whose name matches.
    NamePattern(String),
}

/// A request to provision a new worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateWorker {
    /// Display name (also the `Name` tag).
    pub name: String,
    /// Region (default: `[provisioning] region`, else the provider's first).
    pub region: Option<Region>,
    /// Instance type (default from the configuration).
    pub instance_type: Option<InstanceType>,
    /// Image.
    pub ami: AmiSelector,
    /// Extra tags.
    pub tags: BTreeMap<String, String>,
}

/// Which instances to import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportSelector {
    /// These instances.
    InstanceIds(Vec<InstanceId>),
    /// Instances launched from this image.
    AmiId(AmiId),
    /// Instances launched from images whose name matches.
    AmiNamePattern(String),
    /// The configured `[import]` filter.
    Configured,
}

/// A request to import existing instances as workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRequest {
    /// Region to search (all configured regions when `None`).
    pub region: Option<Region>,
    /// What to import.
    pub selector: ImportSelector,
    /// Import every match; without it, more than one match is refused.
    pub all: bool,
    /// Take only instances the `[import]` filter matches (tag and/or image name and owner):
    /// callers below admin, whose imports must not hand the fleet's CML password to any
    /// instance in the account. An instance outside the filter refuses the whole import.
    pub restricted_to_filter: bool,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImportReport {
    /// Instances that matched.
    pub matched: u32,
    /// Workers created.
    pub imported: Vec<WorkerId>,
    /// Instances that already were workers.
    pub existing: Vec<WorkerId>,
    /// Instances left out, and why.
    pub skipped: Vec<(String, String)>,
}

/// What a create or import form may offer: regions, instance types, image defaults and the
/// configured import filter (from `[provisioning]`, `[import]` and the cloud's regions).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProvisioningOptions {
    /// Regions the cloud serves.
    pub regions: Vec<Region>,
    /// The region used when a request names none.
    pub default_region: Option<Region>,
    /// The instance type used when a request names none.
    pub default_instance_type: String,
    /// Instance types a request may choose (the default first); empty: any valid type.
    pub instance_types: Vec<String>,
    /// The configured image id, if any (wins over the pattern).
    pub ami_id: Option<String>,
    /// The configured image name pattern, if any.
    pub ami_name_pattern: Option<String>,
    /// Tags every new worker gets.
    pub tags: BTreeMap<String, String>,
    /// Regions an import searches.
    pub import_regions: Vec<Region>,
    /// The configured import filter: image name pattern.
    pub import_ami_name_pattern: Option<String>,
    /// The configured import filter: tag `key=value`.
    pub import_tag: Option<String>,
}

/// One instance an import would take, and whether it already is a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportCandidate {
    /// The instance.
    pub instance_id: InstanceId,
    /// Its region.
    pub region: Region,
    /// Its `Name` tag.
    pub name: Option<String>,
    /// Its EC2 state.
    pub state: ccm_domain::Ec2State,
    /// Its instance type.
    pub instance_type: InstanceType,
    /// Its image.
    pub image_id: AmiId,
    /// When it was launched, when known.
    pub launch_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The worker it already is, if any.
    pub worker: Option<WorkerId>,
    /// Why it would not be imported (terminated), if so.
    pub skip_reason: Option<String>,
}

/// What an import would do, found without changing anything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImportPreview {
    /// Instances that matched.
    pub candidates: Vec<ImportCandidate>,
    /// Ids asked for but not found, and why.
    pub skipped: Vec<(String, String)>,
    /// Whether the import must be confirmed with `all` (several matches of an image selector).
    pub needs_all: bool,
}

/// What an on-demand refresh did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RefreshOutcome {
    /// The refresh ran.
    Refreshed,
    /// A refresh was already running; this request joined it.
    Joined,
    /// Not started, and why.
    Skipped {
        /// Why.
        reason: ccm_domain::RefreshSkip,
        /// When a new refresh is allowed, for `throttled`.
        retry_in_seconds: Option<u64>,
    },
}

/// The result of one full CML sync cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleReport {
    /// Workers polled.
    pub workers: usize,
    /// Wall time of the cycle.
    pub seconds: f64,
}

/// Worker counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FleetCounts {
    /// Workers known.
    pub total: u64,
    /// By EC2 state.
    pub by_state: BTreeMap<String, u64>,
    /// By service status.
    pub by_service: BTreeMap<String, u64>,
}

/// Health of the engine and what it depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Overall: every component healthy.
    pub healthy: bool,
    /// The database answers.
    pub database: ComponentHealth,
    /// The scheduler runs, and no critical background task is down.
    pub scheduler: ComponentHealth,
    /// The cloud provider, per region (breaker state of its endpoints).
    pub providers: Vec<ComponentHealth>,
    /// Workers known.
    pub workers: usize,
    /// The supervised background tasks (writer, job loops, forwarders).
    pub tasks: Vec<TaskStatus>,
}

/// One component's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentHealth {
    /// Name.
    pub name: String,
    /// Healthy.
    pub ok: bool,
    /// Details.
    pub detail: String,
}
