//! `system_information`, `system_health`, `system_stats` (CML_API.md §2).

use std::collections::BTreeMap;

use ccm_domain::cml::{self as domain, AdmissionState};
use serde::{Deserialize, Serialize};

use super::opt_count;

/// `GET /system_information` (no auth): version and readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInformation {
    /// CML version, e.g. `2.9.0+build.3`.
    pub version: String,
    /// True when at least one compute can start nodes.
    pub ready: bool,
    /// Whether SSH public-key login is allowed.
    #[serde(default)]
    pub allow_ssh_pubkey_auth: Option<bool>,
    /// MAC prefix of the nodes.
    #[serde(default)]
    pub oui: Option<String>,
}

impl From<SystemInformation> for domain::CmlInfo {
    fn from(s: SystemInformation) -> Self {
        Self {
            version: s.version,
            ready: s.ready,
        }
    }
}

/// `GET /system_health`. Nullable fields are `null` for non-admins.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SystemHealth {
    /// Overall health.
    #[serde(default)]
    pub valid: Option<bool>,
    /// Licensed.
    #[serde(default)]
    pub is_licensed: Option<bool>,
    /// Enterprise edition.
    #[serde(default)]
    pub is_enterprise: Option<bool>,
    /// The controller.
    #[serde(default)]
    pub controller: Option<ControllerHealth>,
    /// Computes by id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub computes: BTreeMap<String, ComputeHealth>,
}

/// `system_health.controller`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ControllerHealth {
    /// Connected to its core.
    #[serde(default)]
    pub core_connected: Option<bool>,
    /// Node definitions loaded.
    #[serde(default)]
    pub nodes_loaded: Option<bool>,
    /// Images loaded.
    #[serde(default)]
    pub images_loaded: Option<bool>,
    /// Controller validity.
    #[serde(default)]
    pub valid: Option<bool>,
}

/// One compute in `system_health.computes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ComputeHealth {
    /// KVM/VMX enabled.
    #[serde(default)]
    pub kvm_vmx_enabled: Option<bool>,
    /// Enough CPUs.
    #[serde(default)]
    pub enough_cpus: Option<bool>,
    /// Low-level driver connected.
    #[serde(default)]
    pub lld_connected: Option<bool>,
    /// Low-level driver synced.
    #[serde(default)]
    pub lld_synced: Option<bool>,
    /// libvirt healthy.
    #[serde(default)]
    pub libvirt: Option<bool>,
    /// Fabric healthy.
    #[serde(default)]
    pub fabric: Option<bool>,
    /// Device mux healthy.
    #[serde(default)]
    pub device_mux: Option<bool>,
    /// Reference platform images present.
    #[serde(default)]
    pub refplat_images_available: Option<bool>,
    /// Docker shim healthy.
    #[serde(default)]
    pub docker_shim: Option<bool>,
    /// Overall validity.
    #[serde(default)]
    pub valid: Option<bool>,
    /// `UNREGISTERED | REGISTERED | ONLINE | READY`, unknown values kept.
    #[serde(default)]
    pub admission_state: Option<AdmissionState>,
    /// Whether this compute is the controller.
    #[serde(default)]
    pub is_controller: Option<bool>,
    /// Host name.
    #[serde(default)]
    pub hostname: Option<String>,
}

impl From<SystemHealth> for domain::CmlHealth {
    fn from(h: SystemHealth) -> Self {
        let controller = h.controller.unwrap_or_default();
        Self {
            valid: h.valid,
            is_licensed: h.is_licensed,
            is_enterprise: h.is_enterprise.unwrap_or(false),
            controller_valid: controller.valid.unwrap_or(false),
            core_connected: controller.core_connected.unwrap_or(false),
            computes: h
                .computes
                .into_iter()
                .map(|(id, c)| domain::ComputeHealth {
                    id,
                    hostname: c.hostname.unwrap_or_default(),
                    valid: c.valid,
                    admission_state: c
                        .admission_state
                        .unwrap_or_else(|| AdmissionState::Other("UNKNOWN".to_owned())),
                    lld_connected: c.lld_connected.unwrap_or(false),
                    is_controller: c.is_controller.unwrap_or(false),
                })
                .collect(),
        }
    }
}

/// `GET /system_stats`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SystemStats {
    /// Totals across all computes.
    #[serde(default)]
    pub all: Option<HostStats>,
    /// The controller's disk.
    #[serde(default)]
    pub controller: Option<ControllerDiskStats>,
    /// Computes by id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub computes: BTreeMap<String, ComputeHostStats>,
}

/// `system_stats.all`: CPU, memory and disk totals.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HostStats {
    /// CPU.
    #[serde(default)]
    pub cpu: Option<CpuStats>,
    /// Memory (bytes).
    #[serde(default)]
    pub memory: Option<MemoryStats>,
    /// Disk (bytes).
    #[serde(default)]
    pub disk: Option<DiskStats>,
}

