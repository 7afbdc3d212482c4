//! Several replicas on one PostgreSQL database: membership, leases with fencing tokens, and
//! [`LeaseOwnership`], the [`Ownership`] that hands out grants only for the leases this replica
//! holds.
//!
//! - **Membership**: every replica beats its row in `replicas` each `renew_interval`; live =
//!   heartbeat younger than `lease_ttl` by the database's clock.
//! - **Partitions**: a worker belongs to partition `sha256(id) mod partitions`; polls of a
//!   worker (CML, labs, activity) are granted to the holder of its partition's lease
//!   (`part:0042`). Fleet jobs have one lease each (`job:ec2_sync:eu-west-1`, `job:auto_import`).
//! - **Who wants what**: rendezvous (highest-random-weight) hashing of each key over the live
//!   replicas — each of N replicas wants ~1/N of the keys, and a join or leave moves ~1/N.
//! - **Rounds** (every `renew_interval`): heartbeat; renew the leases held (one `UPDATE`);
//!   release the ones no longer wanted once they have drained (no new polls for one interval
//!   first, so the next holder does not overlap an in-flight poll); acquire the wanted free or
//!   expired ones (one upsert, fence + 1).
//! - **Local validity ends first**: a lease is used only until `sent + ttl − margin` by this
//!   process's monotonic clock, where `sent` is when the acquiring or renewing statement was
//!   sent — before the database's `now() + ttl`. A replica cut off from the database stops
//!   granting polls and refuses its own queued writes before anyone else may take its leases.
//! - **Fencing**: [`Ownership::fence`] names the (key, token) of each grant; the store checks it
//!   in the write's transaction, so a stale holder's write is refused even if it races.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ccm_domain::{EventKind, Region, WorkerId};
use ccm_store::{
    ClusterRepo, EVENTS_CHANNEL, EventQuery, Fence, LeaseRecord, ReplicaRecord, ReplicaRow,
    SESSIONS_CHANNEL, StoreError,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::job_kind::JobKind;
use crate::ownership::{FencingToken, Grant, GrantScope, Ownership};
use crate::state::State;

/// `[cluster]`: how replicas on one PostgreSQL database share the work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This replica's id (letters, digits, `.`, `_`, `-`; at most 64). Default: generated at
    /// start (`<host>-<random>`), so every process is a new member.
    pub replica_id: Option<String>,
    /// The address other operators see for this replica (default: `server.listen`).
    pub advertise: Option<String>,
    /// How long a lease (and a heartbeat) lasts without renewal.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often leases and the heartbeat are renewed; under half the TTL.
    #[serde(with = "humantime_serde")]
    pub renew_interval: Duration,
    /// How many partitions the workers are spread over (each one lease).
    pub partitions: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            replica_id: None,
            advertise: None,
            lease_ttl: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            partitions: 1024,
        }
    }
}

impl ClusterConfig {
    /// Range checks; the message starts with the dotted key.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_ttl < Duration::from_secs(1) || self.lease_ttl > Duration::from_secs(600) {
            return Err("cluster.lease_ttl: must be between 1s and 10m".into());
        }
        if self.renew_interval < Duration::from_millis(100) {
            return Err("cluster.renew_interval: must be at least 100ms".into());
        }
        if self.renew_interval * 2 >= self.lease_ttl {
            return Err(
                "cluster.renew_interval: must be under half of cluster.lease_ttl (a lease is \
                 renewed at least twice before it expires)"
                    .into(),
            );
        }
        if !(1..=65_536).contains(&self.partitions) {
            return Err("cluster.partitions: must be between 1 and 65536".into());
        }
        if let Some(id) = &self.replica_id {
            valid_replica_id(id).map_err(|e| format!("cluster.replica_id: {e}"))?;
        }
        if let Some(a) = &self.advertise
            && (a.is_empty() || a.len() > 256 || a.chars().any(char::is_control))
        {
            return Err("cluster.advertise: must be 1 to 256 printable characters".into());
        }
        Ok(())
    }

    /// How long before the TTL this process stops trusting a lease (by its own clock): a
    /// fifth of the TTL, at least 100 ms.
    pub fn margin(&self) -> Duration {
        (self.lease_ttl / 5).max(Duration::from_millis(100))
    }

    /// How long a replica keeps a silent peer's row before forgetting it.
    fn forget_after(&self) -> Duration {
        (self.lease_ttl * 20).max(Duration::from_secs(300))
    }
}

/// Checks a replica id: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn valid_replica_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may contain only letters, digits, '.', '_' and '-'".into());
    }
    Ok(())
}

