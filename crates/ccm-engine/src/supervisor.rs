//! [`Supervisor`]: runs the engine's long-lived tasks (the writer, every job loop, the
//! resilience-event forwarder, the API's SSE hub) so that one that panics or ends unexpectedly
//! is logged with its name, counted (`ccm_task_restarts_total{task}`) and restarted after a
//! jittered, capped backoff — and, while a critical one is down, the engine says it is not
//! ready.
//!
//! It also tracks the short-lived tasks (polls, provisioning, licence watches) so that
//! shutdown can wait for them, and owns the cancellation token every loop watches.
//!
//! Every task it starts runs on the runtime the supervisor was made on (the engine's: see
//! `crate::runtime`), whichever runtime asks — an API request that starts a provisioning
//! does not put the provisioning on the API's threads — except the tasks of other crates
//! ([`Supervisor::supervise_here`]: the API's SSE hub runs on the API's runtime).
//!
//! A task is given as a factory: each (re)start calls it for a fresh future, so state that
//! must survive a restart (the writer's queue, the forwarder's channel) lives outside the
//! future, behind the factory.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ccm_resilience::Backoff;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Whether a task being down makes the engine not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    /// The engine cannot do its job without it (`/readyz` is false while it is down).
    Critical,
    /// Losing it for a while degrades something secondary; it is restarted all the same.
    BestEffort,
}

/// Where a supervised task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Running.
    Running,
    /// Failed; waiting for its restart (a critical task here makes the engine not ready).
    Restarting,
    /// Ended on purpose (the engine or its owner stopped it); not restarted.
    Stopped,
}

/// What the supervisor knows of one long-lived task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Its name (`writer`, `job:cml_sync`, …).
    pub name: String,
    /// Whether the engine is ready only while it runs.
    pub criticality: Criticality,
    /// Running, restarting or stopped.
    pub state: TaskState,
    /// Times it was restarted.
    pub restarts: u64,
    /// How it failed last (panic message or "ended unexpectedly").
    pub last_failure: Option<String>,
}

/// When a failed task is restarted: equal-jitter exponential backoff (a delay in
/// `[c/2, c]` with `c = min(cap, base × 2^n)`), reset after a run that lasted `reset_after`.
#[derive(Debug, Clone)]
pub(crate) struct RestartPolicy {
    backoff: Backoff,
    reset_after: Duration,
}

impl RestartPolicy {
    /// Delays from `base` doubling up to `cap`; a run of `reset_after` or more starts over.
    pub(crate) fn new(base: Duration, cap: Duration, reset_after: Duration) -> Self {
        Self {
            backoff: Backoff::new(base, cap),
            reset_after,
        }
    }

    /// The delay before restart `n` (0 for the first).
    fn delay(&self, n: u32) -> Duration {
        // Never (close to) zero: a task that fails at once must not spin.
        self.backoff.ceiling(n) / 2 + self.backoff.delay(n) / 2
    }
}

impl Default for RestartPolicy {
    /// 0.5 s doubling to 30 s; a minute of running resets it.
    fn default() -> Self {
        Self::new(
            Duration::from_millis(500),
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
    }
}

/// Supervises long-lived tasks and tracks short-lived ones. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    tracker: TaskTracker,
    /// The runtime tasks are started on (the one current at [`Supervisor::new`]; `None`
    /// outside any runtime: then the caller's).
    home: Option<tokio::runtime::Handle>,
    cancel: CancellationToken,
    policy: RestartPolicy,
    tasks: Mutex<BTreeMap<String, TaskStatus>>,
    /// Bumped on every status change (tests wait on it instead of sleeping).
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("tasks", &self.inner.tasks.lock().len())
            .field("cancelled", &self.inner.cancel.is_cancelled())
            .finish()
    }
}

