//! The embedded default: a simulated CML fleet (one loopback address per worker) and a
//! simulated EC2 whose instances are bound to those addresses, wired to a real engine. Used by
//! `ccm demo`, `ccm bench sse` and the engine's and API's tests.
//!
//! Starting a simulated instance powers its CML worker on (booting, then ready); stopping it
//! powers it off — so the engine sees what it would see on AWS.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ccm_cloud::{CloudProvider, Instance};
use ccm_cml::{CmlClient, CmlConfig};
use ccm_cml_sim::{CmlSimConfig, SimFleet};
use ccm_domain::worker::{AddressPreference, EndpointPolicy};
use ccm_domain::{Actor, Region, RuntimeSettings};
use ccm_engine::{
    Clock, Engine, EngineConfig, EngineParts, ImportConfig, ImportRequest, ImportSelector,
    ManualClock, TokioClock, resilience_with_bus,
};
use ccm_resilience::{Observer, ResilienceConfig};
use ccm_store::Store;

use crate::TestbedError;
use crate::ec2::{Ec2SimConfig, PowerHook, SimulatedCloud};

/// How to build an embedded fleet.
pub struct EmbeddedOptions {
    /// Simulated workers (and running EC2 instances to import).
    pub workers: usize,
    /// Extra simulated CML controllers, powered off, for instances created later (`create`
    /// binds the next free address, and its CML powers on with the instance).
    pub spare: usize,
    /// The simulated CML fleet (its `workers` is overridden by `workers`).
    pub sim: CmlSimConfig,
    /// The simulated cloud (its pool and seed count are set from `workers` and `sim`).
    pub cloud: Ec2SimConfig,
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Runtime settings to start with.
    pub settings: RuntimeSettings,
    /// Resilience policies.
    pub resilience: ResilienceConfig,
    /// Receives resilience events (the engine maps them to domain events when given
    /// `None`).
    pub observer: Option<Arc<dyn Observer>>,
    /// Engine configuration.
    pub engine: EngineConfig,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// How long a simulated CML takes to become ready after its instance starts.
    pub boot: Duration,
    /// Import every seeded instance at start.
    pub import: bool,
}

impl EmbeddedOptions {
    /// Defaults for `workers` workers starting at `listen_base`, with `store`.
    pub fn new(workers: usize, listen_base: Ipv4Addr, store: Arc<dyn Store>) -> Self {
        let sim = CmlSimConfig {
            workers,
            listen_base,
            port: 9443,
            ..CmlSimConfig::default()
        };
        let region = Region::parse("eu-west-1").ok().into_iter().collect();
        let cloud = Ec2SimConfig {
            regions: region,
            ..Ec2SimConfig::default()
        };
        let engine = EngineConfig::new(
            Default::default(),
            ImportConfig {
                regions: Vec::new(),
                ami_name_pattern: Some("cml-controller-*".into()),
                ami_owners: vec!["self".into()],
                tag: None,
            },
            Default::default(),
            Default::default(),
        );
        Self {
            workers,
            spare: 4,
            sim,
            cloud,
            store,
            settings: RuntimeSettings::default(),
            resilience: ResilienceConfig::default(),
            observer: None,
            engine,
            clock: Arc::new(TokioClock::new()),
            boot: Duration::from_secs(3),
            import: true,
        }
    }
}

impl EmbeddedOptions {
    /// Options for tests: every background job off (tests trigger jobs), a manual wall clock
    /// at a whole second (returned, to step idle timeouts), fast simulated boots and node starts, short
    /// timeouts, a breaker that opens after 3 failures.
    pub fn for_tests(
        workers: usize,
        listen_base: Ipv4Addr,
        store: Arc<dyn Store>,
    ) -> (Self, Arc<ManualClock>) {
        let mut opts = Self::new(workers, listen_base, store);
        // At a whole second, as the API renders views (to the second): a test that steps
        // whole seconds sees exact ages and remaining times.
        let now = chrono::Utc::now();
        let now = chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        let clock = Arc::new(ManualClock::new(now));
        opts.clock = clock.clone();
        opts.settings.polling = ccm_domain::settings::PollingSettings::all_off();
        opts.spare = 2;
        opts.boot = Duration::from_millis(200);
        opts.sim.node_timing = ccm_cml_sim::NodeTiming {
            queue: Duration::from_millis(50),
            stagger: Duration::from_millis(10),
            boot: Duration::from_millis(200),
        };
        opts.sim.licence_delay = Duration::from_millis(200);
        opts.engine.licence.poll_interval = Duration::from_millis(100);
        opts.engine.licence.timeout = Duration::from_secs(10);
        opts.cloud.pending_delay = Duration::from_millis(100);
        opts.cloud.stopping_delay = Duration::from_millis(100);
        opts.cloud.shutting_down_delay = Duration::from_millis(100);
        let r = &mut opts.resilience;
        r.timeout.per_attempt = Duration::from_millis(800);
        r.timeout.deadline = Duration::from_secs(3);
        r.retry.base = Duration::from_millis(20);
        r.retry.cap = Duration::from_millis(100);
        r.breaker.failure_threshold = 3;
        r.breaker.open_for = Duration::from_millis(700);
        (opts, clock)
    }
}

