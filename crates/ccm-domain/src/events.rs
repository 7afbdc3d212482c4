//! The event catalogue: every event ccm emits, as one Rust enum, serialised as CloudEvents 1.0
//! JSON. The SSE stream, the event log, the logs and the tests all use this one catalogue.
//!
//! ```json
//! {"specversion":"1.0","id":"0193…","source":"/ccm/engine","type":"ccm.worker.state_changed",
//!  "time":"2026-11-30T04:28:24.123Z","subject":"<worker id>","datacontenttype":"application/json",
//!  "data":{"from":"running","to":"stopping"}}
//! ```
//!
//! Events that only refresh live views (sync results, metrics, snapshots) are *transient*: they
//! go to live subscribers but not into the event log ([`EventKind::is_transient`]).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::ec2::{CheckStatus, Ec2State};
use crate::idle::TimeoutRule;
use crate::ids::{Actor, WorkerId};
use crate::lifecycle::{LabAction, PauseReason, RefreshSkip, ResumeReason, WorkerAction};
use crate::service::{Reason, ServiceStatus};

/// Declares the catalogue: variant, CloudEvents `type`, flags, and payload.
///
/// Flags after the type name:
/// - `transient`: sent to live subscribers only, never stored in the event log;
/// - `reserved`: part of the published catalogue but not emitted by this version (a test in
///   `tests/catalogue.rs` fails when a type is neither emitted anywhere nor reserved; the API
///   documentation lists the reserved ones).
macro_rules! catalogue {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $name:literal $(, $flag:ident)* {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        /// Every event type ccm emits, with its payload (the CloudEvents `data`).
        ///
        /// Payload fields are named for what they hold; the variant docs say what happened.
        #[allow(missing_docs)]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "data")]
        pub enum EventKind {
            $(
                $(#[$doc])*
                #[serde(rename = $name)]
                $variant { $( $(#[$fmeta])* $field: $ty ),* },
            )*
        }

        impl EventKind {
            /// Every CloudEvents `type` in the catalogue.
            pub const TYPES: &'static [&'static str] = &[$($name),*];

            /// This event's CloudEvents `type`, e.g. `ccm.worker.state_changed`.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => $name,)*
                }
            }

            /// Whether this event only refreshes live views and is not kept in the event log.
            pub fn is_transient(&self) -> bool {
                match self {
                    $(Self::$variant { .. } => catalogue!(@flag transient $($flag)*),)*
                }
            }

            /// Every entry of the catalogue as declared: type, variant and payload fields with
            /// their Rust types as written. For documentation generated elsewhere (the API
            /// publishes each payload's JSON schema from it); the domain itself needs none.
            pub const SHAPES: &'static [EventShape] = &[$(
                EventShape {
                    type_name: $name,
                    variant: stringify!($variant),
                    transient: catalogue!(@flag transient $($flag)*),
                    reserved: catalogue!(@flag reserved $($flag)*),
                    fields: &[$(
                        FieldShape {
                            name: stringify!($field),
                            ty: stringify!($ty),
                            attributes: stringify!($($fmeta)*),
                        },
                    )*],
                },
            )*];
        }
    };
    // Whether the flag list (third and later tokens) holds the flag named first.
    (@flag transient transient $($rest:ident)*) => { true };
    (@flag reserved reserved $($rest:ident)*) => { true };
    (@flag $want:ident transient $($rest:ident)*) => { catalogue!(@flag $want $($rest)*) };
    (@flag $want:ident reserved $($rest:ident)*) => { catalogue!(@flag $want $($rest)*) };
    (@flag $want:ident $other:ident $($rest:ident)*) => {
        compile_error!(concat!("unknown catalogue flag `", stringify!($other), "` (transient, reserved)"))
    };
    (@flag $want:ident) => { false };
}

