//! [`SimulatedCloud`]: an in-memory EC2 and CloudWatch for `ccm demo`, the benchmarks and the
//! tests, behind `ccm-cloud`'s [`CloudProvider`] trait.
//!
//! Instances move through EC2's states on `tokio::time` (pending → running, stopping →
//! stopped, shutting-down → terminated, each after a configured delay), so tests run under
//! paused time. Ids and launch times have AWS's shapes; describes filter and paginate like
//! EC2. Each instance is bound for life to one address of a pool of loopback addresses, its
//! public IP, so that the CML simulator's worker N answers on instance N's IP; a
//! [`PowerHook`] tells the simulator when an instance comes up or goes down. Throttling,
//! unavailability and latency can be injected, and an instance's status checks impaired
//! ([`SimulatedCloud::set_status_checks`]); metrics come from a deterministic generator, or
//! from values put with [`SimulatedCloud::put_metric`]. Images have owners: the caller sees
//! its own account's and public ones, and owner filters (`self`, account ids, aliases) work
//! as in EC2.

mod config;
mod metrics;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use ccm_cloud::{
    CheckStatus, CloudError, CloudProvider, Image, ImageQuery, Instance, InstanceMetrics,
    InstancePage, InstanceQuery, InstanceStatus, MetricKind, MetricsWindow, PageRequest, RunSpec,
    StateChange, Tags, glob_match, owned_by,
};
use ccm_domain::{Ec2State, InstanceId, Region, StatusChecks};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

pub use config::{DEFAULT_ACCOUNT, Ec2SimConfig, SQUATTER_ACCOUNT};

/// How long after reaching `running` the simulated status checks stay `initializing`.
const STATUS_CHECK_WARMUP: Duration = Duration::from_secs(120);

/// Told when a simulated instance comes up or goes down, so that `ccm demo` can switch the
/// matching CML simulator worker on and off. Called outside the simulator's locks, from the
/// task that observes the change; implementations must not block.
pub trait PowerHook: Send + Sync {
    /// The instance reached `running` (its public IP is set).
    fn on_running(&self, instance: &Instance);
    /// The instance began stopping or shutting down (its OS, and CML, go away).
    fn on_stopped(&self, instance: &Instance);
}

/// The simulated provider. Cheap to clone; clones share one simulated cloud.
#[derive(Clone)]
pub struct SimulatedCloud {
    shared: Arc<Shared>,
}

struct Shared {
    config: Ec2SimConfig,
    clock: SimClock,
    hook: Option<Arc<dyn PowerHook>>,
    state: Mutex<State>,
}

/// Wall-clock time that moves with `tokio::time` (so paused-time tests see consistent dates).
struct SimClock {
    wall0: DateTime<Utc>,
    t0: Instant,
}

impl SimClock {
    fn wall(&self, at: Instant) -> DateTime<Utc> {
        let elapsed = at.saturating_duration_since(self.t0);
        self.wall0 + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero())
    }
}

struct State {
    /// Instances by launch order (the order describes return them in).
    instances: BTreeMap<u64, SimInstance>,
    /// Instance id → launch sequence number.
    index: HashMap<InstanceId, u64>,
    /// (region, client token) → the launch it made.
    tokens: HashMap<(Region, String), (u64, RunSpec)>,
    next_seq: u64,
    /// Which pool addresses are bound to a live instance.
    ip_used: Vec<bool>,
    rng: StdRng,
    faults: Faults,
    calls: BTreeMap<&'static str, u64>,
    metric_overrides: HashMap<InstanceId, metrics::Overrides>,
    /// Status checks forced on instances while they run ([`SimulatedCloud::set_status_checks`]).
    status_overrides: HashMap<InstanceId, StatusChecks>,
}

#[derive(Default)]
struct Faults {
    throttle_next: u32,
    unavailable_next: u32,
    /// Per operation: the next calls that fail with Unavailable.
    unavailable_ops: HashMap<&'static str, u32>,
    throttle_rate: f64,
    latency: Duration,
}

struct SimInstance {
    instance: Instance,
    /// The pool slot bound to this instance for life, and its address.
    slot: Option<(usize, Ipv4Addr)>,
    /// The scheduled end of the current transitional state.
    transition: Option<(Instant, Ec2State)>,
    /// When it last reached `running`.
    running_since: Option<Instant>,
    /// When it reached `terminated` (it disappears after the retention).
    terminated_at: Option<Instant>,
}

