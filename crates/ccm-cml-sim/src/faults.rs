//! Faults as data: what a sick CML controller does ([`WorkerFaults`]) and a small text grammar
//! to give faults to many workers at once ([`FaultSpec`]).
//!
//! # Grammar of a fault spec
//!
//! ```text
//! SPEC      := ITEM (';' ITEM)*
//! ITEM      := PRESET | RULE
//! PRESET    := 'demo' | 'none'
//! RULE      := WORKERS ['/' ENDPOINTS] ':' FAULT (',' FAULT)*
//! WORKERS   := SEL ('+' SEL)*
//! SEL       := '*' | N | A-B            worker indices, 0-based, ranges inclusive
//!            | P% | A-B%                 percentage buckets, see below
//! ENDPOINTS := NAME ('+' NAME)*          endpoint names (system_stats, licensing, lab_start, ...),
//!                                        group names (auth, system, licensing, labs, telemetry,
//!                                        users) or '*'
//! FAULT     := latency=DUR[~JITTER]      added delay, plus up to JITTER at random
//!            | error=STATUS[@RATE]       answer STATUS with an error body
//!            | reset[@RATE]              reset the TCP connection instead of answering
//!            | blackhole[@RATE]          never answer (the connection stays open)
//!            | malformed[@RATE]          cut the JSON body in half
//!            | close[@RATE]              answer, then close the connection (`Connection: close`)
//!            | slow=DUR                  send the body in pieces spread over DUR
//!            | redirect=STATUS:URL       answer STATUS (300-399) with `Location: URL` (the URL
//!                                        may hold ':' and '@' but not ',' or ';'; no rate)
//!            | older                     404, as an older CML without the endpoint; with '*'
//!                                        it hits only the optional endpoints
//!            | down                      the worker refuses connections
//!            | flap=PERIOD               down for the second half of every PERIOD
//!            | not-ready                 system_information.ready = false
//!            | disconnected              running nodes report DISCONNECTED
//!            | ssms-unreachable          deregistration answers 202
//!            | expire-tokens             (action) every issued token is invalid from now on
//!            | fail-401=N                (action) the next N bearer requests get 401
//! RATE      := a fraction (0.25) or a percentage (25%); default 1
//! DUR       := a humantime duration: 150ms, 2s, 1m
//! ```
//!
//! `P%` selects the workers whose bucket `(index × 37) mod 100` is below `P`; `A-B%` those whose
//! bucket is in `[A, B)`. That is exactly P% of every 100 consecutive workers, spread across the
//! fleet rather than bunched at the start, and disjoint bucket ranges give disjoint groups.
//!
//! Endpoint faults (latency, error, reset, blackhole, malformed, close, slow, redirect, older) go to the selected
//! endpoints; worker faults (down, flap, not-ready, disconnected, ssms-unreachable) and actions
//! ignore the endpoint selector. Rules apply in order; a later rule overrides the same field.
//!
//! Examples: `*:latency=20ms~10ms`, `3:down`, `10-20/system_stats:error=503@0.5`,
//! `30%/licensing:older`, `demo;0:blackhole`, `0/auth:redirect=307:http://127.9.9.9:8080/`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;

/// The `demo` preset: a mix of healthy, degraded, unavailable, flapping and broken workers.
pub const DEMO_PRESET: &str = "*:latency=2ms~8ms; \
    0-10%:latency=300ms~700ms,error=503@0.2; \
    10-15%:blackhole; \
    15-20%:flap=90s; \
    20-25%/system_stats+licensing:malformed@0.5; \
    25-30%:down; \
    30-35%/system_health+licensing+telemetry:older; \
    35-38%:not-ready";

/// Added latency: `base` plus a uniformly random extra in `[0, jitter]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Fixed part of the delay.
    pub base: Duration,
    /// Upper bound of the random extra.
    pub jitter: Duration,
}

/// An error status returned at a rate instead of the real answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorFault {
    /// HTTP status, 400..=599.
    pub status: u16,
    /// Probability in `[0, 1]`.
    pub rate: f64,
}

/// A redirect answered instead of the real answer: what a hijacked or misconfigured
/// controller (or a proxy in front of it) may send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectFault {
    /// HTTP status, 300..=399.
    pub status: u16,
    /// The `Location` header, sent as given.
    pub location: String,
}

