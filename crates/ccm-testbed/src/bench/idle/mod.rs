//! `ccm bench idle`: the economics of idle policies, measured by replaying a usage trace of a
//! fleet over simulated days (BENCHMARKS.md, "Fleet economics").
//!
//! For each policy the harness starts a fresh simulated cloud (one running instance per
//! worker) and — for the policies ccm runs — a fresh simulated CML fleet and a real engine on
//! an in-memory SQLite store, with every background job off. Then it steps a manual wall clock
//! in fixed ticks (`--tick`, default 5 min) from the trace's start to its end. At each tick:
//!
//! 1. the clocks move: the engine's [`ManualClock`] and the simulator's wall clock
//!    (telemetry is stamped with it);
//! 2. the trace is applied to the simulator as a user would cause it: a user who arrives at a
//!    stopped worker resumes it (through ccm, or the cloud for the baselines) and waits; once
//!    the worker is up and CML has booted (`--boot` after the start, in simulated time) the
//!    user logs in, starts or stops their lab and acts now and then (CML telemetry:
//!    `user_activity`, `start_lab`, node events; running nodes in `system_stats`);
//! 3. the simulated cloud's CPU metric is put from the trace's load (for the CPU rule);
//! 4. the policy acts: for ccm, the engine's jobs run as on a schedule — EC2 sync, CML sync
//!    and the activity job (activity reading, idle evaluation, the pause command) — each
//!    triggered and awaited; a baseline acts on the simulated cloud directly, as the tool it
//!    models would;
//! 5. the instance states are read back from the simulated cloud (the truth) and the tick is
//!    accounted: billed hours, idle hours per the trace, idle hours stopped, pauses, waits.
//!
//! The simulated cloud's transitions have no delay (they complete at its next call, so by the
//! next tick whatever the replay's speed); starting a worker costs `--boot` of simulated time
//! until its CML is ready.

mod svg;
pub mod trace;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ccm_cloud::{CloudProvider, Instance, InstanceQuery, MetricKind, MetricsWindow};
use ccm_cml::{CmlClient, CmlConfig};
use ccm_cml_sim::{CmlSimConfig, NodeTiming, SimFleet, SimWorker};
use ccm_domain::settings::PollingSettings;
use ccm_domain::worker::{AddressPreference, EndpointPolicy};
use ccm_domain::{Actor, Ec2State, InstanceId, Region, RuntimeSettings, WorkerId};
use ccm_engine::{
    Engine, EngineConfig, EngineParts, ImportConfig, ImportRequest, ImportSelector, JobKind,
    ManualClock, resilience_with_bus,
};
use ccm_resilience::ResilienceConfig;
use ccm_store::{SqliteStore, WorkerFilter};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::bench::BenchError;
use crate::ec2::{Ec2SimConfig, PowerHook, SimulatedCloud};
pub use svg::chart;
pub use trace::{Trace, TraceError};

/// The trace presets shipped in `bench/traces/`.
pub const PRESETS: [&str; 4] = ["training", "dev", "weekend", "long-runs"];

/// A policy the benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// ccm with its default settings (running nodes count as use).
    Ccm,
    /// ccm's defaults with `idle.running_nodes_count_as_use = false`.
    CcmNodesIgnored,
    /// The original system's rule: CML telemetry only, 60-minute timeout, no grace after a
    /// resume, no break timeout while the fleet is busy.
    Original,
    /// A CPU-threshold rule like Cloud Custodian's: stop when the average CPU over the window
    /// is below the threshold.
    Cpu,
    /// A fixed schedule like AWS Instance Scheduler's: running on weekdays 08–18 only.
    Schedule,
}

impl PolicyKind {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ccm => "ccm",
            Self::CcmNodesIgnored => "ccm-nodes-ignored",
            Self::Original => "original",
            Self::Cpu => "cpu-threshold",
            Self::Schedule => "fixed-schedule",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Ccm,
            Self::CcmNodesIgnored,
            Self::Original,
            Self::Cpu,
            Self::Schedule,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }

    fn uses_engine(self) -> bool {
        matches!(self, Self::Ccm | Self::CcmNodesIgnored | Self::Original)
    }
}

/// How to run `ccm bench idle` on one trace.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// The trace.
    pub trace: Trace,
    /// The policies, in order (the report keeps it).
    pub policies: Vec<PolicyKind>,
    /// Simulated time per step.
    pub tick: Duration,
    /// Simulated time from a start request until CML is ready (EC2 pending + CML boot).
    pub boot: Duration,
    /// ccm's idle timeout, and the reference of the measurement: stoppable hours are idle
    /// hours minus this per idle period; a pause followed by use within it is wrongful.
    pub timeout: Duration,
    /// Price of an instance-hour.
    pub price: f64,
    /// Its currency.
    pub currency: String,
    /// The CPU rule: threshold (percent) and window.
    pub cpu_threshold: f64,
    /// The CPU rule's window.
    pub cpu_window: Duration,
    /// The fixed schedule's running hours on weekdays, local time of the trace: (start, end)
    /// hours.
    pub schedule_hours: (u16, u16),
    /// The original system's timeout (60 min; its knob in the sweep).
    pub original_timeout: Duration,
    /// Also run each baseline measured here (`cpu-threshold`, `fixed-schedule`) with its knob
    /// swept over a handful of values ([`SWEEP_CPU_WINDOWS`], [`SWEEP_SCHEDULE_HOURS`]), for
    /// the fair comparison ([`IdleReport::fair`]).
    pub sweep: bool,
    /// The sweep also runs `original` at [`SWEEP_ORIGINAL_TIMEOUTS`] (each a full engine run:
    /// as slow as `original` itself, per value).
    pub sweep_original: bool,
    /// Run ccm's jobs only at the ticks where they can change something (see
    /// [`earliest_pause`]); off: at every tick. Both give the same report (a test checks it);
    /// on is many times faster on fleets that are quiet at night.
    pub skip_quiet: bool,
    /// First loopback address of the simulated CML fleet.
    pub listen_base: Ipv4Addr,
    /// Its port.
    pub port: u16,
}

impl IdleOptions {
    /// Defaults for `trace`: every policy, 5-minute ticks, 6-minute boots, ccm's default
    /// timeout, $3.96 an hour (on-demand `m5zn.metal`, us-east-1).
    pub fn new(trace: Trace) -> Self {
        Self {
            trace,
            policies: vec![
                PolicyKind::Ccm,
                PolicyKind::Original,
                PolicyKind::Cpu,
                PolicyKind::Schedule,
            ],
            tick: Duration::from_secs(300),
            boot: Duration::from_secs(360),
            timeout: ccm_domain::idle::IdleSettings::default().timeout,
            price: 3.96,
            currency: "USD".into(),
            cpu_threshold: 10.0,
            cpu_window: Duration::from_secs(3600),
            schedule_hours: (8, 18),
            original_timeout: Duration::from_secs(3600),
            sweep: false,
            sweep_original: false,
            skip_quiet: true,
            listen_base: Ipv4Addr::new(127, 77, 0, 1),
            port: 9443,
        }
    }
}