/// A change a [`PowerHook`] must hear about.
enum HookEvent {
    Running(Instance),
    Stopped(Instance),
}

impl SimulatedCloud {
    /// A simulated cloud as `config` says, without a power hook.
    pub fn new(config: Ec2SimConfig) -> Result<Self, CloudError> {
        Self::build(config, None)
    }

    /// A simulated cloud that tells `hook` when instances come up or go down. Seeded
    /// instances are reported as running right away.
    pub fn with_power_hook(
        config: Ec2SimConfig,
        hook: Arc<dyn PowerHook>,
    ) -> Result<Self, CloudError> {
        Self::build(config, Some(hook))
    }

    fn build(config: Ec2SimConfig, hook: Option<Arc<dyn PowerHook>>) -> Result<Self, CloudError> {
        config.validate()?;
        let now = Instant::now();
        let state = State {
            instances: BTreeMap::new(),
            index: HashMap::new(),
            tokens: HashMap::new(),
            next_seq: 0,
            ip_used: vec![false; config.ip_pool.len()],
            rng: StdRng::seed_from_u64(config.seed),
            faults: Faults::default(),
            calls: BTreeMap::new(),
            metric_overrides: HashMap::new(),
            status_overrides: HashMap::new(),
        };
        let shared = Arc::new(Shared {
            clock: SimClock {
                wall0: Utc::now(),
                t0: now,
            },
            config,
            hook,
            state: Mutex::new(state),
        });
        let cloud = Self { shared };
        let events = cloud.seed()?;
        cloud.fire(events);
        Ok(cloud)
    }

    /// Pre-creates the configured running instances in the first region.
    fn seed(&self) -> Result<Vec<HookEvent>, CloudError> {
        let config = &self.shared.config;
        let Some(region) = config.regions.first().cloned() else {
            return Ok(Vec::new());
        };
        let Some(image) = config.images.first() else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        // Launched a while ago, as an existing fleet would have been.
        let launched = self.shared.clock.wall(now) - chrono::Duration::hours(3);
        let mut events = Vec::new();
        let mut state = self.shared.state.lock();
        for n in 1..=config.seed_instances {
            let mut tags = config.seed_tags.clone();
            tags.insert(ccm_cloud::NAME_TAG.to_owned(), format!("cml-worker-{n:03}"));
            let spec = RunSpec {
                tags,
                ..RunSpec::new(
                    image.id.clone(),
                    config.seed_instance_type.clone(),
                    format!("cml-worker-{n:03}"),
                )
            };
            let seq = launch(
                &mut state,
                &self.shared.config,
                &region,
                &spec,
                launched,
                now,
            )?;
            if let Some(sim) = state.instances.get_mut(&seq) {
                sim.transition = None;
                set_state(sim, Ec2State::Running, now);
                events.push(HookEvent::Running(sim.instance.clone()));
            }
        }
        Ok(events)
    }

    // === fault injection and inspection ===

    /// The next `n` calls (of any operation) fail with [`CloudError::Throttled`].
    pub fn throttle_next(&self, n: u32) {
        self.shared.state.lock().faults.throttle_next = n;
    }

    /// Each call fails with [`CloudError::Throttled`] with probability `rate` (0 to 1), drawn
    /// from the seeded generator.
    pub fn set_throttle_rate(&self, rate: f64) {
        self.shared.state.lock().faults.throttle_rate = rate.clamp(0.0, 1.0);
    }

    /// The next `n` calls fail with [`CloudError::Unavailable`] (a 5xx from the service).
    pub fn fail_next_unavailable(&self, n: u32) {
        self.shared.state.lock().faults.unavailable_next = n;
    }

    /// The next `n` calls of `operation` (e.g. `DescribeInstanceStatus`) fail with
    /// [`CloudError::Unavailable`]; other operations are unaffected.
    pub fn fail_next_of(&self, operation: &'static str, n: u32) {
        self.shared
            .state
            .lock()
            .faults
            .unavailable_ops
            .insert(operation, n);
    }