/// CPU figures (`CpuStats`, and the `CpuHealthStats` of a compute).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CpuStats {
    /// CPU count.
    #[serde(default, deserialize_with = "opt_count")]
    pub count: Option<u64>,
    /// CPU use in percent.
    #[serde(default)]
    pub percent: Option<f64>,
    /// CPU model (computes only).
    #[serde(default)]
    pub model: Option<String>,
    /// Predicted CPU count (computes only).
    #[serde(default, deserialize_with = "opt_count")]
    pub predicted: Option<u64>,
    /// Recent load figures (computes only).
    #[serde(default)]
    pub load: Option<Vec<f64>>,
}

/// Used, free and total bytes: the one shape of the API's `MemoryStats` and `DiskStats`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ByteStats {
    /// Used.
    #[serde(default)]
    pub used: Option<f64>,
    /// Free.
    #[serde(default)]
    pub free: Option<f64>,
    /// Total.
    #[serde(default)]
    pub total: Option<f64>,
}

/// Memory figures in bytes (`MemoryStats`).
pub type MemoryStats = ByteStats;

/// Disk figures in bytes (`DiskStats`).
pub type DiskStats = ByteStats;

/// `system_stats.controller`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ControllerDiskStats {
    /// The controller's disk.
    #[serde(default)]
    pub disk: Option<DiskStats>,
}

/// One compute in `system_stats.computes` (extra keys are allowed and ignored).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ComputeHostStats {
    /// Host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Whether this compute is the controller.
    #[serde(default)]
    pub is_controller: Option<bool>,
    /// Its figures.
    #[serde(default)]
    pub stats: Option<ComputeStats>,
}

/// `ComputeHostStatsWithDomInfo`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ComputeStats {
    /// CPU.
    #[serde(default)]
    pub cpu: Option<CpuStats>,
    /// Memory.
    #[serde(default)]
    pub memory: Option<MemoryStats>,
    /// Disk.
    #[serde(default)]
    pub disk: Option<DiskStats>,
    /// Node counters.
    #[serde(default)]
    pub dominfo: Option<DomInfo>,
}

/// Node counters of one compute. Every counter may be `null` (the Python original crashed on
/// that; here it is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DomInfo {
    /// vCPUs allocated to nodes.
    #[serde(default, deserialize_with = "opt_count")]
    pub allocated_cpus: Option<u64>,
    /// Memory allocated to nodes, KiB.
    #[serde(default, deserialize_with = "opt_count")]
    pub allocated_memory: Option<u64>,
    /// Nodes defined.
    #[serde(default, deserialize_with = "opt_count")]
    pub total_nodes: Option<u64>,
    /// Orphaned nodes.
    #[serde(default, deserialize_with = "opt_count")]
    pub total_orphans: Option<u64>,
    /// Nodes running.
    #[serde(default, deserialize_with = "opt_count")]
    pub running_nodes: Option<u64>,
    /// Orphans running.
    #[serde(default, deserialize_with = "opt_count")]
    pub running_orphans: Option<u64>,
}

/// Sums the `Some` values; `None` when there is none.
fn sum_some(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values
        .flatten()
        .fold(None, |acc, v| Some(acc.unwrap_or(0).saturating_add(v)))
}

impl From<SystemStats> for domain::CmlStats {
    fn from(s: SystemStats) -> Self {
        let all = s.all.unwrap_or_default();
        let cpu = all.cpu.unwrap_or_default();
        let memory = all.memory.unwrap_or_default();
        let disk = all.disk.unwrap_or_default();
        let doms: Vec<DomInfo> = s
            .computes
            .values()
            .filter_map(|c| c.stats.as_ref().and_then(|st| st.dominfo.clone()))
            .collect();
        Self {
            cpu_count: cpu.count.unwrap_or(0),
            cpu_percent: cpu.percent.unwrap_or(0.0),
            memory_total: memory.total.unwrap_or(0.0),
            memory_used: memory.used.unwrap_or(0.0),
            disk_total: disk.total.unwrap_or(0.0),
            disk_used: disk.used.unwrap_or(0.0),
            running_nodes: sum_some(doms.iter().map(|d| d.running_nodes)),
            total_nodes: sum_some(doms.iter().map(|d| d.total_nodes)),
            allocated_cpus: sum_some(doms.iter().map(|d| d.allocated_cpus)).unwrap_or(0),
            allocated_memory_kib: sum_some(doms.iter().map(|d| d.allocated_memory)).unwrap_or(0),
            computes: u32::try_from(s.computes.len()).unwrap_or(u32::MAX),
        }
    }
}

/// Reads `null` as the type's default (an empty map), for fields CML may send as `null`.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