/// The lease key of a worker's partition.
pub fn partition_key(id: WorkerId, partitions: u32) -> String {
    let digest = Sha256::digest(id.to_string().as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let p = u64::from_be_bytes(head) % u64::from(partitions.max(1));
    format!("part:{p:04}")
}

/// The lease key of a fleet job (`job:<name>` or `job:<name>:<region>`).
pub fn job_key(job: JobKind, region: Option<&Region>) -> String {
    match region {
        Some(r) => format!("job:{}:{}", job.as_str(), r.as_str()),
        None => format!("job:{}", job.as_str()),
    }
}

/// The cluster-wide claim key of an on-demand refresh of a worker (`refresh:<id>`). Not a
/// partition or job lease: taken per refresh, kept while it runs and for the throttle's
/// interval after it started, never renewed by the rounds.
pub fn refresh_key(id: WorkerId) -> String {
    format!("refresh:{id}")
}

/// Whether `key` is one of the leases that partition the work (`part:`, `job:`), as opposed
/// to a short claim such as [`refresh_key`].
pub fn is_work_key(key: &str) -> bool {
    key.starts_with("part:") || key.starts_with("job:")
}

/// A short cluster-wide claim on a key outside the rounds (e.g. [`refresh_key`]): taken with
/// [`LeaseOwnership::claim`], kept with [`LeaseOwnership::hold_while`], ended with
/// [`LeaseOwnership::settle`].
#[derive(Debug)]
pub(crate) struct Claim {
    key: String,
    fence: u64,
}

/// A claim that could no longer be renewed before this process stopped trusting it (the
/// database is out of reach): the work under it was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cluster claim {key} could not be renewed; the work under it was stopped")]
pub(crate) struct ClaimLost {
    /// The key.
    pub(crate) key: String,
    /// The token it was held under.
    pub(crate) fence: u64,
}

/// The rendezvous weight of `replica` for `key`: the replica with the highest weight wants it.
fn weight(key: &str, replica: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0u8]);
    h.update(replica.as_bytes());
    let digest = h.finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head)
}

/// The live replica that should hold `key` (highest random weight; ties by id).
pub fn rendezvous<'a>(key: &str, live: &'a [String]) -> Option<&'a str> {
    live.iter()
        .map(|r| (weight(key, r), r.as_str()))
        .max()
        .map(|(_, r)| r)
}

/// A lease this replica holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    fence: u64,
    /// Until when this process trusts it (its own monotonic clock).
    valid_until: Instant,
    /// Since when it is no longer wanted (no new grants; released after draining).
    draining_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct LeaseState {
    held: HashMap<String, Held>,
    live: Vec<String>,
    membership_until: Option<Instant>,
    last_error: Option<String>,
}

/// What this replica holds, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// This replica's id.
    pub me: String,
    /// Every registered replica, with heartbeat ages (database clock).
    pub replicas: Vec<ReplicaRow>,
    /// Every unexpired partition and job lease (short claims such as a refresh's are left out).
    pub leases: Vec<LeaseRecord>,
    /// The lease TTL (live = heartbeat younger than this).
    pub lease_ttl: Duration,
    /// The number of partitions.
    pub partitions: u32,
    /// Workers per holder of their partition's lease (filled by the engine from its index).
    pub workers: std::collections::BTreeMap<String, u64>,
}

/// The [`Ownership`] of a replica among several: grants only under leases held in the
/// database, fenced. Cheap to clone.
#[derive(Clone)]
pub struct LeaseOwnership {
    inner: Arc<Inner>,
}

struct Inner {
    repo: Arc<dyn ClusterRepo>,
    me: ReplicaRecord,
    config: ClusterConfig,
    state: RwLock<LeaseState>,
    /// Fleet-job keys asked for so far (regions appear as workers do).
    job_keys: Mutex<BTreeSet<String>>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for LeaseOwnership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseOwnership")
            .field("me", &self.inner.me.id)
            .field("held", &self.inner.state.read().held.len())
            .finish()
    }
}