    /// Every call takes `latency` (on `tokio::time`) before it does anything.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.state.lock().faults.latency = latency;
    }

    /// How many calls of `operation` (EC2/CloudWatch action name, e.g. `GetMetricData`) were
    /// made, including throttled ones.
    pub fn calls(&self, operation: &str) -> u64 {
        self.shared
            .state
            .lock()
            .calls
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Pins a metric of an instance to `value`, observed now (like PutMetricData). Once a
    /// metric is put for an instance, the generator no longer speaks for that instance: a
    /// metric never put reads as absent.
    pub fn put_metric(&self, id: &InstanceId, kind: MetricKind, value: f64) {
        let at = self.shared.clock.wall(Instant::now());
        self.shared
            .state
            .lock()
            .metric_overrides
            .entry(id.clone())
            .or_default()
            .put(kind, value, at);
    }

    /// Pins a metric of an instance to `value`, observed at `at` (a harness that steps its
    /// own wall clock, such as `ccm bench idle`, stamps its samples with that clock).
    pub fn put_metric_at(&self, id: &InstanceId, kind: MetricKind, value: f64, at: DateTime<Utc>) {
        self.shared
            .state
            .lock()
            .metric_overrides
            .entry(id.clone())
            .or_default()
            .put(kind, value, at);
    }

    /// Forces the status checks of an instance while it runs (`None`: back to the simulated
    /// ones — `initializing` for two minutes after reaching `running`, then `ok`). A stopped
    /// instance's checks stay `not-applicable` either way, as in EC2. This is how tests and
    /// `ccm demo` impair an instance.
    pub fn set_status_checks(&self, id: &InstanceId, checks: Option<StatusChecks>) {
        let mut state = self.shared.state.lock();
        match checks {
            Some(checks) => {
                state.status_overrides.insert(id.clone(), checks);
            }
            None => {
                state.status_overrides.remove(id);
            }
        }
    }

    /// The simulated wall clock (moves with `tokio::time`).
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.clock.wall(Instant::now())
    }

    /// The configuration in use.
    pub fn config(&self) -> &Ec2SimConfig {
        &self.shared.config
    }

    // === internals ===

    /// Counts the call, waits the injected latency, applies injected faults, refuses regions
    /// that are not configured and settles due transitions (firing their hooks).
    async fn enter(&self, operation: &'static str, region: &Region) -> Result<(), CloudError> {
        let latency = {
            let mut state = self.shared.state.lock();
            *state.calls.entry(operation).or_default() += 1;
            state.faults.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        {
            let mut state = self.shared.state.lock();
            let faults = &mut state.faults;
            if faults.throttle_next > 0 {
                faults.throttle_next -= 1;
                return Err(throttled());
            }
            let for_op = faults
                .unavailable_ops
                .get_mut(operation)
                .filter(|n| **n > 0);
            if let Some(n) = for_op {
                *n -= 1;
                return Err(CloudError::from_aws(
                    Some("Unavailable"),
                    Some(&format!("the simulated {operation} is unavailable")),
                    Some(503),
                ));
            }
            if faults.unavailable_next > 0 {
                faults.unavailable_next -= 1;
                return Err(CloudError::from_aws(
                    Some("Unavailable"),
                    Some("the simulated service is unavailable"),
                    Some(503),
                ));
            }
            let rate = faults.throttle_rate;
            if rate > 0.0 && state.rng.random_bool(rate) {
                return Err(throttled());
            }
        }
        if !self.shared.config.regions.contains(region) {
            return Err(CloudError::InvalidParameter {
                code: "UnknownRegion".to_owned(),
                message: format!("region {region} is not configured for the simulated cloud"),
            });
        }
        self.settle();
        Ok(())
    }

    /// Applies every transition that is due, fires hooks, drops terminated instances past
    /// their retention.
    fn settle(&self) {
        let events = {
            let mut state = self.shared.state.lock();
            settle_locked(&mut state, &self.shared.config, Instant::now())
        };
        self.fire(events);
    }

    fn fire(&self, events: Vec<HookEvent>) {
        let Some(hook) = &self.shared.hook else {
            return;
        };
        for event in events {
            match event {
                HookEvent::Running(instance) => hook.on_running(&instance),
                HookEvent::Stopped(instance) => hook.on_stopped(&instance),
            }
        }
    }

    /// Wakes up at `at` to settle, so hooks fire on time even if nobody calls.
    fn schedule_wakeup(&self, at: Instant) {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                tokio::time::sleep_until(at).await;
                if let Some(shared) = weak.upgrade() {
                    SimulatedCloud { shared }.settle();
                }
            });
        }
    }

    /// Looks up ids in a region; all must exist (else NotFound naming the missing ones).
    fn resolve(state: &State, region: &Region, ids: &[InstanceId]) -> Result<Vec<u64>, CloudError> {
        let mut seqs = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match state.index.get(id) {
                Some(seq)
                    if state
                        .instances
                        .get(seq)
                        .is_some_and(|s| &s.instance.region == region) =>
                {
                    seqs.push(*seq)
                }
                _ => missing.push(id.as_str()),
            }
        }
        if missing.is_empty() {
            Ok(seqs)
        } else {
            Err(CloudError::from_aws(
                Some("InvalidInstanceID.NotFound"),
                Some(&format!(
                    "The instance IDs '{}' do not exist",
                    missing.join(", ")
                )),
                Some(400),
            ))
        }
    }

    /// Applies `change` to every instance in `ids`, after checking that all exist and allow it.
    fn change_states(
        &self,
        region: &Region,
        ids: &[InstanceId],
        verb: &str,
        change: impl Fn(Ec2State) -> Result<Option<(Ec2State, Duration)>, ()>,
    ) -> Result<Vec<StateChange>, CloudError> {
        let now = Instant::now();
        let mut wakeups = Vec::new();
        let (changes, events) = {
            let mut state = self.shared.state.lock();
            let seqs = Self::resolve(&state, region, ids)?;
            for seq in &seqs {
                if let Some(sim) = state.instances.get(seq)
                    && change(sim.instance.state).is_err()
                {
                    return Err(CloudError::from_aws(
                        Some("IncorrectInstanceState"),
                        Some(&format!(
                            "The instance '{}' is not in a state from which it can be {verb}",
                            sim.instance.id
                        )),
                        Some(400),
                    ));
                }
            }
            let mut changes = Vec::with_capacity(seqs.len());
            let mut events = Vec::new();
            for seq in seqs {
                let Some(sim) = state.instances.get_mut(&seq) else {
                    continue;
                };
                let previous = sim.instance.state;
                if let Ok(Some((next, delay))) = change(previous) {
                    set_state(sim, next, now);
                    let target = final_state_of(next);
                    sim.transition = Some((now + delay, target));
                    wakeups.push(now + delay);
                    if matches!(next, Ec2State::Stopping | Ec2State::ShuttingDown)
                        && previous == Ec2State::Running
                    {
                        events.push(HookEvent::Stopped(sim.instance.clone()));
                    }
                    if next == Ec2State::Pending {
                        sim.instance.launch_time = Some(self.shared.clock.wall(now));
                        sim.instance.state_reason = None;
                    }
                    if next == Ec2State::Stopping {
                        sim.instance.state_reason =
                            Some("Client.UserInitiatedShutdown: User initiated shutdown".into());
                    }
                }
                changes.push(StateChange {
                    id: sim.instance.id.clone(),
                    previous,
                    current: sim.instance.state,
                });
            }
            (changes, events)
        };
        self.fire(events);
        for at in wakeups {
            self.schedule_wakeup(at);
        }
        Ok(changes)
    }
}