/// The faults that apply to one endpoint (or to all of them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointFaults {
    /// Added delay before anything else happens.
    pub latency: Option<Latency>,
    /// Answer with this status at this rate.
    pub error: Option<ErrorFault>,
    /// Probability of resetting the connection instead of answering.
    pub reset: Option<f64>,
    /// Probability of never answering.
    pub blackhole: Option<f64>,
    /// Probability of cutting the JSON body in half.
    pub malformed: Option<f64>,
    /// Probability of closing the connection after the answer (`Connection: close`).
    pub close: Option<f64>,
    /// Send the body in pieces spread over this long.
    pub slow_body: Option<Duration>,
    /// Answer this redirect.
    pub redirect: Option<RedirectFault>,
    /// Answer 404 as an older CML without this endpoint.
    pub older: bool,
}

impl EndpointFaults {
    /// True when no fault is set.
    pub fn is_empty(&self) -> bool {
        *self == EndpointFaults::default()
    }

    /// `self` with every field that `over` sets replaced by `over`'s value.
    pub(crate) fn overlay(&self, over: &EndpointFaults) -> EndpointFaults {
        EndpointFaults {
            latency: over.latency.or(self.latency),
            error: over.error.or(self.error),
            reset: over.reset.or(self.reset),
            blackhole: over.blackhole.or(self.blackhole),
            malformed: over.malformed.or(self.malformed),
            close: over.close.or(self.close),
            slow_body: over.slow_body.or(self.slow_body),
            redirect: over.redirect.clone().or_else(|| self.redirect.clone()),
            older: over.older || self.older,
        }
    }
}

/// Everything that is wrong with one simulated worker.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerFaults {
    /// Faults for every endpoint (`older` only hits optional endpoints from here).
    pub all: EndpointFaults,
    /// Faults for single endpoints, laid over `all`.
    pub endpoints: BTreeMap<Endpoint, EndpointFaults>,
    /// The worker refuses connections, as a host that is down.
    pub down: bool,
    /// The worker is down for the second half of every period (connections are reset).
    pub flap: Option<Duration>,
    /// `system_information.ready` is false and labs cannot start.
    pub not_ready: bool,
    /// Running nodes report `DISCONNECTED` (their compute was lost).
    pub disconnected: bool,
    /// Deregistration answers 202: done locally, SSMS not reached.
    pub ssms_unreachable: bool,
}

impl WorkerFaults {
    /// No faults at all.
    pub fn none() -> Self {
        WorkerFaults::default()
    }

    /// True when no fault is set.
    pub fn is_empty(&self) -> bool {
        *self == WorkerFaults::default()
    }

    /// Sets the faults of every endpoint.
    pub fn with_all(mut self, faults: EndpointFaults) -> Self {
        self.all = faults;
        self
    }

    /// Sets the faults of one endpoint.
    pub fn with_endpoint(mut self, endpoint: Endpoint, faults: EndpointFaults) -> Self {
        self.endpoints.insert(endpoint, faults);
        self
    }

    /// The faults that apply to `endpoint`: `all` (without `older` unless the endpoint is
    /// optional) overlaid with the endpoint's own entry.
    pub fn for_endpoint(&self, endpoint: Endpoint) -> EndpointFaults {
        let mut base = self.all.clone();
        base.older = base.older && endpoint.is_optional();
        match self.endpoints.get(&endpoint) {
            Some(own) => base.overlay(own),
            None => base,
        }
    }
}

impl fmt::Display for WorkerFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for (sel, faults) in std::iter::once(("*".to_owned(), &self.all)).chain(
            self.endpoints
                .iter()
                .map(|(e, f)| (format!("*/{}", e.name()), f)),
        ) {
            let list = endpoint_fault_words(faults);
            if !list.is_empty() {
                parts.push(format!("{sel}:{}", list.join(",")));
            }
        }
        let mut worker = Vec::new();
        if self.down {
            worker.push("down".to_owned());
        }
        if let Some(p) = self.flap {
            worker.push(format!("flap={}", humantime::format_duration(p)));
        }
        if self.not_ready {
            worker.push("not-ready".to_owned());
        }
        if self.disconnected {
            worker.push("disconnected".to_owned());
        }
        if self.ssms_unreachable {
            worker.push("ssms-unreachable".to_owned());
        }
        if !worker.is_empty() {
            parts.push(format!("*:{}", worker.join(",")));
        }
        f.write_str(&parts.join(";"))
    }
}