/// What one policy did with one trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// Policy name.
    pub policy: String,
    /// Instance-hours billed (running).
    pub instance_hours: f64,
    /// Instance-hours the trace calls idle.
    pub idle_hours: f64,
    /// Idle hours during which the instance was stopped.
    pub idle_hours_stopped: f64,
    /// Idle hours minus the timeout per idle period.
    pub stoppable_hours: f64,
    /// Of those, the hours the instance was stopped.
    pub stoppable_hours_stopped: f64,
    /// `stoppable_hours_stopped ÷ stoppable_hours`, percent.
    pub percent_stopped: f64,
    /// Stops by the policy.
    pub pauses: u64,
    /// Wrongful pauses (both kinds).
    pub wrongful_pauses: u64,
    /// Pauses while the trace says the worker is in use.
    pub wrongful_in_use: u64,
    /// Pauses followed by use within the timeout.
    pub wrongful_return: u64,
    /// Starts a user had to ask for (arriving at a stopped worker).
    pub user_resumes: u64,
    /// Hours users waited for a worker (from arrival until CML was ready).
    pub wait_hours: f64,
    /// The longest wait, minutes.
    pub wait_max_minutes: f64,
    /// Idle hours stopped × price.
    pub money_saved: f64,
    /// Every hour stopped × price, wrongful or not.
    pub bill_reduction: f64,
    /// Real seconds the run took.
    pub run_seconds: f64,
    /// Ticks at which ccm's jobs ran (0 for the baselines; see `IdleOptions::skip_quiet`).
    #[serde(default)]
    pub engine_ticks: u64,
    /// The first wrongful pauses (worker, time, why), to see what the policy missed.
    pub wrongful_examples: Vec<String>,
    /// ccm's pauses by the rule that chose the timeout (`timeout_rule` of the
    /// `ccm.worker.idle_detected` event the engine paused on; empty for the baselines):
    /// `[pauses, wrongful]` per rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pauses_by_rule: BTreeMap<String, [u64; 2]>,
}

/// The report of one trace under every policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleReport {
    /// Trace name.
    pub trace: String,
    /// Workers.
    pub workers: usize,
    /// Days.
    pub days: u32,
    /// Simulated seconds per tick.
    pub tick_seconds: u64,
    /// Simulated seconds from a start to a ready CML.
    pub boot_seconds: u64,
    /// The idle timeout (ccm's, and the measurement's reference).
    pub timeout_seconds: u64,
    /// Price of an instance-hour.
    pub price: f64,
    /// Currency.
    pub currency: String,
    /// Every policy, in the order asked.
    pub policies: Vec<PolicyReport>,
    /// The baselines with their knob swept (`IdleOptions::sweep`; empty when not asked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<PolicyReport>,
    /// The fair comparison (issue 15: money saved at an equal or lower count of wrongful
    /// pauses): per baseline, its best setting among the default and the sweep whose
    /// wrongful pauses are no more than ccm's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fair: Vec<FairComparison>,
}

/// One line of the fair comparison: a baseline's best money at no more wrongful pauses than
/// ccm's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FairComparison {
    /// The baseline (`cpu-threshold`, `fixed-schedule`, `original`).
    pub baseline: String,
    /// Settings measured (the default and the swept ones).
    pub settings_measured: usize,
    /// ccm's wrongful pauses.
    pub ccm_wrongful: u64,
    /// ccm's money saved.
    pub ccm_money: f64,
    /// The baseline's best setting with at most `ccm_wrongful` wrongful pauses (its name in
    /// the report), if any.
    pub best: Option<String>,
    /// Its wrongful pauses.
    pub best_wrongful: Option<u64>,
    /// Its money saved.
    pub best_money: Option<f64>,
    /// `ccm_money − best_money` (positive: ccm saves more); none when no setting qualifies.
    pub ccm_ahead: Option<f64>,
}

/// The CPU rule's windows in the sweep (the default, 1 h, among them).
pub const SWEEP_CPU_WINDOWS: [u64; 5] = [15, 30, 60, 120, 240];
/// The fixed schedule's weekday hours in the sweep (the default, 08–18, among them; 00–24:
/// off on weekends only).
pub const SWEEP_SCHEDULE_HOURS: [(u16, u16); 5] = [(8, 18), (7, 19), (7, 21), (6, 22), (0, 24)];
/// The original rule's timeouts in the sweep, minutes (the default, 60, among them).
pub const SWEEP_ORIGINAL_TIMEOUTS: [u64; 4] = [60, 90, 120, 180];

/// The variants of the sweep: (policy, options, name in the report).
fn sweep_variants(opts: &IdleOptions) -> Vec<(PolicyKind, IdleOptions, String)> {
    let mut out = Vec::new();
    for m in SWEEP_CPU_WINDOWS {
        let mut o = opts.clone();
        o.cpu_window = Duration::from_secs(m * 60);
        out.push((PolicyKind::Cpu, o, format!("cpu-threshold (window {m}m)")));
    }
    for (a, b) in SWEEP_SCHEDULE_HOURS {
        let mut o = opts.clone();
        o.schedule_hours = (a, b);
        out.push((
            PolicyKind::Schedule,
            o,
            format!("fixed-schedule ({a:02}-{b:02})"),
        ));
    }
    if opts.sweep_original {
        for m in SWEEP_ORIGINAL_TIMEOUTS {
            let mut o = opts.clone();
            o.original_timeout = Duration::from_secs(m * 60);
            out.push((PolicyKind::Original, o, format!("original (timeout {m}m)")));
        }
    }
    out
}

