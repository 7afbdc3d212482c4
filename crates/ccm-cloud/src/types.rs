//! The data the provider trait speaks: images, launch specs, instances, status, queries and
//! metrics. Plain values, no I/O; AWS names appear only in doc comments.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

pub use ccm_domain::CheckStatus;
use ccm_domain::{AmiId, Ec2State, InstanceId, InstanceType, Region, StatusChecks};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::CloudError;

/// The tag EC2 shows as an instance's name.
pub const NAME_TAG: &str = "Name";

/// Most ids one describe call carries (the `instance-id` filter takes up to 200 values).
pub const MAX_IDS_PER_DESCRIBE: usize = 200;

/// Most ids one DescribeInstanceStatus, Start, Stop, Terminate or CreateTags call carries.
pub const MAX_IDS_PER_ACTION: usize = 100;

/// Most instances one CloudWatch GetMetricData call serves (500 queries, 2 per instance).
pub const MAX_INSTANCES_PER_METRICS_CALL: usize = 250;

/// Smallest page EC2's DescribeInstances accepts.
pub const MIN_PAGE_SIZE: u32 = 5;

/// Largest page EC2's DescribeInstances accepts.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Instance tags, key → value, ordered so that output is stable.
pub type Tags = BTreeMap<String, String>;

/// A machine image (AMI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The AMI id.
    pub id: AmiId,
    /// The image name (what name patterns match).
    pub name: String,
    /// The owner's account id, when known.
    pub owner_id: Option<String>,
    /// The owner's alias (`amazon`, `aws-marketplace`), when EC2 gives one.
    #[serde(default)]
    pub owner_alias: Option<String>,
    /// Whether anyone may launch it (a public image), when known.
    #[serde(default)]
    pub public: Option<bool>,
    /// When the image was created, when known.
    pub creation_date: Option<DateTime<Utc>>,
    /// The image state as EC2 names it (`available`, `pending`, …).
    pub state: String,
    /// The image description, when set.
    pub description: Option<String>,
}

/// Which images to find.
///
/// Owners are what EC2's `Owners` parameter takes: account ids, `self` (the caller's own
/// account) and the aliases `amazon` and `aws-marketplace`. Without owners, EC2 answers with
/// every image the caller may launch — its own, those shared with it, and **every public image
/// of any account**: a name lookup without owners can find an image anyone published under a
/// matching name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageQuery {
    /// These AMIs, whoever owns them (unknown ids are an [`CloudError::InvalidParameter`]).
    Ids(Vec<AmiId>),
    /// These AMIs, but only those owned by one of `owners` (EC2's `image-id` filter with
    /// `Owners`): the others, and unknown ids, are simply absent, never an error.
    OwnedIds {
        /// The image ids.
        ids: Vec<AmiId>,
        /// Owners to restrict to; empty means any owner the caller can see.
        owners: Vec<String>,
    },
    /// Images whose name matches `pattern` (`*` and `?` wildcards, as EC2's `name` filter),
    /// optionally only from these owners.
    Name {
        /// The name pattern.
        pattern: String,
        /// Owners to restrict to; empty means any owner the caller can see.
        owners: Vec<String>,
    },
}

/// Whether `image` is owned by one of `owners` (account ids, aliases, `self` meaning
/// `self_account`) — the in-memory twin of EC2's `Owners` parameter. Empty `owners` allow any.
pub fn owned_by(image: &Image, owners: &[String], self_account: Option<&str>) -> bool {
    owners.is_empty()
        || owners.iter().any(|owner| {
            let owner = if owner == "self" {
                match self_account {
                    Some(account) => account,
                    None => return false,
                }
            } else {
                owner.as_str()
            };
            image.owner_id.as_deref() == Some(owner) || image.owner_alias.as_deref() == Some(owner)
        })
}

/// What to launch: one instance per call (ccm provisions workers one by one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The image to launch.
    pub image_id: AmiId,
    /// The instance type.
    pub instance_type: InstanceType,
    /// The subnet (`subnet-…`); `None` lets EC2 pick the default VPC's subnet.
    pub subnet_id: Option<String>,
    /// Security group ids (`sg-…`); empty means the VPC's default group.
    pub security_group_ids: Vec<String>,
    /// The key pair name for SSH, if any.
    pub key_name: Option<String>,
    /// The instance name (written as the `Name` tag).
    pub name: String,
    /// Further tags, applied at launch together with `Name`.
    pub tags: Tags,
    /// Whether to launch with detailed (1-minute) CloudWatch monitoring.
    pub detailed_monitoring: bool,
    /// The idempotency token. A repeated launch with the same token returns the first
    /// instance instead of launching another, which is what makes a launch safe to retry.
    /// [`RunSpec::new`] always fills one; at most 64 ASCII characters.
    pub client_token: String,
}