fn endpoint_fault_words(f: &EndpointFaults) -> Vec<String> {
    let mut out = Vec::new();
    let rate = |r: f64| {
        if (r - 1.0).abs() < f64::EPSILON {
            String::new()
        } else {
            format!("@{r}")
        }
    };
    if let Some(l) = f.latency {
        if l.jitter.is_zero() {
            out.push(format!("latency={}", humantime::format_duration(l.base)));
        } else {
            out.push(format!(
                "latency={}~{}",
                humantime::format_duration(l.base),
                humantime::format_duration(l.jitter)
            ));
        }
    }
    if let Some(e) = f.error {
        out.push(format!("error={}{}", e.status, rate(e.rate)));
    }
    if let Some(r) = f.reset {
        out.push(format!("reset{}", rate(r)));
    }
    if let Some(r) = f.blackhole {
        out.push(format!("blackhole{}", rate(r)));
    }
    if let Some(r) = f.malformed {
        out.push(format!("malformed{}", rate(r)));
    }
    if let Some(r) = f.close {
        out.push(format!("close{}", rate(r)));
    }
    if let Some(d) = f.slow_body {
        out.push(format!("slow={}", humantime::format_duration(d)));
    }
    if let Some(r) = &f.redirect {
        out.push(format!("redirect={}:{}", r.status, r.location));
    }
    if f.older {
        out.push("older".to_owned());
    }
    out
}

/// One piece of a worker selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerRange {
    /// Every worker.
    All,
    /// One worker by index.
    Index(usize),
    /// Workers `from..=to`.
    Range(usize, usize),
    /// Workers whose bucket `(index × 37) mod 100` is in `[from, to)`.
    Percent(u8, u8),
}

/// Which workers a rule or a control action applies to (`*`, `3`, `10-20`, `30%`, `1+5+7`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSelector(pub Vec<WorkerRange>);

impl WorkerSelector {
    /// Every worker.
    pub fn all() -> Self {
        WorkerSelector(vec![WorkerRange::All])
    }

    /// The percentage bucket of a worker index.
    pub fn bucket(index: usize) -> u8 {
        // 37 is coprime with 100, so every block of 100 indices covers every bucket once.
        u8::try_from(index.wrapping_mul(37) % 100).unwrap_or(0)
    }

    /// Whether the worker with this (fleet-wide) index is selected.
    pub fn matches(&self, index: usize) -> bool {
        self.0.iter().any(|r| match *r {
            WorkerRange::All => true,
            WorkerRange::Index(i) => i == index,
            WorkerRange::Range(a, b) => (a..=b).contains(&index),
            WorkerRange::Percent(a, b) => (a..b).contains(&Self::bucket(index)),
        })
    }
}

impl FromStr for WorkerSelector {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for part in s.split('+').map(str::trim) {
            let bad = || FaultSpecError::new(format!("bad worker selector {part:?}"));
            if part == "*" {
                out.push(WorkerRange::All);
            } else if let Some(p) = part.strip_suffix('%') {
                let (a, b) = match p.split_once('-') {
                    Some((a, b)) => (a.trim().parse::<u8>(), b.trim().parse::<u8>()),
                    None => (Ok(0), p.trim().parse::<u8>()),
                };
                let (a, b) = (a.map_err(|_| bad())?, b.map_err(|_| bad())?);
                if a > b || b > 100 {
                    return Err(bad());
                }
                out.push(WorkerRange::Percent(a, b));
            } else if let Some((a, b)) = part.split_once('-') {
                let a = a.trim().parse::<usize>().map_err(|_| bad())?;
                let b = b.trim().parse::<usize>().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                out.push(WorkerRange::Range(a, b));
            } else {
                out.push(WorkerRange::Index(
                    part.parse::<usize>().map_err(|_| bad())?,
                ));
            }
        }
        Ok(WorkerSelector(out))
    }
}

impl fmt::Display for WorkerSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match *r {
                WorkerRange::All => "*".to_owned(),
                WorkerRange::Index(i) => i.to_string(),
                WorkerRange::Range(a, b) => format!("{a}-{b}"),
                WorkerRange::Percent(0, b) => format!("{b}%"),
                WorkerRange::Percent(a, b) => format!("{a}-{b}%"),
            })
            .collect();
        f.write_str(&parts.join("+"))
    }
}