impl Supervisor {
    /// A supervisor restarting failed tasks by `policy`, starting its tasks on the current
    /// runtime (its home) from now on.
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                tracker: TaskTracker::new(),
                home: tokio::runtime::Handle::try_current().ok(),
                cancel: CancellationToken::new(),
                policy,
                tasks: Mutex::new(BTreeMap::new()),
                changes: watch::Sender::new(0),
            }),
        }
    }

    /// Runs a short-lived task on the home runtime (tracked: shutdown waits for it; not
    /// restarted).
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.inner.home {
            Some(home) => self.inner.tracker.spawn_on(task, home),
            None => self.inner.tracker.spawn(task),
        };
    }

    /// The runtime tasks are started on, if the supervisor was made on one.
    pub(crate) fn home(&self) -> Option<&tokio::runtime::Handle> {
        self.inner.home.as_ref()
    }

    /// Runs `factory()` as the long-lived task `name` on the home runtime, restarting it when
    /// it panics or ends while neither the engine nor `stop` is stopping. A second task of the
    /// same name is listed as `name#2` (and so on).
    pub(crate) fn supervise<F, Fut>(
        &self,
        name: impl Into<String>,
        criticality: Criticality,
        stop: Option<CancellationToken>,
        factory: F,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let home = self.inner.home.clone();
        self.supervise_on(home, name.into(), criticality, stop, factory);
    }

    /// [`Self::supervise`] on the caller's runtime (another crate's task, e.g. the API's SSE
    /// hub on the API's runtime); outside any runtime, on the home one.
    pub(crate) fn supervise_here<F, Fut>(
        &self,
        name: impl Into<String>,
        criticality: Criticality,
        stop: Option<CancellationToken>,
        factory: F,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let here = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.inner.home.clone());
        self.supervise_on(here, name.into(), criticality, stop, factory);
    }

    fn supervise_on<F, Fut>(
        &self,
        on: Option<tokio::runtime::Handle>,
        name: String,
        criticality: Criticality,
        stop: Option<CancellationToken>,
        factory: F,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = self.register(name, criticality);
        let sup = self.clone();
        // Each run is spawned from `run` itself, so on the same runtime.
        let task = async move { sup.run(name, stop, factory).await };
        match on {
            Some(on) => self.inner.tracker.spawn_on(task, &on),
            None => self.inner.tracker.spawn(task),
        };
    }

    async fn run<F, Fut>(self, name: String, stop: Option<CancellationToken>, factory: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stopping =
            || self.inner.cancel.is_cancelled() || stop.as_ref().is_some_and(|s| s.is_cancelled());
        let stopped = || self.update(&name, |t| t.state = TaskState::Stopped);
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let outcome = self.inner.tracker.spawn(factory()).await;
            let failure = match outcome {
                Ok(()) if stopping() => return stopped(),
                Ok(()) => "ended unexpectedly".to_owned(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_text(e.into_panic())),
                Err(e) => format!("was cancelled: {e}"),
            };
            if stopping() {
                tracing::error!(task = %name, failure, "background task failed while stopping; not restarted");
                return stopped();
            }
            if started.elapsed() >= self.inner.policy.reset_after {
                attempt = 0;
            }
            let delay = self.inner.policy.delay(attempt);
            attempt = attempt.saturating_add(1);
            tracing::error!(task = %name, failure, restart_in = ?delay, "background task failed; restarting it");
            self.update(&name, |t| {
                t.state = TaskState::Restarting;
                t.last_failure = Some(failure);
            });
            let stop_wait = async {
                match &stop {
                    Some(s) => s.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.inner.cancel.cancelled() => return stopped(),
                _ = stop_wait => return stopped(),
                _ = tokio::time::sleep(delay) => {}
            }
            metrics::counter!(crate::metrics::TASK_RESTARTS, "task" => name.clone()).increment(1);
            self.update(&name, |t| {
                t.state = TaskState::Running;
                t.restarts += 1;
            });
            tracing::info!(task = %name, "background task restarted");
        }
    }

    /// Lists a new task under a name no other task has.
    fn register(&self, wanted: String, criticality: Criticality) -> String {
        let name = {
            let mut tasks = self.inner.tasks.lock();
            let name = (1..)
                .map(|n| match n {
                    1 => wanted.clone(),
                    n => format!("{wanted}#{n}"),
                })
                .find(|n| !tasks.contains_key(n))
                .unwrap_or(wanted);
            tasks.insert(
                name.clone(),
                TaskStatus {
                    name: name.clone(),
                    criticality,
                    state: TaskState::Running,
                    restarts: 0,
                    last_failure: None,
                },
            );
            name
        };
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
        name
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut TaskStatus)) {
        {
            let mut tasks = self.inner.tasks.lock();
            let entry = tasks.entry(name.to_owned()).or_insert_with(|| TaskStatus {
                name: name.to_owned(),
                criticality: Criticality::BestEffort,
                state: TaskState::Running,
                restarts: 0,
                last_failure: None,
            });
            f(entry);
        }
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Every supervised task, by name.
    pub(crate) fn statuses(&self) -> Vec<TaskStatus> {
        self.inner.tasks.lock().values().cloned().collect()
    }

    /// The critical tasks that failed and wait for their restart.
    pub(crate) fn critical_down(&self) -> Vec<String> {
        self.inner
            .tasks
            .lock()
            .values()
            .filter(|t| t.criticality == Criticality::Critical && t.state == TaskState::Restarting)
            .map(|t| t.name.clone())
            .collect()
    }

    /// The token every loop watches: cancelled when the engine stops.
    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Whether the engine is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Tells every task to stop (loops end; the writer ends once its handles are dropped).
    pub(crate) fn cancel(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
    }

    /// Waits up to `grace` for every task to end; `false` when some were still running.
    pub(crate) async fn wait(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_ok()
    }

    /// Status changes (for tests).
    #[cfg(test)]
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy::new(
            Duration::from_secs(1),
            Duration::from_secs(8),
            Duration::from_secs(60),
        )
    }

    fn status(sup: &Supervisor, name: &str) -> TaskStatus {
        sup.statuses()
            .into_iter()
            .find(|t| t.name == name)
            .expect("registered")
    }

    /// Waits for the next status change that satisfies `pred`.
    async fn until(
        sup: &Supervisor,
        rx: &mut watch::Receiver<u64>,
        pred: impl Fn(&Supervisor) -> bool,
    ) {
        tokio::time::timeout(Duration::from_secs(600), async {
            while !pred(sup) {
                rx.changed().await.expect("supervisor alive");
            }
        })
        .await
        .expect("the supervisor never reached the expected state: restart lost?");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_should_be_down_then_restarted_after_a_backoff() {
        let sup = Supervisor::new(policy());
        let mut rx = sup.changes();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let cancel = sup.cancel_token().clone();
        sup.supervise("writer", Criticality::Critical, None, move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            let cancel = cancel.clone();
            async move {
                if n == 0 {
                    panic!("boom in the first run");
                }
                cancel.cancelled().await;
            }
        });
        until(&sup, &mut rx, |s| {
            status(s, "writer").state == TaskState::Restarting
        })
        .await;
        let failed_at = Instant::now();
        let down = status(&sup, "writer");
        assert_eq!(down.restarts, 0);
        assert!(
            down.last_failure
                .as_deref()
                .is_some_and(|f| f.contains("boom in the first run")),
            "{down:?}"
        );
        assert_eq!(sup.critical_down(), vec!["writer".to_owned()]);

        until(&sup, &mut rx, |s| {
            status(s, "writer").state == TaskState::Running
        })
        .await;
        let waited = failed_at.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited <= Duration::from_secs(1),
            "first restart after {waited:?}, expected within [0.5 s, 1 s]"
        );
        assert_eq!(status(&sup, "writer").restarts, 1);
        assert!(sup.critical_down().is_empty());
        tokio::task::yield_now().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);

        sup.cancel();
        assert!(
            sup.wait(Duration::from_secs(1)).await,
            "tasks should end on cancel"
        );
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "no restart after a clean stop"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ends_unexpectedly_should_be_restarted_with_growing_delays() {
        let sup = Supervisor::new(policy());
        let mut rx = sup.changes();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let cancel = sup.cancel_token().clone();
        sup.supervise("job:ec2_sync", Criticality::Critical, None, move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            let cancel = cancel.clone();
            async move {
                // The first three runs return at once, as a loop with a bug would.
                if n >= 3 {
                    cancel.cancelled().await;
                }
            }
        });
        let mut gaps = Vec::new();
        for restarts in 1..=3 {
            until(&sup, &mut rx, |s| {
                status(s, "job:ec2_sync").state == TaskState::Restarting
            })
            .await;
            let down_at = Instant::now();
            assert_eq!(
                status(&sup, "job:ec2_sync").last_failure.as_deref(),
                Some("ended unexpectedly")
            );
            until(&sup, &mut rx, move |s| {
                status(s, "job:ec2_sync").restarts == restarts
            })
            .await;
            gaps.push(down_at.elapsed());
        }
        // Ceilings 1 s, 2 s, 4 s: each delay lies in [ceiling/2, ceiling].
        for (i, gap) in gaps.iter().enumerate() {
            let ceiling = Duration::from_secs(1 << i);
            assert!(
                *gap >= ceiling / 2 && *gap <= ceiling,
                "restart {i} after {gap:?}, expected within [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        sup.cancel();
        assert!(sup.wait(Duration::from_secs(1)).await);
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_best_effort_task_down_should_not_count_as_critical() {
        let sup = Supervisor::new(policy());
        let mut rx = sup.changes();
        sup.supervise(
            "resilience_events",
            Criticality::BestEffort,
            None,
            || async {
                panic!("always");
            },
        );
        until(&sup, &mut rx, |s| {
            status(s, "resilience_events").state == TaskState::Restarting
        })
        .await;
        assert!(sup.critical_down().is_empty());
        sup.cancel();
        assert!(
            sup.wait(Duration::from_secs(1)).await,
            "a task waiting to restart should stop at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_ending_after_its_own_stop_should_not_be_restarted() {
        let sup = Supervisor::new(policy());
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let (r, s) = (runs.clone(), stop.clone());
        sup.supervise(
            "sse_hub",
            Criticality::Critical,
            Some(stop.clone()),
            move || {
                r.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                async move { s.cancelled().await }
            },
        );
        tokio::task::yield_now().await;
        stop.cancel();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(status(&sup, "sse_hub").state, TaskState::Stopped);
        assert!(sup.critical_down().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn two_tasks_of_one_name_should_be_listed_apart() {
        let sup = Supervisor::new(policy());
        for _ in 0..2 {
            let cancel = sup.cancel_token().clone();
            sup.supervise("sse_hub", Criticality::Critical, None, move || {
                let cancel = cancel.clone();
                async move { cancel.cancelled().await }
            });
        }
        let names: Vec<String> = sup.statuses().into_iter().map(|t| t.name).collect();
        assert_eq!(names, vec!["sse_hub".to_owned(), "sse_hub#2".to_owned()]);
        sup.cancel();
        assert!(sup.wait(Duration::from_secs(1)).await);
    }

    #[test]
    fn tasks_should_run_on_the_home_runtime_whoever_starts_them_and_be_waited_for_at_shutdown() {
        let home = crate::runtime::build("ccm-test-home", 1, 0).unwrap();
        let other = crate::runtime::build("ccm-test-other", 1, 0).unwrap();
        let sup = home.block_on(async { Supervisor::new(policy()) });
        let (tx, rx) = std::sync::mpsc::channel::<(&str, String)>();
        let here = |tx: &std::sync::mpsc::Sender<(&'static str, String)>, what: &'static str| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            tx.send((what, name)).unwrap();
        };
        other.block_on(async {
            let t = tx.clone();
            let cancel = sup.cancel_token().clone();
            sup.spawn(async move {
                here(&t, "spawn");
                cancel.cancelled().await;
            });
            for (what, on_home) in [("supervise", true), ("supervise_here", false)] {
                let (t, cancel) = (tx.clone(), sup.cancel_token().clone());
                let factory = move || {
                    let (t, cancel) = (t.clone(), cancel.clone());
                    async move {
                        here(&t, what);
                        cancel.cancelled().await;
                    }
                };
                if on_home {
                    sup.supervise(what, Criticality::BestEffort, None, factory);
                } else {
                    sup.supervise_here(what, Criticality::BestEffort, None, factory);
                }
            }
        });
        let mut seen: Vec<(&str, String)> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap())
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("spawn", "ccm-test-home".to_owned()),
                ("supervise", "ccm-test-home".to_owned()),
                ("supervise_here", "ccm-test-other".to_owned()),
            ]
        );
        // Shutdown, asked from a third place, waits for the tasks of both runtimes.
        let main = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        main.block_on(async {
            sup.cancel();
            assert!(sup.wait(Duration::from_secs(30)).await);
        });
        assert!(sup.statuses().iter().all(|t| t.state == TaskState::Stopped));
    }

    #[test]
    fn restart_delays_should_stay_between_half_the_ceiling_and_the_cap() {
        let p = policy();
        for n in 0..40 {
            let ceiling = Duration::from_secs(1u64 << n.min(3));
            let d = p.delay(n);
            assert!(d >= ceiling / 2 && d <= ceiling, "delay {n}: {d:?}");
            assert!(d <= Duration::from_secs(8));
        }
    }
}
