//! The JSON the API sends and accepts. These are the API's own types (the domain's serde
//! shapes are for the store and the event log), converted by hand, with OpenAPI schemas.
//!
//! Every value observed from a source carries its freshness ([`SourceView`]): the value, when
//! it was observed, its age, `fresh`/`stale`/`unknown` and the latest error — so a UI can show
//! "CPU 42 % (stale, 3 min old: timeout)".

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ccm_domain::cml::{CmlHealth, CmlInfo, CmlStats};
use ccm_domain::idle::{IdleAction, KeepReason};
use ccm_domain::lab::LabRecord;
use ccm_domain::licence::Licence;
use ccm_domain::observed::Sourced;
use ccm_domain::schedule::ScheduleState;
use ccm_domain::service::Reason;
use ccm_domain::worker::{ActivitySource, CloudWatchMetrics, Counters, HistoryKind};
use ccm_domain::{Freshness, LabAction, Secret, StatusChecks, Worker};
use ccm_engine::Engine;
use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{AuthMethod, Role};
pub use crate::handlers::webhooks::{BlockedEventView, WebhookList, WebhookView};

// === views: workers ===

/// Why a call of a sync failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReasonView {
    /// The call (`system_information`, `system_health`, `system_stats`, `licensing`,
    /// `telemetry`, `labs`, `cloudwatch`, `ec2_status`).
    pub call: String,
    /// What went wrong (`connect`, `timeout`, `http_status`, `circuit_open`, `not_ready`,
    /// `ec2_status_impaired`, …).
    pub code: String,
    /// The HTTP status, for `http_status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A short detail for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn enum_text<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl From<&Reason> for ReasonView {
    fn from(r: &Reason) -> Self {
        Self {
            call: r.call.as_str().to_owned(),
            code: enum_text(&r.code),
            status: r.status,
            detail: r.detail.clone(),
        }
    }
}

/// Freshness of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FreshnessView {
    /// The latest read succeeded and the value is within the maximum age.
    Fresh,
    /// The latest read failed; the last good value is shown, within the maximum age.
    Stale,
    /// No value, or older than the maximum age.
    Unknown,
}

impl From<Freshness> for FreshnessView {
    fn from(f: Freshness) -> Self {
        match f {
            Freshness::Fresh => Self::Fresh,
            Freshness::Stale => Self::Stale,
            Freshness::Unknown => Self::Unknown,
        }
    }
}

/// One source's value with its age and freshness (stale-data fallback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SourceView<T> {
    /// The value to show (`null` when unknown).
    pub value: Option<T>,
    /// When the shown value was observed.
    pub observed_at: Option<DateTime<Utc>>,
    /// Its age in whole seconds, at the answer's whole second.
    pub age_seconds: Option<u64>,
    /// `fresh`, `stale` or `unknown`.
    pub freshness: FreshnessView,
    /// Why the latest read failed, if it did.
    pub error: Option<ReasonView>,
    /// When the latest read was attempted.
    pub attempted_at: Option<DateTime<Utc>>,
    /// Reads failed in a row since the last success.
    pub consecutive_failures: u32,
}

/// Makes `value` of every `SourceView_*` component nullable: utoipa drops the `null` of an
/// `Option` of a type parameter (`SourceView<T>.value`), which made every unknown source
/// break the published schema. Called when the document is built.
pub(crate) fn fix_source_view_schemas(components: &mut utoipa::openapi::Components) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    for (name, schema) in components.schemas.iter_mut() {
        if !name.starts_with("SourceView_") {
            continue;
        }
        let RefOr::T(Schema::Object(object)) = schema else {
            continue;
        };
        if let Some(value) = object.properties.remove("value") {
            let nullable = OneOfBuilder::new()
                .item(value)
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .description(Some("The value to show (`null` when unknown)."));
            object
                .properties
                .insert("value".to_owned(), nullable.into());
        }
    }
}

impl<T> SourceView<T> {
    fn of<D>(s: &Sourced<D>, now: DateTime<Utc>, max_age: Duration, f: impl Fn(&D) -> T) -> Self {
        let v = s.view(now, max_age);
        Self {
            value: v.value.map(f),
            observed_at: v.observed_at,
            age_seconds: v.age.map(|a| a.as_secs()),
            freshness: v.freshness.into(),
            error: v.error.map(ReasonView::from),
            attempted_at: s.attempted_at,
            consecutive_failures: s.consecutive_failures,
        }
    }
}

/// `system_information`: version and readiness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CmlInfoView {
    /// CML version.
    pub version: String,
    /// At least one compute can start nodes.
    pub ready: bool,
}

impl From<&CmlInfo> for CmlInfoView {
    fn from(i: &CmlInfo) -> Self {
        Self {
            version: i.version.clone(),
            ready: i.ready,
        }
    }
}

/// One compute host's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComputeView {
    /// Compute id.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Overall validity.
    pub valid: Option<bool>,
    /// Admission state (`READY`, …).
    pub admission_state: String,
    /// Low-level driver connected.
    pub lld_connected: bool,
    /// This compute is the controller.
    pub is_controller: bool,
}

/// `system_health`, summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CmlHealthView {
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
    pub computes: Vec<ComputeView>,
}

impl From<&CmlHealth> for CmlHealthView {
    fn from(h: &CmlHealth) -> Self {
        Self {
            valid: h.valid,
            is_licensed: h.is_licensed,
            is_enterprise: h.is_enterprise,
            controller_valid: h.controller_valid,
            core_connected: h.core_connected,
            computes: h
                .computes
                .iter()
                .map(|c| ComputeView {
                    id: c.id.clone(),
                    hostname: c.hostname.clone(),
                    valid: c.valid,
                    admission_state: c.admission_state.as_str().to_owned(),
                    lld_connected: c.lld_connected,
                    is_controller: c.is_controller,
                })
                .collect(),
        }
    }
}

/// `system_stats`, summed over the computes. Bytes for memory and disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CmlStatsView {
    /// CPUs.
    pub cpu_count: u64,
    /// CPU use, percent.
    pub cpu_percent: f64,
    /// Memory use, percent (`null` when the total is unknown).
    pub memory_percent: Option<f64>,
    /// Memory total, bytes.
    pub memory_total: f64,
    /// Memory used, bytes.
    pub memory_used: f64,
    /// Disk total, bytes.
    pub disk_total: f64,
    /// Disk used, bytes.
    pub disk_used: f64,
    /// Nodes running.
    pub running_nodes: Option<u64>,
    /// Nodes defined.
    pub total_nodes: Option<u64>,
    /// Computes.
    pub computes: u32,
}

impl From<&CmlStats> for CmlStatsView {
    fn from(s: &CmlStats) -> Self {
        Self {
            cpu_count: s.cpu_count,
            cpu_percent: s.cpu_percent,
            memory_percent: s.memory_percent(),
            memory_total: s.memory_total,
            memory_used: s.memory_used,
            disk_total: s.disk_total,
            disk_used: s.disk_used,
            running_nodes: s.running_nodes,
            total_nodes: s.total_nodes,
            computes: s.computes,
        }
    }
}