fn throttled() -> CloudError {
    CloudError::from_aws(
        Some("RequestLimitExceeded"),
        Some("Request limit exceeded (simulated)."),
        Some(503),
    )
}

/// Where a transitional state ends up.
fn final_state_of(state: Ec2State) -> Ec2State {
    match state {
        Ec2State::Pending => Ec2State::Running,
        Ec2State::Stopping => Ec2State::Stopped,
        Ec2State::ShuttingDown => Ec2State::Terminated,
        other => other,
    }
}

/// Sets the state and the addresses that go with it: the bound public IP is shown while the
/// instance is pending, running, stopping or shutting down; the private IP until terminated.
fn set_state(sim: &mut SimInstance, state: Ec2State, now: Instant) {
    sim.instance.state = state;
    sim.instance.public_ip = match state {
        Ec2State::Pending | Ec2State::Running | Ec2State::Stopping | Ec2State::ShuttingDown => {
            sim.slot.map(|(_, ip)| IpAddr::V4(ip))
        }
        _ => None,
    };
    if state == Ec2State::Running {
        sim.running_since = Some(now);
    } else {
        sim.running_since = None;
    }
    if state == Ec2State::Terminated {
        sim.instance.private_ip = None;
        sim.terminated_at = Some(now);
    }
}

fn settle_locked(state: &mut State, config: &Ec2SimConfig, now: Instant) -> Vec<HookEvent> {
    let mut events = Vec::new();
    let mut freed = Vec::new();
    let mut gone = Vec::new();
    for (seq, sim) in state.instances.iter_mut() {
        if let Some((at, to)) = sim.transition
            && at <= now
        {
            sim.transition = None;
            set_state(sim, to, at);
            match to {
                Ec2State::Running => events.push(HookEvent::Running(sim.instance.clone())),
                Ec2State::Terminated => {
                    sim.instance.state_reason =
                        Some("Client.UserInitiatedShutdown: User initiated shutdown".to_owned());
                    if let Some((slot, _)) = sim.slot.take() {
                        freed.push(slot);
                    }
                }
                _ => {}
            }
        }
        if let Some(at) = sim.terminated_at
            && now.saturating_duration_since(at) >= config.terminated_retention
        {
            gone.push((*seq, sim.instance.id.clone()));
        }
    }
    for slot in freed {
        if let Some(used) = state.ip_used.get_mut(slot) {
            *used = false;
        }
    }
    for (seq, id) in gone {
        state.instances.remove(&seq);
        state.index.remove(&id);
        state.metric_overrides.remove(&id);
        state.status_overrides.remove(&id);
    }
    events
}

