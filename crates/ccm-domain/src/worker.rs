//! The Worker aggregate: one CML instance on one EC2 instance, and everything ccm knows and
//! does about it.
//!
//! All changes go through methods that validate them and return the events they caused;
//! the caller (the engine) stamps the events and stores the worker. EC2 state changes go
//! through [`Ec2State::transition`]; stopping clears addresses, endpoint and live metrics; the
//! endpoint is recomputed whenever an address appears.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::cml::{CmlHealth, CmlInfo, CmlStats};
use crate::ec2::{Ec2State, InvalidTransition, StatusChecks};
use crate::events::EventKind;
use crate::ids::{Actor, AmiId, InstanceId, InstanceType, Region, WorkerId};
use crate::licence::Licence;
use crate::lifecycle::{PauseReason, RefreshSkip, ResumeReason, WorkerAction};
use crate::observed::Sourced;
use crate::service::{
    Assessment, CallOutcome, CmlCall, Reason, ReasonCode, ServiceStatus, SyncOutcome,
    derive_status, with_ec2_checks,
};

/// How long a requested stop or start waits to be observed before it no longer explains a
/// change (after that, a stop is counted as external).
pub const PENDING_ACTION_TTL: Duration = Duration::minutes(30);

/// How many pause/resume entries a worker keeps.
pub const HISTORY_LEN: usize = 50;

/// The default EC2 tag whose value, when an instance carries it, is the worker's CML base URL.
pub const DEFAULT_ENDPOINT_TAG: &str = "ccm:cml-endpoint";

/// How to build a worker's CML endpoint from its addresses (or take it from a tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointPolicy {
    /// `https` for real CML, `http` for the simulator.
    pub scheme: String,
    /// Port, when not the scheme's default.
    pub port: Option<u16>,
    /// Which address to use.
    pub address: AddressPreference,
    /// The EC2 tag whose value replaces the address-derived URL (workers behind DNS names or
    /// load balancers). Empty: no tag is looked at.
    pub tag: String,
}

impl Default for EndpointPolicy {
    fn default() -> Self {
        Self {
            scheme: "https".into(),
            port: None,
            address: AddressPreference::Public,
            tag: DEFAULT_ENDPOINT_TAG.into(),
        }
    }
}

/// Why an endpoint tag's value cannot be used. The message never repeats the value (it may
/// hold credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the endpoint tag is not a usable CML base URL: {reason}")]
pub struct InvalidEndpointTag {
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks an endpoint tag's value: an `http` or `https` URL with a host, no user info, no
/// query or fragment; returns it without a trailing `/`. Hand-written (no `url` crate in the
/// domain): the grammar accepted is deliberately narrow, the CML client parses it again.
pub fn parse_endpoint_tag(value: &str) -> Result<String, InvalidEndpointTag> {
    let bad = |reason| Err(InvalidEndpointTag { reason });
    let value = value.trim();
    if value.len() > 2048 {
        return bad("longer than 2048 characters");
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("contains spaces or control characters");
    }
    let Some((scheme, rest)) = value.split_once("://") else {
        return bad("not a url (scheme://host)");
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return bad("the scheme must be http or https");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return bad("credentials in the url are not allowed");
    }
    if rest.contains('#') {
        return bad("a fragment is not allowed");
    }
    if rest.contains('?') {
        return bad("a query is not allowed");
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return bad("a malformed ipv6 host"),
            },
            None => return bad("a malformed ipv6 host"),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return bad("no host");
    }
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return bad("the port must be 1 to 65535");
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return bad("the host has characters a host name cannot have");
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// Which of a worker's addresses ccm talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressPreference {
    /// The public address, else the private one.
    #[default]
    Public,
    /// The private address, else the public one (ccm runs inside the VPC).
    Private,
}

impl EndpointPolicy {
    /// The base URL an instance's tags name, if the policy has a tag and they carry it:
    /// `Some(Err(_))` when the value is not a usable URL.
    pub fn from_tags(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Option<Result<String, InvalidEndpointTag>> {
        if self.tag.is_empty() {
            return None;
        }
        tags.get(&self.tag).map(|v| parse_endpoint_tag(v))
    }

    /// The base URL for these addresses, if any.
    pub fn endpoint(&self, public: Option<IpAddr>, private: Option<IpAddr>) -> Option<String> {
        let ip = match self.address {
            AddressPreference::Public => public.or(private),
            AddressPreference::Private => private.or(public),
        }?;
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        Some(match self.port {
            Some(port) => format!("{}://{host}:{port}", self.scheme),
            None => format!("{}://{host}", self.scheme),
        })
    }
}

/// An AMI: id and, when known, name and owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ami {
    /// Image id.
    pub id: AmiId,
    /// Image name.
    pub name: Option<String>,
    /// The AWS account that owns the image, when known (recorded when ccm chose the image;
    /// documents stored before owners were recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The latest service assessment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Status.
    pub status: ServiceStatus,
    /// Why it is not ready.
    pub reasons: Vec<Reason>,
    /// When the sync that produced it ran.
    pub checked_at: Option<DateTime<Utc>>,
    /// The status CML's own sync gave, before EC2's status checks were applied (`status` is
    /// that plus the checks; see [`crate::service::with_ec2_checks`]). `None` before the first
    /// sync, and in documents stored before status checks were read (where `status` is CML's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cml_status: Option<ServiceStatus>,
}

impl Default for ServiceState {
    fn default() -> Self {
        Self {
            status: ServiceStatus::Unknown,
            reasons: Vec::new(),
            checked_at: None,
            cml_status: None,
        }
    }
}

/// What ccm knows of the worker's CML, each source with its age.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CmlState {
    /// `system_information`.
    pub info: Sourced<CmlInfo>,
    /// `system_health`.
    pub health: Sourced<CmlHealth>,
    /// `system_stats`.
    pub stats: Sourced<CmlStats>,
    /// `licensing`.
    pub licence: Sourced<Licence>,
    /// ccm's own CML user id on this worker (from `/auth_extended`).
    pub own_user_id: Option<String>,
}

/// CloudWatch metrics of the instance.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CloudWatchMetrics {
    /// `AWS/EC2 CPUUtilization`, percent.
    pub cpu_percent: Option<f64>,
    /// When that datapoint was taken.
    pub cpu_at: Option<DateTime<Utc>>,
    /// `CWAgent mem_used_percent`.
    pub memory_percent: Option<f64>,
    /// When that datapoint was taken.
    pub memory_at: Option<DateTime<Utc>>,
}