/// The CML licence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LicenceView {
    /// Registration status (`COMPLETED`, `IN_PROGRESS`, `FAILED`, `NOT_REGISTERED`, …).
    pub registration: String,
    /// Authorisation status.
    pub authorization: Option<String>,
    /// Smart account.
    pub smart_account: Option<String>,
    /// Virtual account.
    pub virtual_account: Option<String>,
    /// When the registration expires.
    pub expires: Option<DateTime<Utc>>,
    /// Active product licence.
    pub product: Option<String>,
    /// Enterprise edition.
    pub is_enterprise: Option<bool>,
    /// Why the last registration failed.
    pub last_failure: Option<String>,
}

impl From<&Licence> for LicenceView {
    fn from(l: &Licence) -> Self {
        Self {
            registration: l.registration.as_str().to_owned(),
            authorization: l.authorization.as_ref().map(|a| a.as_str().to_owned()),
            smart_account: l.smart_account.clone(),
            virtual_account: l.virtual_account.clone(),
            expires: l.expires,
            product: l.product.clone(),
            is_enterprise: l.is_enterprise,
            last_failure: l.last_failure.clone(),
        }
    }
}

/// CloudWatch metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CloudWatchView {
    /// CPU, percent.
    pub cpu_percent: Option<f64>,
    /// When that datapoint was taken.
    pub cpu_at: Option<DateTime<Utc>>,
    /// Memory, percent.
    pub memory_percent: Option<f64>,
    /// When that datapoint was taken.
    pub memory_at: Option<DateTime<Utc>>,
}

impl From<&CloudWatchMetrics> for CloudWatchView {
    fn from(c: &CloudWatchMetrics) -> Self {
        Self {
            cpu_percent: c.cpu_percent,
            cpu_at: c.cpu_at,
            memory_percent: c.memory_percent,
            memory_at: c.memory_at,
        }
    }
}

/// EC2's status checks of the instance (DescribeInstanceStatus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusChecksView {
    /// The system (AWS host) check: `ok`, `impaired`, `initializing`, `insufficient-data`,
    /// `not-applicable` or `unknown`.
    pub system: String,
    /// The instance (guest) check, same values.
    pub instance: String,
    /// Either check is `impaired` (the worker is then `degraded`, reason
    /// `ec2_status_impaired`, while it runs).
    pub impaired: bool,
}

impl From<&StatusChecks> for StatusChecksView {
    fn from(c: &StatusChecks) -> Self {
        Self {
            system: c.system.as_str().to_owned(),
            instance: c.instance.as_str().to_owned(),
            impaired: c.impaired(),
        }
    }
}

/// Every source of a worker, each with its freshness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SourcesView {
    /// `system_information`.
    pub system_information: SourceView<CmlInfoView>,
    /// `system_health`.
    pub health: SourceView<CmlHealthView>,
    /// `system_stats`.
    pub stats: SourceView<CmlStatsView>,
    /// `licensing`.
    pub licence: SourceView<LicenceView>,
    /// Number of labs.
    pub labs_count: SourceView<u32>,
    /// CloudWatch.
    pub cloudwatch: SourceView<CloudWatchView>,
    /// EC2's status checks.
    pub ec2_status: SourceView<StatusChecksView>,
}

/// A circuit breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BreakerView {
    /// Its key (a worker's CML base URL, or `aws:REGION:SERVICE`).
    pub key: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
    /// When it opened, while open or half-open.
    pub opened_at: Option<DateTime<Utc>>,
    /// Seconds until an open breaker lets a probe through.
    pub retry_in_seconds: Option<f64>,
}

impl From<&ccm_resilience::BreakerSnapshot> for BreakerView {
    fn from(b: &ccm_resilience::BreakerSnapshot) -> Self {
        Self {
            key: b.key.clone(),
            state: b.state.as_str().to_owned(),
            consecutive_failures: b.consecutive_failures,
            opened_at: b.opened_at.map(system_time),
            retry_in_seconds: b.retry_in.map(|d| d.as_secs_f64()),
        }
    }
}

fn system_time(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

/// The service status from the latest CML sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    /// `ready`, `degraded`, `unavailable` or `unknown`.
    pub status: String,
    /// Why it is not ready.
    pub reasons: Vec<ReasonView>,
    /// When the sync ran.
    pub checked_at: Option<DateTime<Utc>>,
}

/// Pause and resume counts by reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CountersView {
    /// By the idle policy.
    pub idle_timeout: u64,
    /// By operators through ccm.
    pub manual: u64,
    /// By an off-hours schedule.
    pub schedule: u64,
    /// Outside ccm.
    pub external: u64,
}

impl From<&Counters> for CountersView {
    fn from(c: &Counters) -> Self {
        Self {
            idle_timeout: c.idle_timeout,
            manual: c.manual,
            schedule: c.schedule,
            external: c.external,
        }
    }
}

/// One pause or resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryView {
    /// When.
    pub at: DateTime<Utc>,
    /// `paused` or `resumed`.
    pub kind: String,
    /// `idle_timeout`, `manual` or `external`.
    pub reason: String,
    /// Who, when ccm did it.
    pub by: Option<String>,
}

/// What the idle policy says about the worker now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IdleView {
    /// Idle now.
    pub idle: bool,
    /// Seconds since the latest activity, resume or creation.
    pub idle_for_seconds: u64,
    /// That reference point.
    pub since: DateTime<Utc>,
    /// `pause`, `would_pause` (dry run) or `keep`.
    pub action: String,
    /// Why it is kept (`not_running`, `not_idle`, `disabled_globally`, `disabled_for_worker`,
    /// `kept_awake`, `snoozed` (the grace after a resume), `activity_unknown`).
    pub keep_reason: Option<String>,
    /// For `not_idle` and `snoozed`: seconds left.
    pub remaining_seconds: Option<u64>,
    /// When the policy would pause the worker if nothing happens meanwhile.
    pub pause_at: Option<DateTime<Utc>>,
    /// The warning before that pause is due (`idle.warning_before`).
    pub warning: bool,
    /// Whether running nodes count as use (`idle.running_nodes_count_as_use`).
    pub running_nodes_count_as_use: bool,
    /// The timeout that applies now, seconds (`idle.break_timeout` while the fleet is busy,
    /// `idle.session_end_timeout` after the user stopped their lab).
    pub timeout_seconds: u64,
    /// Whether the fleet counts as busy (`idle.busy_fleet_percent`).
    pub fleet_busy: bool,
    /// Which rule chose the timeout: `plain`, `fleet_busy`, `session_ended`, `no_return`,
    /// `run_ended`, `learned_return`, `midday` or `nobody_since_start`.
    pub timeout_rule: String,
    /// The learned return rule's evidence: remembered breaks begun near this time of day
    /// (`idle.return_window`) that lasted at least the shortest timeout (`null`: rule off).
    pub return_breaks: Option<u32>,
    /// Of them, those that ended within `idle.return_timeout`.
    pub return_returned: Option<u32>,
    /// Whose breaks: `worker` or `fleet`.
    pub return_scope: Option<String>,
    /// The fleet's midday dip at the time of day the worker went quiet (`null`: the learned
    /// return rule is off, or no `idle.midday_hours` / `idle.local_time_zone`): whether a
    /// morning stretch that reaches midday counts as a lunch, with its counts.
    pub midday_dip: Option<MiddayDipView>,
}