impl RunSpec {
    /// A launch spec with a fresh random client token, no subnet, groups, key or extra tags, and
    /// detailed monitoring on (ccm reads 1-minute metrics).
    pub fn new(image_id: AmiId, instance_type: InstanceType, name: impl Into<String>) -> Self {
        Self {
            image_id,
            instance_type,
            subnet_id: None,
            security_group_ids: Vec::new(),
            key_name: None,
            name: name.into(),
            tags: Tags::new(),
            detailed_monitoring: true,
            client_token: random_client_token(),
        }
    }

    /// Adds or replaces one tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Uses `token` as the idempotency token (for example derived from the worker id, so that a
    /// retry after a crash finds the first launch).
    pub fn with_client_token(mut self, token: impl Into<String>) -> Self {
        self.client_token = token.into();
        self
    }

    /// All tags to apply at launch: [`RunSpec::tags`] plus `Name`.
    pub fn all_tags(&self) -> Tags {
        let mut tags = self.tags.clone();
        tags.insert(NAME_TAG.to_owned(), self.name.clone());
        tags
    }

    /// Checks what EC2 would reject anyway, before spending a call on it.
    pub fn validate(&self) -> Result<(), CloudError> {
        let bad = |message: String| {
            Err(CloudError::InvalidParameter {
                code: "InvalidParameterValue".to_owned(),
                message,
            })
        };
        if self.client_token.is_empty()
            || self.client_token.len() > 64
            || !self.client_token.is_ascii()
        {
            return bad("the client token must be 1 to 64 ASCII characters".to_owned());
        }
        if self.name.len() > 256 {
            return bad("the instance name must be at most 256 characters".to_owned());
        }
        for key in self.tags.keys() {
            if key.is_empty() || key.len() > 128 || key.starts_with("aws:") {
                return bad(format!(
                    "tag key {key:?} must be 1 to 128 characters and not start with aws:"
                ));
            }
        }
        Ok(())
    }
}

/// 32 random hex characters.
fn random_client_token() -> String {
    let value: u128 = rand::random();
    format!("ccm-{value:032x}")
}

/// One EC2 instance as ccm sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The instance id.
    pub id: InstanceId,
    /// The region it lives in.
    pub region: Region,
    /// Its state.
    pub state: Ec2State,
    /// Its instance type.
    pub instance_type: InstanceType,
    /// The image it was launched from.
    pub image_id: AmiId,
    /// When it was last launched or started, when known.
    pub launch_time: Option<DateTime<Utc>>,
    /// Its public IPv4 address (only while it has one: pending or running, usually).
    pub public_ip: Option<IpAddr>,
    /// Its private address.
    pub private_ip: Option<IpAddr>,
    /// Its tags.
    pub tags: Tags,
    /// Whether detailed (1-minute) monitoring is on.
    pub detailed_monitoring: bool,
    /// Why it is in its state, when EC2 says (`Client.UserInitiatedShutdown: …`).
    pub state_reason: Option<String>,
}

impl Instance {
    /// The `Name` tag, if set.
    pub fn name(&self) -> Option<&str> {
        self.tags.get(NAME_TAG).map(String::as_str)
    }
}

/// An instance the provider saw but could not understand (a malformed id, an unknown state…).
/// It is left out of the results and reported here instead of failing the whole call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedInstance {
    /// The id as received (may itself be the malformed part; empty when missing).
    pub raw_id: String,
    /// What was wrong with it.
    pub reason: String,
}

/// Which instances to describe. All conditions must hold (filters are ANDed; the values of one
/// filter are ORed), as in EC2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceQuery {
    /// Only these instances; empty means any. Unknown ids are simply absent from the result
    /// (never an error), so one terminated instance cannot fail a batch.
    pub ids: Vec<InstanceId>,
    /// Further conditions.
    pub filters: Vec<InstanceFilter>,
}

impl InstanceQuery {
    /// Every instance in the region.
    pub fn all() -> Self {
        Self::default()
    }

    /// These instances.
    pub fn ids(ids: impl IntoIterator<Item = InstanceId>) -> Self {
        Self {
            ids: ids.into_iter().collect(),
            filters: Vec::new(),
        }
    }

    /// Adds a filter.
    pub fn with(mut self, filter: InstanceFilter) -> Self {
        self.filters.push(filter);
        self
    }
}