/// A requested stop or start, waiting to be observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAction<R> {
    /// Why.
    pub reason: R,
    /// Who asked.
    pub by: Actor,
    /// When.
    pub at: DateTime<Utc>,
}

/// Pause and resume counts by reason.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Paused by the idle policy.
    pub idle_timeout: u64,
    /// Paused or resumed by an operator through ccm.
    pub manual: u64,
    /// Stopped or started by an off-hours schedule.
    pub schedule: u64,
    /// Stopped or started outside ccm.
    pub external: u64,
}

/// One entry of the pause/resume history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it was observed.
    pub at: DateTime<Utc>,
    /// `paused` or `resumed`.
    pub kind: HistoryKind,
    /// The reason (`idle_timeout`, `manual`, `schedule`, `external`).
    pub reason: String,
    /// Who, when ccm did it.
    pub by: Option<Actor>,
}

/// Whether a history entry is a pause or a resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    /// Stopped.
    Paused,
    /// Started again.
    Resumed,
}

/// Activity, idle detection and pause/resume bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Monitoring {
    /// Idle detection (and auto-pause) for this worker.
    pub idle_detection: bool,
    /// Detailed CloudWatch monitoring is on.
    pub detailed_monitoring: bool,
    /// The latest activity seen (telemetry or running nodes).
    pub last_activity: Option<DateTime<Utc>>,
    /// What the latest activity was (telemetry category and user, or running nodes).
    pub last_activity_source: Option<ActivitySource>,
    /// The latest interaction (telemetry in the activity categories; running nodes excluded).
    pub last_interaction: Option<DateTime<Utc>>,
    /// The latest interaction other than stopping a lab or node: when someone last worked on
    /// the worker. A lab stop after hours without any is the end of an unattended run, not of
    /// a session (`idle.run_end_after`); a stop's own node events do not count as work. Left
    /// out of the stored document while unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_work: Option<DateTime<Utc>>,
    /// The latest CML sync that found running nodes.
    pub last_running_nodes_at: Option<DateTime<Utc>>,
    /// Running nodes at the latest sync that read them.
    pub running_nodes: Option<u64>,
    /// "Keep awake until": no idle pause and no schedule stop before `until`.
    pub snooze: Option<Snooze>,
    /// When activity was last read successfully.
    pub activity_checked_at: Option<DateTime<Utc>>,
    /// When the worker was last resumed (seen starting).
    pub last_resume: Option<DateTime<Utc>>,
    /// When it was last paused, while it is paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Why it is paused, while it is.
    pub pause_reason: Option<PauseReason>,
    /// A stop ccm asked for and has not seen yet.
    pub pending_pause: Option<PendingAction<PauseReason>>,
    /// A start ccm asked for and has not seen yet.
    pub pending_resume: Option<PendingAction<ResumeReason>>,
    /// A termination ccm asked for and has not seen yet.
    pub pending_terminate: Option<PendingAction<()>>,
    /// Pauses by reason.
    pub pauses: Counters,
    /// Resumes by reason (`idle_timeout` is always 0).
    pub resumes: Counters,
    /// The latest pauses and resumes, newest last.
    pub history: VecDeque<HistoryEntry>,
    /// The latest quiet stretches of at least [`BREAK_MIN_MINUTES`] that ended with a
    /// return (activity again, or a resume), newest last, at most [`BREAKS_KEPT`]: what the
    /// idle policy learns return times from (`idle.return_timeout`). Stored compact (see
    /// [`Break`]: at most ~5 KB). Left out of the stored document while empty (documents
    /// written before it keep their shape).
    #[serde(skip_serializing_if = "VecDeque::is_empty")]
    pub breaks: VecDeque<Break>,
    /// The latest stretches of at least [`ABSENCE_MIN_MINUTES`] without an interaction
    /// (telemetry) that ended with one (or a resume), newest last, at most [`BREAKS_KEPT`]:
    /// when its users were away, whatever labs ran meanwhile (a lunch with the lab left up).
    /// The idle policy reads the fleet's midday dip from them (`idle.midday_hours`). Stored
    /// compact (see [`Break`]). Left out of the stored document while empty.
    #[serde(skip_serializing_if = "VecDeque::is_empty")]
    pub absences: VecDeque<Break>,
    /// Seconds the worker spent stopped by ccm (idle, schedule or manual), closed intervals
    /// only.
    pub seconds_stopped_by_ccm: u64,
    /// The same seconds by ISO week (`2026-W10`, weeks start Monday 00:00 UTC) and reason
    /// (`idle_timeout`, `schedule`, `manual`), for the savings report; the latest
    /// [`STOPPED_WEEKS`] weeks are kept.
    pub stopped_by_week: BTreeMap<String, BTreeMap<String, u64>>,
}

/// How many weeks of [`Monitoring::stopped_by_week`] a worker keeps.
pub const STOPPED_WEEKS: usize = 104;

/// A "keep awake until" on a worker, with who set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snooze {
    /// No idle pause or schedule stop before this.
    pub until: DateTime<Utc>,
    /// Who set it.
    pub by: Actor,
    /// When.
    pub at: DateTime<Utc>,
}

/// Where the latest activity came from (the worker page explains the idle policy with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActivitySource {
    /// A telemetry event in an activity category.
    Telemetry {
        /// Its category, e.g. `start_lab`, `user_activity`.
        category: String,
        /// The CML user id it names, if any.
        #[serde(default)]
        user_id: Option<String>,
    },
    /// Nodes were running at a CML sync.
    RunningNodes {
        /// How many.
        count: u64,
    },
}

/// A snooze that cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnoozeError {
    /// `until` is not in the future.
    #[error("until must be in the future")]
    InPast,
    /// `until` is further away than allowed.
    #[error("until must be at most {max_days} days ahead")]
    TooFar {
        /// The limit, in days.
        max_days: i64,
    },
    /// The worker is terminated.
    #[error("the worker is terminated")]
    Terminated,
}

/// The longest snooze.
pub const MAX_SNOOZE_DAYS: i64 = 14;

/// The shortest quiet stretch a worker remembers as a break.
pub const BREAK_MIN_MINUTES: i64 = 15;

/// The shortest stretch without an interaction a worker remembers as an absence (its users
/// away: the default idle timeout; shorter gaps are the pauses between a present user's
/// actions, and would fill [`BREAKS_KEPT`] within days).
pub const ABSENCE_MIN_MINUTES: i64 = 60;

/// How many breaks a worker remembers (a few weeks of a busy worker).
pub const BREAKS_KEPT: usize = 256;

