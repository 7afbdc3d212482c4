//! [`SimFleet`]: start N simulated controllers in this process, drive them, stop them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::SimError;
use crate::config::CmlSimConfig;
use crate::control::{self, Action, ActionRequest, Backend, FaultsRequest, WorkerReport};
use crate::faults::{FaultSpec, WorkerFaults, WorkerSelector};
use crate::server;
use crate::tls::{CaMaterial, TlsMaterial};
use crate::worker::{CounterSnapshot, Shared, SimWorker, Worker};

/// A running fleet of simulated CML controllers, each on its own loopback address.
///
/// Meant for up to a few thousand workers in one process (demo, tests); `ccm sim` shards
/// bigger fleets over child processes because of the open-file limit. Dropping the last
/// handle stops the fleet; [`SimFleet::shutdown`] stops it and waits until every socket is
/// closed.
#[derive(Clone)]
pub struct SimFleet {
    inner: Arc<FleetInner>,
}

struct FleetInner {
    shared: Arc<Shared>,
    workers: Vec<Arc<Worker>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    ca_path: Option<PathBuf>,
    /// The CA file is the fleet's own (written to the default temp-dir path): removed with it.
    ca_file_owned: bool,
}

/// A CA file path of its own in the temp dir (process id and a counter: fleets of one process
/// never share a file, so removing one's leaves the others').
pub(crate) fn default_ca_path() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("ccm-sim-ca-{}-{n}.pem", std::process::id()))
}

impl Drop for FleetInner {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if self.ca_file_owned
            && let Some(path) = &self.ca_path
        {
            // Best effort: a file already gone is fine.
            let _ = std::fs::remove_file(path);
        }
    }
}

impl std::fmt::Debug for SimFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFleet")
            .field("workers", &self.inner.workers.len())
            .field("first", &self.inner.workers.first().map(|w| w.addr))
            .finish()
    }
}

impl SimFleet {
    /// Binds every worker's listener and starts serving.
    pub async fn start(config: CmlSimConfig) -> Result<SimFleet, SimError> {
        Self::start_with_ca(config, None).await
    }

    /// As [`SimFleet::start`], with a given CA (shards of one fleet share the parent's CA).
    pub(crate) async fn start_with_ca(
        config: CmlSimConfig,
        ca: Option<CaMaterial>,
    ) -> Result<SimFleet, SimError> {
        if config.workers == 0 {
            return Err(SimError::Config("at least one worker is needed".into()));
        }
        let last = config.index_offset + config.workers - 1;
        if config.worker_ip(last).is_none() {
            return Err(SimError::Config(format!(
                "{} workers from {} do not fit in 127.0.0.0/8",
                config.workers, config.listen_base
            )));
        }
        if config.listen_base.octets()[0] != 127 {
            return Err(SimError::Config(
                "listen_base must be a loopback address (127.x.y.z)".into(),
            ));
        }
        let mut ca_path = None;
        let ca_file_owned = config.tls && ca.is_none() && config.ca_out.is_none();
        let tls = if config.tls {
            let generated = ca.is_none();
            let ca = match ca {
                Some(ca) => ca,
                None => CaMaterial::generate()?,
            };
            let path = config.ca_out.clone().unwrap_or_else(default_ca_path);
            if generated {
                std::fs::write(&path, &ca.cert_pem).map_err(|source| SimError::Write {
                    path: path.clone(),
                    source,
                })?;
                ca_path = Some(path);
            }
            Some(Arc::new(TlsMaterial::new(
                ca,
                config.listen_base,
                config.http2,
            )?))
        } else {
            None
        };

        let mut listeners = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            let index = config.index_offset + i;
            let ip = config
                .worker_ip(index)
                .ok_or_else(|| SimError::Config(format!("no address for worker {index}")))?;
            let addr = SocketAddr::from((ip, config.port));
            let l = server::bind(addr).map_err(|source| SimError::Bind {
                index,
                addr,
                source,
            })?;
            let local = l.local_addr().map_err(|source| SimError::Bind {
                index,
                addr,
                source,
            })?;
            listeners.push((index, local, l));
        }