/// One describe condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceFilter {
    /// The state is one of these (EC2 `instance-state-name`).
    State(Vec<Ec2State>),
    /// Tag `key` has one of these values (EC2 `tag:KEY`; `*` and `?` wildcards allowed).
    Tag {
        /// The tag key.
        key: String,
        /// Accepted values.
        values: Vec<String>,
    },
    /// The instance has a tag with this key, whatever its value (EC2 `tag-key`).
    TagKey(String),
    /// Launched from one of these images (EC2 `image-id`).
    ImageId(Vec<AmiId>),
    /// Of one of these types (EC2 `instance-type`).
    InstanceType(Vec<InstanceType>),
}

impl InstanceFilter {
    /// A tag filter with a single value.
    pub fn tag(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self::Tag {
            key: key.into(),
            values: vec![value.into()],
        }
    }

    /// The EC2 filter name and values.
    pub fn to_ec2(&self) -> (String, Vec<String>) {
        match self {
            Self::State(states) => (
                "instance-state-name".to_owned(),
                states.iter().map(|s| s.as_str().to_owned()).collect(),
            ),
            Self::Tag { key, values } => (format!("tag:{key}"), values.clone()),
            Self::TagKey(key) => ("tag-key".to_owned(), vec![key.clone()]),
            Self::ImageId(ids) => (
                "image-id".to_owned(),
                ids.iter().map(|id| id.as_str().to_owned()).collect(),
            ),
            Self::InstanceType(types) => (
                "instance-type".to_owned(),
                types.iter().map(|t| t.as_str().to_owned()).collect(),
            ),
        }
    }

    /// Whether `instance` satisfies this filter (the in-memory twin of EC2's evaluation).
    pub fn matches(&self, instance: &Instance) -> bool {
        match self {
            Self::State(states) => states.contains(&instance.state),
            Self::Tag { key, values } => instance
                .tags
                .get(key)
                .is_some_and(|v| values.iter().any(|pattern| glob_match(pattern, v))),
            Self::TagKey(key) => instance.tags.contains_key(key),
            Self::ImageId(ids) => ids.contains(&instance.image_id),
            Self::InstanceType(types) => types.contains(&instance.instance_type),
        }
    }
}

/// Matches `text` against an EC2 filter pattern: `*` is any run of characters, `?` any one
/// character, everything else literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative wildcard matching with one backtrack point: O(len(p) * len(t)) worst case.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Where a page of a describe starts and how big it may be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// The token from the previous page; `None` for the first page.
    pub token: Option<String>,
    /// The page size, clamped to [`MIN_PAGE_SIZE`]..=[`MAX_PAGE_SIZE`]; `None` lets the
    /// provider choose (EC2 returns up to 1000).
    pub size: Option<u32>,
}

impl PageRequest {
    /// The first page, of at most `size` instances.
    pub fn first(size: u32) -> Self {
        Self {
            token: None,
            size: Some(size),
        }
    }

    /// The page size to use, clamped to what EC2 accepts.
    pub fn clamped_size(&self) -> Option<u32> {
        self.size.map(|s| s.clamp(MIN_PAGE_SIZE, MAX_PAGE_SIZE))
    }
}

/// One page of a describe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancePage {
    /// The instances on this page.
    pub instances: Vec<Instance>,
    /// Instances left out because the provider could not understand them.
    pub skipped: Vec<SkippedInstance>,
    /// The token for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// An instance's state and status checks (EC2 DescribeInstanceStatus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The instance.
    pub id: InstanceId,
    /// Its state.
    pub state: Ec2State,
    /// The system (host) status check.
    pub system_status: CheckStatus,
    /// The instance (guest) status check.
    pub instance_status: CheckStatus,
}

impl InstanceStatus {
    /// Both checks, as the domain keeps them.
    pub fn checks(&self) -> StatusChecks {
        StatusChecks {
            system: self.system_status,
            instance: self.instance_status,
        }
    }
}

/// The result of a start, stop or terminate for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// The instance.
    pub id: InstanceId,
    /// The state before the call.
    pub previous: Ec2State,
    /// The state right after the call (usually a transitional one).
    pub current: Ec2State,
}

/// Which metrics to read: the latest datapoint per instance in `[end - lookback, end]`,
/// aggregated (average) per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsWindow {
    /// The end of the window.
    pub end: DateTime<Utc>,
    /// How far back from `end` to look.
    #[serde(with = "duration_secs")]
    pub lookback: Duration,
    /// The aggregation period (60 s for detailed monitoring, 300 s for basic).
    #[serde(with = "duration_secs")]
    pub period: Duration,
}