/// A fresh `i-` + 17 hex id, unique in this cloud.
fn new_instance_id(state: &mut State) -> Result<InstanceId, CloudError> {
    for _ in 0..16 {
        let raw: u128 = state.rng.random::<u128>() & ((1u128 << 68) - 1);
        let text = format!("i-{raw:017x}");
        let id = InstanceId::parse(&text).map_err(|e| CloudError::Other {
            code: "SimulatorBug".to_owned(),
            message: e.to_string(),
        })?;
        if !state.index.contains_key(&id) {
            return Ok(id);
        }
    }
    Err(CloudError::Other {
        code: "SimulatorBug".to_owned(),
        message: "could not draw a unique instance id".to_owned(),
    })
}

/// Creates a `pending` instance (no transition scheduled); returns its sequence number.
fn launch(
    state: &mut State,
    config: &Ec2SimConfig,
    region: &Region,
    spec: &RunSpec,
    launch_time: DateTime<Utc>,
    now: Instant,
) -> Result<u64, CloudError> {
    // Counting live instances is O(n): only needed once there are that many in total.
    let over_limit = state.instances.len() >= config.max_instances
        && state
            .instances
            .values()
            .filter(|s| !s.instance.state.is_final())
            .count()
            >= config.max_instances;
    if over_limit {
        return Err(CloudError::from_aws(
            Some("InstanceLimitExceeded"),
            Some(&format!(
                "You have requested more instances than your current instance limit of {} allows",
                config.max_instances
            )),
            Some(400),
        ));
    }
    let slot = if config.ip_pool.is_empty() {
        None
    } else {
        let free = state.ip_used.iter().position(|used| !used).ok_or_else(|| {
            CloudError::from_aws(
                Some("InsufficientInstanceCapacity"),
                Some("There is no free address left in the simulated pool."),
                Some(500),
            )
        })?;
        state.ip_used[free] = true;
        config.ip_pool.get(free).map(|ip| (free, *ip))
    };
    let id = new_instance_id(state)?;
    let seq = state.next_seq;
    state.next_seq += 1;
    let private = Ipv4Addr::new(10, 0, ((seq >> 8) & 0xff) as u8, (seq & 0xff) as u8);
    let mut sim = SimInstance {
        instance: Instance {
            id: id.clone(),
            region: region.clone(),
            state: Ec2State::Pending,
            instance_type: spec.instance_type.clone(),
            image_id: spec.image_id.clone(),
            launch_time: Some(launch_time),
            public_ip: None,
            private_ip: Some(IpAddr::V4(private)),
            tags: spec.all_tags(),
            detailed_monitoring: spec.detailed_monitoring,
            state_reason: None,
        },
        slot,
        transition: None,
        running_since: None,
        terminated_at: None,
    };
    set_state(&mut sim, Ec2State::Pending, now);
    state.instances.insert(seq, sim);
    state.index.insert(id, seq);
    Ok(seq)
}