/// Which endpoints a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointSelector {
    /// Every endpoint.
    All,
    /// These endpoints.
    Some(Vec<Endpoint>),
}

impl FromStr for EndpointSelector {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for name in s.split('+').map(str::trim) {
            if name == "*" {
                return Ok(EndpointSelector::All);
            }
            if let Ok(e) = name.parse::<Endpoint>() {
                out.push(e);
                continue;
            }
            let group: Vec<Endpoint> = Endpoint::ALL
                .iter()
                .copied()
                .filter(|e| e.group() == name && *e != Endpoint::Other)
                .collect();
            if group.is_empty() {
                return Err(FaultSpecError::new(format!(
                    "unknown endpoint or group {name:?}"
                )));
            }
            out.extend(group);
        }
        Ok(EndpointSelector::Some(out))
    }
}

/// One fault or one-shot action of a rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Added latency.
    Latency(Latency),
    /// Error status at a rate.
    Error(ErrorFault),
    /// Connection reset at a rate.
    Reset(f64),
    /// Never answer, at a rate.
    Blackhole(f64),
    /// Cut JSON bodies in half, at a rate.
    Malformed(f64),
    /// Close the connection after the answer, at a rate.
    Close(f64),
    /// Slow body over this long.
    SlowBody(Duration),
    /// Answer a redirect.
    Redirect(RedirectFault),
    /// 404 as an older CML.
    Older,
    /// Refuse connections.
    Down,
    /// Down for the second half of every period.
    Flap(Duration),
    /// Not ready.
    NotReady,
    /// Running nodes report DISCONNECTED.
    Disconnected,
    /// Deregistration answers 202.
    SsmsUnreachable,
    /// Action: invalidate every issued token now.
    ExpireTokens,
    /// Action: the next N bearer requests get 401.
    Fail401(u32),
}

/// One rule: workers, endpoints, faults.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// Which workers.
    pub workers: WorkerSelector,
    /// Which endpoints (endpoint faults only).
    pub endpoints: EndpointSelector,
    /// What goes wrong.
    pub faults: Vec<Fault>,
}

/// One-shot actions that a spec asked for, to be carried out by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultActions {
    /// Invalidate every token issued so far.
    pub expire_tokens: bool,
    /// The next N bearer requests get 401.
    pub fail_401: Option<u32>,
}

/// A parsed fault spec: rules in order (see the module docs for the grammar).
///
/// It serialises as its source text, so that it can be passed to shard processes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FaultSpec {
    source: String,
    rules: Vec<FaultRule>,
}

/// A fault spec could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FaultSpecError(String);

impl FaultSpecError {
    fn new(msg: impl Into<String>) -> Self {
        FaultSpecError(msg.into())
    }
}

impl FaultSpec {
    /// Parses a spec (see the module docs). The empty string is an empty spec.
    pub fn parse(text: &str) -> Result<FaultSpec, FaultSpecError> {
        let mut rules = Vec::new();
        parse_into(text, &mut rules, 0)?;
        Ok(FaultSpec {
            source: text.trim().to_owned(),
            rules,
        })
    }

    /// The text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The rules in order.
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// True when there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies every rule that selects worker `index` to `faults`, and returns the one-shot
    /// actions it asked for. Returns `None` when no rule selects the worker.
    pub fn apply(&self, index: usize, faults: &mut WorkerFaults) -> Option<FaultActions> {
        let mut actions = FaultActions::default();
        let mut matched = false;
        for rule in self.rules.iter().filter(|r| r.workers.matches(index)) {
            matched = true;
            for fault in &rule.faults {
                apply_fault(fault, &rule.endpoints, faults, &mut actions);
            }
        }
        matched.then_some(actions)
    }
}