impl LeaseOwnership {
    /// Joins the cluster as `me`: runs one round at once (so the first polls find their
    /// leases), then one every `renew_interval` until [`Self::leave`]. A failing database at
    /// start is logged, not fatal: the rounds go on, and nothing is granted meanwhile.
    /// `Err`: the configuration or the id is invalid (the message names the key). The rounds
    /// run on the caller's runtime: not the engine's lowered one (`ccm serve` joins from the
    /// API's), as a late renewal loses leases.
    pub async fn join(
        repo: Arc<dyn ClusterRepo>,
        me: ReplicaRecord,
        config: ClusterConfig,
    ) -> Result<Self, String> {
        config.validate()?;
        valid_replica_id(&me.id).map_err(|e| format!("cluster.replica_id: {e}"))?;
        let this = Self {
            inner: Arc::new(Inner {
                repo,
                me,
                config,
                state: RwLock::new(LeaseState::default()),
                job_keys: Mutex::new(BTreeSet::new()),
                cancel: CancellationToken::new(),
            }),
        };
        this.round().await;
        let runner = this.clone();
        tokio::spawn(async move { runner.run().await });
        Ok(this)
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.inner.me.id
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    fn repo(&self) -> &dyn ClusterRepo {
        self.inner.repo.as_ref()
    }

    /// Takes `key` for `ttl` if no replica holds it (free or expired). `None`: another
    /// replica (or this one) holds it now.
    pub(crate) async fn claim(
        &self,
        key: String,
        ttl: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        let got = self
            .repo()
            .acquire(&self.inner.me.id, std::slice::from_ref(&key), ttl)
            .await?;
        Ok(got.into_iter().find(|a| a.key == key).map(|a| Claim {
            key,
            fence: a.fence,
        }))
    }

    /// Runs `work` while keeping `claim`: renewed to the lease TTL every renew interval. When
    /// renewals fail until this process stops trusting the claim (TTL minus the margin since
    /// the last renewal was sent), `work` is dropped and [`ClaimLost`] returned, before any
    /// other replica may take the key.
    pub(crate) async fn hold_while<F: std::future::Future>(
        &self,
        claim: &Claim,
        work: F,
    ) -> Result<F::Output, ClaimLost> {
        let cfg = &self.inner.config;
        let held = [(claim.key.clone(), claim.fence)];
        let lost = || ClaimLost {
            key: claim.key.clone(),
            fence: claim.fence,
        };
        let mut valid_until = Instant::now() + cfg.lease_ttl - cfg.margin();
        let mut tick = tokio::time::interval(cfg.renew_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = tokio::time::sleep_until(valid_until) => return Err(lost()),
                _ = tick.tick() => {
                    let sent = Instant::now();
                    match self.repo().renew(&self.inner.me.id, &held, cfg.lease_ttl).await {
                        Ok(kept) if kept.contains(&claim.key) => {
                            valid_until = sent + cfg.lease_ttl - cfg.margin();
                        }
                        Ok(_) => return Err(lost()),
                        Err(e) => {
                            tracing::warn!(key = %claim.key, error = %e, "could not renew a claim");
                        }
                    }
                }
            }
        }
    }

    /// Ends `claim`: kept `keep` longer (the rest of a throttle interval), or released now
    /// when `keep` is zero. A failure is logged: the claim then expires by itself.
    pub(crate) async fn settle(&self, claim: Claim, keep: Duration) {
        let held = [(claim.key.clone(), claim.fence)];
        let result = if keep.is_zero() {
            self.repo()
                .release(&self.inner.me.id, &held)
                .await
                .map(|_| ())
        } else {
            self.repo()
                .renew(&self.inner.me.id, &held, keep)
                .await
                .map(|_| ())
        };
        if let Err(e) = result {
            tracing::warn!(key = %claim.key, error = %e, "could not settle a claim; it expires by itself");
        }
    }

    async fn run(self) {
        let mut tick = tokio::time::interval(self.inner.config.renew_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first round ran in `join`
        loop {
            tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                _ = tick.tick() => self.round().await,
            }
        }
    }

    /// One round: heartbeat, renew, release drained, acquire wanted.
    pub async fn round(&self) {
        if let Err(e) = self.try_round().await {
            metrics::counter!(crate::metrics::LEASE_RENEW_FAILURES).increment(1);
            tracing::warn!(error = %e, "lease round failed; leases lapse locally unless renewed");
            self.inner.state.write().last_error = Some(e.to_string());
        }
        let now = Instant::now();
        let mut st = self.inner.state.write();
        // Leases whose local validity passed are gone for us (a later acquisition gets a new
        // fence): nothing more is granted or written under them.
        st.held.retain(|key, h| {
            let ok = h.valid_until > now;
            if !ok {
                tracing::warn!(lease = %key, fence = h.fence, "lease lapsed locally");
            }
            ok
        });
        metrics::gauge!(crate::metrics::LEASES_HELD).set(st.held.len() as f64);
    }