impl SimulatedCloud {
    /// Whether the caller may see (and launch) `image`: its own account's, or public.
    fn visible(&self, image: &Image) -> bool {
        image.public == Some(true)
            || image.owner_id.as_deref() == Some(self.shared.config.account_id.as_str())
    }

    /// The checks of one instance now.
    fn checks_of(state: &State, sim: &SimInstance, now: Instant) -> StatusChecks {
        let simulated = match sim.running_since {
            Some(since) if now.saturating_duration_since(since) >= STATUS_CHECK_WARMUP => {
                CheckStatus::Ok
            }
            Some(_) => CheckStatus::Initializing,
            None => CheckStatus::NotApplicable,
        };
        match state.status_overrides.get(&sim.instance.id) {
            Some(forced) if sim.running_since.is_some() => *forced,
            _ => StatusChecks {
                system: simulated,
                instance: simulated,
            },
        }
    }
}

fn status_of(state: &State, sim: &SimInstance, now: Instant) -> InstanceStatus {
    let checks = SimulatedCloud::checks_of(state, sim, now);
    InstanceStatus {
        id: sim.instance.id.clone(),
        state: sim.instance.state,
        system_status: checks.system,
        instance_status: checks.instance,
    }
}

fn unknown_image(id: &str) -> CloudError {
    CloudError::from_aws(
        Some("InvalidAMIID.NotFound"),
        Some(&format!("The image id '[{id}]' does not exist")),
        Some(400),
    )
}

#[async_trait]
impl CloudProvider for SimulatedCloud {
    fn name(&self) -> &str {
        "simulated"
    }

    fn regions(&self) -> Vec<Region> {
        self.shared.config.regions.clone()
    }

    async fn find_images(
        &self,
        region: &Region,
        query: &ImageQuery,
    ) -> Result<Vec<Image>, CloudError> {
        self.enter("DescribeImages", region).await?;
        let account = Some(self.shared.config.account_id.as_str());
        let images = self
            .shared
            .config
            .images
            .iter()
            .filter(|image| self.visible(image));
        let mut found: Vec<Image> = match query {
            ImageQuery::Ids(ids) => {
                let images: Vec<&Image> = images.collect();
                let mut out = Vec::new();
                for id in ids {
                    match images.iter().find(|image| &image.id == id) {
                        Some(image) => out.push((*image).clone()),
                        None => return Err(unknown_image(id.as_str())),
                    }
                }
                out
            }
            ImageQuery::OwnedIds { ids, owners } => images
                .filter(|image| ids.contains(&image.id))
                .filter(|image| owned_by(image, owners, account))
                .cloned()
                .collect(),
            ImageQuery::Name { pattern, owners } => images
                .filter(|image| glob_match(pattern, &image.name))
                .filter(|image| owned_by(image, owners, account))
                .cloned()
                .collect(),
        };
        found.sort_by_key(|image| std::cmp::Reverse(image.creation_date));
        found.dedup_by(|a, b| a.id == b.id);
        Ok(found)
    }