impl MetricsWindow {
    /// The last `lookback` up to `end`, in `period` buckets.
    pub fn ending_at(end: DateTime<Utc>, lookback: Duration, period: Duration) -> Self {
        Self {
            end,
            lookback,
            period,
        }
    }

    /// The start of the window.
    pub fn start(&self) -> DateTime<Utc> {
        self.end - chrono::Duration::from_std(self.lookback).unwrap_or(chrono::Duration::zero())
    }

    /// Checks that the window is usable: a period of at least 1 s, a whole number of
    /// minutes when over 60 s (CloudWatch's rule), and a lookback of at least one period.
    pub fn validate(&self) -> Result<(), CloudError> {
        let secs = self.period.as_secs();
        let ok = secs >= 1
            && (secs <= 60 || secs.is_multiple_of(60))
            && self.period.subsec_nanos() == 0
            && self.lookback >= self.period
            && self.lookback <= Duration::from_secs(15 * 24 * 3600);
        if ok {
            Ok(())
        } else {
            Err(CloudError::InvalidParameter {
                code: "InvalidParameterValue".to_owned(),
                message: format!(
                    "metrics window: period {:?} must be whole seconds (whole minutes above 60 s) and at most the lookback {:?} (at most 15 days)",
                    self.period, self.lookback
                ),
            })
        }
    }
}

mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// One metric value and the start of the period it aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// The value (percent for both metrics ccm reads).
    pub value: f64,
    /// The timestamp CloudWatch gives the datapoint.
    pub at: DateTime<Utc>,
}

/// The latest metrics of one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceMetrics {
    /// `AWS/EC2 CPUUtilization` (average), `None` when there is no datapoint in the window.
    pub cpu_percent: Option<MetricSample>,
    /// `CWAgent mem_used_percent` (average), `None` when there is no datapoint (no agent).
    pub memory_used_percent: Option<MetricSample>,
}

/// The CloudWatch namespace and name of CPU utilisation.
pub const CPU_METRIC: (&str, &str) = ("AWS/EC2", "CPUUtilization");

/// The CloudWatch namespace and name of memory use (CloudWatch agent).
pub const MEMORY_METRIC: (&str, &str) = ("CWAgent", "mem_used_percent");

/// Which of the two metrics ccm reads a value is for ([`CPU_METRIC`] or [`MEMORY_METRIC`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// `AWS/EC2 CPUUtilization`.
    Cpu,
    /// `CWAgent mem_used_percent`.
    Memory,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_should_follow_ec2_wildcards() {
        assert!(glob_match(
            "cml-controller-2.9*",
            "cml-controller-2.9.0-1234"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*-2.9.*-*", "cml-controller-2.9.0-7"));
        assert!(!glob_match("cml-*", "ubuntu-cml-1"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn run_specs_should_always_carry_a_valid_client_token() {
        let spec = RunSpec::new(
            AmiId::parse("ami-0123abcd").unwrap(),
            InstanceType::parse("m5.large").unwrap(),
            "w1",
        );
        assert!(spec.validate().is_ok());
        let other = RunSpec::new(spec.image_id.clone(), spec.instance_type.clone(), "w2");
        assert_ne!(spec.client_token, other.client_token);
        assert_eq!(
            spec.all_tags().get(NAME_TAG).map(String::as_str),
            Some("w1")
        );
        let bad = spec.clone().with_client_token("");
        assert!(matches!(
            bad.validate(),
            Err(CloudError::InvalidParameter { .. })
        ));
        let bad = spec.with_tag("aws:reserved", "x");
        assert!(bad.validate().is_err());
    }

    #[test]
    fn page_sizes_should_be_clamped_to_what_ec2_accepts() {
        assert_eq!(PageRequest::first(1).clamped_size(), Some(MIN_PAGE_SIZE));
        assert_eq!(PageRequest::first(50).clamped_size(), Some(50));
        assert_eq!(PageRequest::first(5000).clamped_size(), Some(MAX_PAGE_SIZE));
        assert_eq!(PageRequest::default().clamped_size(), None);
    }

    #[test]
    fn metric_windows_should_follow_cloudwatch_period_rules() {
        let now = Utc::now();
        let ok = MetricsWindow::ending_at(now, Duration::from_secs(600), Duration::from_secs(60));
        assert!(ok.validate().is_ok());
        assert_eq!(ok.end - ok.start(), chrono::Duration::seconds(600));
        let bad = MetricsWindow::ending_at(now, Duration::from_secs(600), Duration::from_secs(90));
        assert!(bad.validate().is_err());
        let bad = MetricsWindow::ending_at(now, Duration::from_secs(30), Duration::from_secs(60));
        assert!(bad.validate().is_err());
    }
}