/// A quiet stretch of a worker (no activity) that ended with a return.
///
/// Stored as `[from, length]` — its start in Unix seconds and its length in seconds, ~20
/// bytes instead of the ~60 of `{"from": "…", "to": "…"}` (a worker keeps up to
/// [`BREAKS_KEPT`] breaks and as many absences, and every save encodes them): whole seconds,
/// what the idle rules read: a break is kept in whole seconds from the start ([`Break::new`]),
/// so that a worker decides the same whether or not it was saved and loaded in between. The
/// dated form of documents written before loads as well (cut to whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredBreak", into = "StoredBreak")]
pub struct Break {
    /// The last activity before it.
    pub from: DateTime<Utc>,
    /// The return: the first activity after it, or the resume before that activity.
    pub to: DateTime<Utc>,
}

impl Break {
    /// The stretch from `from` to `to`, each cut to the whole second (what is stored).
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        let whole = |t: DateTime<Utc>| DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t);
        Self {
            from: whole(from),
            to: whole(to),
        }
    }
}

/// A [`Break`] in a stored document: `[from, length]` (Unix seconds, seconds), or the dated
/// form written before.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredBreak {
    Compact(i64, i64),
    Dated {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

impl From<Break> for StoredBreak {
    fn from(b: Break) -> Self {
        let from = b.from.timestamp();
        Self::Compact(from, b.to.timestamp().saturating_sub(from))
    }
}

impl TryFrom<StoredBreak> for Break {
    type Error = String;

    fn try_from(s: StoredBreak) -> Result<Self, Self::Error> {
        match s {
            StoredBreak::Dated { from, to } => Ok(Self::new(from, to)),
            StoredBreak::Compact(from, length) => {
                let at = |secs: Option<i64>| secs.and_then(|s| DateTime::from_timestamp(s, 0));
                match (at(Some(from)), at(from.checked_add(length))) {
                    (Some(from), Some(to)) => Ok(Self { from, to }),
                    _ => Err(format!(
                        "[{from}, {length}] is no break (Unix seconds, seconds)"
                    )),
                }
            }
        }
    }
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            idle_detection: true,
            detailed_monitoring: false,
            last_activity: None,
            last_activity_source: None,
            last_interaction: None,
            last_work: None,
            last_running_nodes_at: None,
            running_nodes: None,
            snooze: None,
            activity_checked_at: None,
            last_resume: None,
            paused_at: None,
            pause_reason: None,
            pending_pause: None,
            pending_resume: None,
            pending_terminate: None,
            pauses: Counters::default(),
            resumes: Counters::default(),
            history: VecDeque::new(),
            breaks: VecDeque::new(),
            absences: VecDeque::new(),
            seconds_stopped_by_ccm: 0,
            stopped_by_week: BTreeMap::new(),
        }
    }
}

/// What EC2 says about an instance, as ccm needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceObservation {
    /// Instance id.
    pub instance_id: InstanceId,
    /// State.
    pub state: Ec2State,
    /// Type.
    pub instance_type: Option<InstanceType>,
    /// Image id.
    pub ami_id: Option<AmiId>,
    /// Public address.
    pub public_ip: Option<IpAddr>,
    /// Private address.
    pub private_ip: Option<IpAddr>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Launch time.
    pub launched_at: Option<DateTime<Utc>>,
    /// Detailed monitoring on.
    pub detailed_monitoring: bool,
    /// EC2's state reason, if any.
    pub state_reason: Option<String>,
}

/// The result of one call of a CML sync, with its value.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult<T> {
    /// A usable answer.
    Ok(T),
    /// 404 on an optional endpoint.
    NotSupported,
    /// No usable answer.
    Failed(Reason),
}

/// The results of one CML sync; `None` means "not attempted".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CmlSync {
    /// `system_information`.
    pub info: Option<CallResult<CmlInfo>>,
    /// `system_health`.
    pub health: Option<CallResult<CmlHealth>>,
    /// `system_stats`.
    pub stats: Option<CallResult<CmlStats>>,
    /// `licensing`.
    pub licence: Option<CallResult<Licence>>,
}

/// A command that does not fit the worker's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The action conflicts with the current state (HTTP 409).
    #[error("cannot {action:?} a worker that is {state}: {hint}")]
    Conflict {
        /// The action asked for.
        action: WorkerAction,
        /// The current state.
        state: Ec2State,
        /// What to do instead.
        hint: &'static str,
    },
    /// The worker has no EC2 instance yet (still provisioning, or provisioning failed).
    #[error("the worker has no EC2 instance yet")]
    NoInstance,
}

/// Input for a new worker to provision.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWorker {
    /// Display name (also the EC2 `Name` tag).
    pub name: String,
    /// Region.
    pub region: Region,
    /// Instance type.
    pub instance_type: InstanceType,
    /// Image.
    pub ami: Ami,
    /// Extra tags.
    pub tags: BTreeMap<String, String>,
}

/// One CML instance on one EC2 instance, and everything ccm knows and does about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    /// ccm's id.
    pub id: WorkerId,
    /// Display name.
    pub name: String,
    /// AWS region.
    pub region: Region,
    /// EC2 instance, once there is one.
    pub instance_id: Option<InstanceId>,
    /// Instance type.
    pub instance_type: Option<InstanceType>,
    /// Image.
    pub ami: Option<Ami>,
    /// EC2 state.
    pub ec2_state: Ec2State,
    /// Why it is in that state (EC2's reason, or why provisioning failed).
    pub state_reason: Option<String>,
    /// Launch time.
    pub launched_at: Option<DateTime<Utc>>,
    /// CML service status and reasons.
    pub service: ServiceState,
    /// The CML base URL ccm uses (derived, or the override).
    pub endpoint: Option<String>,
    /// A fixed endpoint that replaces the derived one (e.g. a DNS name).
    pub endpoint_override: Option<String>,
    /// Public address.
    pub public_ip: Option<IpAddr>,
    /// Private address.
    pub private_ip: Option<IpAddr>,
    /// EC2 tags.
    pub tags: BTreeMap<String, String>,
    /// When a user's command last changed something EC2 also reports (tags, detailed
    /// monitoring): an EC2 read begun before it would bring the old values back (see
    /// [`Worker::observe_ec2_read_at`]). Left out while unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2_changed_at: Option<DateTime<Utc>>,
    /// CML data.
    pub cml: CmlState,
    /// Number of labs.
    pub labs_count: Sourced<u32>,
    /// CloudWatch metrics.
    pub cloudwatch: Sourced<CloudWatchMetrics>,
    /// EC2's system and instance status checks (read in the EC2 sync, every state).
    #[serde(default)]
    pub ec2_status: Sourced<StatusChecks>,
    /// Activity, idle detection, pause/resume bookkeeping.
    pub monitoring: Monitoring,
    /// Created (in ccm).
    pub created_at: DateTime<Utc>,
    /// By whom.
    pub created_by: Actor,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// By whom.
    pub updated_by: Actor,
    /// Seen terminated.
    pub terminated_at: Option<DateTime<Utc>>,
    /// By whom, when ccm did it.
    pub terminated_by: Option<Actor>,
    /// Optimistic concurrency version, managed by the store.
    pub version: u64,
}