/// The midday dip: remembered absences (no interaction for the idle timeout or more) that
/// covered an hour before the midday hours, their middle and an hour after them, one count
/// per day; a dip when the middle exceeds each side by more than twice the square root of
/// their sum (more than chance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MiddayDipView {
    /// The middle stands out of both sides: a lunch.
    pub dip: bool,
    /// Absences covering an hour before the midday hours.
    pub before: u64,
    /// Absences covering their middle.
    pub middle: u64,
    /// Absences covering an hour after them.
    pub after: u64,
}

/// Where the latest activity came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActivitySourceView {
    /// `telemetry` or `running_nodes`.
    pub kind: String,
    /// For telemetry: the category (`start_lab`, `user_activity`, …).
    pub category: Option<String>,
    /// For telemetry: the CML user id, if the event names one.
    pub user_id: Option<String>,
    /// For running nodes: how many.
    pub running_nodes: Option<u64>,
}

/// A "keep awake until" in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnoozeView {
    /// No idle pause or schedule stop before this.
    pub until: DateTime<Utc>,
    /// Who set it.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The off-hours schedule that applies to a worker, and where it stands now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    /// The rule's selector (`worker:<id>`, `tag:key=value`).
    pub selector: String,
    /// The windows, e.g. `Mon-Fri 19:00-07:00 Europe/Paris`.
    pub off_hours: String,
    /// `off_hours` or `working`.
    pub state: String,
    /// In off-hours: when they began.
    pub since: Option<DateTime<Utc>>,
    /// In off-hours: when they end (a worker the schedule stopped is started then).
    pub until: Option<DateTime<Utc>>,
    /// In working hours: the next start of off-hours.
    pub next: Option<DateTime<Utc>>,
}

/// Activity, idle detection and pause/resume bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MonitoringView {
    /// Idle detection (and auto-pause) for this worker.
    pub idle_detection: bool,
    /// Detailed CloudWatch monitoring.
    pub detailed_monitoring: bool,
    /// Latest activity seen.
    pub last_activity: Option<DateTime<Utc>>,
    /// What it was.
    pub last_activity_source: Option<ActivitySourceView>,
    /// Latest interaction (telemetry; running nodes excluded).
    pub last_interaction: Option<DateTime<Utc>>,
    /// Latest sync that found running nodes.
    pub last_running_nodes_at: Option<DateTime<Utc>>,
    /// Running nodes at the latest sync that read them.
    pub running_nodes: Option<u64>,
    /// The snooze in force, if any.
    pub snooze: Option<SnoozeView>,
    /// The off-hours schedule that applies, if any.
    pub schedule: Option<ScheduleView>,
    /// When activity was last read.
    pub activity_checked_at: Option<DateTime<Utc>>,
    /// Last resume.
    pub last_resume: Option<DateTime<Utc>>,
    /// When paused, while paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Why paused, while paused.
    pub pause_reason: Option<String>,
    /// Pauses by reason.
    pub pauses: CountersView,
    /// Resumes by reason.
    pub resumes: CountersView,
    /// Latest pauses and resumes, newest last.
    pub history: Vec<HistoryView>,
    /// Seconds stopped by ccm (idle or manual), a pause going on included.
    pub seconds_stopped_by_ccm: u64,
    /// The idle policy's view now.
    pub idle: IdleView,
}

/// An AMI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AmiView {
    /// Image id.
    pub id: String,
    /// Image name.
    pub name: Option<String>,
    /// The AWS account that owns the image, when known (recorded when ccm chose or imported
    /// it; `[provisioning] ami_owners` decides which owners new workers may use).
    pub owner: Option<String>,
}