    async fn run_instance(&self, region: &Region, spec: &RunSpec) -> Result<Instance, CloudError> {
        self.enter("RunInstances", region).await?;
        spec.validate()?;
        let config = &self.shared.config;
        if !config
            .images
            .iter()
            .any(|image| image.id == spec.image_id && self.visible(image))
        {
            return Err(unknown_image(spec.image_id.as_str()));
        }
        if let Some(subnet) = &spec.subnet_id
            && !subnet.starts_with("subnet-")
        {
            return Err(CloudError::from_aws(
                Some("InvalidSubnetID.Malformed"),
                Some(&format!("Invalid id: \"{subnet}\"")),
                Some(400),
            ));
        }
        if let Some(group) = spec
            .security_group_ids
            .iter()
            .find(|g| !g.starts_with("sg-"))
        {
            return Err(CloudError::from_aws(
                Some("InvalidGroupId.Malformed"),
                Some(&format!("Invalid id: \"{group}\"")),
                Some(400),
            ));
        }
        let now = Instant::now();
        let (instance, wake) = {
            let mut state = self.shared.state.lock();
            let key = (region.clone(), spec.client_token.clone());
            if let Some((seq, first)) = state.tokens.get(&key) {
                if first != spec {
                    return Err(CloudError::from_aws(
                        Some("IdempotentParameterMismatch"),
                        Some("The client token was used before with different parameters."),
                        Some(400),
                    ));
                }
                let existing = state.instances.get(seq).map(|s| s.instance.clone());
                match existing {
                    Some(instance) => return Ok(instance),
                    None => {
                        return Err(CloudError::from_aws(
                            Some("InvalidInstanceID.NotFound"),
                            Some("The instance launched with this client token is gone"),
                            Some(400),
                        ));
                    }
                }
            }
            let wall = self.shared.clock.wall(now);
            let seq = launch(&mut state, config, region, spec, wall, now)?;
            state.tokens.insert(key, (seq, spec.clone()));
            let at = now + config.pending_delay;
            let sim = state.instances.get_mut(&seq);
            let instance = sim.map(|sim| {
                sim.transition = Some((at, Ec2State::Running));
                sim.instance.clone()
            });
            (instance, at)
        };
        self.schedule_wakeup(wake);
        let instance = instance.ok_or_else(|| CloudError::unavailable("simulated launch lost"))?;
        tracing::debug!(id = %instance.id, %region, "simulated instance launched");
        Ok(instance)
    }