/// The fair comparison of `ccm` with each baseline in `plain` and `sweep` (see
/// [`IdleReport::fair`]); empty without a `ccm` report.
pub fn fair_comparison(plain: &[PolicyReport], sweep: &[PolicyReport]) -> Vec<FairComparison> {
    let Some(ccm) = plain.iter().find(|p| p.policy == PolicyKind::Ccm.name()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for base in [PolicyKind::Cpu, PolicyKind::Schedule, PolicyKind::Original] {
        let name = base.name();
        let of_base =
            |p: &&PolicyReport| p.policy == name || p.policy.starts_with(&format!("{name} ("));
        let all: Vec<&PolicyReport> = plain.iter().chain(sweep).filter(of_base).collect();
        if all.is_empty() {
            continue;
        }
        let best = all
            .iter()
            .filter(|p| p.wrongful_pauses <= ccm.wrongful_pauses)
            .max_by(|a, b| a.money_saved.total_cmp(&b.money_saved));
        out.push(FairComparison {
            baseline: name.to_owned(),
            settings_measured: all.len(),
            ccm_wrongful: ccm.wrongful_pauses,
            ccm_money: ccm.money_saved,
            best: best.map(|p| p.policy.clone()),
            best_wrongful: best.map(|p| p.wrongful_pauses),
            best_money: best.map(|p| p.money_saved),
            ccm_ahead: best.map(|p| ccm.money_saved - p.money_saved),
        });
    }
    out
}

/// Reads a trace by name: a preset (`training`, …) from `dir`, or a path to a file. The error
/// names the file and, for a bad line, its number.
pub fn load_trace(name: &str, dir: &std::path::Path) -> Result<Trace, BenchError> {
    let path = if PRESETS.contains(&name) {
        dir.join(format!("{name}.trace"))
    } else {
        PathBuf::from(name)
    };
    let text = std::fs::read_to_string(&path).map_err(BenchError::io(format!(
        "cannot read the trace {}",
        path.display()
    )))?;
    let source = path
        .file_name()
        .map_or_else(|| name.to_owned(), |f| f.to_string_lossy().into_owned());
    Trace::parse(&source, &text).map_err(|e| BenchError::Invalid(e.to_string()))
}

/// The options of a run on `trace` as `ccm bench idle` makes them: its defaults, with
/// `ccm-nodes-ignored` beside `ccm` on the `long-runs` preset.
pub fn default_options(trace: Trace) -> IdleOptions {
    let mut opts = IdleOptions::new(trace);
    if opts.trace.name == "long-runs" {
        opts.policies.insert(1, PolicyKind::CcmNodesIgnored);
    }
    opts
}

/// Runs every policy of `opts` on its trace.
pub async fn idle(opts: IdleOptions) -> Result<IdleReport, BenchError> {
    let timelines = opts.trace.expand();
    let mut policies = Vec::new();
    for policy in &opts.policies {
        eprintln!(
            "ccm bench idle: {} — {} ({} workers, {} days)",
            opts.trace.name,
            policy.name(),
            opts.trace.workers,
            opts.trace.days
        );
        let report = run_policy(&opts, *policy, &timelines).await?;
        eprintln!(
            "  {:.0}% of stoppable idle hours stopped, {} wrongful pauses, {:.2} {} saved, {:.1} s",
            report.percent_stopped,
            report.wrongful_pauses,
            report.money_saved,
            opts.currency,
            report.run_seconds
        );
        policies.push(report);
    }
    let mut sweep = Vec::new();
    if opts.sweep {
        for (policy, o, name) in sweep_variants(&opts) {
            // The default setting was run above when asked for: not twice.
            let default = match policy {
                PolicyKind::Cpu => o.cpu_window == opts.cpu_window,
                PolicyKind::Schedule => o.schedule_hours == opts.schedule_hours,
                _ => o.original_timeout == opts.original_timeout,
            };
            if default && opts.policies.contains(&policy) {
                continue;
            }
            eprintln!("ccm bench idle: {} — sweep: {name}", opts.trace.name);
            let mut report = run_policy(&o, policy, &timelines).await?;
            report.policy = name;
            sweep.push(report);
        }
    }
    let fair = fair_comparison(&policies, &sweep);
    Ok(IdleReport {
        trace: opts.trace.name.clone(),
        workers: opts.trace.workers,
        days: opts.trace.days,
        tick_seconds: opts.tick.as_secs(),
        boot_seconds: opts.boot.as_secs(),
        timeout_seconds: opts.timeout.as_secs(),
        price: opts.price,
        currency: opts.currency.clone(),
        policies,
        sweep,
        fair,
    })
}

/// The table of one report, for standard error.
pub fn table(r: &IdleReport) -> String {
    let mut out = format!(
        "{} — {} workers, {} days, tick {} min, boot {} min, timeout {} min, {} {}/h\n",
        r.trace,
        r.workers,
        r.days,
        r.tick_seconds / 60,
        r.boot_seconds / 60,
        r.timeout_seconds / 60,
        r.price,
        r.currency
    );
    out.push_str(&format!(
        "{:<18} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7} {:>9} {:>9} {:>10}\n",
        "policy",
        "inst-h",
        "idle-h",
        "stopped",
        "stoppable",
        "% stop",
        "pauses",
        "wrongful",
        "wait-h",
        "saved"
    ));
    for p in &r.policies {
        out.push_str(&format!(
            "{:<18} {:>9.1} {:>8.1} {:>8.1} {:>9.1} {:>6.1}% {:>7} {:>9} {:>9.1} {:>10.2}\n",
            p.policy,
            p.instance_hours,
            p.idle_hours,
            p.idle_hours_stopped,
            p.stoppable_hours,
            p.percent_stopped,
            p.pauses,
            p.wrongful_pauses,
            p.wait_hours,
            p.money_saved
        ));
    }
    if !r.sweep.is_empty() {
        out.push_str("sweep:\n");
        for p in &r.sweep {
            out.push_str(&format!(
                "  {:<32} {:>6.1}% {:>7} {:>9} {:>10.2}\n",
                p.policy, p.percent_stopped, p.pauses, p.wrongful_pauses, p.money_saved
            ));
        }
    }
    for f in &r.fair {
        out.push_str(&format!(
            "fair: ccm {:.2} with {} wrongful vs {}: {}\n",
            f.ccm_money,
            f.ccm_wrongful,
            f.baseline,
            match (&f.best, f.best_money, f.best_wrongful, f.ccm_ahead) {
                (Some(b), Some(m), Some(w), Some(a)) =>
                    format!("best at <= ccm's wrongful: {b} {m:.2} with {w} (ccm {a:+.2})"),
                _ => format!(
                    "none of its {} settings has <= {} wrongful",
                    f.settings_measured, f.ccm_wrongful
                ),
            }
        ));
    }
    out
}

// === the simulated fleet ===

/// Instances that came up and are booting, by instance id (the harness times the boot).
#[derive(Default)]
struct Boots {
    up: HashMap<InstanceId, bool>,
}

/// Powers the CML worker bound to an instance on (not ready until the harness says so) and
/// off.
struct BenchPower {
    sim: Option<Arc<SimFleet>>,
    base: u32,
    boots: Arc<Mutex<Boots>>,
}

impl BenchPower {
    fn worker(&self, instance: &Instance) -> Option<SimWorker> {
        let IpAddr::V4(ip) = instance.public_ip? else {
            return None;
        };
        let index = u32::from(ip).checked_sub(self.base)?;
        self.sim.as_ref()?.worker(index as usize)
    }
}

impl PowerHook for BenchPower {
    fn on_running(&self, instance: &Instance) {
        self.boots.lock().up.insert(instance.id.clone(), true);
        if let Some(w) = self.worker(instance) {
            w.set_ready(false);
            w.power_on(Duration::ZERO);
        }
    }

    fn on_stopped(&self, instance: &Instance) {
        self.boots.lock().up.insert(instance.id.clone(), false);
        if let Some(w) = self.worker(instance) {
            w.power_off();
        }
    }
}

/// What the harness keeps per worker.
struct Slot {
    instance: InstanceId,
    sim_index: usize,
    engine_id: Option<WorkerId>,
    /// Billed at the end of the previous tick.
    billed: bool,
    /// CML is ready (the harness set it).
    ready: bool,
    /// When a start was asked for (the boot runs from there).
    start_asked: Option<DateTime<Utc>>,
    ready_at: Option<DateTime<Utc>>,
    /// When CML became ready (simulated time).
    ready_since: Option<DateTime<Utc>>,
    /// A user waits since then.
    waiting: Option<DateTime<Utc>>,
    last_ready: Option<DateTime<Utc>>,
    /// The lab runs (as the harness made it).
    lab_running: bool,
    /// Index of the next user action to play.
    next_action: usize,
    /// CPU samples for the CPU rule: (at, percent).
    cpu: VecDeque<(DateTime<Utc>, f64)>,
}

#[derive(Default)]
struct Tally {
    billed_s: f64,
    idle_s: f64,
    idle_stopped_s: f64,
    stoppable_stopped_s: f64,
    pauses: u64,
    wrongful_in_use: u64,
    wrongful_return: u64,
    user_resumes: u64,
    wait_s: f64,
    wait_max_s: f64,
    stopped_s: f64,
    engine_ticks: u64,
    examples: Vec<String>,
    by_rule: BTreeMap<String, [u64; 2]>,
}

/// Overlap, in seconds, of `[a, b)` with the stretches of `tl` for which `pred` holds,
/// shifted in by `lead` (the stoppable part of an idle stretch starts `lead` after it).
fn overlap(
    stretches: &[(DateTime<Utc>, DateTime<Utc>)],
    a: DateTime<Utc>,
    b: DateTime<Utc>,
) -> f64 {
    let i = stretches.partition_point(|(_, end)| *end <= a);
    let mut total = 0.0;
    for (s, e) in &stretches[i..] {
        if *s >= b {
            break;
        }
        let lo = (*s).max(a);
        let hi = (*e).min(b);
        if hi > lo {
            total += (hi - lo).num_milliseconds() as f64 / 1000.0;
        }
    }
    total
}

/// The idle stretches of a timeline within `[start, end)`.
fn idle_stretches(
    tl: &trace::Timeline,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut cur: Option<DateTime<Utc>> = (!tl.state_at(start).in_use()).then_some(start);
    for (from, state) in &tl.segments {
        if *from <= start || *from >= end {
            continue;
        }
        match (cur, state.in_use()) {
            (Some(s), true) => {
                out.push((s, *from));
                cur = None;
            }
            (None, false) => cur = Some(*from),
            _ => {}
        }
    }
    if let Some(s) = cur {
        out.push((s, end));
    }
    out
}

/// The part of each idle stretch after `timeout`.
fn stoppable(
    idle: &[(DateTime<Utc>, DateTime<Utc>)],
    timeout: chrono::Duration,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    idle.iter()
        .filter_map(|(s, e)| {
            let from = *s + timeout;
            (from < *e).then_some((from, *e))
        })
        .collect()
}

fn secs(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// The CPU a worker shows, from what the trace says it does (with a little noise).
fn cpu_of(state: trace::State, noise: f64) -> f64 {
    if state.nodes() {
        28.0 + 10.0 * noise
    } else if state.present() {
        4.0 + 3.0 * noise
    } else {
        1.0 + noise
    }
}

fn noise(index: usize, t: DateTime<Utc>) -> f64 {
    let x = (index as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(t.timestamp() as u64);
    let x = (x ^ (x >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ((x >> 11) % 1000) as f64 / 1000.0
}

struct Fleet {
    cloud: SimulatedCloud,
    sim: Option<Arc<SimFleet>>,
    engine: Option<Engine>,
    clock: Arc<ManualClock>,
    region: Region,
    boots: Arc<Mutex<Boots>>,
}

async fn start_fleet(
    opts: &IdleOptions,
    policy: PolicyKind,
    start: DateTime<Utc>,
) -> Result<Fleet, BenchError> {
    let n = opts.trace.workers;
    let region = Region::parse("eu-west-1").map_err(BenchError::setup("region"))?;
    let sim = if policy.uses_engine() {
        let cfg = CmlSimConfig {
            workers: n,
            listen_base: opts.listen_base,
            port: opts.port,
            node_timing: NodeTiming {
                queue: Duration::ZERO,
                stagger: Duration::ZERO,
                boot: Duration::ZERO,
            },
            ..CmlSimConfig::default()
        };
        let sim = SimFleet::start(cfg)
            .await
            .map_err(|e| BenchError::Simulator(e.to_string()))?;
        Some(Arc::new(sim))
    } else {
        None
    };
    if let Some(sim) = &sim
        && let Some(w) = sim.worker(0)
    {
        w.set_wall_clock(start);
    }
    let boots = Arc::new(Mutex::new(Boots::default()));
    let hook = Arc::new(BenchPower {
        sim: sim.clone(),
        base: u32::from(opts.listen_base),
        boots: boots.clone(),
    });
    let cloud_cfg = Ec2SimConfig {
        regions: vec![region.clone()],
        ip_pool: Ec2SimConfig::loopback_pool(opts.listen_base, n as u32),
        seed_instances: n,
        max_instances: n * 2,
        // Transitions complete at the cloud's next call. A delay in real time would not be
        // "done by the next tick": a baseline's replay of a whole day can take less than a
        // millisecond, and its instances would stay `stopping` for ever (never `stopped`,
        // so never started again).
        pending_delay: Duration::ZERO,
        stopping_delay: Duration::ZERO,
        shutting_down_delay: Duration::ZERO,
        ..Ec2SimConfig::default()
    };
    let cloud = SimulatedCloud::with_power_hook(cloud_cfg, hook)
        .map_err(BenchError::setup("simulated cloud"))?;
    let clock = Arc::new(ManualClock::new(start));
    let engine = if policy.uses_engine() {
        // The store is not what this benchmark measures (`ccm bench sync` does): an in-memory
        // SQLite database keeps a simulated week from waiting on thousands of fsyncs.
        let store = SqliteStore::open_in_memory()
            .await
            .map_err(BenchError::setup("store"))?;
        let mut settings = RuntimeSettings {
            polling: PollingSettings::all_off(),
            ..RuntimeSettings::default()
        };
        settings.idle.timeout = opts.timeout;
        // The fleet's working hours are in the trace's zone (an operator sets their own).
        settings.idle.local_time_zone = opts.trace.time_zone_name().to_owned();
        match policy {
            PolicyKind::CcmNodesIgnored => settings.idle.running_nodes_count_as_use = false,
            PolicyKind::Original => {
                settings.idle.running_nodes_count_as_use = false;
                settings.idle.timeout = opts.original_timeout;
                settings.idle.snooze_after_resume = Duration::ZERO;
                settings.idle.warning_before = Duration::ZERO;
                // Nor ccm's own rules: the break timeout of a busy fleet, the shorter timeout
                // after a session's end, the run-end timeout, the learned return timeout, the
                // shorter one for a worker nobody used since ccm brought it up.
                settings.idle.busy_fleet_percent = 0;
                settings.idle.session_end_timeout = settings.idle.timeout;
                settings.idle.run_end_timeout = settings.idle.timeout;
                settings.idle.return_timeout = settings.idle.timeout;
                settings.idle.midday_hours = String::new();
                settings.idle.nobody_since_start_timeout = settings.idle.timeout;
            }
            _ => {}
        }
        let (events, resilience) = resilience_with_bus(&ResilienceConfig::default(), None);
        let endpoint = EndpointPolicy {
            scheme: "http".into(),
            port: Some(opts.port),
            address: AddressPreference::Public,
            ..EndpointPolicy::default()
        };
        let cml = CmlClient::new(
            &CmlConfig {
                endpoint: endpoint.clone(),
                ..CmlConfig::default()
            },
            resilience.clone(),
        )
        .map_err(BenchError::setup("cml client"))?;
        let mut engine_cfg = EngineConfig::new(
            Default::default(),
            ImportConfig {
                regions: Vec::new(),
                ami_name_pattern: Some("cml-controller-*".into()),
                tag: None,
                ami_owners: vec!["self".into()],
            },
            Default::default(),
            Default::default(),
        );
        // Simulated time stands still between ticks: gathering a batch for 100 ms real
        // would only slow the replay down, not change what is written. Zero: the writer
        // takes what is queued and saves it at once (a triggered job waits for its writes,
        // so even 2 ms cost ~3 ms of timer per job per tick — most of a replay's wall time).
        engine_cfg.write_interval = Duration::ZERO;
        let engine = Engine::start(EngineParts {
            store: Arc::new(store),
            cloud: Arc::new(cloud.clone()),
            cml,
            resilience,
            endpoint,
            config: engine_cfg,
            initial_settings: settings,
            clock: clock.clone(),
        })
        .await
        .map_err(BenchError::setup("engine"))?;
        engine.forward_resilience_events(events);
        engine
            .import_workers(
                ImportRequest {
                    region: None,
                    selector: ImportSelector::Configured,
                    all: true,
                    restricted_to_filter: false,
                },
                &Actor::system("bench"),
            )
            .await
            .map_err(BenchError::setup("import"))?;
        Some(engine)
    } else {
        None
    };
    Ok(Fleet {
        cloud,
        sim,
        engine,
        clock,
        region,
        boots,
    })
}

/// The first tick at which ccm could pause a worker if nothing else happens: the earliest
/// `pause_at` of the idle policy over the running workers, as the store has them after this
/// tick's jobs, with the shortest timeout the fleet's busy share could give (the policy itself
/// decides at that tick, with its fresh reads). A worker whose running nodes count as use has
/// no such time (its nodes must stop first, which the harness does); one whose activity could
/// not be read is looked at again at the next tick. `None`: no pause can come by itself.
///
/// Skipping the ticks before it changes nothing the policy decides: between them the trace
/// plays nothing (a tick where a user acts, a lab starts or stops, a worker becomes ready or
/// changes state runs every job), so the reads would return what the last ones did, and an
/// evaluation could only keep the worker.
async fn earliest_pause(
    engine: &Engine,
    t: DateTime<Utc>,
    tick: chrono::Duration,
) -> Result<Option<DateTime<Utc>>, BenchError> {
    let settings = engine.settings().value.idle;
    // The learned return rule lengthens a timeout, takes the busy-fleet, midday or run-end one away
    // (the plain timeout then applies) or shortens a session's end to the no-return timeout,
    // so the earliest pause is among the rule's absence at every busy share, with the
    // run-end timeout no longer than the plain one and the session-end one no longer than the
    // no-return one.
    let session_end_on = settings.session_end_timeout < settings.timeout;
    let unlearned = ccm_domain::idle::IdleSettings {
        return_timeout: settings.timeout,
        // The midday prior only lengthens a timeout the evidence would otherwise decide.
        midday_hours: String::new(),
        run_end_timeout: settings.run_end_timeout.min(settings.timeout),
        session_end_timeout: if session_end_on {
            settings.session_end_timeout.min(settings.no_return_timeout)
        } else {
            settings.session_end_timeout
        },
        ..settings.clone()
    };
    let page = engine
        .store()
        .list(&WorkerFilter::default())
        .await
        .map_err(|e| BenchError::Invalid(format!("workers: {e}")))?;
    let mut due: Option<DateTime<Utc>> = None;
    for w in &page.items {
        if w.ec2_state != Ec2State::Running {
            continue;
        }
        if settings.running_nodes_count_as_use && w.monitoring.running_nodes.is_some_and(|n| n > 0)
        {
            continue;
        }
        for share in [None, Some(0.0), Some(1.0)] {
            let d = ccm_domain::idle::evaluate_in(w, &unlearned, share, t);
            let at = match d.pause_at {
                Some(at) => at,
                None if matches!(
                    d.action,
                    ccm_domain::idle::IdleAction::Keep {
                        reason: ccm_domain::idle::KeepReason::ActivityUnknown
                    }
                ) =>
                {
                    t + tick
                }
                None => continue,
            };
            due = Some(due.map_or(at, |d| d.min(at)));
        }
    }
    Ok(due)
}

/// How many wrongful pauses a report describes.
const EXAMPLES: usize = 20;

/// For a wrongful pause's description: what ccm knew of the worker's activity (latest
/// activity and its source, latest interaction and the one before it, latest resume, in
/// minutes before `t`), e.g. ` [activity 35m stop_lab, interaction 35m, before 940m]`; empty
/// for the baselines. (The rule that chose the timeout cannot be told after the pause: the
/// stop changes what the policy sees.)
async fn rule_of(fleet: &Fleet, id: Option<WorkerId>, t: DateTime<Utc>) -> String {
    let (Some(engine), Some(id)) = (&fleet.engine, id) else {
        return String::new();
    };
    let Ok(Some(w)) = engine.store().get(id).await else {
        return String::new();
    };
    let m = &w.monitoring;
    let ago = |at: Option<DateTime<Utc>>| {
        at.map_or_else(|| "-".to_owned(), |a| format!("{}m", (t - a).num_minutes()))
    };
    let source = match &m.last_activity_source {
        Some(ccm_domain::worker::ActivitySource::Telemetry { category, .. }) => category.clone(),
        Some(ccm_domain::worker::ActivitySource::RunningNodes { .. }) => "nodes".into(),
        None => "-".into(),
    };
    format!(
        " [activity {} {source}, interaction {}, before {}, resume {}]",
        ago(m.last_activity),
        ago(m.last_interaction),
        ago(m.last_work),
        ago(m.last_resume)
    )
}

/// The rule ccm paused the worker on: the `timeout_rule` of its latest
/// `ccm.worker.idle_detected` event that asked for a pause (`None` for the baselines).
async fn paused_on(fleet: &Fleet, id: Option<WorkerId>) -> Option<String> {
    let (Some(engine), Some(id)) = (&fleet.engine, id) else {
        return None;
    };
    let events = engine.worker_events(id, None, 20).await.ok()?;
    events.iter().find_map(|e| match &e.event.kind {
        ccm_domain::events::EventKind::WorkerIdleDetected {
            action,
            timeout_rule,
            ..
        } if action == "pause" => Some(timeout_rule.map_or("unknown", |r| r.name()).to_owned()),
        _ => None,
    })
}

async fn states(fleet: &Fleet) -> Result<HashMap<InstanceId, Ec2State>, BenchError> {
    let all = fleet
        .cloud
        .describe_instances(&fleet.region, &InstanceQuery::all())
        .await
        .map_err(|e| BenchError::Invalid(format!("describe: {e}")))?;
    Ok(all.into_iter().map(|i| (i.id, i.state)).collect())
}

async fn run_policy(
    opts: &IdleOptions,
    policy: PolicyKind,
    timelines: &[trace::Timeline],
) -> Result<PolicyReport, BenchError> {
    let wall = tokio::time::Instant::now();
    let start = opts.trace.start();
    let end = opts.trace.end();
    let fleet = start_fleet(opts, policy, start).await?;
    let outcome = replay(opts, policy, timelines, &fleet, start, end).await;
    if let Some(engine) = &fleet.engine {
        engine.shutdown().await;
    }
    if let Some(sim) = fleet.sim.clone() {
        drop(fleet);
        if let Ok(sim) = Arc::try_unwrap(sim) {
            sim.shutdown().await;
        }
    }
    let mut r = outcome?;
    r.run_seconds = wall.elapsed().as_secs_f64();
    Ok(r)
}

async fn replay(
    opts: &IdleOptions,
    policy: PolicyKind,
    timelines: &[trace::Timeline],
    fleet: &Fleet,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<PolicyReport, BenchError> {
    let tick = chrono::Duration::from_std(opts.tick).map_err(BenchError::setup("tick"))?;
    let boot = chrono::Duration::from_std(opts.boot).map_err(BenchError::setup("boot"))?;
    let timeout = chrono::Duration::from_std(opts.timeout).map_err(BenchError::setup("timeout"))?;
    if tick <= chrono::Duration::zero() {
        return Err(BenchError::Invalid("the tick must be positive".into()));
    }
    // Workers in instance order: instance N is bound to simulator worker N.
    let instances = fleet
        .cloud
        .describe_instances(&fleet.region, &InstanceQuery::all())
        .await
        .map_err(|e| BenchError::Invalid(format!("describe: {e}")))?;
    let base = u32::from(opts.listen_base);
    let mut engine_ids: HashMap<InstanceId, WorkerId> = HashMap::new();
    if let Some(engine) = &fleet.engine {
        let page = engine
            .store()
            .list(&WorkerFilter::default())
            .await
            .map_err(BenchError::setup("workers"))?;
        for w in page.items {
            if let Some(i) = &w.instance_id {
                engine_ids.insert(i.clone(), w.id);
            }
        }
    }
    let mut slots: Vec<Slot> = Vec::new();
    for i in &instances {
        let Some(IpAddr::V4(ip)) = i.public_ip else {
            continue;
        };
        let Some(index) = u32::from(ip).checked_sub(base).map(|x| x as usize) else {
            continue;
        };
        slots.push(Slot {
            instance: i.id.clone(),
            sim_index: index,
            engine_id: engine_ids.get(&i.id).copied(),
            billed: true,
            ready: true,
            start_asked: None,
            ready_at: None,
            ready_since: Some(start),
            waiting: None,
            last_ready: Some(start),
            lab_running: false,
            next_action: 0,
            cpu: VecDeque::new(),
        });
    }
    slots.sort_by_key(|s| s.sim_index);
    if slots.len() != timelines.len() {
        return Err(BenchError::Invalid(format!(
            "{} instances for {} timelines",
            slots.len(),
            timelines.len()
        )));
    }
    if fleet.engine.is_some() && slots.iter().any(|s| s.engine_id.is_none()) {
        return Err(BenchError::Invalid("a worker was not imported".into()));
    }
    let idle: Vec<_> = timelines
        .iter()
        .map(|tl| idle_stretches(tl, start, end))
        .collect();
    let stop_parts: Vec<_> = idle.iter().map(|s| stoppable(s, timeout)).collect();
    let mut tally = Tally::default();
    let user = Actor::user("trace-user");
    let sim_worker = |i: usize| fleet.sim.as_ref().and_then(|s| s.worker(i));
    let cpu_samples = (opts.cpu_window.as_secs() / opts.tick.as_secs().max(1)).max(1) as usize;

    let mut t = start;
    let mut first = true;
    // Quiet ticks (see `IdleOptions::skip_quiet`): the harness changed nothing this tick,
    // no instance changed state at the previous one, and no pause can be due yet.
    let mut dirty = true;
    let mut next_due: Option<DateTime<Utc>> = None;
    while t < end {
        fleet.clock.set(t);
        if let Some(w) = sim_worker(0) {
            w.set_wall_clock(t);
        }
        let now_states = states(fleet).await?;
        let ups: HashMap<InstanceId, bool> = std::mem::take(&mut fleet.boots.lock().up);

        // Boots: an instance that came up is ready `boot` after its start was asked for.
        for s in slots.iter_mut() {
            let state = now_states.get(&s.instance).copied();
            let up = state == Some(Ec2State::Running);
            if ups.get(&s.instance) == Some(&true) && !first {
                dirty = true;
                s.ready = false;
                s.ready_at = Some(s.start_asked.take().unwrap_or(t) + boot);
            }
            if !up {
                s.ready = false;
                s.ready_at = None;
                s.ready_since = None;
            }
            if up
                && !s.ready
                && let Some(at) = s.ready_at
                && at <= t
            {
                s.ready = true;
                dirty = true;
                s.ready_since = s.ready_at.take();
                if let Some(w) = sim_worker(s.sim_index) {
                    w.set_ready(true);
                }
            }
            if !up && s.lab_running {
                // CML does not restart labs after its host stops.
                dirty = true;
                if let Some(w) = sim_worker(s.sim_index) {
                    let _ = w.stop_user_lab();
                }
                s.lab_running = false;
            }
        }

        // The users, as the trace says.
        let prev = t - tick;
        for (k, s) in slots.iter_mut().enumerate() {
            let tl = &timelines[k];
            let state = tl.state_at(t);
            let arrived = tl.actions[s.next_action.min(tl.actions.len())..]
                .first()
                .is_some_and(|a| *a <= t);
            let present = state.present() || arrived;
            let inst = now_states.get(&s.instance).copied();
            if present && !s.ready {
                if s.waiting.is_none() {
                    let since = tl
                        .segment_start(t)
                        .unwrap_or(t)
                        .max(s.last_ready.unwrap_or(start))
                        .max(prev);
                    s.waiting = Some(since.min(t));
                }
                if inst == Some(Ec2State::Stopped) {
                    dirty = true;
                    tally.user_resumes += 1;
                    s.start_asked = Some(t);
                    match (&fleet.engine, s.engine_id) {
                        (Some(engine), Some(id)) => {
                            if let Err(e) = engine.resume_worker(id, &user).await {
                                tracing::debug!(error = %e, "resume refused");
                            }
                        }
                        _ => {
                            let _ = fleet
                                .cloud
                                .start_instances(&fleet.region, std::slice::from_ref(&s.instance))
                                .await;
                        }
                    }
                }
            }
            if s.ready {
                s.last_ready = Some(t);
                let waited = s.waiting.take();
                if let Some(since) = waited {
                    let w = secs(t - since).max(0.0);
                    tally.wait_s += w;
                    tally.wait_max_s = tally.wait_max_s.max(w);
                }
                let w = sim_worker(s.sim_index);
                // Telemetry carries the trace's own times (not the tick's): the simulator's
                // wall clock is set to each action's time while it is played.
                let ready_since = s.ready_since.unwrap_or(t);
                let at = |x: DateTime<Utc>| x.max(ready_since).max(prev).min(t);
                // A user who waited for the worker logs in as soon as it is ready (their
                // actions while it booted were lost).
                if waited.is_some()
                    && state.present()
                    && let Some(w) = &w
                {
                    dirty = true;
                    w.set_wall_clock(at(ready_since));
                    w.simulate_user_login();
                }
                while s.next_action < tl.actions.len() && tl.actions[s.next_action] <= t {
                    let a = tl.actions[s.next_action];
                    s.next_action += 1;
                    dirty = true;
                    if let Some(w) = &w {
                        w.set_wall_clock(at(a));
                        w.simulate_user_login();
                    }
                }
                let changed = at(tl.segment_start(t).unwrap_or(t));
                if state.nodes() && !s.lab_running {
                    dirty = true;
                    if let Some(w) = &w {
                        w.set_wall_clock(changed);
                        let _ = w.start_user_lab();
                    }
                    s.lab_running = true;
                } else if !state.nodes() && s.lab_running {
                    dirty = true;
                    if let Some(w) = &w {
                        w.set_wall_clock(changed);
                        let _ = w.stop_user_lab();
                    }
                    s.lab_running = false;
                }
                if let Some(w) = &w {
                    // The engine reads this tick at its time. The lab's node transitions (due
                    // at once: zero node timings) carry the time the lab started, whichever
                    // request applies them: the bench's next action, or an engine task still
                    // probing a resumed worker, at whatever the clock then reads.
                    w.set_wall_clock(t);
                }
            } else {
                // Actions while the worker is not ready are lost (the user waits).
                while s.next_action < tl.actions.len() && tl.actions[s.next_action] <= t {
                    s.next_action += 1;
                }
            }
            // CPU follows the load, for the CPU rule (CloudWatch's view of the instance).
            if inst == Some(Ec2State::Running) && policy == PolicyKind::Cpu {
                // CloudWatch's 5-minute average: the load sampled each minute of the period.
                let minutes = (opts.tick.as_secs() / 60).max(1) as i64;
                let v = (0..minutes)
                    .map(|m| {
                        let at = t - chrono::Duration::minutes(minutes - m);
                        let load = if s.ready || s.ready_since.is_some_and(|r| r <= at) {
                            tl.state_at(at)
                        } else {
                            trace::State { kind: None }
                        };
                        cpu_of(load, noise(k, at))
                    })
                    .sum::<f64>()
                    / minutes as f64;
                fleet
                    .cloud
                    .put_metric_at(&s.instance, MetricKind::Cpu, v, t);
            }
        }

        // The policy.
        match policy {
            PolicyKind::Ccm | PolicyKind::CcmNodesIgnored | PolicyKind::Original => {
                let due = dirty || !opts.skip_quiet || next_due.is_some_and(|d| d <= t);
                if due {
                    tally.engine_ticks += 1;
                }
                if let Some(engine) = fleet.engine.as_ref().filter(|_| due) {
                    let jobs: &[JobKind] = if policy == PolicyKind::Original {
                        &[JobKind::Ec2Sync, JobKind::Activity]
                    } else {
                        &[JobKind::Ec2Sync, JobKind::CmlSync, JobKind::Activity]
                    };
                    for job in jobs {
                        engine
                            .trigger_job(*job)
                            .await
                            .map_err(|e| BenchError::Invalid(format!("{job:?}: {e}")))?;
                    }
                    if opts.skip_quiet {
                        next_due = earliest_pause(engine, t, tick).await?;
                    }
                }
            }
            PolicyKind::Cpu => {
                let running: Vec<InstanceId> = slots
                    .iter()
                    .filter(|s| now_states.get(&s.instance) == Some(&Ec2State::Running))
                    .map(|s| s.instance.clone())
                    .collect();
                let window = MetricsWindow::ending_at(
                    t + chrono::Duration::seconds(1),
                    opts.tick,
                    opts.tick,
                );
                let metrics = fleet
                    .cloud
                    .instance_metrics(&fleet.region, &running, &window)
                    .await
                    .map_err(|e| BenchError::Invalid(format!("metrics: {e}")))?;
                let mut stop = Vec::new();
                for s in slots.iter_mut() {
                    let Some(m) = metrics.get(&s.instance) else {
                        s.cpu.clear();
                        continue;
                    };
                    if let Some(sample) = &m.cpu_percent {
                        s.cpu.push_back((t, sample.value));
                    }
                    while s.cpu.len() > cpu_samples {
                        s.cpu.pop_front();
                    }
                    if s.cpu.len() == cpu_samples {
                        let avg = s.cpu.iter().map(|(_, v)| v).sum::<f64>() / cpu_samples as f64;
                        if avg < opts.cpu_threshold {
                            stop.push(s.instance.clone());
                            s.cpu.clear();
                        }
                    }
                }
                if !stop.is_empty() {
                    fleet
                        .cloud
                        .stop_instances(&fleet.region, &stop)
                        .await
                        .map_err(|e| BenchError::Invalid(format!("stop: {e}")))?;
                }
            }
            PolicyKind::Schedule => {
                let (weekday, minute) = opts.trace.local(t);
                let (on, off) = (opts.schedule_hours.0 * 60, opts.schedule_hours.1 * 60);
                let step = (opts.tick.as_secs() / 60) as u16;
                let weekday_hours = weekday < 5 && minute >= on && minute < off;
                let at = |m: u16| weekday < 5 && minute >= m && minute < m + step.max(1);
                let mut ids = Vec::new();
                if first && !weekday_hours || at(off) {
                    for s in &slots {
                        if now_states.get(&s.instance) == Some(&Ec2State::Running) {
                            ids.push(s.instance.clone());
                        }
                    }
                    if !ids.is_empty() {
                        let _ = fleet.cloud.stop_instances(&fleet.region, &ids).await;
                    }
                } else if at(on) {
                    for s in slots.iter_mut() {
                        if now_states.get(&s.instance) == Some(&Ec2State::Stopped) {
                            ids.push(s.instance.clone());
                            s.start_asked = Some(t);
                        }
                    }
                    if !ids.is_empty() {
                        let _ = fleet.cloud.start_instances(&fleet.region, &ids).await;
                    }
                }
            }
        }

        // Account for [t, t + tick) with the states the step left.
        let after = states(fleet).await?;
        let next = (t + tick).min(end);
        let dt = secs(next - t);
        dirty = false;
        for (k, s) in slots.iter_mut().enumerate() {
            let state = after.get(&s.instance).copied();
            let billed = matches!(state, Some(Ec2State::Running | Ec2State::Pending));
            let idle_s = overlap(&idle[k], t, next);
            tally.idle_s += idle_s;
            if billed {
                tally.billed_s += dt;
            } else {
                tally.stopped_s += dt;
                tally.idle_stopped_s += idle_s;
                tally.stoppable_stopped_s += overlap(&stop_parts[k], t, next);
            }
            if s.billed != billed {
                // The engine's EC2 sync sees the new state at the next tick.
                dirty = true;
            }
            if s.billed && !billed {
                tally.pauses += 1;
                let paused_on = paused_on(fleet, s.engine_id).await;
                let wrongful_before = tally.wrongful_in_use + tally.wrongful_return;
                let tl = &timelines[k];
                let (wk, wm) = opts.trace.local(t);
                let when = format!(
                    "worker {} at day {} {:02}:{:02}",
                    k + 1,
                    wk,
                    wm / 60,
                    wm % 60
                );
                if tl.state_at(t).in_use() {
                    tally.wrongful_in_use += 1;
                    if tally.examples.len() < EXAMPLES {
                        let kind = tl
                            .state_at(t)
                            .kind
                            .map(|k| k.to_string())
                            .unwrap_or_default();
                        let rule = rule_of(fleet, s.engine_id, t).await;
                        tally
                            .examples
                            .push(format!("{when}: in use ({kind}){rule}"));
                    }
                } else if let Some(u) = tl.next_use(t).filter(|u| *u - t < timeout) {
                    tally.wrongful_return += 1;
                    if tally.examples.len() < EXAMPLES {
                        let idle_since = tl.segment_start(t).map_or(0, |s| (t - s).num_minutes());
                        let rule = rule_of(fleet, s.engine_id, t).await;
                        tally.examples.push(format!(
                            "{when}: idle {idle_since} min, used again {} min later{rule}",
                            (u - t).num_minutes()
                        ));
                    }
                }
                if let Some(rule) = paused_on {
                    let e = tally.by_rule.entry(rule).or_default();
                    e[0] += 1;
                    e[1] += tally.wrongful_in_use + tally.wrongful_return - wrongful_before;
                }
            }
            s.billed = billed;
        }
        first = false;
        t = next;
    }
    // Users still waiting at the end waited until then.
    for s in &slots {
        if let Some(since) = s.waiting {
            let w = secs(end - since).max(0.0);
            tally.wait_s += w;
            tally.wait_max_s = tally.wait_max_s.max(w);
        }
    }
    let stoppable_s: f64 = stop_parts
        .iter()
        .flat_map(|v| v.iter().map(|(a, b)| secs(*b - *a)))
        .sum();
    let h = |s: f64| s / 3600.0;
    Ok(PolicyReport {
        policy: policy.name().to_owned(),
        instance_hours: h(tally.billed_s),
        idle_hours: h(tally.idle_s),
        idle_hours_stopped: h(tally.idle_stopped_s),
        stoppable_hours: h(stoppable_s),
        stoppable_hours_stopped: h(tally.stoppable_stopped_s),
        percent_stopped: if stoppable_s > 0.0 {
            100.0 * tally.stoppable_stopped_s / stoppable_s
        } else {
            100.0
        },
        pauses: tally.pauses,
        wrongful_pauses: tally.wrongful_in_use + tally.wrongful_return,
        wrongful_in_use: tally.wrongful_in_use,
        wrongful_return: tally.wrongful_return,
        user_resumes: tally.user_resumes,
        wait_hours: h(tally.wait_s),
        wait_max_minutes: tally.wait_max_s / 60.0,
        money_saved: h(tally.idle_stopped_s) * opts.price,
        bill_reduction: h(tally.stopped_s) * opts.price,
        run_seconds: 0.0,
        engine_ticks: tally.engine_ticks,
        wrongful_examples: tally.examples,
        pauses_by_rule: tally.by_rule,
    })
}