/// A worker: one CML instance on one EC2 instance, as the API shows it. What depends on the
/// time (ages, freshness, idle and snooze remaining, schedule state) is computed at the
/// answer's whole second; everything else is the worker's last committed document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    /// ccm's id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// AWS region.
    pub region: String,
    /// EC2 instance id.
    pub instance_id: Option<String>,
    /// Instance type.
    pub instance_type: Option<String>,
    /// Image.
    pub ami: Option<AmiView>,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down`, `terminated`, `failed`,
    /// `unknown`.
    pub ec2_state: String,
    /// Why it is in that state.
    pub state_reason: Option<String>,
    /// Launch time.
    pub launched_at: Option<DateTime<Utc>>,
    /// CML service status.
    pub service: ServiceView,
    /// CML base URL.
    pub endpoint: Option<String>,
    /// Public address.
    pub public_ip: Option<String>,
    /// Private address.
    pub private_ip: Option<String>,
    /// EC2 tags.
    pub tags: BTreeMap<String, String>,
    /// Every observed source with its age and freshness.
    pub sources: SourcesView,
    /// The circuit breaker of the worker's CML endpoint (`null` before any call).
    pub breaker: Option<BreakerView>,
    /// Activity, idle detection, pauses and resumes.
    pub monitoring: MonitoringView,
    /// Created in ccm.
    pub created_at: DateTime<Utc>,
    /// By whom.
    pub created_by: String,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// By whom.
    pub updated_by: String,
    /// Seen terminated.
    pub terminated_at: Option<DateTime<Utc>>,
    /// By whom.
    pub terminated_by: Option<String>,
    /// Version (increases with every change; orders snapshots and reads).
    pub version: u64,
    /// What the current state allows (`start`, `stop`, `pause`, `resume`, `terminate`,
    /// `delete`, `update_tags`, `enable_detailed_monitoring`, `refresh`, `licence`); the
    /// caller's role may allow less.
    pub actions: Vec<String>,
    /// Why each action not in `actions` is not possible now (action → the refusal a command
    /// would give), for a disabled button's explanation.
    pub action_reasons: BTreeMap<String, String>,
    /// Why lab and licence actions cannot reach the worker's CML now (`null`: they can).
    pub cml_blocked: Option<String>,
}

/// What rendering a worker takes from the engine besides the worker — the time, the runtime
/// settings, the fleet's busy share — read once per answer: a page renders up to 1,000
/// workers, and a copy of the settings per worker was a large part of a list page's cost.
///
/// The time is the engine's clock **to the whole second** (ages, remaining times and
/// schedule states are whole seconds in the view anyway): a view rendered in one second is
/// the same bytes all that second, so rendered views can be reused ([`ViewContext::frame`]).
pub struct ViewContext<'a> {
    engine: &'a Engine,
    now: DateTime<Utc>,
    settings: ccm_domain::RuntimeSettings,
    frame: RenderFrame,
}

/// Everything a worker's view depends on besides the worker's document and its CML
/// endpoint's breaker: the second it is rendered in, the version of the runtime settings and
/// the fleet picture (the engine keeps one `Arc` until it changes). Two renders of the same
/// document in equal frames, with equal breakers, are the same bytes.
#[derive(Debug, Clone)]
pub struct RenderFrame {
    second: i64,
    settings_version: u64,
    fleet: std::sync::Arc<ccm_domain::idle::FleetPicture>,
}

impl RenderFrame {
    /// The whole second (Unix time) the views of this frame are rendered for.
    pub(crate) fn second(&self) -> i64 {
        self.second
    }
}

impl PartialEq for RenderFrame {
    fn eq(&self, other: &Self) -> bool {
        self.second == other.second
            && self.settings_version == other.settings_version
            && std::sync::Arc::ptr_eq(&self.fleet, &other.fleet)
    }
}

impl<'a> ViewContext<'a> {
    /// The engine's view now (to the whole second).
    pub fn new(engine: &'a Engine) -> Self {
        let now = engine.now();
        Self::at(engine, now.with_nanosecond(0).unwrap_or(now))
    }

    /// The engine's view at `now` (a whole second: views rendered ahead for the next second),
    /// with the settings and fleet picture it has at the call.
    pub(crate) fn at(engine: &'a Engine, now: DateTime<Utc>) -> Self {
        let settings = engine.settings();
        let fleet = engine.fleet_picture();
        Self {
            engine,
            now,
            settings: settings.value,
            frame: RenderFrame {
                second: now.timestamp(),
                settings_version: settings.version,
                fleet,
            },
        }
    }

    /// The engine this context reads breakers from.
    pub fn engine(&self) -> &'a Engine {
        self.engine
    }

    /// What the views of this context depend on besides each worker.
    pub fn frame(&self) -> &RenderFrame {
        &self.frame
    }
}

impl WorkerView {
    /// The view of `w` as the engine sees it now (freshness, breaker, idle policy).
    pub fn new(w: &Worker, engine: &Engine) -> Self {
        Self::in_context(w, &ViewContext::new(engine))
    }

    /// The view of `w` in `ctx` (one context for every worker of an answer).
    pub fn in_context(w: &Worker, ctx: &ViewContext<'_>) -> Self {
        let breaker = ctx.engine.breaker_of(w).as_ref().map(BreakerView::from);
        Self::with_breaker(w, ctx, breaker)
    }

    /// The view of `w` in `ctx` with its endpoint's breaker as read by the caller (who keeps
    /// what it read beside the rendered view).
    pub fn with_breaker(w: &Worker, ctx: &ViewContext<'_>, breaker: Option<BreakerView>) -> Self {
        let (now, settings) = (ctx.now, &ctx.settings);
        let max_age = settings.polling.stale_max_age;
        let m = &w.monitoring;
        let decision = ccm_domain::idle::evaluate_with(w, &settings.idle, &ctx.frame.fleet, now);
        let (action, keep_reason, remaining) = match &decision.action {
            IdleAction::Pause => ("pause", None, None),
            IdleAction::WouldPause => ("would_pause", None, None),
            IdleAction::Keep { reason } => {
                let remaining = match reason {
                    KeepReason::NotIdle { remaining } | KeepReason::Snoozed { remaining } => {
                        Some(remaining.as_secs())
                    }
                    _ => None,
                };
                let name = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned));
                ("keep", name, remaining)
            }
        };
        Self {
            id: w.id.as_uuid(),
            name: w.name.clone(),
            region: w.region.to_string(),
            instance_id: w.instance_id.as_ref().map(ToString::to_string),
            instance_type: w.instance_type.as_ref().map(ToString::to_string),
            ami: w.ami.as_ref().map(|a| AmiView {
                id: a.id.to_string(),
                name: a.name.clone(),
                owner: a.owner.clone(),
            }),
            ec2_state: w.ec2_state.as_str().to_owned(),
            state_reason: w.state_reason.clone(),
            launched_at: w.launched_at,
            service: ServiceView {
                status: w.service.status.as_str().to_owned(),
                reasons: w.service.reasons.iter().map(ReasonView::from).collect(),
                checked_at: w.service.checked_at,
            },
            endpoint: w.endpoint.clone(),
            public_ip: w.public_ip.map(|i| i.to_string()),
            private_ip: w.private_ip.map(|i| i.to_string()),
            tags: w.tags.clone(),
            sources: SourcesView {
                system_information: SourceView::of(&w.cml.info, now, max_age, |x| {
                    CmlInfoView::from(x)
                }),
                health: SourceView::of(&w.cml.health, now, max_age, |x| CmlHealthView::from(x)),
                stats: SourceView::of(&w.cml.stats, now, max_age, |x| CmlStatsView::from(x)),
                licence: SourceView::of(&w.cml.licence, now, max_age, |x| LicenceView::from(x)),
                labs_count: SourceView::of(&w.labs_count, now, max_age, |n| *n),
                cloudwatch: SourceView::of(&w.cloudwatch, now, max_age, |x| {
                    CloudWatchView::from(x)
                }),
                ec2_status: SourceView::of(&w.ec2_status, now, max_age, |x| {
                    StatusChecksView::from(x)
                }),
            },
            breaker,
            monitoring: MonitoringView {
                idle_detection: m.idle_detection,
                detailed_monitoring: m.detailed_monitoring,
                last_activity: m.last_activity,
                last_activity_source: m.last_activity_source.as_ref().map(|s| match s {
                    ActivitySource::Telemetry { category, user_id } => ActivitySourceView {
                        kind: "telemetry".into(),
                        category: Some(category.clone()),
                        user_id: user_id.clone(),
                        running_nodes: None,
                    },
                    ActivitySource::RunningNodes { count } => ActivitySourceView {
                        kind: "running_nodes".into(),
                        category: None,
                        user_id: None,
                        running_nodes: Some(*count),
                    },
                }),
                last_interaction: m.last_interaction,
                last_running_nodes_at: m.last_running_nodes_at,
                running_nodes: m.running_nodes,
                snooze: w.snoozed_until(now).map(|s| SnoozeView {
                    until: s.until,
                    by: s.by.to_string(),
                    at: s.at,
                }),
                schedule: ccm_domain::schedule::rule_for(&settings.schedules, w).map(|r| {
                    let (state, since, until, next) = match r.off_hours.state_at(now) {
                        ScheduleState::OffHours { since, until } => {
                            ("off_hours", Some(since), Some(until), None)
                        }
                        ScheduleState::Working { next } => ("working", None, None, next),
                    };
                    ScheduleView {
                        selector: r.selector.to_string(),
                        off_hours: r.off_hours.to_string(),
                        state: state.into(),
                        since,
                        until,
                        next,
                    }
                }),
                activity_checked_at: m.activity_checked_at,
                last_resume: m.last_resume,
                paused_at: m.paused_at,
                pause_reason: m.pause_reason.as_ref().map(enum_text),
                pauses: (&m.pauses).into(),
                resumes: (&m.resumes).into(),
                history: m
                    .history
                    .iter()
                    .map(|h| HistoryView {
                        at: h.at,
                        kind: match h.kind {
                            HistoryKind::Paused => "paused".into(),
                            HistoryKind::Resumed => "resumed".into(),
                        },
                        reason: h.reason.clone(),
                        by: h.by.as_ref().map(ToString::to_string),
                    })
                    .collect(),
                seconds_stopped_by_ccm: w.seconds_stopped_by_ccm(now),
                idle: IdleView {
                    idle: decision.idle,
                    idle_for_seconds: decision.idle_for.as_secs(),
                    since: decision.since,
                    action: action.to_owned(),
                    keep_reason,
                    remaining_seconds: remaining,
                    pause_at: decision.pause_at,
                    warning: decision.warn,
                    running_nodes_count_as_use: settings.idle.running_nodes_count_as_use,
                    timeout_seconds: decision.timeout.as_secs(),
                    fleet_busy: decision.fleet_busy,
                    timeout_rule: decision.timeout_rule.name().to_owned(),
                    return_breaks: decision.returns.map(|r| r.breaks),
                    return_returned: decision.returns.map(|r| r.returned),
                    return_scope: decision.returns.map(|r| {
                        match r.scope {
                            ccm_domain::idle::ReturnScope::Worker => "worker",
                            ccm_domain::idle::ReturnScope::Fleet => "fleet",
                        }
                        .to_owned()
                    }),
                    midday_dip: decision.midday.map(|m| MiddayDipView {
                        dip: m.dip,
                        before: m.before,
                        middle: m.middle,
                        after: m.after,
                    }),
                },
            },
            created_at: w.created_at,
            created_by: w.created_by.to_string(),
            updated_at: w.updated_at,
            updated_by: w.updated_by.to_string(),
            terminated_at: w.terminated_at,
            terminated_by: w.terminated_by.as_ref().map(ToString::to_string),
            version: w.version,
            actions: w
                .allowed_actions()
                .into_iter()
                .filter_map(|a| {
                    serde_json::to_value(a)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                })
                .collect(),
            action_reasons: w
                .action_blockers()
                .into_iter()
                .filter_map(|(a, why)| {
                    serde_json::to_value(a)
                        .ok()
                        .and_then(|v| v.as_str().map(|k| (k.to_owned(), why)))
                })
                .collect(),
            cml_blocked: w.cml_blocker().map(str::to_owned),
        }
    }
}

/// Sort keys of the worker list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// By name.
    #[default]
    Name,
    /// By creation time.
    Created,
    /// By last change.
    Updated,
    /// By EC2 state.
    State,
    /// By service status.
    Service,
    /// By region.
    Region,
}

/// Sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Ascending.
    #[default]
    Asc,
    /// Descending.
    Desc,
}

impl SortKey {
    /// Every sort key.
    pub const ALL: [SortKey; 6] = [
        Self::Name,
        Self::Created,
        Self::Updated,
        Self::State,
        Self::Service,
        Self::Region,
    ];

    /// The query-string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Created => "created",
            Self::Updated => "updated",
            Self::State => "state",
            Self::Service => "service",
            Self::Region => "region",
        }
    }
}

/// Filters, sort and page of the worker list (`GET /api/v1/workers`; the CLI sends it too).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WorkerListQuery {
    /// Regions (repeat the parameter, or comma-separate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region: Vec<String>,
    /// EC2 states: `pending`, `running`, `stopping`, `stopped`, `shutting-down`,
    /// `terminated`, `failed`, `unknown`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<String>,
    /// Service statuses: `ready`, `degraded`, `unavailable`, `unknown`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service: Vec<String>,
    /// Text in the name, id or instance id (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// Sort key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<SortKey>,
    /// Sort order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Rows to skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

/// A page of workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerPage {
    /// The workers.
    pub items: Vec<WorkerView>,
    /// How many matched in all.
    pub total: u64,
    /// The page size used.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
}

/// A lab on a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LabView {
    /// The worker.
    pub worker_id: Uuid,
    /// CML's lab id.
    pub lab_id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// `DEFINED_ON_CORE`, `STOPPED`, `STARTED`.
    pub state: String,
    /// Owner user id.
    pub owner: Option<String>,
    /// Owner user name.
    pub owner_username: Option<String>,
    /// Nodes.
    pub node_count: u32,
    /// Links.
    pub link_count: u32,
    /// Created in CML.
    pub created: Option<DateTime<Utc>>,
    /// Modified in CML.
    pub modified: Option<DateTime<Utc>>,
    /// When ccm read it.
    pub observed_at: DateTime<Utc>,
    /// Why CML would refuse an action in the lab's state (`start`, `stop`, `wipe`,
    /// `delete` → reason); an action not listed is possible.
    pub action_reasons: BTreeMap<String, String>,
}

impl From<&LabRecord> for LabView {
    fn from(l: &LabRecord) -> Self {
        Self {
            worker_id: l.worker_id.as_uuid(),
            lab_id: l.lab_id.to_string(),
            title: l.title.clone(),
            description: l.description.clone(),
            state: l.state.as_str().to_owned(),
            owner: l.owner.clone(),
            owner_username: l.owner_username.clone(),
            node_count: l.node_count,
            link_count: l.link_count,
            created: l.created,
            modified: l.modified,
            observed_at: l.observed_at,
            action_reasons: [
                LabAction::Start,
                LabAction::Stop,
                LabAction::Wipe,
                LabAction::Delete,
            ]
            .into_iter()
            .filter_map(|a| {
                let why = l.action_blocker(a)?;
                let key = serde_json::to_value(a).ok()?.as_str()?.to_owned();
                Some((key, why.to_owned()))
            })
            .collect(),
        }
    }
}

/// The labs of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LabList {
    /// The labs, by title.
    pub items: Vec<LabView>,
}

/// A lab action's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LabActionView {
    /// The lab.
    pub lab_id: String,
    /// `start`, `stop`, `wipe`, `delete`, `import`.
    pub action: String,
    /// The lab as read after the action (`null` once deleted, or if not read yet).
    pub lab: Option<LabView>,
}

/// One metrics point (averages over a bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsPointView {
    /// Start of the bucket.
    pub at: DateTime<Utc>,
    /// Samples in the bucket.
    pub samples: u64,
    /// CloudWatch CPU.
    pub cpu_percent: Option<f64>,
    /// CloudWatch memory.
    pub memory_percent: Option<f64>,
    /// CML CPU.
    pub cml_cpu_percent: Option<f64>,
    /// CML memory.
    pub cml_memory_percent: Option<f64>,
    /// Most running nodes.
    pub running_nodes: Option<u64>,
}

impl From<&ccm_store::MetricsPoint> for MetricsPointView {
    fn from(p: &ccm_store::MetricsPoint) -> Self {
        Self {
            at: p.at,
            samples: p.samples,
            cpu_percent: p.cpu_percent,
            memory_percent: p.memory_percent,
            cml_cpu_percent: p.cml_cpu_percent,
            cml_memory_percent: p.cml_memory_percent,
            running_nodes: p.running_nodes,
        }
    }
}

/// The metrics history of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsHistory {
    /// The worker.
    pub worker_id: Uuid,
    /// From when.
    pub since: DateTime<Utc>,
    /// The points, oldest first.
    pub points: Vec<MetricsPointView>,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventRecord {
    /// Position in the event log (the SSE id).
    pub seq: u64,
    /// The CloudEvent (CloudEvents 1.0 JSON; schema `CloudEvent`, one per `type`).
    #[schema(schema_with = cloud_event_schema)]
    pub event: serde_json::Value,
}

fn cloud_event_schema() -> utoipa::openapi::Ref {
    utoipa::openapi::Ref::from_schema_name(crate::event_schema::CLOUD_EVENT)
}

/// A page of a worker's events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// The events.
    pub items: Vec<EventRecord>,
    /// Pass as `before` for the next (older) page; `null` at the end.
    pub next_before: Option<u64>,
}

/// What an on-demand refresh did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RefreshView {
    /// `refreshed`, `joined` (one was running) or `skipped`.
    pub outcome: String,
    /// For `skipped`: `not_running`, `throttled`, `already_running`.
    pub reason: Option<String>,
    /// For `throttled`: when a refresh is allowed again.
    pub retry_in_seconds: Option<u64>,
    /// The worker after the refresh.
    pub worker: WorkerView,
}

/// One instance an import left out. (The schema keeps its published name `SkippedInstance`;
/// the Rust name differs from `ccm_cloud::SkippedInstance`, an instance a describe skipped.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = SkippedInstance)]
pub struct SkippedInstanceView {
    /// The instance.
    pub instance_id: String,
    /// Why.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportView {
    /// Instances that matched.
    pub matched: u32,
    /// Workers created.
    pub imported: Vec<Uuid>,
    /// Instances that already were workers.
    pub existing: Vec<Uuid>,
    /// Instances left out.
    pub skipped: Vec<SkippedInstanceView>,
}

impl From<ccm_engine::ImportReport> for ImportView {
    fn from(r: ccm_engine::ImportReport) -> Self {
        Self {
            matched: r.matched,
            imported: r.imported.iter().map(|w| w.as_uuid()).collect(),
            existing: r.existing.iter().map(|w| w.as_uuid()).collect(),
            skipped: r
                .skipped
                .into_iter()
                .map(|(instance_id, reason)| SkippedInstanceView {
                    instance_id,
                    reason,
                })
                .collect(),
        }
    }
}

/// What a create or import form may offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProvisioningView {
    /// Regions the cloud serves.
    pub regions: Vec<String>,
    /// The region used when a request names none.
    pub default_region: Option<String>,
    /// The instance type used when a request names none.
    pub default_instance_type: String,
    /// The instance types a request may choose, the default first; empty: any valid type.
    pub instance_types: Vec<String>,
    /// The configured image id, if any (wins over the pattern).
    pub ami_id: Option<String>,
    /// The configured image name pattern, if any.
    pub ami_name_pattern: Option<String>,
    /// Tags every new worker gets.
    pub tags: BTreeMap<String, String>,
    /// The configured import filter (`configured: true` in an import).
    pub import: ImportFilterView,
}

/// The configured `[import]` filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportFilterView {
    /// Regions an import searches.
    pub regions: Vec<String>,
    /// Instances from images whose name matches.
    pub ami_name_pattern: Option<String>,
    /// Instances carrying this tag (`key=value`).
    pub tag: Option<String>,
}

impl From<ccm_engine::ProvisioningOptions> for ProvisioningView {
    fn from(o: ccm_engine::ProvisioningOptions) -> Self {
        Self {
            regions: o.regions.iter().map(ToString::to_string).collect(),
            default_region: o.default_region.map(|r| r.to_string()),
            default_instance_type: o.default_instance_type,
            instance_types: o.instance_types,
            ami_id: o.ami_id,
            ami_name_pattern: o.ami_name_pattern,
            tags: o.tags,
            import: ImportFilterView {
                regions: o.import_regions.iter().map(ToString::to_string).collect(),
                ami_name_pattern: o.import_ami_name_pattern,
                tag: o.import_tag,
            },
        }
    }
}

/// An image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageView {
    /// Image id.
    pub id: String,
    /// Image name.
    pub name: String,
    /// The owner's account id.
    pub owner_id: Option<String>,
    /// When it was created.
    pub creation_date: Option<DateTime<Utc>>,
    /// EC2's state of the image (`available`, …).
    pub state: String,
    /// Description.
    pub description: Option<String>,
}

/// The image a create request would use, resolved without launching anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImagePreviewView {
    /// The region searched.
    pub region: String,
    /// The image that would be used (the newest match of the trusted owners).
    pub selected: Option<ImageView>,
    /// The images considered (today: the selected one).
    pub images: Vec<ImageView>,
}

/// One instance an import would take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportCandidateView {
    /// The instance.
    pub instance_id: String,
    /// Its region.
    pub region: String,
    /// Its `Name` tag.
    pub name: Option<String>,
    /// Its EC2 state.
    pub state: String,
    /// Its instance type.
    pub instance_type: String,
    /// Its image.
    pub image_id: String,
    /// When it was launched.
    pub launch_time: Option<DateTime<Utc>>,
    /// The worker it already is (`null`: the import would create one).
    pub worker_id: Option<Uuid>,
    /// Why it would not be imported, if so.
    pub skip_reason: Option<String>,
}

/// What an import would do (nothing is changed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportPreviewView {
    /// Every matching instance.
    pub candidates: Vec<ImportCandidateView>,
    /// How many would become new workers.
    pub new: u32,
    /// How many already are workers.
    pub existing: u32,
    /// Ids asked for but not found.
    pub skipped: Vec<SkippedInstanceView>,
    /// Whether the import needs `all: true` (several matches of an image selector).
    pub needs_all: bool,
}

impl From<ccm_engine::ImportPreview> for ImportPreviewView {
    fn from(p: ccm_engine::ImportPreview) -> Self {
        let importable = |c: &&ccm_engine::ImportCandidate| c.skip_reason.is_none();
        Self {
            new: p
                .candidates
                .iter()
                .filter(importable)
                .filter(|c| c.worker.is_none())
                .count() as u32,
            existing: p
                .candidates
                .iter()
                .filter(importable)
                .filter(|c| c.worker.is_some())
                .count() as u32,
            candidates: p
                .candidates
                .into_iter()
                .map(|c| ImportCandidateView {
                    instance_id: c.instance_id.to_string(),
                    region: c.region.to_string(),
                    name: c.name,
                    state: c.state.as_str().to_owned(),
                    instance_type: c.instance_type.to_string(),
                    image_id: c.image_id.to_string(),
                    launch_time: c.launch_time,
                    worker_id: c.worker.map(|w| w.as_uuid()),
                    skip_reason: c.skip_reason,
                })
                .collect(),
            skipped: p
                .skipped
                .into_iter()
                .map(|(instance_id, reason)| SkippedInstanceView {
                    instance_id,
                    reason,
                })
                .collect(),
            needs_all: p.needs_all,
        }
    }
}

/// Where to follow an asynchronous operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WatchLinks {
    /// The SSE stream of the operation's events.
    pub events: String,
    /// The resource.
    pub worker: String,
}

/// An accepted licence operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LicenceAccepted {
    /// `register` or `deregister`.
    pub operation: String,
    /// The worker.
    pub worker_id: Uuid,
    /// Where to follow it (`ccm.licence.*` events end with `registered`/`registration_failed`
    /// or `deregistered`/`deregistration_failed`).
    pub watch: WatchLinks,
}

// === views: system ===

/// One component's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComponentView {
    /// Name.
    pub name: String,
    /// Healthy.
    pub ok: bool,
    /// Details.
    pub detail: String,
}

impl From<&ccm_engine::ComponentHealth> for ComponentView {
    fn from(c: &ccm_engine::ComponentHealth) -> Self {
        Self {
            name: c.name.clone(),
            ok: c.ok,
            detail: c.detail.clone(),
        }
    }
}

/// Health of ccm and what it depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthView {
    /// Every component healthy.
    pub healthy: bool,
    /// The database.
    pub database: ComponentView,
    /// The scheduler.
    pub scheduler: ComponentView,
    /// The cloud provider per region.
    pub providers: Vec<ComponentView>,
    /// Workers known.
    pub workers: usize,
}

/// Worker counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CountsView {
    /// Workers known.
    pub total: u64,
    /// By EC2 state.
    pub by_state: BTreeMap<String, u64>,
    /// By service status.
    pub by_service: BTreeMap<String, u64>,
    /// Live SSE clients.
    pub sse_clients: usize,
}

/// The retry budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetView {
    /// Whether it limits retries.
    pub enabled: bool,
    /// Calls in the window.
    pub calls: u64,
    /// Retries in the window.
    pub retries: u64,
    /// Retries allowed now.
    pub available: u64,
    /// Exhausted (and not recovered).
    pub exhausted: bool,
}

/// A bulkhead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BulkheadView {
    /// Name (`cml_poll`, `labs`, `aws`).
    pub name: String,
    /// Calls holding a slot.
    pub in_flight: usize,
    /// Calls waiting.
    pub queued: usize,
    /// Concurrency limit (`null`: unlimited).
    pub max_concurrent: Option<usize>,
    /// Queue limit.
    pub max_queue: usize,
}

/// Breakers, the retry budget and the bulkheads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResilienceView {
    /// Every circuit breaker, by key.
    pub breakers: Vec<BreakerView>,
    /// Breakers open now.
    pub open: usize,
    /// The fleet-wide retry budget.
    pub budget: BudgetView,
    /// The bulkheads.
    pub bulkheads: Vec<BulkheadView>,
}

/// A background job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// `ec2_sync`, `cml_sync`, `metrics`, `labs`, `activity`, `auto_import`, `event_retention`.
    pub job: String,
    /// Switched on.
    pub enabled: bool,
    /// Interval, seconds.
    pub interval_seconds: u64,
    /// Runs finished.
    pub runs: u64,
    /// Runs failed.
    pub failures: u64,
    /// Running now.
    pub in_flight: u64,
    /// Workers scheduled (per-worker jobs).
    pub scheduled: u64,
    /// Last run started.
    pub last_started: Option<DateTime<Utc>>,
    /// Last run finished.
    pub last_finished: Option<DateTime<Utc>>,
    /// Its duration.
    pub last_duration_ms: Option<u64>,
    /// Its error.
    pub last_error: Option<String>,
}

impl From<&ccm_engine::JobStatus> for JobView {
    fn from(j: &ccm_engine::JobStatus) -> Self {
        Self {
            job: j.job.as_str().to_owned(),
            enabled: j.enabled,
            interval_seconds: j.interval.as_secs(),
            runs: j.runs,
            failures: j.failures,
            in_flight: j.in_flight,
            scheduled: j.scheduled,
            last_started: j.last_started,
            last_finished: j.last_finished,
            last_duration_ms: j.last_duration_ms,
            last_error: j.last_error.clone(),
        }
    }
}

/// One replica of a cluster (several `ccm serve` on one PostgreSQL database).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaView {
    /// Its id.
    pub id: String,
    /// Where its API listens (as it advertises).
    pub address: String,
    /// Its ccm version.
    pub version: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Seconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_seconds: f64,
    /// Its heartbeat is younger than the lease TTL.
    pub live: bool,
    /// This is the replica answering.
    pub this: bool,
    /// Worker partitions it holds.
    pub partitions: u32,
    /// Fleet-job leases it holds (`job:ec2_sync:eu-west-1`, …).
    pub jobs: Vec<String>,
    /// Workers in the partitions it holds.
    pub workers: u64,
}

/// The replicas (`GET /api/v1/system/replicas`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaList {
    /// `single_node` (SQLite: this process owns everything) or `cluster`.
    pub mode: String,
    /// Seconds a lease lasts without renewal (cluster only).
    pub lease_ttl_seconds: Option<f64>,
    /// Worker partitions (cluster only).
    pub partitions: Option<u32>,
    /// Every registered replica (empty for a single node).
    pub items: Vec<ReplicaView>,
}

/// The background jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Every job.
    pub items: Vec<JobView>,
}

/// Savings of one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerSavingsView {
    /// Worker.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Instance type.
    pub instance_type: Option<String>,
    /// Instance-hours stopped by ccm.
    pub hours: f64,
    /// Hourly price, if configured.
    pub hourly_price: Option<f64>,
    /// Money saved.
    pub saved: Option<f64>,
    /// Pauses by the idle policy.
    pub idle_pauses: u64,
    /// Pauses by operators.
    pub manual_pauses: u64,
}

/// The fleet's savings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SavingsView {
    /// When computed.
    pub generated_at: DateTime<Utc>,
    /// Instance-hours stopped by ccm.
    pub total_hours: f64,
    /// Money saved over the workers whose price is known.
    pub total_saved: f64,
    /// Currency.
    pub currency: String,
    /// Instance types without a configured price.
    pub missing_prices: Vec<String>,
    /// Per worker, most saved first.
    pub workers: Vec<WorkerSavingsView>,
    /// The tag key `groups` are split by (`?tag=`), if any.
    pub group_tag: Option<String>,
    /// Hours and money by ISO week, tag value and reason, oldest week first.
    pub groups: Vec<SavingsGroupView>,
}

/// Savings of one (week, tag value, reason).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SavingsGroupView {
    /// ISO week, e.g. `2026-W10` (weeks start Monday 00:00 UTC).
    pub week: String,
    /// The grouping tag's value (`""` when absent or with no grouping tag).
    pub tag: String,
    /// `idle_timeout`, `schedule` or `manual`.
    pub reason: String,
    /// Workers contributing.
    pub workers: u64,
    /// Instance-hours stopped.
    pub hours: f64,
    /// Money, over the workers whose price is known.
    pub saved: f64,
}

impl From<ccm_domain::savings::SavingsReport> for SavingsView {
    fn from(r: ccm_domain::savings::SavingsReport) -> Self {
        Self {
            generated_at: r.generated_at,
            total_hours: r.total_hours,
            total_saved: r.total_saved,
            currency: r.currency,
            missing_prices: r.missing_prices,
            workers: r
                .workers
                .into_iter()
                .map(|w| WorkerSavingsView {
                    id: w.id.as_uuid(),
                    name: w.name,
                    instance_type: w.instance_type,
                    hours: w.hours,
                    hourly_price: w.hourly_price,
                    saved: w.saved,
                    idle_pauses: w.idle_pauses,
                    manual_pauses: w.manual_pauses,
                })
                .collect(),
            group_tag: r.group_tag,
            groups: r
                .groups
                .into_iter()
                .map(|g| SavingsGroupView {
                    week: g.week,
                    tag: g.tag,
                    reason: g.reason,
                    workers: g.workers,
                    hours: g.hours,
                    saved: g.saved,
                })
                .collect(),
        }
    }
}

/// The runtime settings with their version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SettingsView {
    /// Version (0: defaults, never stored). Send it as `If-Match` to update safely.
    pub version: u64,
    /// The settings: `idle` {enabled, timeout, snooze_after_resume, dry_run,
    /// activity_max_age} and `polling` {ec2_enabled, ec2_interval, cml_enabled, …,
    /// stale_max_age}; durations as text (`30m`, `1h 30m`).
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
}

// === session ===

/// The signed-in caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// Name recorded on what they do.
    pub user: String,
    /// Role.
    pub role: Role,
    /// How they authenticated.
    pub method: AuthMethod,
    /// Whether this request used the session cookie (else a bearer token).
    pub cookie: bool,
    /// With the cookie: the token to send as `X-CSRF-Token` on state-changing requests.
    pub csrf_token: Option<String>,
    /// With the cookie: when the session ends.
    pub expires_at: Option<DateTime<Utc>>,
    /// The routes this caller's role may call, as `METHOD /path/{template}` (from the role
    /// table): a UI shows only the buttons whose route is listed.
    pub permissions: Vec<String>,
}

/// How a browser can sign in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SignInMethods {
    /// With an API token (`POST /api/v1/session`).
    pub token: bool,
    /// Through the OIDC provider (`GET /api/v1/session/oidc`), when configured.
    pub oidc: Option<String>,
}

// === requests ===

/// Provision a new worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkerRequest {
    /// Display name (1–128 characters; also the EC2 `Name` tag).
    pub name: String,
    /// Region (default: the configured one).
    #[serde(default)]
    pub region: Option<String>,
    /// Instance type (default: the configured one).
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Image id (`ami-…`).
    #[serde(default)]
    pub ami_id: Option<String>,
    /// Or: the newest image whose name matches (e.g. `cml-controller-2.9*`).
    #[serde(default)]
    pub ami_name_pattern: Option<String>,
    /// Extra tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Import existing EC2 instances as workers. Give exactly one of `instance_ids`, `ami_id`,
/// `ami_name_pattern` or `configured: true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportWorkersRequest {
    /// Region to search (default: all configured regions).
    #[serde(default)]
    pub region: Option<String>,
    /// These instances.
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    /// Instances launched from this image.
    #[serde(default)]
    pub ami_id: Option<String>,
    /// Instances launched from images whose name matches.
    #[serde(default)]
    pub ami_name_pattern: Option<String>,
    /// The configured `[import]` filter.
    #[serde(default)]
    pub configured: bool,
    /// Import every match (otherwise more than one match of an image selector is refused).
    #[serde(default)]
    pub all: bool,
}

