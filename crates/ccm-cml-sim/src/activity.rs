//! The background activity generator: on a share of the workers, the non-admin user logs in
//! and starts or stops a small lab now and then, so that `ccm demo` shows busy workers beside
//! idle ones. Workers are chosen by percentage bucket, like the `P%` fault selector.

use std::time::Duration;

use rand::Rng;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::ActivityConfig;
use crate::faults::WorkerSelector;
use crate::worker::SimWorker;

/// The lab the simulated user imports.
pub(crate) const DEMO_LAB: &str = "\
lab: {version: 0.3.0, title: Student Lab, description: two alpine hosts, notes: ''}
nodes:
  - {id: n0, label: alpine-0, node_definition: alpine, x: 0, y: 0,
     interfaces: [{id: i0, type: physical, slot: 0, label: eth0}]}
  - {id: n1, label: alpine-1, node_definition: alpine, x: 200, y: 0,
     interfaces: [{id: i0, type: physical, slot: 0, label: eth0}]}
links:
  - {id: l0, n1: n0, i1: i0, n2: n1, i2: i0}
";

/// Whether the generator makes this worker busy.
pub(crate) fn is_active(index: usize, fraction: f64) -> bool {
    let share = (fraction.clamp(0.0, 1.0) * 100.0).round() as u8;
    WorkerSelector::bucket(index) < share
}

fn step(w: &SimWorker) {
    w.simulate_user_login();
    let outcome = match w.user_lab() {
        None => w
            .import_lab_as_user(DEMO_LAB)
            .and_then(|id| w.start_lab_as_user(id)),
        Some((id, true)) => {
            if rand::rng().random_bool(0.3) {
                w.stop_lab_as_user(id)
            } else {
                Ok(())
            }
        }
        Some((id, false)) => w.start_lab_as_user(id),
    };
    if let Err(e) = outcome {
        tracing::debug!(sim_worker = w.index(), error = %e, "simulated user action refused");
    }
}

pub(crate) async fn run(workers: Vec<SimWorker>, cfg: ActivityConfig, shutdown: CancellationToken) {
    let active: Vec<SimWorker> = workers
        .into_iter()
        .filter(|w| is_active(w.index(), cfg.fraction))
        .collect();
    if active.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(cfg.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for w in &active {
            if w.is_up() {
                step(w);
            }
        }
    }
}
