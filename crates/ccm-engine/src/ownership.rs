//! [`Ownership`]: which workers this process polls and which fleet jobs it may run — the seam
//! where several replicas (issue 11: leases with fencing tokens) plug in.
//!
//! Every per-worker selection (the scheduled polls, triggered cycles, `run_cml_cycle`) asks
//! [`Ownership::owns_worker`]; every fleet-job run asks [`Ownership::may_run`] (per region for
//! the EC2 and CloudWatch batches). The answer is a [`Grant`] carrying a [`FencingToken`]; the
//! job holds it while it runs and shows it on every write it makes (`JobContext` refuses the
//! write when [`Ownership::holds`] says the grant is gone). Jobs never decide ownership
//! themselves, so a lease-backed implementation changes this one trait object, not the jobs.
//!
//! [`SingleNode`] is the implementation for one process: it owns every worker and every job,
//! and its grants never lapse. [`crate::cluster::LeaseOwnership`] is the one for several
//! replicas: grants are leases in the database, and [`Ownership::fence`] names the lease each
//! write must still be covered by, which the store checks in the writer's save transaction —
//! checking [`Ownership::holds`] before queueing a write narrows the window but cannot close
//! it.
//!
//! A new fleet job (e.g. webhook delivery) needs nothing here: a new [`JobKind`] and a call to
//! [`Ownership::may_run`] in its loop give it a lease of its own on several replicas
//! (`job:<name>`, or `job:<name>:<region>`).
//!
//! Commands (start, stop, refresh, lab actions, licences) are not owned: any replica accepts
//! any command, and commands write with optimistic concurrency ([`Grant::command`]).

use std::fmt;

use ccm_domain::{Region, WorkerId};

use crate::job_kind::JobKind;

/// A monotonically increasing number proving a grant is current: a write carrying an older
/// token than the lease's present one must be refused (fencing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// A token with this value.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// Its value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a grant allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GrantScope {
    /// Polling one worker (CML sync, labs, activity).
    Worker(WorkerId),
    /// Running a fleet job, for one region where the job runs per region.
    Job(JobKind, Option<Region>),
    /// An operator's command: not owned, never fenced.
    Command,
}

/// Permission to act now on a scope, with the token that proves it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[must_use]
pub struct Grant {
    scope: GrantScope,
    token: FencingToken,
}

impl Grant {
    /// A grant of `scope` under `token` (made by an [`Ownership`] implementation).
    pub fn new(scope: GrantScope, token: FencingToken) -> Self {
        Self { scope, token }
    }

    /// The grant under which commands act: always held.
    pub fn command() -> Self {
        Self::new(GrantScope::Command, FencingToken::new(0))
    }

    /// What it allows.
    pub fn scope(&self) -> &GrantScope {
        &self.scope
    }

    /// Its fencing token.
    pub fn token(&self) -> FencingToken {
        self.token
    }
}

/// Who polls which worker and runs which fleet job. Asked on every poll and every job run,
/// so answers must be cheap (in memory).
pub trait Ownership: Send + Sync + fmt::Debug {
    /// A grant to poll this worker now, or `None` when another replica owns it.
    fn owns_worker(&self, id: WorkerId) -> Option<Grant>;

    /// A grant to run this fleet job now (`region`: for jobs that run per region), or `None`
    /// when another replica runs it.
    fn may_run(&self, job: JobKind, region: Option<&Region>) -> Option<Grant>;

    /// Whether `grant` is still held (checked before each write a job makes).
    fn holds(&self, grant: &Grant) -> bool;

    /// The lease a write made under `grant` must still be covered by when the store applies
    /// it (checked in the write's own transaction: fencing). `None` (the default): writes are
    /// not fenced — one process owns everything.
    fn fence(&self, grant: &Grant) -> Option<ccm_store::Fence> {
        let _ = grant;
        None
    }

    /// Whether this process may act at all: `Err` names why not (e.g. its membership in the
    /// cluster has lapsed). `/readyz` reports it.
    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }
}

/// One process owns everything: every worker, every job, forever (token 1).
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleNode;

/// The single node's one epoch.
const SINGLE_NODE_TOKEN: FencingToken = FencingToken::new(1);

impl Ownership for SingleNode {
    fn owns_worker(&self, id: WorkerId) -> Option<Grant> {
        Some(Grant::new(GrantScope::Worker(id), SINGLE_NODE_TOKEN))
    }

    fn may_run(&self, job: JobKind, region: Option<&Region>) -> Option<Grant> {
        Some(Grant::new(
            GrantScope::Job(job, region.cloned()),
            SINGLE_NODE_TOKEN,
        ))
    }

    fn holds(&self, _grant: &Grant) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_node_should_own_every_worker_and_job_under_one_token() {
        let id = WorkerId::new();
        let w = SingleNode.owns_worker(id).expect("owned");
        assert_eq!(w.scope(), &GrantScope::Worker(id));
        let region = Region::parse("eu-west-1").expect("region");
        let j = SingleNode
            .may_run(JobKind::Ec2Sync, Some(&region))
            .expect("granted");
        assert_eq!(j.scope(), &GrantScope::Job(JobKind::Ec2Sync, Some(region)));
        assert_eq!(w.token(), j.token());
        assert!(SingleNode.holds(&w) && SingleNode.holds(&j));
    }
}