/// Set and remove tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsRequest {
    /// Tags to set.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Tag keys to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Keep a worker awake: `until` (RFC 3339) or `for` (a duration such as `4h`), one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeRequest {
    /// Keep awake until this time.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Keep awake for this long from now (`90m`, `4h`, `1d`).
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
}

/// Switch idle detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdleDetectionRequest {
    /// On or off.
    pub enabled: bool,
}

/// Register the CML licence. `Debug` and `Serialize` mask the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenceRequest {
    /// The Smart Licensing token (never stored, logged or echoed).
    #[schema(value_type = String)]
    pub token: Secret,
    /// Register again even if registered.
    #[serde(default)]
    pub reregister: bool,
}

/// A lab topology to import, as JSON (the raw YAML body works too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabImportRequest {
    /// The topology (CML YAML or JSON).
    pub topology: String,
    /// Title for the new lab.
    #[serde(default)]
    pub title: Option<String>,
}

/// The new lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LabImported {
    /// Its id.
    pub lab_id: String,
    /// The lab as read after the import.
    pub lab: Option<LabView>,
}

/// Sign in with an API token. `Debug` and `Serialize` mask the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// A static API token or an OIDC access token.
    #[schema(value_type = String)]
    pub token: Secret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_licence_request_should_keep_its_token_out_of_debug_and_serialized_output() {
        let req: LicenceRequest =
            serde_json::from_str(r#"{"token": "SmartLicenceToken42", "reregister": true}"#)
                .unwrap();
        assert_eq!(req.token.expose(), "SmartLicenceToken42");
        let debug = format!("{req:?}");
        let json = serde_json::to_string(&req).unwrap();
        for text in [&debug, &json] {
            assert!(!text.contains("SmartLicenceToken42"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
    }

    #[test]
    fn the_sign_in_request_should_keep_its_token_out_of_debug_and_serialized_output() {
        let req: SignInRequest = serde_json::from_str(r#"{"token": "ccm_SignInToken"}"#).unwrap();
        assert_eq!(req.token.expose(), "ccm_SignInToken");
        let debug = format!("{req:?}");
        let json = serde_json::to_string(&req).unwrap();
        for text in [&debug, &json] {
            assert!(!text.contains("ccm_SignInToken"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
    }
}
