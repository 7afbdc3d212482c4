//! What ccm keeps of a worker's CML: version and readiness, health, load, and the open-ended
//! string enums of CML (kept verbatim when a newer CML sends a value we do not know).

use serde::{Deserialize, Serialize};

/// Declares a string enum that keeps unknown values as `Other(String)` instead of failing
/// (CML's enums grow; a newer value must never break decoding). Used by the domain and by the
/// CML client's wire models; the calling crate needs `serde`.
#[macro_export]
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this version of ccm does not know, kept as sent.
            Other(String),
        }

        impl $name {
            /// The value as CML spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(s) => s,
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($text => Self::$variant,)*
                    _ => Self::Other(s),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                match v {
                    $name::Other(s) => s,
                    other => other.as_str().to_owned(),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

crate::open_enum!(
    /// A compute host's admission state.
    AdmissionState {
        /// Not registered.
        Unregistered = "UNREGISTERED",
        /// Registered.
        Registered = "REGISTERED",
        /// In the cluster but may not start nodes.
        Online = "ONLINE",
        /// May start nodes.
        Ready = "READY",
    }
);

/// `system_information`: version and readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmlInfo {
    /// CML version, e.g. `2.9.0+build.3`.
    pub version: String,
    /// True when at least one compute can start nodes.
    pub ready: bool,
}

/// One compute host's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeHealth {
    /// Compute id.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Overall validity (`None` when CML does not say, e.g. for non-admins).
    pub valid: Option<bool>,
    /// Admission state.
    pub admission_state: AdmissionState,
    /// Whether the low-level driver is connected.
    pub lld_connected: bool,
    /// Whether this compute is the controller.
    pub is_controller: bool,
}

/// `system_health`, summarised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmlHealth {
    /// Overall health.
    pub valid: Option<bool>,
    /// Licensed.
    pub is_licensed: Option<bool>,
    /// Enterprise edition.
    pub is_enterprise: bool,
    /// Controller validity.
    pub controller_valid: bool,
    /// Controller connected to its core.
    pub core_connected: bool,
    /// The computes.
    pub computes: Vec<ComputeHealth>,
}

/// `system_stats`, summarised over all computes. Memory and disk in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CmlStats {
    /// CPUs.
    pub cpu_count: u64,
    /// CPU use, percent.
    pub cpu_percent: f64,
    /// Memory total, bytes.
    pub memory_total: f64,
    /// Memory used, bytes.
    pub memory_used: f64,
    /// Disk total, bytes.
    pub disk_total: f64,
    /// Disk used, bytes.
    pub disk_used: f64,
    /// Nodes running, summed over computes (`None` when CML gave no counters).
    pub running_nodes: Option<u64>,
    /// Nodes defined, summed over computes.
    pub total_nodes: Option<u64>,
    /// vCPUs allocated to nodes.
    pub allocated_cpus: u64,
    /// Memory allocated to nodes, KiB.
    pub allocated_memory_kib: u64,
    /// Number of computes.
    pub computes: u32,
}

impl CmlStats {
    /// Memory used as a percentage of total (`None` when the total is zero).
    pub fn memory_percent(&self) -> Option<f64> {
        (self.memory_total > 0.0).then(|| 100.0 * self.memory_used / self.memory_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_should_be_kept_not_rejected() {
        let s: AdmissionState = serde_json::from_str("\"READY\"").unwrap();
        assert_eq!(s, AdmissionState::Ready);
        let s: AdmissionState = serde_json::from_str("\"DRAINING\"").unwrap();
        assert_eq!(s, AdmissionState::Other("DRAINING".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"DRAINING\"");
    }

    #[test]
    fn memory_percent_should_not_divide_by_zero() {
        let mut s = CmlStats::default();
        assert_eq!(s.memory_percent(), None);
        s.memory_total = 200.0;
        s.memory_used = 50.0;
        assert_eq!(s.memory_percent(), Some(25.0));
    }
}