fn apply_fault(
    fault: &Fault,
    endpoints: &EndpointSelector,
    faults: &mut WorkerFaults,
    actions: &mut FaultActions,
) {
    let mut on_endpoints = |f: &dyn Fn(&mut EndpointFaults)| match endpoints {
        EndpointSelector::All => f(&mut faults.all),
        EndpointSelector::Some(list) => {
            for e in list {
                f(faults.endpoints.entry(*e).or_default());
            }
        }
    };
    match fault {
        Fault::Latency(l) => on_endpoints(&|e| e.latency = Some(*l)),
        Fault::Error(err) => on_endpoints(&|e| e.error = Some(*err)),
        Fault::Reset(r) => on_endpoints(&|e| e.reset = Some(*r)),
        Fault::Blackhole(r) => on_endpoints(&|e| e.blackhole = Some(*r)),
        Fault::Malformed(r) => on_endpoints(&|e| e.malformed = Some(*r)),
        Fault::Close(r) => on_endpoints(&|e| e.close = Some(*r)),
        Fault::SlowBody(d) => on_endpoints(&|e| e.slow_body = Some(*d)),
        Fault::Redirect(r) => on_endpoints(&|e| e.redirect = Some(r.clone())),
        Fault::Older => on_endpoints(&|e| e.older = true),
        Fault::Down => faults.down = true,
        Fault::Flap(p) => faults.flap = Some(*p),
        Fault::NotReady => faults.not_ready = true,
        Fault::Disconnected => faults.disconnected = true,
        Fault::SsmsUnreachable => faults.ssms_unreachable = true,
        Fault::ExpireTokens => actions.expire_tokens = true,
        Fault::Fail401(n) => actions.fail_401 = Some(*n),
    }
}

fn parse_into(text: &str, rules: &mut Vec<FaultRule>, depth: u8) -> Result<(), FaultSpecError> {
    for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        match item {
            "none" => {}
            "demo" if depth == 0 => parse_into(DEMO_PRESET, rules, depth + 1)?,
            _ => rules.push(parse_rule(item)?),
        }
    }
    Ok(())
}

fn parse_rule(item: &str) -> Result<FaultRule, FaultSpecError> {
    let (target, list) = item.split_once(':').ok_or_else(|| {
        FaultSpecError::new(format!(
            "rule {item:?} has no ':' (expected WORKERS[/ENDPOINTS]:FAULT,...)"
        ))
    })?;
    let (workers, endpoints) = match target.split_once('/') {
        Some((w, e)) => (w.parse()?, e.parse()?),
        None => (target.parse()?, EndpointSelector::All),
    };
    let faults = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_fault)
        .collect::<Result<Vec<_>, _>>()?;
    if faults.is_empty() {
        return Err(FaultSpecError::new(format!("rule {item:?} names no fault")));
    }
    Ok(FaultRule {
        workers,
        endpoints,
        faults,
    })
}

fn parse_duration(s: &str) -> Result<Duration, FaultSpecError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| FaultSpecError::new(format!("bad duration {s:?}: {e}")))
}

fn parse_rate(s: Option<&str>) -> Result<f64, FaultSpecError> {
    let Some(s) = s else { return Ok(1.0) };
    let s = s.trim();
    let rate = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| FaultSpecError::new(format!("bad rate {s:?}")))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(FaultSpecError::new(format!("rate {s:?} is not in [0, 1]")));
    }
    Ok(rate)
}