        let faults = config.faults.clone();
        let activity = config.activity;
        let shared = Arc::new(Shared::new(config, crate::api::router(), tls));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut workers = Vec::with_capacity(listeners.len());
        for (index, addr, listener) in listeners {
            let w = Arc::new(Worker::new(index, addr, shared.clone()));
            if !faults.is_empty() {
                w.apply_spec(&faults, false);
            }
            tracker.spawn(server::accept_loop(
                w.clone(),
                listener,
                shutdown.clone(),
                tracker.clone(),
            ));
            workers.push(w);
        }
        let fleet = SimFleet {
            inner: Arc::new(FleetInner {
                shared,
                workers,
                shutdown,
                tracker,
                ca_path,
                ca_file_owned,
            }),
        };
        if let Some(a) = activity {
            let handles = fleet.workers().collect();
            let token = fleet.inner.shutdown.clone();
            fleet
                .inner
                .tracker
                .spawn(crate::activity::run(handles, a, token));
        }
        tracing::info!(
            workers = fleet.len(),
            first = %fleet.inner.workers.first().map(|w| w.base_url()).unwrap_or_default(),
            "simulated cml fleet started"
        );
        Ok(fleet)
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.inner.workers.len()
    }

    /// Always false: a fleet has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.inner.workers.is_empty()
    }

    /// Base URLs, one per worker, such as `http://127.1.0.1:9443` (no trailing slash, no
    /// `/api/v0`), in worker order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.workers.iter().map(|w| w.base_url()).collect()
    }

    /// The worker at position `i` of this fleet (0-based), if any.
    pub fn worker(&self, i: usize) -> Option<SimWorker> {
        self.inner
            .workers
            .get(i)
            .map(|w| SimWorker { inner: w.clone() })
    }

    /// Every worker, in order.
    pub fn workers(&self) -> impl Iterator<Item = SimWorker> + '_ {
        self.inner
            .workers
            .iter()
            .map(|w| SimWorker { inner: w.clone() })
    }

    /// The CA certificate (PEM) when serving TLS.
    pub fn ca_pem(&self) -> Option<String> {
        self.inner
            .shared
            .tls
            .as_ref()
            .map(|t| t.ca_pem().to_owned())
    }

    /// Where the CA certificate was written, when serving TLS. A file at the default path
    /// (no `ca_out`) is removed when the fleet is dropped; one at `ca_out` is kept.
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.inner.ca_path.clone()
    }

    /// Workers whose fleet-wide index the selector picks.
    fn selected<'a>(&'a self, sel: &'a WorkerSelector) -> impl Iterator<Item = &'a Arc<Worker>> {
        self.inner
            .workers
            .iter()
            .filter(move |w| sel.matches(w.index))
    }

    /// Applies a fault spec to every worker it selects (merging, or replacing the selected
    /// workers' faults when `replace`); returns how many workers it selected.
    pub fn apply_faults(&self, spec: &FaultSpec, replace: bool) -> usize {
        self.inner
            .workers
            .iter()
            .filter(|w| w.apply_spec(spec, replace))
            .count()
    }

    /// Removes the faults of the selected workers; returns how many.
    pub fn clear_faults(&self, sel: &WorkerSelector) -> usize {
        self.selected(sel)
            .map(|w| w.set_faults(WorkerFaults::default()))
            .count()
    }

    /// Runs a control action on the selected workers; returns how many.
    pub fn act(&self, sel: &WorkerSelector, action: &Action) -> usize {
        self.selected(sel)
            .map(|w| {
                let h = SimWorker { inner: w.clone() };
                match *action {
                    Action::PowerOff => h.power_off(),
                    Action::PowerOn { boot } => h.power_on(boot),
                    Action::ExpireTokens => h.expire_tokens_now(),
                    Action::Fail401 { n } => h.fail_next_requests_with_401(n),
                    Action::ResetCounters => h.reset_counters(),
                    Action::SetReady { ready } => h.set_ready(ready),
                    Action::UserLogin => {
                        h.simulate_user_login();
                    }
                    Action::UserStartLab => {
                        if let Err(e) = h.start_user_lab() {
                            tracing::debug!(worker = h.index(), error = %e, "user lab start refused");
                        }
                    }
                    Action::UserStopLab => {
                        if let Err(e) = h.stop_user_lab() {
                            tracing::debug!(worker = h.index(), error = %e, "user lab stop refused");
                        }
                    }
                    Action::SetClock { now } => h.set_wall_clock(now),
                    Action::DoublePollWindow { window } => {
                        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
                        w.shared.double_poll_window_ms.store(ms, Ordering::Relaxed);
                    }
                }
            })
            .count()
    }

    /// Reports of the selected workers.
    pub fn reports(&self, sel: &WorkerSelector) -> Vec<WorkerReport> {
        self.selected(sel)
            .map(|w| WorkerReport {
                index: w.index,
                endpoint: w.base_url(),
                up: w.is_up(),
                ready: w.is_ready(),
                faults: w.faults().map(|f| f.to_string()).unwrap_or_default(),
                counters: w.counters(),
            })
            .collect()
    }

    /// Counters summed over every worker.
    pub fn counters(&self) -> CounterSnapshot {
        let mut total = CounterSnapshot::default();
        for w in &self.inner.workers {
            total.add(&w.counters());
        }
        total
    }

    /// Serves the control API on `addr` until the fleet shuts down; returns the bound
    /// address (use port 0 for a free one). The control server holds a handle to the fleet,
    /// so a fleet with a control API stops only through [`SimFleet::shutdown`].
    pub async fn serve_control(&self, addr: SocketAddr) -> Result<SocketAddr, SimError> {
        control::serve(
            Arc::new(self.clone()),
            addr,
            self.inner.shutdown.clone(),
            &self.inner.tracker,
        )
        .await
    }

    /// Stops accepting, closes every connection (in-flight requests get a short grace) and
    /// waits until every task has ended and every socket is released.
    pub async fn shutdown(self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("simulated fleet did not stop within 10 s");
        }
    }
}

/// The control API on this process's fleet.
#[async_trait::async_trait]
impl Backend for SimFleet {
    async fn reports(&self, sel: &WorkerSelector) -> Result<Vec<WorkerReport>, SimError> {
        Ok(SimFleet::reports(self, sel))
    }

    async fn counters(&self) -> Result<CounterSnapshot, SimError> {
        Ok(SimFleet::counters(self))
    }

    fn endpoints(&self) -> Vec<String> {
        SimFleet::endpoints(self)
    }

    async fn apply(&self, spec: &FaultSpec, req: &FaultsRequest) -> Result<usize, SimError> {
        Ok(self.apply_faults(spec, req.replace))
    }

    async fn clear(&self, sel: &WorkerSelector) -> Result<usize, SimError> {
        Ok(self.clear_faults(sel))
    }

    async fn act(&self, sel: &WorkerSelector, req: &ActionRequest) -> Result<usize, SimError> {
        Ok(SimFleet::act(self, sel, &req.action))
    }
}