catalogue! {
    /// A worker record was created and its instance is being provisioned.
    WorkerCreated = "ccm.worker.created" {
        name: String, region: String, instance_type: Option<String>, ami_id: Option<String>, by: Actor,
    }
    /// An existing EC2 instance was imported as a worker.
    WorkerImported = "ccm.worker.imported" { instance_id: String, region: String, name: String, by: Actor }
    /// RunInstances assigned an instance to a worker being provisioned.
    WorkerProvisioned = "ccm.worker.provisioned" { instance_id: String }
    /// Provisioning failed; the worker is `failed`.
    WorkerProvisioningFailed = "ccm.worker.provisioning_failed" { reason: String }
    /// The EC2 state changed.
    WorkerStateChanged = "ccm.worker.state_changed" { from: Ec2State, to: Ec2State }
    /// EC2 reported a state the transition table rejects; the worker kept its state.
    WorkerInvalidTransition = "ccm.worker.invalid_transition" { from: Ec2State, to: Ec2State }
    /// The CML service status changed.
    WorkerServiceChanged = "ccm.worker.service_changed" {
        from: ServiceStatus, to: ServiceStatus, reasons: Vec<Reason>,
    }
    /// EC2's system or instance status check of the worker's instance changed (`ok`,
    /// `impaired`, `initializing`, `insufficient-data`, `not-applicable`).
    WorkerStatusChecksChanged = "ccm.worker.status_checks_changed" {
        system: CheckStatus, instance: CheckStatus,
    }
    /// Someone asked for an action on a worker.
    WorkerActionRequested = "ccm.worker.action_requested" {
        action: WorkerAction, #[serde(default)] reason: Option<String>, by: Actor,
    }
    /// An action on a worker failed.
    WorkerActionFailed = "ccm.worker.action_failed" { action: WorkerAction, error: String }
    /// The worker was stopped (paused), with the true reason.
    WorkerPaused = "ccm.worker.paused" { reason: PauseReason, #[serde(default)] by: Option<Actor> }
    /// The worker was started again (resumed).
    WorkerResumed = "ccm.worker.resumed" { reason: ResumeReason, #[serde(default)] by: Option<Actor> }
    /// The worker's instance is terminated.
    WorkerTerminated = "ccm.worker.terminated" { #[serde(default)] by: Option<Actor> }
    /// The worker record was deleted (the instance is untouched).
    WorkerDeleted = "ccm.worker.deleted" { by: Actor }
    /// Tags were set or removed.
    WorkerTagsUpdated = "ccm.worker.tags_updated" {
        set: BTreeMap<String, String>, removed: Vec<String>, by: Actor,
    }
    /// Detailed (1-minute) CloudWatch monitoring was enabled.
    WorkerDetailedMonitoringEnabled = "ccm.worker.detailed_monitoring_enabled" { by: Actor }
    /// Idle detection was switched on or off for the worker.
    WorkerIdleDetectionChanged = "ccm.worker.idle_detection_changed" { enabled: bool, by: Actor }
    /// A refresh was asked for.
    WorkerRefreshRequested = "ccm.worker.refresh_requested" { by: Actor }
    /// A refresh was not started, and why. Reserved: since refreshes that are throttled write
    /// nothing, the reason is only in the API's answer (`outcome`/`reason`).
    WorkerRefreshSkipped = "ccm.worker.refresh_skipped", reserved {
        reason: RefreshSkip, #[serde(default)] retry_in_seconds: Option<u64>,
    }
    /// The idle policy found the worker idle, under `timeout_rule` (the rule that chose its
    /// timeout: `plain`, `midday`, …; absent in events written before it was recorded).
    WorkerIdleDetected = "ccm.worker.idle_detected" {
        idle_for_seconds: u64, action: String, #[serde(default)] detail: Option<String>,
        #[serde(default)] timeout_rule: Option<TimeoutRule>,
    }
    /// The worker will be stopped soon unless someone uses it or keeps it awake: by the idle
    /// policy (`reason` `idle_timeout`) or by its off-hours schedule (`schedule`), at `at`.
    /// Sent once per coming pause; webhooks carry it like any logged event.
    WorkerIdleWarning = "ccm.worker.idle_warning" {
        reason: PauseReason, at: DateTime<Utc>, #[serde(default)] idle_for_seconds: u64,
    }
    /// Someone keeps the worker awake until `until` (no idle pause, no schedule stop).
    WorkerSnoozed = "ccm.worker.snoozed" { until: DateTime<Utc>, by: Actor }
    /// A snooze was ended before its time.
    WorkerSnoozeCleared = "ccm.worker.snooze_cleared" { by: Actor }
    /// A CML sync finished (live view only).
    WorkerSynced = "ccm.worker.synced", transient {
        service: ServiceStatus,
        #[serde(default)] version: Option<String>,
        #[serde(default)] cpu_percent: Option<f64>,
        #[serde(default)] memory_percent: Option<f64>,
        #[serde(default)] running_nodes: Option<u64>,
    }
    /// CloudWatch metrics arrived (live view only).
    WorkerMetricsUpdated = "ccm.worker.metrics_updated", transient {
        #[serde(default)] cpu_percent: Option<f64>, #[serde(default)] memory_percent: Option<f64>,
    }
    /// The full current state of a worker, sent to a live subscriber when it connects.
    WorkerSnapshot = "ccm.worker.snapshot", transient { worker: serde_json::Value }
    /// The session or credential an event stream was opened with ended (`signed_out`,
    /// `expired`); the stream closes after this event (to one subscriber only).
    SessionEnded = "ccm.session.ended", transient { reason: String }
    /// An event stream could not resume where the client asked and replays from the oldest
    /// event kept instead (`reason`: `last_event_id_ahead` — the id is above the log's newest,
    /// as after a recreated database or a restored backup). To one subscriber only.
    StreamReset = "ccm.stream.reset", transient {
        reason: String, last_event_id: u64, newest_event_id: u64,
    }
    /// A lab action succeeded.
    LabActionCompleted = "ccm.lab.action_completed" {
        lab_id: String, action: LabAction, #[serde(default)] title: Option<String>, by: Actor,
    }
    /// A lab action failed.
    LabActionFailed = "ccm.lab.action_failed" {
        #[serde(default)] lab_id: Option<String>, action: LabAction, error: String,
    }
    /// The worker's labs were re-read.
    LabsRefreshed = "ccm.labs.refreshed" { count: u32, added: u32, removed: u32 }
    /// A licence registration was asked for (the token itself is never recorded).
    LicenceRegistrationRequested = "ccm.licence.registration_requested" { reregister: bool, by: Actor }
    /// The registration is still in progress.
    LicenceRegistrationProgress = "ccm.licence.registration_progress" { status: String }
    /// The registration completed.
    LicenceRegistered = "ccm.licence.registered" {
        #[serde(default)] smart_account: Option<String>, #[serde(default)] virtual_account: Option<String>,
    }
    /// The registration failed or timed out.
    LicenceRegistrationFailed = "ccm.licence.registration_failed" { reason: String }
    /// A deregistration was asked for.
    LicenceDeregistrationRequested = "ccm.licence.deregistration_requested" { by: Actor }
    /// The licence was deregistered.
    LicenceDeregistered = "ccm.licence.deregistered" {}
    /// The deregistration failed.
    LicenceDeregistrationFailed = "ccm.licence.deregistration_failed" { reason: String }
    /// A circuit breaker opened: calls to `key` are rejected without being made.
    BreakerOpened = "ccm.breaker.opened" { key: String, consecutive_failures: u32, reason: String }
    /// A circuit breaker lets one probe through.
    BreakerHalfOpen = "ccm.breaker.half_open" { key: String }
    /// A circuit breaker closed again.
    BreakerClosed = "ccm.breaker.closed" { key: String }
    /// The fleet-wide retry budget is empty: failed calls are no longer retried.
    RetryBudgetExhausted = "ccm.retry_budget.exhausted" {}
    /// The retry budget has tokens again.
    RetryBudgetRecovered = "ccm.retry_budget.recovered" {}
    /// A bulkhead's queue was full and a call was rejected.
    BulkheadRejected = "ccm.bulkhead.rejected" { name: String, max_concurrent: u64, max_queue: u64 }
    /// A job run started (live view only). Emitted per fleet-job run and per triggered cycle
    /// of a per-worker job, never per worker poll. `trigger`: `scheduled`, `on_demand` or
    /// `cycle`.
    JobStarted = "ccm.job.started", transient { job: String, trigger: String }
    /// A job run finished (live view only); `summary` holds its counts (per-worker cycles:
    /// `workers`, `failed`, `probing`).
    JobCompleted = "ccm.job.completed", transient {
        job: String, duration_ms: u64, #[serde(default)] summary: serde_json::Value,
    }
    /// A job run failed (kept in the log).
    JobFailed = "ccm.job.failed" {
        job: String,
        error: String,
        #[serde(default)] trigger: Option<String>,
        #[serde(default)] duration_ms: Option<u64>,
    }
    /// An import run finished.
    ImportCompleted = "ccm.import.completed" { matched: u32, imported: u32, existing: u32, by: Actor }
    /// Runtime settings were changed.
    SettingsUpdated = "ccm.settings.updated" { changed: Vec<String>, by: Actor }
}

/// One entry of the catalogue as declared ([`EventKind::SHAPES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventShape {
    /// The CloudEvents `type`, e.g. `ccm.worker.state_changed`.
    pub type_name: &'static str,
    /// The [`EventKind`] variant, e.g. `WorkerStateChanged`.
    pub variant: &'static str,
    /// Whether the event only refreshes live views ([`EventKind::is_transient`]): sent to live
    /// subscribers only, never in the event log (so never delivered to webhooks).
    pub transient: bool,
    /// Published in the catalogue but not emitted by this version.
    pub reserved: bool,
    /// The payload (`data`) fields, in declaration order.
    pub fields: &'static [FieldShape],
}

impl EventShape {
    /// The entry of a CloudEvents `type`, if it is in the catalogue.
    pub fn of(type_name: &str) -> Option<&'static EventShape> {
        EventKind::SHAPES.iter().find(|s| s.type_name == type_name)
    }
}

/// One payload field as declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldShape {
    /// Its JSON name.
    pub name: &'static str,
    /// Its Rust type as written, e.g. `Option<String>` or `Vec<Reason>`.
    pub ty: &'static str,
    /// Its attributes as written, e.g. `serde(default)` (may be absent from the JSON).
    pub attributes: &'static str,
}