fn parse_fault(word: &str) -> Result<Fault, FaultSpecError> {
    // Before the rate split: a URL may hold '@' (user info) and ':'.
    if let Some(value) = word.trim().strip_prefix("redirect=") {
        return parse_redirect(value);
    }
    let (head, rate) = match word.split_once('@') {
        Some((h, r)) => (h.trim(), Some(r)),
        None => (word, None),
    };
    let (name, value) = match head.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (head.trim(), None),
    };
    fn need<'a>(name: &str, v: Option<&'a str>) -> Result<&'a str, FaultSpecError> {
        v.ok_or_else(|| FaultSpecError::new(format!("fault {name:?} needs a value ({name}=...)")))
    }
    let no_rate = |f: Fault| match rate {
        Some(_) => Err(FaultSpecError::new(format!("fault {name:?} takes no rate"))),
        None => Ok(f),
    };
    match name {
        "latency" => {
            let v = need(name, value)?;
            let (base, jitter) = match v.split_once('~') {
                Some((b, j)) => (parse_duration(b)?, parse_duration(j)?),
                None => (parse_duration(v)?, Duration::ZERO),
            };
            no_rate(Fault::Latency(Latency { base, jitter }))
        }
        "error" => {
            let v = need(name, value)?;
            let status = v
                .parse::<u16>()
                .ok()
                .filter(|s| (400..=599).contains(s))
                .ok_or_else(|| FaultSpecError::new(format!("bad error status {v:?}")))?;
            Ok(Fault::Error(ErrorFault {
                status,
                rate: parse_rate(rate)?,
            }))
        }
        "reset" => Ok(Fault::Reset(parse_rate(rate)?)),
        "blackhole" => Ok(Fault::Blackhole(parse_rate(rate)?)),
        "malformed" => Ok(Fault::Malformed(parse_rate(rate)?)),
        "close" => Ok(Fault::Close(parse_rate(rate)?)),
        "slow" => no_rate(Fault::SlowBody(parse_duration(need(name, value)?)?)),
        "older" => no_rate(Fault::Older),
        "down" => no_rate(Fault::Down),
        "flap" => {
            let p = parse_duration(need(name, value)?)?;
            if p.is_zero() {
                return Err(FaultSpecError::new("flap period must be positive"));
            }
            no_rate(Fault::Flap(p))
        }
        "not-ready" => no_rate(Fault::NotReady),
        "disconnected" => no_rate(Fault::Disconnected),
        "ssms-unreachable" => no_rate(Fault::SsmsUnreachable),
        "expire-tokens" => no_rate(Fault::ExpireTokens),
        "fail-401" => {
            let v = need(name, value)?;
            let n = v
                .parse::<u32>()
                .map_err(|_| FaultSpecError::new(format!("bad count {v:?}")))?;
            no_rate(Fault::Fail401(n))
        }
        "redirect" => Err(FaultSpecError::new(
            "fault \"redirect\" needs a value (redirect=STATUS:URL)",
        )),
        _ => Err(FaultSpecError::new(format!("unknown fault {name:?}"))),
    }
}

/// `STATUS:URL` of `redirect=STATUS:URL`.
fn parse_redirect(value: &str) -> Result<Fault, FaultSpecError> {
    let (status, location) = value.trim().split_once(':').ok_or_else(|| {
        FaultSpecError::new(format!("bad redirect {value:?} (expected STATUS:URL)"))
    })?;
    let status = status
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|s| (300..=399).contains(s))
        .ok_or_else(|| FaultSpecError::new(format!("bad redirect status {status:?}")))?;
    let location = location.trim();
    // The header must be sendable: visible ASCII only.
    if location.is_empty() || !location.chars().all(|c| c.is_ascii_graphic()) {
        return Err(FaultSpecError::new(format!(
            "bad redirect location {location:?} (visible ASCII, no spaces)"
        )));
    }
    Ok(Fault::Redirect(RedirectFault {
        status,
        location: location.to_owned(),
    }))
}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultSpec::parse(s)
    }
}

impl TryFrom<String> for FaultSpec {
    type Error = FaultSpecError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        FaultSpec::parse(&s)
    }
}