    async fn try_round(&self) -> Result<(), StoreError> {
        let cfg = &self.inner.config;
        let ttl = cfg.lease_ttl;
        let margin = cfg.margin();
        let repo = self.repo();
        let me = self.inner.me.id.clone();

        let sent = Instant::now();
        repo.heartbeat(&self.inner.me).await?;
        let rows = repo.replicas().await?;
        let mut live: Vec<String> = rows
            .iter()
            .filter(|r| r.heartbeat_age < ttl)
            .map(|r| r.record.id.clone())
            .collect();
        if !live.contains(&me) {
            live.push(me.clone());
        }
        live.sort();
        metrics::gauge!(crate::metrics::REPLICAS_LIVE).set(live.len() as f64);
        {
            let mut st = self.inner.state.write();
            st.membership_until = Some(sent + ttl - margin);
            st.live = live.clone();
            st.last_error = None;
        }

        let mut keys: Vec<String> = (0..cfg.partitions)
            .map(|p| format!("part:{p:04}"))
            .collect();
        keys.extend(self.inner.job_keys.lock().iter().cloned());
        let wanted: BTreeSet<String> = keys
            .into_iter()
            .filter(|k| rendezvous(k, &live) == Some(me.as_str()))
            .collect();

        // Renew what is held (wanted or draining) and still valid here.
        let now = Instant::now();
        let held: Vec<(String, u64)> = {
            let st = self.inner.state.read();
            st.held
                .iter()
                .filter(|(_, h)| h.valid_until > now)
                .map(|(k, h)| (k.clone(), h.fence))
                .collect()
        };
        let sent = Instant::now();
        let renewed: BTreeSet<String> = repo.renew(&me, &held, ttl).await?.into_iter().collect();
        let mut release = Vec::new();
        {
            let mut st = self.inner.state.write();
            let now = Instant::now();
            st.held.retain(|key, h| {
                if !renewed.contains(key) {
                    tracing::warn!(lease = %key, fence = h.fence, "lease lost (taken over or expired)");
                    return false;
                }
                h.valid_until = sent + ttl - margin;
                if wanted.contains(key) {
                    h.draining_since = None;
                } else {
                    let since = *h.draining_since.get_or_insert(now);
                    if now.duration_since(since) >= cfg.renew_interval {
                        release.push((key.clone(), h.fence));
                    }
                }
                true
            });
        }
        if !release.is_empty() {
            repo.release(&me, &release).await?;
            let mut st = self.inner.state.write();
            for (k, _) in &release {
                st.held.remove(k);
            }
            tracing::info!(count = release.len(), "leases handed over");
        }

        // Acquire the wanted ones that are free or expired.
        let missing: Vec<String> = {
            let st = self.inner.state.read();
            wanted
                .iter()
                .filter(|k| !st.held.contains_key(*k))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let sent = Instant::now();
            let got = repo.acquire(&me, &missing, ttl).await?;
            let takeovers = got
                .iter()
                .filter(|a| !a.previous_holder.is_empty() && a.previous_holder != me)
                .count();
            if takeovers > 0 {
                metrics::counter!(crate::metrics::LEASE_TAKEOVERS).increment(takeovers as u64);
                tracing::info!(count = takeovers, "leases taken over from silent replicas");
            }
            let mut st = self.inner.state.write();
            for a in got {
                st.held.insert(
                    a.key,
                    Held {
                        fence: a.fence,
                        valid_until: sent + ttl - margin,
                        draining_since: None,
                    },
                );
            }
        }
        let _ = repo.forget("", cfg.forget_after()).await;
        Ok(())
    }

    /// Leaves the cluster: stops the rounds, releases every lease (the others take them at
    /// their next round instead of after the TTL) and removes this replica's row.
    pub async fn leave(&self) {
        self.inner.cancel.cancel();
        let held: Vec<(String, u64)> = {
            let mut st = self.inner.state.write();
            st.membership_until = None;
            st.held.drain().map(|(k, h)| (k, h.fence)).collect()
        };
        let repo = self.repo();
        if let Err(e) = repo.release(&self.inner.me.id, &held).await {
            tracing::warn!(error = %e, "could not release leases on leaving; they will expire");
        }
        let _ = repo
            .forget(&self.inner.me.id, self.inner.config.forget_after())
            .await;
        metrics::gauge!(crate::metrics::LEASES_HELD).set(0.0);
    }

    /// Every replica and lease, as the database has them now.
    pub async fn view(&self) -> Result<ClusterView, StoreError> {
        let repo = self.repo();
        Ok(ClusterView {
            me: self.inner.me.id.clone(),
            replicas: repo.replicas().await?,
            leases: repo
                .leases()
                .await?
                .into_iter()
                .filter(|l| is_work_key(&l.key))
                .collect(),
            lease_ttl: self.inner.config.lease_ttl,
            partitions: self.inner.config.partitions,
            workers: std::collections::BTreeMap::new(),
        })
    }