// === impl Worker ===

impl Worker {
    fn blank(name: String, region: Region, by: Actor, now: DateTime<Utc>) -> Self {
        Self {
            id: WorkerId::new(),
            name,
            region,
            instance_id: None,
            instance_type: None,
            ami: None,
            ec2_state: Ec2State::Unknown,
            state_reason: None,
            launched_at: None,
            service: ServiceState::default(),
            endpoint: None,
            endpoint_override: None,
            public_ip: None,
            private_ip: None,
            tags: BTreeMap::new(),
            ec2_changed_at: None,
            cml: CmlState::default(),
            labs_count: Sourced::default(),
            cloudwatch: Sourced::default(),
            ec2_status: Sourced::default(),
            monitoring: Monitoring::default(),
            created_at: now,
            created_by: by.clone(),
            updated_at: now,
            updated_by: by,
            terminated_at: None,
            terminated_by: None,
            version: 0,
        }
    }

    /// A worker to provision: `pending`, no instance yet.
    pub fn provision(new: NewWorker, by: Actor, now: DateTime<Utc>) -> (Self, Vec<EventKind>) {
        let mut w = Self::blank(new.name, new.region, by.clone(), now);
        w.ec2_state = Ec2State::Pending;
        w.instance_type = Some(new.instance_type);
        w.tags = new.tags;
        w.tags.insert("Name".into(), w.name.clone());
        let event = EventKind::WorkerCreated {
            name: w.name.clone(),
            region: w.region.to_string(),
            instance_type: w.instance_type.as_ref().map(ToString::to_string),
            ami_id: Some(new.ami.id.to_string()),
            by,
        };
        w.ami = Some(new.ami);
        (w, vec![event])
    }

    /// A worker for an existing instance. Its name is the `Name` tag, else the instance id.
    pub fn import(
        obs: &InstanceObservation,
        region: Region,
        policy: &EndpointPolicy,
        by: Actor,
        now: DateTime<Utc>,
    ) -> (Self, Vec<EventKind>) {
        let name = obs
            .tags
            .get("Name")
            .filter(|n| !n.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| obs.instance_id.to_string());
        let mut w = Self::blank(name, region, by.clone(), now);
        w.instance_id = Some(obs.instance_id.clone());
        let mut events = vec![EventKind::WorkerImported {
            instance_id: obs.instance_id.to_string(),
            region: w.region.to_string(),
            name: w.name.clone(),
            by,
        }];
        // Unknown → anything is always valid.
        if let Ok(mut more) = w.observe_ec2(obs, policy, now) {
            events.append(&mut more);
        }
        (w, events)
    }

    fn touch(&mut self, by: &Actor, now: DateTime<Utc>) {
        self.updated_at = now;
        self.updated_by = by.clone();
    }

    /// RunInstances gave this worker its instance.
    pub fn assign_instance(&mut self, id: InstanceId, now: DateTime<Utc>) -> Vec<EventKind> {
        self.instance_id = Some(id.clone());
        self.touch(&Actor::system("provision"), now);
        vec![EventKind::WorkerProvisioned {
            instance_id: id.to_string(),
        }]
    }

