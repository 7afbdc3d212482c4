//! What bounds and de-duplicates per-worker polls: the CML gates ([`CmlGates`]), the poll
//! claims ([`PollClaims`]: one poll per job and worker at a time), and whether a worker is
//! known to be down (its poll then uses the probe gate and triggered cycles don't wait).

use std::collections::HashSet;
use std::sync::Arc;

use ccm_domain::{ServiceStatus, WorkerId};
use ccm_resilience::{Bulkhead, BulkheadPermit};
use parking_lot::Mutex;

use crate::job_kind::JobKind;
use crate::jobs::context::JobContext;

/// Most CML calls one worker's sync makes at once (system_information, system_health,
/// system_stats and licensing).
pub const CML_SYNC_CALLS: usize = 4;

/// The gates that bound how many workers' CML polls (sync, activity) run at once: one for
/// workers that answer, one for probes of workers known to be down.
///
/// Neither is the `cml_poll` bulkhead itself: the CML client runs each call of a poll in that
/// bulkhead, so a poll that held a `cml_poll` slot while its calls waited for another would
/// deadlock as soon as polls held every slot (10,000 workers queued behind 512 slots did
/// exactly that). The worker gate has as many slots as the bulkhead, and a poll takes at least
/// as many as it may have calls in flight ([`Gate::slots`]: [`CML_SYNC_CALLS`], or 2 for a
/// sync whose calls go one by one, `ccm_cml::SyncOrder::gate_slots`), so that the calls of the
/// workers in flight fit in the bulkhead and never queue behind other workers'. Probes of dead workers
/// take their whole timeout; in the same gate they would hold the slots the live workers need
/// (a cycle after 300 of 1,000 workers died took 10 s instead of 0.6 s), so they have their
/// own gate of the same width. Both queue like the bulkhead.
#[derive(Debug, Clone)]
pub(crate) struct CmlGates {
    workers: Bulkhead,
    probes: Bulkhead,
}

/// A gate and the slots one poll takes in it.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    bulkhead: Bulkhead,
    slots: usize,
}

impl CmlGates {
    pub(crate) fn new(config: &ccm_resilience::ResilienceConfig) -> Self {
        let b = &config.bulkheads;
        if !b.enabled {
            return Self {
                workers: Bulkhead::unlimited("cml_workers"),
                probes: Bulkhead::unlimited("cml_probes"),
            };
        }
        let gate = ccm_resilience::BulkheadConfig::new(
            b.cml_poll.max_concurrent.max(1),
            b.cml_poll.max_queue,
        );
        let observer = || Arc::new(ccm_resilience::NoopObserver);
        Self {
            workers: Bulkhead::new("cml_workers", &gate, observer()),
            probes: Bulkhead::new("cml_probes", &gate, observer()),
        }
    }

    /// The gate one poll of worker `id` passes: for polls whose calls run in the `cml_poll`
    /// bulkhead, the probe gate when the worker is known to be `down` ([`known_down`]) and
    /// the worker gate otherwise, taking the slots of its calls at once; the `labs` bulkhead
    /// for labs refreshes.
    pub(crate) fn gate(
        &self,
        ctx: &JobContext,
        job: JobKind,
        id: WorkerId,
        down: bool,
    ) -> Option<Gate> {
        let cml = |bulkhead: &Bulkhead| Gate {
            bulkhead: bulkhead.clone(),
            slots: gate_slots(ctx, job, id),
        };
        match job {
            JobKind::CmlSync | JobKind::Activity if down => Some(cml(&self.probes)),
            JobKind::CmlSync | JobKind::Activity => Some(cml(&self.workers)),
            JobKind::Labs => Some(Gate {
                bulkhead: ctx.resilience().bulkhead(ccm_resilience::bulkhead::LABS),
                slots: 1,
            }),
            _ => None,
        }
    }
}

/// The gate slots a poll of `job` for worker `id` takes: a CML sync's
/// (`ccm_cml::SyncOrder::gate_slots`), [`CML_SYNC_CALLS`] for anything else.
fn gate_slots(ctx: &JobContext, job: JobKind, id: WorkerId) -> usize {
    if job != JobKind::CmlSync {
        return CML_SYNC_CALLS;
    }
    ctx.slot(id)
        .and_then(|slot| slot.reachable().cloned())
        .map_or(CML_SYNC_CALLS, |endpoint| {
            ctx.cml().sync_order(&endpoint).gate_slots()
        })
}

/// Whether a job's polls make their calls in the `cml_poll` bulkhead (and so pass a CML gate).
pub(crate) fn polls_cml(job: JobKind) -> bool {
    matches!(job, JobKind::CmlSync | JobKind::Activity)
}

/// Waits for a slot of `gate` (`None`: no limit). `None` when the gate's queue is full: the
/// poll is skipped (logged; its worker's next due time comes round again).
pub(crate) async fn enter(gate: Option<Gate>) -> Option<Option<BulkheadPermit>> {
    let Some(g) = gate else {
        return Some(None);
    };
    match g.bulkhead.acquire_many(g.slots).await {
        Ok(p) => Some(Some(p)),
        Err(full) => {
            tracing::debug!(error = %full, "gate full, poll skipped");
            None
        }
    }
}

/// The (job, worker) polls running now.
#[derive(Debug, Clone, Default)]
pub(crate) struct PollClaims {
    running: Arc<Mutex<HashSet<(JobKind, WorkerId)>>>,
}

impl PollClaims {
    /// The claim, or `None` (counted) when a poll of this job for this worker is running.
    pub(crate) fn take(&self, job: JobKind, id: WorkerId) -> Option<PollClaim> {
        if self.running.lock().insert((job, id)) {
            Some(PollClaim {
                claims: self.clone(),
                key: (job, id),
            })
        } else {
            metrics::counter!(crate::metrics::POLL_OVERLAP_SKIPPED, "job" => job.as_str())
                .increment(1);
            None
        }
    }
}

/// One worker's poll for one job, claimed so that no other poll of that job runs for that
/// worker at the same time — scheduled polls and triggered cycles alike; released on drop.
pub(crate) struct PollClaim {
    claims: PollClaims,
    key: (JobKind, WorkerId),
}

impl Drop for PollClaim {
    fn drop(&mut self) {
        self.claims.running.lock().remove(&self.key);
    }
}

/// Whether a worker is known to be down: `unavailable` at its last sync, or its breaker due
/// for the half-open probe.
pub(crate) fn known_down(ctx: &JobContext, id: WorkerId) -> bool {
    let Some(slot) = ctx.slot(id) else {
        return false;
    };
    if slot.service == ServiceStatus::Unavailable {
        return true;
    }
    // Whether the worker's next CML call would be its breaker's half-open probe (open and
    // due, or half-open already).
    let Some(endpoint) = slot.endpoint else {
        return false;
    };
    match ctx.resilience().breakers().snapshot_of(&endpoint) {
        Some(b) => match b.state {
            ccm_resilience::BreakerState::HalfOpen => true,
            ccm_resilience::BreakerState::Open => b.retry_in.is_some_and(|r| r.is_zero()),
            _ => false,
        },
        None => false,
    }
}
