//! `GET /telemetry/events` (CML_API.md §5): the whole event history, read for activity.

use std::fmt;

use ccm_domain::activity;
use chrono::{DateTime, Utc};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::timestamp;
use ccm_domain::open_enum;

open_enum!(
    /// `TelemetryEventCategory`. The enum may grow: unknown categories are kept.
    TelemetryCategory {
        /// A lab started.
        StartLab = "start_lab",
        /// A lab stopped.
        StopLab = "stop_lab",
        /// A node queued.
        QueueNode = "queue_node",
        /// A node stopped.
        StopNode = "stop_node",
        /// A node started.
        StartNode = "start_node",
        /// A node booted.
        BootNode = "boot_node",
        /// A node wiped.
        WipeNode = "wipe_node",
        /// A packet capture.
        PacketCapture = "packet_capture",
        /// Licence information.
        LicenseInfo = "license_info",
        /// Maintenance mode changed.
        MaintenanceStateChange = "maintenance_state_change",
        /// System notice changed.
        NoticeStateChange = "notice_state_change",
        /// Running node count.
        RunningNodes = "running_nodes",
        /// Resource pool.
        ResourcePool = "resource_pool",
        /// A user logged in or acted.
        UserActivity = "user_activity",
        /// User group.
        UserGroup = "user_group",
        /// System statistics.
        SystemStats = "system_stats",
        /// Block device information.
        Blkinfo = "blkinfo",
        /// VMware information.
        Vmware = "vmware",
        /// DMI information.
        Dmiinfo = "dmiinfo",
        /// CPU information.
        Cpuinfo = "cpuinfo",
        /// Memory information.
        Meminfo = "meminfo",
        /// Hypervisor information.
        Hypervisor = "hypervisor",
        /// A lab imported.
        ImportLab = "import_lab",
        /// A lab exported (downloaded).
        ExportLab = "export_lab",
        /// AAA information.
        AaaInfo = "aaa_info",
    }
);

/// One telemetry event. `timestamp` is `None` when CML sent something unparseable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryEvent {
    /// The category.
    pub category: TelemetryCategory,
    /// When it happened (UTC).
    #[serde(default, deserialize_with = "timestamp::lenient")]
    pub timestamp: Option<DateTime<Utc>>,
    /// The free-form payload, reduced to the fields ccm reads.
    #[serde(default)]
    pub data: TelemetryData,
}

/// The parts of an event's free-form `data` that ccm reads; everything else is skipped while
/// decoding (nothing is kept of a 3,000-event log but these). A `data` that is not an object
/// gives empty fields.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TelemetryData {
    /// `data.user_id`: who caused it.
    pub user_id: Option<String>,
    /// `data.lab_id`: which lab.
    pub lab_id: Option<String>,
}

impl<'de> Deserialize<'de> for TelemetryData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DataVisitor;

        impl<'de> Visitor<'de> for DataVisitor {
            type Value = TelemetryData;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TelemetryData, A::Error> {
                let mut data = TelemetryData::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "user_id" => data.user_id = map.next_value::<Loose>()?.0,
                        "lab_id" => data.lab_id = map.next_value::<Loose>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(data)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TelemetryData, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TelemetryData::default())
            }

            fn visit_unit<E>(self) -> Result<TelemetryData, E> {
                Ok(TelemetryData::default())
            }

            fn visit_none<E>(self) -> Result<TelemetryData, E> {
                Ok(TelemetryData::default())
            }

            fn visit_bool<E>(self, _: bool) -> Result<TelemetryData, E> {
                Ok(TelemetryData::default())
            }

            fn visit_i64<E>(self, _: i64) -> Result<TelemetryData, E> {
                Ok(TelemetryData::default())
            }

            fn visit_u64<E>(self, _: u64) -> Result<TelemetryData, E> {
                Ok(TelemetryData::default())
            }

            fn visit_f64<E>(self, _: f64) -> Result<TelemetryData, E> {
                Ok(TelemetryData::default())
            }

            fn visit_str<E>(self, _: &str) -> Result<TelemetryData, E> {
                Ok(TelemetryData::default())
            }
        }

        d.deserialize_any(DataVisitor)
    }
}

/// A string field that may be any JSON value: a string is kept, anything else is `None`.
struct Loose(Option<String>);

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Other(IgnoredAny),
        }
        Ok(Loose(match Either::deserialize(d)? {
            Either::Text(s) => Some(s),
            Either::Other(_) => None,
        }))
    }
}

impl TelemetryEvent {
    /// The domain event, or `None` when the timestamp could not be read (an event without a
    /// time cannot say when a worker was last used).
    pub fn to_domain(&self) -> Option<activity::TelemetryEvent> {
        Some(activity::TelemetryEvent {
            category: self.category.as_str().to_owned(),
            timestamp: self.timestamp?,
            user_id: self.data.user_id.clone(),
        })
    }
}

/// Converts a telemetry log into domain events, dropping those without a readable time.
pub fn telemetry_to_domain(events: Vec<TelemetryEvent>) -> Vec<activity::TelemetryEvent> {
    let total = events.len();
    let out: Vec<_> = events
        .into_iter()
        .filter_map(|e| {
            Some(activity::TelemetryEvent {
                category: String::from(e.category),
                timestamp: e.timestamp?,
                user_id: e.data.user_id,
            })
        })
        .collect();
    if out.len() < total {
        tracing::debug!(
            dropped = total - out.len(),
            "telemetry events without a readable timestamp were skipped"
        );
    }
    out
}