/// One event: a [`EventKind`] in its CloudEvents envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always `1.0`.
    pub specversion: SpecVersion,
    /// Unique id (UUID v7, time-ordered).
    pub id: Uuid,
    /// Which part of ccm emitted it, e.g. `/ccm/engine`.
    pub source: String,
    /// When it happened, RFC 3339 in UTC with a single `Z` designator.
    #[serde(with = "rfc3339")]
    pub time: DateTime<Utc>,
    /// The worker it concerns (its id), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Always `application/json`.
    #[serde(default = "json_content_type")]
    pub datacontenttype: String,
    /// `type` and `data`.
    #[serde(flatten)]
    pub kind: EventKind,
}

fn json_content_type() -> String {
    "application/json".to_owned()
}

impl Event {
    /// A new event about `worker` (or about nothing in particular when `None`).
    pub fn new(
        source: &str,
        worker: Option<WorkerId>,
        kind: EventKind,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            specversion: SpecVersion,
            id: Uuid::now_v7(),
            source: source.to_owned(),
            time: now,
            subject: worker.map(|w| w.to_string()),
            datacontenttype: json_content_type(),
            kind,
        }
    }

    /// The CloudEvents `type`.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// The worker this event concerns, if the subject is a worker id.
    pub fn worker_id(&self) -> Option<WorkerId> {
        self.subject.as_deref().and_then(|s| s.parse().ok())
    }
}