    /// The keys held and valid now (for tests and the API).
    pub fn held(&self) -> Vec<(String, u64)> {
        let now = Instant::now();
        let st = self.inner.state.read();
        let mut v: Vec<_> = st
            .held
            .iter()
            .filter(|(_, h)| h.valid_until > now)
            .map(|(k, h)| (k.clone(), h.fence))
            .collect();
        v.sort();
        v
    }

    /// A grant under `key` if held, valid and not draining.
    fn grant(&self, key: &str, scope: GrantScope) -> Option<Grant> {
        let now = Instant::now();
        let st = self.inner.state.read();
        let h = st.held.get(key)?;
        (h.valid_until > now && h.draining_since.is_none())
            .then(|| Grant::new(scope, FencingToken::new(h.fence)))
    }

    fn key_of(&self, scope: &GrantScope) -> Option<String> {
        match scope {
            GrantScope::Worker(id) => Some(partition_key(*id, self.inner.config.partitions)),
            GrantScope::Job(job, region) => Some(job_key(*job, region.as_ref())),
            GrantScope::Command => None,
        }
    }
}

impl Ownership for LeaseOwnership {
    fn owns_worker(&self, id: WorkerId) -> Option<Grant> {
        let key = partition_key(id, self.inner.config.partitions);
        self.grant(&key, GrantScope::Worker(id))
    }

    fn may_run(&self, job: JobKind, region: Option<&Region>) -> Option<Grant> {
        let key = job_key(job, region);
        let grant = self.grant(&key, GrantScope::Job(job, region.cloned()));
        if grant.is_none() {
            // Known from now on: the next round acquires it if this replica should run it.
            self.inner.job_keys.lock().insert(key);
        }
        grant
    }

    fn holds(&self, grant: &Grant) -> bool {
        let Some(key) = self.key_of(grant.scope()) else {
            return true;
        };
        let now = Instant::now();
        let st = self.inner.state.read();
        st.held
            .get(&key)
            .is_some_and(|h| h.fence == grant.token().get() && h.valid_until > now)
    }

    fn fence(&self, grant: &Grant) -> Option<Fence> {
        Some(Fence {
            key: self.key_of(grant.scope())?,
            token: grant.token().get(),
        })
    }

    fn readiness(&self) -> Result<(), String> {
        let st = self.inner.state.read();
        match st.membership_until {
            Some(until) if until > Instant::now() => Ok(()),
            _ => Err(match &st.last_error {
                Some(e) => format!("no valid cluster membership: {e}"),
                None => "no valid cluster membership".into(),
            }),
        }
    }
}

/// What a replica's tailer listens through, and where it announces sessions ended on any
/// replica. Made by the binary from the PostgreSQL store; handed to
/// [`crate::Engine::follow_cluster`].
pub struct Listen {
    repo: Arc<dyn ClusterRepo>,
    /// The log position delivered so far (`u64::MAX`: not started).
    last: AtomicU64,
    sessions: broadcast::Sender<String>,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listen")
            .field("last", &self.last.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Listen {
    /// Listens through `repo`.
    pub fn new(repo: Arc<dyn ClusterRepo>) -> Self {
        let (sessions, _) = broadcast::channel(1024);
        Self {
            repo,
            last: AtomicU64::new(u64::MAX),
            sessions,
        }
    }

    /// Keys (SHA-256 of the id, hex) of sessions ended on any replica, as they are announced.
    pub fn ended_sessions(&self) -> broadcast::Receiver<String> {
        self.sessions.subscribe()
    }
}

/// How often the tailer reads the log without a notification (notifications are hints and
/// can be lost while the listening connection reconnects).
const TAIL_POLL: Duration = Duration::from_secs(1);
/// Events read per page.
const TAIL_PAGE: u32 = 1000;

/// The tailer: LISTEN on the events and sessions channels; after each notification (and at
/// least every second) read everything after the last delivered position, in order, and
/// broadcast it; refresh the fleet index for the workers those events name; reload the
/// settings when they changed.
pub(crate) async fn tail(state: Arc<State>, listen: Arc<Listen>, cancel: CancellationToken) {
    if listen.last.load(Ordering::SeqCst) == u64::MAX {
        // Live subscribers start now; earlier events are replayed from the log by the API.
        loop {
            match state.store().last_seq().await {
                Ok(seq) => {
                    listen.last.store(seq, Ordering::SeqCst);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event tailer cannot read the log head; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(TAIL_POLL) => {}
                    }
                }
            }
        }
    }
    loop {
        let mut notes = match listen
            .repo
            .listen(&[EVENTS_CHANNEL, SESSIONS_CHANNEL])
            .await
        {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "event tailer cannot LISTEN; reading the log every second");
                None
            }
        };
        loop {
            let note = match notes.as_mut() {
                Some(n) => tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = n.recv() => Some(r),
                    _ = tokio::time::sleep(TAIL_POLL) => None,
                },
                None => tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(TAIL_POLL) => None,
                },
            };
            match note {
                Some(Ok((channel, payload))) if channel == SESSIONS_CHANNEL => {
                    let _ = listen.sessions.send(payload);
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "event tailer lost its LISTEN connection");
                    catch_up(&state, &listen).await;
                    break;
                }
                _ => {}
            }
            catch_up(&state, &listen).await;
            if notes.is_none() {
                break; // try to LISTEN again
            }
        }
    }
}