    /// Provisioning failed: the worker becomes `failed` with the reason.
    pub fn fail_provisioning(
        &mut self,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<EventKind>, InvalidTransition> {
        let from = self.ec2_state;
        self.ec2_state = from.transition(Ec2State::Failed)?;
        self.state_reason = Some(reason.chars().take(500).collect());
        self.touch(&Actor::system("provision"), now);
        let mut events = vec![EventKind::WorkerProvisioningFailed {
            reason: reason.chars().take(500).collect(),
        }];
        if from != Ec2State::Failed {
            events.push(EventKind::WorkerStateChanged {
                from,
                to: Ec2State::Failed,
            });
        }
        Ok(events)
    }

    /// Applies what EC2 says about the instance. An invalid change leaves the worker as it was.
    pub fn observe_ec2(
        &mut self,
        obs: &InstanceObservation,
        policy: &EndpointPolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<EventKind>, InvalidTransition> {
        self.observe_ec2_read_at(obs, policy, now, now)
    }

    /// [`Worker::observe_ec2`] for an observation EC2 was asked for at `read_at`: its tags and
    /// detailed monitoring are older than a user's change of them made since (the command's
    /// write landed first), and are not applied — the next read brings them.
    pub fn observe_ec2_read_at(
        &mut self,
        obs: &InstanceObservation,
        policy: &EndpointPolicy,
        read_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<EventKind>, InvalidTransition> {
        let from = self.ec2_state;
        let to = from.transition(obs.state)?;
        let mut events = Vec::new();
        let sync = Actor::system("sync");

        if self.instance_id.is_none() {
            self.instance_id = Some(obs.instance_id.clone());
        }
        if obs.instance_type.is_some() {
            self.instance_type.clone_from(&obs.instance_type);
        }
        if let Some(ami_id) = &obs.ami_id
            && self.ami.as_ref().is_none_or(|a| &a.id != ami_id)
        {
            self.ami = Some(Ami {
                id: ami_id.clone(),
                name: None,
                owner: None,
            });
        }
        let current = self.ec2_changed_at.is_none_or(|at| at <= read_at);
        if !obs.tags.is_empty() && current {
            self.tags.clone_from(&obs.tags);
        }
        self.launched_at = obs.launched_at.or(self.launched_at);
        if current {
            self.monitoring.detailed_monitoring = obs.detailed_monitoring;
        }
        self.state_reason.clone_from(&obs.state_reason);

        if from != to {
            self.ec2_state = to;
            events.push(EventKind::WorkerStateChanged { from, to });
            events.extend(self.on_state_change(from, to, now));
        }

        if matches!(to, Ec2State::Pending | Ec2State::Running) {
            self.public_ip = obs.public_ip;
            self.private_ip = obs.private_ip;
        } else {
            self.clear_live(now, &mut events);
        }
        let running = matches!(to, Ec2State::Pending | Ec2State::Running);
        self.endpoint = match (&self.endpoint_override, running) {
            (Some(fixed), _) => Some(fixed.clone()),
            (None, false) => None,
            (None, true) => match policy.from_tags(&self.tags) {
                Some(Ok(url)) => Some(url),
                Some(Err(bad)) => {
                    // Never the address instead: behind a load balancer it is not the CML.
                    self.degrade_for_endpoint_tag(&policy.tag, bad, now, &mut events);
                    None
                }
                None => policy.endpoint(self.public_ip, self.private_ip),
            },
        };
        if !events.is_empty() {
            self.touch(&sync, now);
        }
        Ok(events)
    }

    /// The endpoint tag holds an unusable value: the worker is `degraded` with a reason naming
    /// the tag and what is wrong (never the value, which may carry credentials), and is not
    /// polled until the tag is fixed (its next CML sync then assesses it again).
    fn degrade_for_endpoint_tag(
        &mut self,
        tag: &str,
        bad: InvalidEndpointTag,
        now: DateTime<Utc>,
        events: &mut Vec<EventKind>,
    ) {
        let reason =
            Reason::new(CmlCall::SystemInformation, ReasonCode::Other).with_detail(format!(
                "ec2 tag {}: not a usable cml base url: {}",
                tag.chars().take(64).collect::<String>(),
                bad.reason
            ));
        if self.service.status == ServiceStatus::Degraded
            && self.service.reasons == [reason.clone()]
        {
            return;
        }
        if self.service.status != ServiceStatus::Degraded {
            events.push(EventKind::WorkerServiceChanged {
                from: self.service.status,
                to: ServiceStatus::Degraded,
                reasons: vec![reason.clone()],
            });
        }
        self.service = ServiceState {
            status: ServiceStatus::Degraded,
            reasons: vec![reason],
            checked_at: Some(now),
            cml_status: None,
        };
    }

    /// The instance no longer exists in EC2 (describe does not return it): it is terminated.
    pub fn observe_gone(&mut self, now: DateTime<Utc>) -> Vec<EventKind> {
        let from = self.ec2_state;
        if from == Ec2State::Terminated || !from.can_become(Ec2State::Terminated) {
            return Vec::new();
        }
        self.ec2_state = Ec2State::Terminated;
        self.state_reason = Some("instance no longer exists in EC2".into());
        let mut events = vec![EventKind::WorkerStateChanged {
            from,
            to: Ec2State::Terminated,
        }];
        events.extend(self.on_state_change(from, Ec2State::Terminated, now));
        self.clear_live(now, &mut events);
        self.touch(&Actor::system("sync"), now);
        events
    }

    /// Bookkeeping for a state change: pauses, resumes, termination.
    fn on_state_change(
        &mut self,
        from: Ec2State,
        to: Ec2State,
        now: DateTime<Utc>,
    ) -> Vec<EventKind> {
        use Ec2State::*;
        let mut events = Vec::new();
        let m = &mut self.monitoring;
        let fresh = |at: DateTime<Utc>| now - at <= PENDING_ACTION_TTL;
        match (from, to) {
            (Pending | Running, Stopping | Stopped) => {
                let pending = m.pending_pause.take().filter(|p| fresh(p.at));
                let (reason, by) = match pending {
                    Some(p) => (p.reason, Some(p.by)),
                    None => (PauseReason::External, None),
                };
                match reason {
                    PauseReason::IdleTimeout => m.pauses.idle_timeout += 1,
                    PauseReason::Manual => m.pauses.manual += 1,
                    PauseReason::Schedule => m.pauses.schedule += 1,
                    PauseReason::External => m.pauses.external += 1,
                }
                m.paused_at = Some(now);
                m.pause_reason = Some(reason);
                push_history(
                    m,
                    now,
                    HistoryKind::Paused,
                    reason_text(&reason),
                    by.clone(),
                );
                events.push(EventKind::WorkerPaused { reason, by });
            }
            (Stopping | Stopped, Pending | Running) => {
                let pending = m.pending_resume.take().filter(|p| fresh(p.at));
                let (reason, by) = match pending {
                    Some(p) => (p.reason, Some(p.by)),
                    None => (ResumeReason::External, None),
                };
                match reason {
                    ResumeReason::Manual => m.resumes.manual += 1,
                    ResumeReason::Schedule => m.resumes.schedule += 1,
                    ResumeReason::External => m.resumes.external += 1,
                }
                close_pause(m, now);
                m.last_resume = Some(now);
                push_history(
                    m,
                    now,
                    HistoryKind::Resumed,
                    reason_text(&reason),
                    by.clone(),
                );
                events.push(EventKind::WorkerResumed { reason, by });
            }
            _ => {}
        }
        if to.is_final() && !from.is_final() {
            close_pause(m, now);
            let by = m.pending_terminate.take().map(|p| p.by);
            self.terminated_at = Some(now);
            self.terminated_by.clone_from(&by);
            events.push(EventKind::WorkerTerminated { by });
        }
        events
    }

    /// Clears addresses, endpoint and live metrics (the worker is not running).
    fn clear_live(&mut self, now: DateTime<Utc>, events: &mut Vec<EventKind>) {
        self.public_ip = None;
        self.private_ip = None;
        self.cml.stats.clear();
        self.cml.health.clear();
        self.cloudwatch.clear();
        if self.service.status != ServiceStatus::Unknown {
            events.push(EventKind::WorkerServiceChanged {
                from: self.service.status,
                to: ServiceStatus::Unknown,
                reasons: Vec::new(),
            });
        }
        self.service = ServiceState {
            status: ServiceStatus::Unknown,
            reasons: Vec::new(),
            checked_at: Some(now),
            cml_status: None,
        };
    }

    /// Checks that `action` fits the current state and records what ccm expects to see next.
    /// Returns the `action_requested` event, or why the action is refused.
    pub fn request(
        &mut self,
        action: WorkerAction,
        pause_reason: Option<PauseReason>,
        by: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Vec<EventKind>, CommandError> {
        self.check_request(action, pause_reason)?;
        match action {
            WorkerAction::Start | WorkerAction::Resume => {
                self.monitoring.pending_resume = Some(PendingAction {
                    reason: ResumeReason::Manual,
                    by: by.clone(),
                    at: now,
                });
            }
            WorkerAction::Stop | WorkerAction::Pause => {
                self.monitoring.pending_pause = Some(PendingAction {
                    reason: pause_reason.unwrap_or(PauseReason::Manual),
                    by: by.clone(),
                    at: now,
                });
            }
            WorkerAction::Terminate => {
                self.monitoring.pending_terminate = Some(PendingAction {
                    reason: (),
                    by: by.clone(),
                    at: now,
                });
            }
            _ => {}
        }
        self.touch(by, now);
        let reason = pause_reason.map(|r| reason_text(&r));
        Ok(vec![EventKind::WorkerActionRequested {
            action,
            reason,
            by: by.clone(),
        }])
    }

    /// Whether [`Worker::request`] would accept `action` now, and if not why — without
    /// changing anything (the refusal is the one `request` gives).
    pub fn check_request(
        &self,
        action: WorkerAction,
        pause_reason: Option<PauseReason>,
    ) -> Result<(), CommandError> {
        use Ec2State::*;
        let state = self.ec2_state;
        let conflict = |hint| CommandError::Conflict {
            action,
            state,
            hint,
        };
        match action {
            WorkerAction::Start | WorkerAction::Resume => {
                self.need_instance()?;
                match state {
                    Stopped => {}
                    Pending | Running => return Err(conflict("it is already running")),
                    Stopping => return Err(conflict("wait until it has stopped")),
                    _ => return Err(conflict("only a stopped worker can be started")),
                }
            }
            WorkerAction::Stop | WorkerAction::Pause => {
                self.need_instance()?;
                match state {
                    Pending | Running => {}
                    Stopping | Stopped => return Err(conflict("it is already stopped")),
                    _ => return Err(conflict("only a running worker can be stopped")),
                }
                if pause_reason.unwrap_or(PauseReason::Manual) == PauseReason::External {
                    return Err(conflict("ccm cannot pause for an external reason"));
                }
            }
            WorkerAction::Terminate => {
                if matches!(state, ShuttingDown | Terminated) {
                    return Err(conflict("it is already terminated"));
                }
            }
            WorkerAction::EnableDetailedMonitoring | WorkerAction::UpdateTags => {
                self.need_instance()?;
                if state.is_final() {
                    return Err(conflict("the instance is terminated"));
                }
            }
            WorkerAction::Refresh => {
                if state != Running {
                    return Err(conflict("only a running worker can be refreshed"));
                }
            }
            WorkerAction::Licence => {
                if state != Running || self.endpoint.is_none() {
                    return Err(conflict("the worker must be running with a CML endpoint"));
                }
            }
            WorkerAction::Create | WorkerAction::Import | WorkerAction::Delete => {}
        }
        Ok(())
    }

    /// The actions the current state allows (for UIs: which buttons to enable). Asks
    /// [`Worker::check_request`], the check [`Worker::request`] makes, so it can never disagree
    /// with what a command would do.
    pub fn allowed_actions(&self) -> Vec<WorkerAction> {
        self.action_checks()
            .into_iter()
            .filter_map(|(a, r)| r.is_ok().then_some(a))
            .collect()
    }

    /// Why each action the current state forbids is forbidden (the text of the refusal
    /// [`Worker::request`] would give), for UIs to show on a disabled button.
    pub fn action_blockers(&self) -> Vec<(WorkerAction, String)> {
        self.action_checks()
            .into_iter()
            .filter_map(|(a, r)| r.err().map(|e| (a, e.to_string())))
            .collect()
    }

    /// Why CML actions (labs, licence) cannot reach this worker now, if they cannot: it
    /// must be running with a CML endpoint.
    pub fn cml_blocker(&self) -> Option<&'static str> {
        (self.ec2_state != Ec2State::Running || self.endpoint.is_none())
            .then_some("the worker must be running with a CML endpoint")
    }

    fn action_checks(&self) -> Vec<(WorkerAction, Result<(), CommandError>)> {
        WorkerAction::ALL
            .into_iter()
            // Create and import make a worker; they are not actions on this one.
            .filter(|a| !matches!(a, WorkerAction::Create | WorkerAction::Import))
            .map(|a| {
                let reason = matches!(a, WorkerAction::Pause).then_some(PauseReason::Manual);
                (a, self.check_request(a, reason))
            })
            .collect()
    }

    /// The action ccm asked for failed: forget what ccm expected to see.
    pub fn action_failed(
        &mut self,
        action: WorkerAction,
        error: &str,
        now: DateTime<Utc>,
    ) -> Vec<EventKind> {
        match action {
            WorkerAction::Start | WorkerAction::Resume => self.monitoring.pending_resume = None,
            WorkerAction::Stop | WorkerAction::Pause => self.monitoring.pending_pause = None,
            WorkerAction::Terminate => self.monitoring.pending_terminate = None,
            _ => {}
        }
        self.touch(&Actor::system("engine"), now);
        vec![EventKind::WorkerActionFailed {
            action,
            error: error.chars().take(500).collect(),
        }]
    }

    /// A worker without an instance and without an EC2 call to make (failed provisioning) is
    /// terminated directly.
    pub fn terminate_without_instance(&mut self, by: &Actor, now: DateTime<Utc>) -> Vec<EventKind> {
        if self.instance_id.is_some() || self.ec2_state.is_final() {
            return Vec::new();
        }
        let from = self.ec2_state;
        self.ec2_state = Ec2State::Terminated;
        self.terminated_at = Some(now);
        self.terminated_by = Some(by.clone());
        self.monitoring.pending_terminate = None;
        self.touch(by, now);
        vec![
            EventKind::WorkerStateChanged {
                from,
                to: Ec2State::Terminated,
            },
            EventKind::WorkerTerminated {
                by: Some(by.clone()),
            },
        ]
    }

    fn need_instance(&self) -> Result<(), CommandError> {
        if self.instance_id.is_none() {
            return Err(CommandError::NoInstance);
        }
        Ok(())
    }

    /// Why an on-demand refresh cannot run now, if the state forbids it.
    pub fn refresh_blocker(&self) -> Option<RefreshSkip> {
        (self.ec2_state != Ec2State::Running || self.endpoint.is_none())
            .then_some(RefreshSkip::NotRunning)
    }

    /// Records one CML sync: each source keeps its last good value, the status is derived, and
    /// running nodes count as activity.
    pub fn record_sync(&mut self, sync: CmlSync, now: DateTime<Utc>) -> Vec<EventKind> {
        let mut outcome = SyncOutcome::default();
        if let Some(r) = sync.info {
            if let CallResult::Ok(info) = &r {
                outcome.ready = Some(info.ready);
            }
            outcome.calls.push((
                CmlCall::SystemInformation,
                apply(&mut self.cml.info, r, now),
            ));
        }
        if let Some(r) = sync.health {
            outcome
                .calls
                .push((CmlCall::SystemHealth, apply(&mut self.cml.health, r, now)));
        }
        if let Some(r) = sync.stats {
            if let CallResult::Ok(stats) = &r {
                self.monitoring.running_nodes = stats.running_nodes;
                if let Some(count) = stats.running_nodes.filter(|n| *n > 0) {
                    self.monitoring.last_running_nodes_at = Some(now);
                    self.note_activity(now, ActivitySource::RunningNodes { count });
                }
            }
            outcome
                .calls
                .push((CmlCall::SystemStats, apply(&mut self.cml.stats, r, now)));
        }
        if let Some(r) = sync.licence {
            outcome
                .calls
                .push((CmlCall::Licensing, apply(&mut self.cml.licence, r, now)));
        }
        let cml = derive_status(&outcome);
        let cml_status = cml.status;
        let Assessment { status, reasons } = with_ec2_checks(cml, self.ec2_checks_in_force());
        let mut events = Vec::new();
        if status != self.service.status {
            events.push(EventKind::WorkerServiceChanged {
                from: self.service.status,
                to: status,
                reasons: reasons.clone(),
            });
        }
        self.service = ServiceState {
            status,
            reasons,
            checked_at: Some(now),
            cml_status: Some(cml_status),
        };
        let stats = self
            .cml
            .stats
            .last_good
            .as_ref()
            .filter(|o| o.observed_at == now)
            .map(|o| &o.value);
        events.push(EventKind::WorkerSynced {
            service: status,
            version: self
                .cml
                .info
                .last_good
                .as_ref()
                .map(|o| o.value.version.clone()),
            cpu_percent: stats.map(|s| s.cpu_percent),
            memory_percent: stats.and_then(CmlStats::memory_percent),
            running_nodes: stats.and_then(|s| s.running_nodes),
        });
        self.updated_at = now;
        events
    }

    /// The status checks that bear on the service status: the last ones read, while the
    /// instance runs (a stopped instance's checks are `not-applicable`, and its status is
    /// `unknown` anyway).
    fn ec2_checks_in_force(&self) -> Option<&StatusChecks> {
        if self.ec2_state != Ec2State::Running {
            return None;
        }
        self.ec2_status.last_good.as_ref().map(|o| &o.value)
    }

    /// Records the outcome of reading EC2's status checks. A change of the checks is an event;
    /// while the instance runs, the service status is derived again (CML's last assessment
    /// plus the checks), so an impaired check degrades the worker at once, without waiting
    /// for the next CML sync, and its recovery lifts that again.
    pub fn record_ec2_status(
        &mut self,
        result: Result<StatusChecks, Reason>,
        now: DateTime<Utc>,
    ) -> Vec<EventKind> {
        let checks = match result {
            Ok(checks) => checks,
            Err(reason) => {
                self.ec2_status.fail(reason, now);
                return Vec::new();
            }
        };
        let before = self.ec2_status.last_good.as_ref().map(|o| o.value);
        self.ec2_status.succeed(checks, now);
        let mut events = Vec::new();
        if before != Some(checks) {
            events.push(EventKind::WorkerStatusChecksChanged {
                system: checks.system,
                instance: checks.instance,
            });
        }
        if self.ec2_state == Ec2State::Running {
            let cml = Assessment {
                status: self.service.cml_status.unwrap_or(self.service.status),
                reasons: self
                    .service
                    .reasons
                    .iter()
                    .filter(|r| r.call != CmlCall::Ec2Status)
                    .cloned()
                    .collect(),
            };
            let Assessment { status, reasons } = with_ec2_checks(cml, Some(&checks));
            if status != self.service.status {
                events.push(EventKind::WorkerServiceChanged {
                    from: self.service.status,
                    to: status,
                    reasons: reasons.clone(),
                });
            }
            if reasons != self.service.reasons || status != self.service.status {
                self.service.status = status;
                self.service.reasons = reasons;
                self.updated_at = now;
            }
        }
        events
    }

    /// Records a successful read of activity: `latest` is the newest activity found, if any.
    pub fn record_activity_check(&mut self, latest: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        let unknown = |at| {
            let source = ActivitySource::Telemetry {
                category: "unknown".into(),
                user_id: None,
            };
            (at, source)
        };
        self.record_interaction(latest.map(unknown), now);
    }

    /// Records a successful read of activity with what the newest interaction was (a
    /// telemetry event: its category and user).
    pub fn record_interaction(
        &mut self,
        latest: Option<(DateTime<Utc>, ActivitySource)>,
        now: DateTime<Utc>,
    ) {
        self.monitoring.activity_checked_at = Some(now);
        if let Some((at, source)) = latest {
            let m = &mut self.monitoring;
            if let Some(prev) = m.last_interaction
                && at > prev
            {
                // A user who came back to a paused worker returned when they resumed it.
                let to = m.last_resume.filter(|r| *r > prev && *r < at).unwrap_or(at);
                if to - prev >= Duration::minutes(ABSENCE_MIN_MINUTES) {
                    m.absences.push_back(Break::new(prev, to));
                    while m.absences.len() > BREAKS_KEPT {
                        m.absences.pop_front();
                    }
                }
            }
            if m.last_interaction.is_none_or(|prev| at > prev) {
                m.last_interaction = Some(at);
            }
            let stop = matches!(
                &source,
                ActivitySource::Telemetry { category, .. }
                    if crate::idle::SESSION_END_CATEGORIES.contains(&category.as_str())
            );
            if !stop && m.last_work.is_none_or(|prev| at > prev) {
                m.last_work = Some(at);
            }
            self.note_activity(at, source);
        }
    }

    fn note_activity(&mut self, at: DateTime<Utc>, source: ActivitySource) {
        let m = &mut self.monitoring;
        // Nodes seen running at both ends: they ran through the gap (the syncs were just
        // further apart), so it was no break.
        let nodes_through = matches!(source, ActivitySource::RunningNodes { .. })
            && matches!(
                m.last_activity_source,
                Some(ActivitySource::RunningNodes { .. })
            );
        if let Some(prev) = m.last_activity
            && at > prev
            && !nodes_through
        {
            // A user who came back to a paused worker returned when they resumed it.
            let to = m.last_resume.filter(|r| *r > prev && *r < at).unwrap_or(at);
            if to - prev >= Duration::minutes(BREAK_MIN_MINUTES) {
                m.breaks.push_back(Break::new(prev, to));
                while m.breaks.len() > BREAKS_KEPT {
                    m.breaks.pop_front();
                }
            }
        }
        if m.last_activity.is_none_or(|prev| at > prev) {
            m.last_activity = Some(at);
            m.last_activity_source = Some(source);
        }
    }

    /// Keeps the worker awake until `until`: no idle pause and no schedule stop before then.
    /// A snooze ends by itself; setting a new one replaces it.
    pub fn snooze(
        &mut self,
        until: DateTime<Utc>,
        by: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Vec<EventKind>, SnoozeError> {
        if self.ec2_state.is_final() {
            return Err(SnoozeError::Terminated);
        }
        if until <= now {
            return Err(SnoozeError::InPast);
        }
        if until - now > Duration::days(MAX_SNOOZE_DAYS) {
            return Err(SnoozeError::TooFar {
                max_days: MAX_SNOOZE_DAYS,
            });
        }
        self.monitoring.snooze = Some(Snooze {
            until,
            by: by.clone(),
            at: now,
        });
        self.touch(by, now);
        Ok(vec![EventKind::WorkerSnoozed {
            until,
            by: by.clone(),
        }])
    }

    /// Ends a snooze now (nothing happens when there is none in force).
    pub fn clear_snooze(&mut self, by: &Actor, now: DateTime<Utc>) -> Vec<EventKind> {
        match self.monitoring.snooze.take() {
            Some(s) if s.until > now => {
                self.touch(by, now);
                vec![EventKind::WorkerSnoozeCleared { by: by.clone() }]
            }
            _ => Vec::new(),
        }
    }

    /// The snooze in force at `now`, if any.
    pub fn snoozed_until(&self, now: DateTime<Utc>) -> Option<&Snooze> {
        self.monitoring.snooze.as_ref().filter(|s| s.until > now)
    }

    /// Records the outcome of reading CloudWatch metrics.
    pub fn record_cloudwatch(
        &mut self,
        result: Result<CloudWatchMetrics, Reason>,
        now: DateTime<Utc>,
    ) -> Vec<EventKind> {
        match result {
            Ok(m) => {
                let event = EventKind::WorkerMetricsUpdated {
                    cpu_percent: m.cpu_percent,
                    memory_percent: m.memory_percent,
                };
                self.cloudwatch.succeed(m, now);
                vec![event]
            }
            Err(reason) => {
                self.cloudwatch.fail(reason, now);
                Vec::new()
            }
        }
    }

    /// Records the number of labs (or why it could not be read).
    pub fn record_labs_count(&mut self, result: Result<u32, Reason>, now: DateTime<Utc>) {
        match result {
            Ok(n) => self.labs_count.succeed(n, now),
            Err(reason) => self.labs_count.fail(reason, now),
        }
    }

    /// Switches idle detection for this worker.
    pub fn set_idle_detection(
        &mut self,
        enabled: bool,
        by: &Actor,
        now: DateTime<Utc>,
    ) -> Vec<EventKind> {
        if self.monitoring.idle_detection == enabled {
            return Vec::new();
        }
        self.monitoring.idle_detection = enabled;
        self.touch(by, now);
        vec![EventKind::WorkerIdleDetectionChanged {
            enabled,
            by: by.clone(),
        }]
    }

    /// Applies tags that were set in EC2.
    pub fn apply_tags(
        &mut self,
        set: BTreeMap<String, String>,
        removed: Vec<String>,
        by: &Actor,
        now: DateTime<Utc>,
    ) -> Vec<EventKind> {
        for key in &removed {
            self.tags.remove(key);
        }
        for (k, v) in &set {
            self.tags.insert(k.clone(), v.clone());
        }
        if let Some(name) = set.get("Name").filter(|n| !n.trim().is_empty()) {
            self.name.clone_from(name);
        }
        self.ec2_changed_at = Some(now);
        self.touch(by, now);
        vec![EventKind::WorkerTagsUpdated {
            set,
            removed,
            by: by.clone(),
        }]
    }

    /// Detailed monitoring was enabled in EC2.
    pub fn detailed_monitoring_enabled(
        &mut self,
        by: &Actor,
        now: DateTime<Utc>,
    ) -> Vec<EventKind> {
        self.monitoring.detailed_monitoring = true;
        self.ec2_changed_at = Some(now);
        self.touch(by, now);
        vec![EventKind::WorkerDetailedMonitoringEnabled { by: by.clone() }]
    }

    /// Seconds this worker has been stopped by ccm, including a pause still going on.
    pub fn seconds_stopped_by_ccm(&self, now: DateTime<Utc>) -> u64 {
        let m = &self.monitoring;
        let ongoing = match (m.paused_at, m.pause_reason) {
            (Some(at), Some(reason)) if reason.is_by_ccm() && !self.ec2_state.is_final() => {
                (now - at).num_seconds().max(0) as u64
            }
            _ => 0,
        };
        m.seconds_stopped_by_ccm + ongoing
    }
}

fn apply<T>(source: &mut Sourced<T>, result: CallResult<T>, now: DateTime<Utc>) -> CallOutcome {
    match result {
        CallResult::Ok(v) => {
            source.succeed(v, now);
            CallOutcome::Answered
        }
        CallResult::NotSupported => {
            source.clear();
            source.attempted_at = Some(now);
            CallOutcome::NotSupported
        }
        CallResult::Failed(reason) => {
            source.fail(reason.clone(), now);
            CallOutcome::Failed(reason)
        }
    }
}

fn close_pause(m: &mut Monitoring, now: DateTime<Utc>) {
    if let (Some(at), Some(reason)) = (m.paused_at.take(), m.pause_reason.take())
        && reason.is_by_ccm()
    {
        m.seconds_stopped_by_ccm += (now - at).num_seconds().max(0) as u64;
        let key = reason_text(&reason);
        for (week, secs) in split_by_week(at, now) {
            *m.stopped_by_week
                .entry(week)
                .or_default()
                .entry(key.clone())
                .or_default() += secs;
        }
        while m.stopped_by_week.len() > STOPPED_WEEKS {
            m.stopped_by_week.pop_first();
        }
    }
}

/// The ISO week of `t` (UTC), e.g. `2026-W10`.
pub fn iso_week(t: DateTime<Utc>) -> String {
    t.format("%G-W%V").to_string()
}

/// Splits `[from, to)` at ISO week boundaries (Monday 00:00 UTC): (week, seconds) in order.
pub fn split_by_week(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(String, u64)> {
    use chrono::{Datelike, TimeZone};
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let date = start.date_naive();
        let monday = date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
        let next = Utc.from_utc_datetime(&monday.and_hms_opt(0, 0, 0).unwrap_or_default())
            + Duration::days(7);
        let end = next.min(to);
        out.push((iso_week(start), (end - start).num_seconds().max(0) as u64));
        start = end;
    }
    out
}

fn push_history(
    m: &mut Monitoring,
    at: DateTime<Utc>,
    kind: HistoryKind,
    reason: String,
    by: Option<Actor>,
) {
    m.history.push_back(HistoryEntry {
        at,
        kind,
        reason,
        by,
    });
    while m.history.len() > HISTORY_LEN {
        m.history.pop_front();
    }
}

fn reason_text<T: Serialize>(reason: &T) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