    async fn describe_instances_page(
        &self,
        region: &Region,
        query: &InstanceQuery,
        page: &PageRequest,
    ) -> Result<InstancePage, CloudError> {
        self.enter("DescribeInstances", region).await?;
        let start_after: Option<u64> = match &page.token {
            None => None,
            Some(token) => Some(
                token
                    .strip_prefix("sim-")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| CloudError::InvalidParameter {
                        code: "InvalidParameterValue".to_owned(),
                        message: format!("invalid next token {token:?}"),
                    })?,
            ),
        };
        if query.ids.len() > ccm_cloud::MAX_IDS_PER_DESCRIBE {
            return Err(CloudError::InvalidParameter {
                code: "FilterLimitExceeded".to_owned(),
                message: format!(
                    "at most {} ids per describe call",
                    ccm_cloud::MAX_IDS_PER_DESCRIBE
                ),
            });
        }
        let size = page
            .clamped_size()
            .unwrap_or(self.shared.config.default_page_size) as usize;
        let wanted: HashSet<&InstanceId> = query.ids.iter().collect();
        let state = self.shared.state.lock();
        let mut matching = state
            .instances
            .range(start_after.map_or(0, |s| s + 1)..)
            .filter(|(_, sim)| &sim.instance.region == region)
            .filter(|(_, sim)| wanted.is_empty() || wanted.contains(&sim.instance.id))
            .filter(|(_, sim)| query.filters.iter().all(|f| f.matches(&sim.instance)));
        let mut instances = Vec::new();
        let mut last = None;
        for (seq, sim) in matching.by_ref().take(size) {
            instances.push(sim.instance.clone());
            last = Some(*seq);
        }
        let more = matching.next().is_some();
        Ok(InstancePage {
            instances,
            skipped: Vec::new(),
            next_token: match (more, last) {
                (true, Some(seq)) => Some(format!("sim-{seq}")),
                _ => None,
            },
        })
    }

    async fn describe_instance_status(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<InstanceStatus>, CloudError> {
        if !ids.is_empty() {
            // As EC2: at most 100 ids per call, every id must exist.
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(ccm_cloud::MAX_IDS_PER_ACTION) {
                self.enter("DescribeInstanceStatus", region).await?;
                let now = Instant::now();
                let state = self.shared.state.lock();
                let seqs = Self::resolve(&state, region, chunk)?;
                out.extend(
                    seqs.iter()
                        .filter_map(|seq| state.instances.get(seq))
                        .map(|sim| status_of(&state, sim, now)),
                );
            }
            return Ok(out);
        }
        // A whole region: one call per page, as the AWS provider pages.
        let size = self
            .shared
            .config
            .default_page_size
            .min(ccm_cloud::MAX_PAGE_SIZE) as usize;
        let mut out = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            self.enter("DescribeInstanceStatus", region).await?;
            let now = Instant::now();
            let state = self.shared.state.lock();
            let mut matching = state
                .instances
                .range(after.map_or(0, |s| s + 1)..)
                .filter(|(_, s)| &s.instance.region == region)
                .filter(|(_, s)| s.instance.state != Ec2State::Terminated);
            for (seq, sim) in matching.by_ref().take(size) {
                out.push(status_of(&state, sim, now));
                after = Some(*seq);
            }
            if matching.next().is_none() {
                return Ok(out);
            }
        }
    }

    async fn start_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        self.enter("StartInstances", region).await?;
        let delay = self.shared.config.pending_delay;
        self.change_states(region, ids, "started", |state| match state {
            Ec2State::Stopped => Ok(Some((Ec2State::Pending, delay))),
            Ec2State::Pending | Ec2State::Running => Ok(None),
            _ => Err(()),
        })
    }

    async fn stop_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        self.enter("StopInstances", region).await?;
        let delay = self.shared.config.stopping_delay;
        self.change_states(region, ids, "stopped", |state| match state {
            Ec2State::Running => Ok(Some((Ec2State::Stopping, delay))),
            Ec2State::Stopping | Ec2State::Stopped => Ok(None),
            _ => Err(()),
        })
    }

    async fn terminate_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        self.enter("TerminateInstances", region).await?;
        let delay = self.shared.config.shutting_down_delay;
        self.change_states(region, ids, "terminated", |state| match state {
            Ec2State::ShuttingDown | Ec2State::Terminated => Ok(None),
            _ => Ok(Some((Ec2State::ShuttingDown, delay))),
        })
    }

    async fn create_tags(
        &self,
        region: &Region,
        ids: &[InstanceId],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        self.enter("CreateTags", region).await?;
        let mut state = self.shared.state.lock();
        let seqs = Self::resolve(&state, region, ids)?;
        for seq in seqs {
            if let Some(sim) = state.instances.get_mut(&seq) {
                sim.instance
                    .tags
                    .extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        Ok(())
    }

    async fn delete_tags(
        &self,
        region: &Region,
        ids: &[InstanceId],
        keys: &[String],
    ) -> Result<(), CloudError> {
        self.enter("DeleteTags", region).await?;
        let mut state = self.shared.state.lock();
        let seqs = Self::resolve(&state, region, ids)?;
        for seq in seqs {
            if let Some(sim) = state.instances.get_mut(&seq) {
                for key in keys {
                    sim.instance.tags.remove(key);
                }
            }
        }
        Ok(())
    }

    async fn enable_detailed_monitoring(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<(), CloudError> {
        self.enter("MonitorInstances", region).await?;
        let mut state = self.shared.state.lock();
        let seqs = Self::resolve(&state, region, ids)?;
        for seq in seqs {
            if let Some(sim) = state.instances.get_mut(&seq) {
                sim.instance.detailed_monitoring = true;
            }
        }
        Ok(())
    }

    async fn instance_metrics(
        &self,
        region: &Region,
        ids: &[InstanceId],
        window: &MetricsWindow,
    ) -> Result<HashMap<InstanceId, InstanceMetrics>, CloudError> {
        window.validate()?;
        let mut out = HashMap::with_capacity(ids.len());
        // One GetMetricData call answers up to 250 instances (500 queries of 2 metrics).
        for chunk in ids.chunks(ccm_cloud::MAX_INSTANCES_PER_METRICS_CALL) {
            self.enter("GetMetricData", region).await?;
            let state = self.shared.state.lock();
            for id in chunk {
                let sim = state
                    .index
                    .get(id)
                    .and_then(|seq| state.instances.get(seq))
                    .filter(|sim| &sim.instance.region == region);
                let metrics = match (state.metric_overrides.get(id), sim) {
                    (Some(overrides), _) => overrides.read(window),
                    (None, Some(sim)) => metrics::generate(&sim.instance, window),
                    (None, None) => InstanceMetrics::default(),
                };
                out.insert(id.clone(), metrics);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