/// Delivers everything in the log after the last delivered position.
async fn catch_up(state: &State, listen: &Listen) {
    loop {
        let after = listen.last.load(Ordering::SeqCst);
        let page = match state
            .store()
            .read(&EventQuery {
                after: Some(after),
                limit: TAIL_PAGE,
                ..EventQuery::default()
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "event tailer cannot read the log");
                return;
            }
        };
        let Some(last) = page.last().map(|e| e.seq) else {
            return;
        };
        let full = page.len() >= TAIL_PAGE as usize;
        let mut workers: BTreeSet<WorkerId> = BTreeSet::new();
        let mut settings = false;
        for e in &page {
            if let Some(id) = e.event.worker_id() {
                workers.insert(id);
            }
            settings |= matches!(e.event.kind, EventKind::SettingsUpdated { .. });
        }
        state
            .bus()
            .deliver_logged(page.into_iter().map(|e| (e.seq, e.event)));
        listen.last.store(last, Ordering::SeqCst);
        state.follow_workers(workers.into_iter().collect()).await;
        if settings {
            state.reload_settings().await;
        }
        if !full {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use async_trait::async_trait;
    use ccm_store::{Acquired, Notifications};

    use super::*;

    /// A database of leases in memory whose clock is tokio's (paused in these tests), and
    /// which can be cut off.
    #[derive(Default)]
    struct MemoryDb {
        down: AtomicBool,
        leases: Mutex<HashMap<String, (String, u64, Instant)>>,
        beats: Mutex<HashMap<String, (ReplicaRecord, Instant)>>,
    }

    impl MemoryDb {
        fn check(&self) -> ccm_store::Result<()> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Connect {
                    target: "memory".into(),
                    message: "cut off".into(),
                });
            }
            Ok(())
        }

        fn expires_at(&self, key: &str) -> Option<Instant> {
            self.leases.lock().get(key).map(|(_, _, e)| *e)
        }
    }

    #[async_trait]
    impl ClusterRepo for MemoryDb {
        async fn heartbeat(&self, me: &ReplicaRecord) -> ccm_store::Result<()> {
            self.check()?;
            self.beats
                .lock()
                .insert(me.id.clone(), (me.clone(), Instant::now()));
            Ok(())
        }
        async fn replicas(&self) -> ccm_store::Result<Vec<ReplicaRow>> {
            self.check()?;
            let now = Instant::now();
            Ok(self
                .beats
                .lock()
                .values()
                .map(|(r, at)| ReplicaRow {
                    record: r.clone(),
                    heartbeat_age: now.duration_since(*at),
                })
                .collect())
        }
        async fn forget(&self, id: &str, _after: Duration) -> ccm_store::Result<()> {
            self.check()?;
            self.beats.lock().remove(id);
            Ok(())
        }
        async fn acquire(
            &self,
            holder: &str,
            keys: &[String],
            ttl: Duration,
        ) -> ccm_store::Result<Vec<Acquired>> {
            self.check()?;
            let now = Instant::now();
            let mut leases = self.leases.lock();
            let mut got = Vec::new();
            for k in keys {
                let (prev, fence) = match leases.get(k) {
                    Some((_, _, exp)) if *exp > now => continue,
                    Some((h, f, _)) => (h.clone(), *f),
                    None => (String::new(), 0),
                };
                leases.insert(k.clone(), (holder.to_owned(), fence + 1, now + ttl));
                got.push(Acquired {
                    key: k.clone(),
                    fence: fence + 1,
                    previous_holder: prev,
                });
            }
            Ok(got)
        }
        async fn renew(
            &self,
            holder: &str,
            held: &[(String, u64)],
            ttl: Duration,
        ) -> ccm_store::Result<Vec<String>> {
            self.check()?;
            let now = Instant::now();
            let mut leases = self.leases.lock();
            let mut out = Vec::new();
            for (k, f) in held {
                if let Some((h, fence, exp)) = leases.get_mut(k)
                    && h == holder
                    && fence == f
                    && *exp > now
                {
                    *exp = now + ttl;
                    out.push(k.clone());
                }
            }
            Ok(out)
        }
        async fn release(&self, holder: &str, held: &[(String, u64)]) -> ccm_store::Result<u64> {
            self.check()?;
            let now = Instant::now();
            let mut n = 0;
            for (k, f) in held {
                if let Some((h, fence, exp)) = self.leases.lock().get_mut(k)
                    && h == holder
                    && fence == f
                {
                    h.clear();
                    *exp = now;
                    n += 1;
                }
            }
            Ok(n)
        }
        async fn leases(&self) -> ccm_store::Result<Vec<LeaseRecord>> {
            self.check()?;
            Ok(Vec::new())
        }
        async fn listen(&self, _: &[&str]) -> ccm_store::Result<Box<dyn Notifications>> {
            Err(StoreError::Connect {
                target: "memory".into(),
                message: "no notifications".into(),
            })
        }
    }

    fn record(id: &str) -> ReplicaRecord {
        ReplicaRecord {
            id: id.into(),
            address: "127.0.0.1:0".into(),
            version: "test".into(),
            started_at: chrono::Utc::now(),
        }
    }

    fn short() -> ClusterConfig {
        ClusterConfig {
            lease_ttl: Duration::from_secs(3),
            renew_interval: Duration::from_secs(1),
            partitions: 4,
            ..ClusterConfig::default()
        }
    }

    /// Cut off from the database, a replica stops granting polls and refuses its own writes
    /// (holds() false) before the database would let anyone else take its leases; once the
    /// database lets another replica take them over, the new holder's fence is higher. Under
    /// tokio's paused clock (the in-memory database uses the same clock).
    #[tokio::test(start_paused = true)]
    async fn local_validity_should_end_before_the_database_expiry() {
        let db = Arc::new(MemoryDb::default());
        let a = LeaseOwnership::join(db.clone(), record("a"), short())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.held().len(), 4, "alone, it holds every partition");
        assert!(a.readiness().is_ok());
        let id = WorkerId::new();
        let grant = a.owns_worker(id).unwrap_or_else(|| panic!("owned"));
        assert!(a.holds(&grant));
        let key = partition_key(id, 4);
        let fence = a.fence(&grant).unwrap_or_else(|| panic!("fenced"));
        assert_eq!(fence.key, key);

        tokio::time::advance(Duration::from_millis(1500)).await;
        tokio::task::yield_now().await;
        db.down.store(true, Ordering::SeqCst);
        let db_expiry = db.expires_at(&key).unwrap_or_else(|| panic!("stored"));
        // Step the clock until the replica gives the lease up locally.
        let mut stopped = None;
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(50)).await;
            tokio::task::yield_now().await;
            if a.owns_worker(id).is_none() && !a.holds(&grant) {
                stopped = Some(Instant::now());
                break;
            }
        }
        let stopped = stopped.unwrap_or_else(|| panic!("the replica never stopped acting"));
        assert!(
            stopped < db_expiry,
            "local validity must end before the database expiry ({:?} before)",
            db_expiry.duration_since(stopped)
        );
        assert!(a.readiness().is_err(), "no valid membership while cut off");

        // The database clock passes the expiry: another replica takes the leases over.
        tokio::time::advance(db_expiry.duration_since(Instant::now()) + Duration::from_secs(2))
            .await;
        db.down.store(false, Ordering::SeqCst);
        db.beats.lock().remove("a");
        let b = LeaseOwnership::join(db.clone(), record("b"), short())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let taken = b.held();
        let new_fence = taken
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, f)| *f)
            .unwrap_or_else(|| panic!("b took {key} over: {taken:?}"));
        assert!(new_fence > fence.token);
        a.leave().await;
        b.leave().await;
    }

    #[test]
    fn rendezvous_should_move_only_the_keys_of_a_replica_that_leaves() {
        let three: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        let two: Vec<String> = ["a", "c"].iter().map(|s| (*s).to_owned()).collect();
        let keys: Vec<String> = (0..1024).map(|p| format!("part:{p:04}")).collect();
        let mut per = HashMap::new();
        let mut moved = 0;
        for k in &keys {
            let before = rendezvous(k, &three).unwrap_or_default();
            *per.entry(before).or_insert(0) += 1;
            let after = rendezvous(k, &two).unwrap_or_default();
            if before != after {
                assert_eq!(before, "b", "only b's keys move");
                moved += 1;
            }
        }
        assert_eq!(moved, per["b"]);
        for n in per.values() {
            assert!((250..=430).contains(n), "about a third each: {per:?}");
        }
    }

    #[test]
    fn partitions_should_be_stable_and_in_range() {
        let id = WorkerId::new();
        assert_eq!(partition_key(id, 1024), partition_key(id, 1024));
        let k = partition_key(id, 8);
        let n: u32 = k.trim_start_matches("part:").parse().unwrap_or(99);
        assert!(n < 8);
    }

    #[test]
    fn cluster_config_should_refuse_a_renew_interval_of_half_the_ttl_or_more() {
        let mut c = ClusterConfig::default();
        assert!(c.validate().is_ok());
        c.renew_interval = Duration::from_millis(7500);
        assert!(
            c.validate()
                .is_err_and(|e| e.starts_with("cluster.renew_interval"))
        );
        c.renew_interval = Duration::from_secs(1);
        c.replica_id = Some("bad id!".into());
        assert!(
            c.validate()
                .is_err_and(|e| e.starts_with("cluster.replica_id"))
        );
        c.replica_id = Some("r-1.a_b".into());
        c.partitions = 0;
        assert!(
            c.validate()
                .is_err_and(|e| e.starts_with("cluster.partitions"))
        );
    }
    /// A refresh claim is exclusive across replicas, kept past its TTL while the work runs,
    /// kept for the rest of the throttle interval when settled, and free again after it.
    #[tokio::test(start_paused = true)]
    async fn a_refresh_claim_should_be_exclusive_kept_while_running_and_free_after_the_interval() {
        let db = Arc::new(MemoryDb::default());
        let a = LeaseOwnership::join(db.clone(), record("a"), short())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b = LeaseOwnership::join(db.clone(), record("b"), short())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let key = refresh_key(WorkerId::new());
        let ttl = a.config().lease_ttl;
        let claim = a
            .claim(key.clone(), ttl)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a free key is claimed"));
        assert!(
            b.claim(key.clone(), ttl)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none(),
            "a claim held by A is refused to B"
        );
        // Work running for three TTLs: the claim is renewed and B is refused throughout.
        let b2 = b.clone();
        let key2 = key.clone();
        let out = a
            .hold_while(&claim, async move {
                let mut refused = 0;
                for _ in 0..9 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if b2.claim(key2.clone(), ttl).await.ok().flatten().is_none() {
                        refused += 1;
                    }
                }
                refused
            })
            .await;
        assert_eq!(out, Ok(9), "B never got the claim while A's work ran");
        // Settled with 4 s of throttle interval left: still A's for 4 s, then free.
        a.settle(claim, Duration::from_secs(4)).await;
        tokio::time::advance(Duration::from_millis(3900)).await;
        assert!(
            b.claim(key.clone(), ttl)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        let taken = b
            .claim(key.clone(), ttl)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("free after the interval"));
        assert!(taken.fence > 1, "each claim raises the fence");
        // Settled with nothing left: released at once.
        b.settle(taken, Duration::ZERO).await;
        assert!(
            a.claim(key, ttl)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_some()
        );
    }

    /// Cut off from the database while holding a claim, the work is stopped before the
    /// database would let another replica take the key.
    #[tokio::test(start_paused = true)]
    async fn a_claim_that_cannot_be_renewed_should_stop_its_work_before_it_expires() {
        let db = Arc::new(MemoryDb::default());
        let a = LeaseOwnership::join(db.clone(), record("a"), short())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let key = refresh_key(WorkerId::new());
        let claim = a
            .claim(key.clone(), a.config().lease_ttl)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("claimed"));
        db.down.store(true, Ordering::SeqCst);
        let db_expiry = db.expires_at(&key).unwrap_or_else(|| panic!("stored"));
        let lost = a.hold_while(&claim, std::future::pending::<()>()).await;
        assert_eq!(
            lost,
            Err(ClaimLost {
                key,
                fence: claim.fence
            })
        );
        assert!(
            Instant::now() < db_expiry,
            "stopped before the database expiry"
        );
    }

    #[test]
    fn only_partition_and_job_keys_should_count_as_work_leases() {
        assert!(is_work_key("part:0042"));
        assert!(is_work_key("job:ec2_sync:eu-west-1"));
        assert!(!is_work_key(&refresh_key(WorkerId::new())));
    }
}