/// A running embedded fleet.
pub struct Embedded {
    /// The engine.
    pub engine: Engine,
    /// The simulated CML fleet.
    pub sim: Arc<SimFleet>,
    /// The simulated cloud.
    pub cloud: SimulatedCloud,
}

/// Switches the CML worker bound to an instance's address on and off.
struct SimPower {
    sim: Arc<SimFleet>,
    base: u32,
    boot: Duration,
}

impl SimPower {
    fn worker(&self, instance: &Instance) -> Option<ccm_cml_sim::SimWorker> {
        let IpAddr::V4(ip) = instance.public_ip? else {
            return None;
        };
        let index = u32::from(ip).checked_sub(self.base)?;
        self.sim.worker(index as usize)
    }
}

impl PowerHook for SimPower {
    fn on_running(&self, instance: &Instance) {
        if let Some(w) = self.worker(instance) {
            w.power_on(self.boot);
        }
    }

    fn on_stopped(&self, instance: &Instance) {
        if let Some(w) = self.worker(instance) {
            w.power_off();
        }
    }
}

impl Embedded {
    /// Starts the simulated fleet and cloud, then the engine, and imports the instances.
    pub async fn start(opts: EmbeddedOptions) -> Result<Self, TestbedError> {
        let mut sim_cfg = opts.sim;
        let total = opts.workers + opts.spare;
        sim_cfg.workers = total;
        let base = sim_cfg.listen_base;
        let port = sim_cfg.port;
        let sim = Arc::new(SimFleet::start(sim_cfg).await?);
        for spare in opts.workers..total {
            if let Some(w) = sim.worker(spare) {
                w.power_off();
            }
        }

        let mut cloud_cfg = opts.cloud;
        cloud_cfg.ip_pool = Ec2SimConfig::loopback_pool(base, total as u32);
        cloud_cfg.seed_instances = opts.workers;
        cloud_cfg.max_instances = cloud_cfg.max_instances.max(opts.workers * 2);
        let hook = Arc::new(SimPower {
            sim: sim.clone(),
            base: u32::from(base),
            boot: opts.boot,
        });
        let cloud = SimulatedCloud::with_power_hook(cloud_cfg, hook)?;

        let (events, resilience) = resilience_with_bus(&opts.resilience, opts.observer);
        let endpoint = EndpointPolicy {
            scheme: "http".into(),
            port: Some(port),
            address: AddressPreference::Public,
            ..EndpointPolicy::default()
        };
        let cml_cfg = CmlConfig {
            endpoint: endpoint.clone(),
            ..CmlConfig::default()
        };
        let cml = CmlClient::new(&cml_cfg, resilience.clone())?;
        let provider: Arc<dyn CloudProvider> = Arc::new(cloud.clone());
        let engine = Engine::start(EngineParts {
            store: opts.store,
            cloud: provider,
            cml,
            resilience,
            endpoint,
            config: opts.engine,
            initial_settings: opts.settings,
            clock: opts.clock,
        })
        .await?;
        engine.forward_resilience_events(events);
        if opts.import {
            let req = ImportRequest {
                region: None,
                selector: ImportSelector::Configured,
                all: true,
                restricted_to_filter: false,
            };
            engine
                .import_workers(req, &Actor::system("embedded"))
                .await?;
        }
        Ok(Self { engine, sim, cloud })
    }

    /// Stops the engine, then the simulated fleet.
    pub async fn shutdown(self) {
        self.engine.shutdown().await;
        match Arc::try_unwrap(self.sim) {
            Ok(sim) => sim.shutdown().await,
            Err(_) => {
                tracing::debug!("simulator still shared; it stops when the last handle drops")
            }
        }
    }
}