/// The CloudEvents spec version marker; (de)serialises as `"1.0"` and rejects anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpecVersion;

impl Serialize for SpecVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("1.0")
    }
}

impl<'de> Deserialize<'de> for SpecVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = String::deserialize(d)?;
        if v == "1.0" {
            Ok(SpecVersion)
        } else {
            Err(serde::de::Error::custom(format!(
                "unsupported CloudEvents specversion {v:?}"
            )))
        }
    }
}

/// RFC 3339 timestamps with milliseconds and a `Z` designator.
pub mod rfc3339 {
    use super::*;

    /// Serialises as `2026-11-30T04:28:24.123Z`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    /// Accepts any RFC 3339 timestamp and converts it to UTC.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn sample() -> Event {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 4, 28, 24).unwrap();
        Event::new(
            "/ccm/engine",
            Some(WorkerId::new()),
            EventKind::WorkerStateChanged {
                from: Ec2State::Running,
                to: Ec2State::Stopping,
            },
            now,
        )
    }

    #[test]
    fn events_should_serialise_as_cloudevents() {
        let e = sample();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "ccm.worker.state_changed");
        assert_eq!(v["source"], "/ccm/engine");
        assert_eq!(v["time"], "2026-11-30T04:28:24.000Z");
        assert_eq!(v["subject"], e.subject.clone().unwrap());
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(
            v["data"],
            serde_json::json!({"from": "running", "to": "stopping"})
        );
        assert_eq!(v["id"], e.id.to_string());
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 8, "{keys:?}");
    }

    #[test]
    fn the_time_should_carry_exactly_one_zone_designator() {
        let v = serde_json::to_value(sample()).unwrap();
        let t = v["time"].as_str().unwrap();
        assert!(t.ends_with('Z') && !t.contains('+'), "{t}");
        assert!(DateTime::parse_from_rfc3339(t).is_ok());
    }

    #[test]
    fn the_shapes_should_list_every_type_with_its_fields() {
        assert_eq!(EventKind::SHAPES.len(), EventKind::TYPES.len());
        for (shape, name) in EventKind::SHAPES.iter().zip(EventKind::TYPES) {
            assert_eq!(shape.type_name, *name);
        }
        let changed = EventKind::SHAPES
            .iter()
            .find(|s| s.type_name == "ccm.worker.state_changed")
            .unwrap();
        assert_eq!(changed.variant, "WorkerStateChanged");
        let fields: Vec<_> = changed.fields.iter().map(|f| (f.name, f.ty)).collect();
        assert_eq!(fields, [("from", "Ec2State"), ("to", "Ec2State")]);
        let paused = EventKind::SHAPES
            .iter()
            .find(|s| s.type_name == "ccm.worker.paused")
            .unwrap();
        assert!(
            paused.fields[1].attributes.contains("default"),
            "{paused:?}"
        );
        assert!(
            EventKind::SHAPES
                .iter()
                .any(|s| s.transient && s.type_name == "ccm.worker.synced")
        );
    }

    #[test]
    fn events_should_round_trip() {
        let e = sample();
        let back: Event = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.worker_id().map(|w| w.to_string()), e.subject);
    }

    #[test]
    fn a_foreign_specversion_should_be_rejected() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["specversion"] = "0.3".into();
        assert!(serde_json::from_value::<Event>(v).is_err());
    }

    #[test]
    fn every_type_should_be_unique_and_namespaced() {
        let mut seen = std::collections::BTreeSet::new();
        for t in EventKind::TYPES {
            assert!(t.starts_with("ccm."), "{t}");
            assert!(seen.insert(*t), "duplicate {t}");
        }
    }

    #[test]
    fn the_catalogue_should_list_every_type_with_its_flags() {
        let names: Vec<_> = EventKind::SHAPES.iter().map(|t| t.type_name).collect();
        assert_eq!(names, EventKind::TYPES);
        let synced = EventShape::of("ccm.worker.synced").unwrap();
        assert!(synced.transient && !synced.reserved);
        assert_eq!(synced.variant, "WorkerSynced");
        let failed = EventShape::of("ccm.job.failed").unwrap();
        assert!(!failed.transient);
        assert!(EventShape::of("ccm.nope").is_none());
    }

    #[test]
    fn flags_should_be_read_in_any_order() {
        let read = [
            catalogue!(@flag reserved transient reserved),
            catalogue!(@flag transient reserved transient),
            catalogue!(@flag transient reserved),
            catalogue!(@flag reserved),
        ];
        assert_eq!(read, [true, true, false, false]);
    }

    #[test]
    fn sync_results_should_be_transient_and_state_changes_kept() {
        let synced = EventKind::WorkerSynced {
            service: ServiceStatus::Ready,
            version: None,
            cpu_percent: None,
            memory_percent: None,
            running_nodes: None,
        };
        assert!(synced.is_transient());
        assert!(
            !EventKind::WorkerStateChanged {
                from: Ec2State::Running,
                to: Ec2State::Stopped
            }
            .is_transient()
        );
    }
}