impl From<FaultSpec> for String {
    fn from(spec: FaultSpec) -> String {
        spec.source
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_should_read_every_fault_kind() {
        let spec = FaultSpec::parse(
            "*:latency=20ms~10ms; 3/system_stats+licensing:error=503@0.5,malformed@25%; \
             10-20:reset@0.1,blackhole@0.2,slow=2s; 30%/*:older; 5:down,flap=1m,not-ready,\
             disconnected,ssms-unreachable,expire-tokens,fail-401=3",
        )
        .unwrap();
        assert_eq!(spec.rules().len(), 5);
        let mut f = WorkerFaults::default();
        let actions = spec.apply(3, &mut f).unwrap();
        assert_eq!(actions, FaultActions::default());
        assert_eq!(
            f.all.latency,
            Some(Latency {
                base: Duration::from_millis(20),
                jitter: Duration::from_millis(10)
            })
        );
        let stats = f.for_endpoint(Endpoint::SystemStats);
        assert_eq!(
            stats.error,
            Some(ErrorFault {
                status: 503,
                rate: 0.5
            })
        );
        assert_eq!(stats.malformed, Some(0.25));
        assert!(f.for_endpoint(Endpoint::SystemInformation).error.is_none());

        let mut f5 = WorkerFaults::default();
        let a5 = spec.apply(5, &mut f5).unwrap();
        assert!(f5.down && f5.not_ready && f5.disconnected && f5.ssms_unreachable);
        assert_eq!(f5.flap, Some(Duration::from_secs(60)));
        assert!(a5.expire_tokens);
        assert_eq!(a5.fail_401, Some(3));

        let mut f15 = WorkerFaults::default();
        spec.apply(15, &mut f15).unwrap();
        assert_eq!(f15.all.reset, Some(0.1));
        assert_eq!(f15.all.blackhole, Some(0.2));
        assert_eq!(f15.all.slow_body, Some(Duration::from_secs(2)));
    }

    #[test]
    fn redirect_should_parse_a_url_with_colons_and_user_info_and_print_back() {
        let spec = FaultSpec::parse(
            "0/authenticate+auth_extended:redirect=307:http://u:p@127.9.9.9:8080/x?token=1",
        )
        .unwrap();
        let mut f = WorkerFaults::default();
        spec.apply(0, &mut f).unwrap();
        let want = RedirectFault {
            status: 307,
            location: "http://u:p@127.9.9.9:8080/x?token=1".to_owned(),
        };
        assert_eq!(f.for_endpoint(Endpoint::Authenticate).redirect, Some(want));
        assert!(
            f.for_endpoint(Endpoint::SystemInformation)
                .redirect
                .is_none()
        );
        let mut again = WorkerFaults::default();
        FaultSpec::parse(&f.to_string())
            .unwrap()
            .apply(0, &mut again);
        assert_eq!(again, f);
    }

    #[test]
    fn parse_should_reject_bad_specs_with_a_reason() {
        for bad in [
            "1:redirect",
            "1:redirect=307",
            "1:redirect=200:http://x/",
            "1:redirect=307:",
            "1:redirect=abc:http://x/",
            "3",
            "x:down",
            "1:explode",
            "1:error=200",
            "1:error=503@2",
            "1/nosuch:down",
            "1:latency",
            "20-10:down",
            "1:down@0.5",
            "50-40%:down",
        ] {
            let err = FaultSpec::parse(bad).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
    }

    #[test]
    fn percent_selector_should_pick_exactly_that_share_of_each_hundred() {
        let sel: WorkerSelector = "30%".parse().unwrap();
        let picked = (0..1000).filter(|i| sel.matches(*i)).count();
        assert_eq!(picked, 300);
        let a: WorkerSelector = "0-10%".parse().unwrap();
        let b: WorkerSelector = "10-15%".parse().unwrap();
        assert!((0..1000).all(|i| !(a.matches(i) && b.matches(i))));
        // Spread out: the first ten workers are not all in the first 10%.
        assert!((0..10).filter(|i| a.matches(*i)).count() < 10);
    }

    #[test]
    fn older_on_all_endpoints_should_only_hit_optional_ones() {
        let spec = FaultSpec::parse("*:older").unwrap();
        let mut f = WorkerFaults::default();
        spec.apply(0, &mut f);
        assert!(f.for_endpoint(Endpoint::Licensing).older);
        assert!(!f.for_endpoint(Endpoint::SystemInformation).older);
        let spec = FaultSpec::parse("*/system_information:older").unwrap();
        let mut f = WorkerFaults::default();
        spec.apply(0, &mut f);
        assert!(f.for_endpoint(Endpoint::SystemInformation).older);
    }

    #[test]
    fn demo_preset_should_parse_and_make_disjoint_groups() {
        let spec = FaultSpec::parse("demo").unwrap();
        let mut down = 0;
        let mut blackholed = 0;
        for i in 0..100 {
            let mut f = WorkerFaults::default();
            spec.apply(i, &mut f);
            down += usize::from(f.down);
            blackholed += usize::from(f.all.blackhole.is_some());
            assert!(!(f.down && f.all.blackhole.is_some()));
        }
        assert_eq!(down, 5);
        assert_eq!(blackholed, 5);
    }

    #[test]
    fn spec_should_serialise_as_its_text() {
        let spec = FaultSpec::parse("1-2:down").unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, "\"1-2:down\"");
        let back: FaultSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn display_should_describe_the_faults() {
        let spec = FaultSpec::parse("*:latency=5ms;*/licensing:error=503@0.5;*:down").unwrap();
        let mut f = WorkerFaults::default();
        spec.apply(0, &mut f);
        let text = f.to_string();
        assert!(text.contains("latency=5ms"), "{text}");
        assert!(text.contains("licensing:error=503@0.5"), "{text}");
        assert!(text.contains("down"), "{text}");
        // And it parses back to the same faults.
        let mut again = WorkerFaults::default();
        FaultSpec::parse(&text).unwrap().apply(0, &mut again);
        assert_eq!(again, f);
    }
}
