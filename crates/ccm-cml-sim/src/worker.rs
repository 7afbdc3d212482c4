//! One simulated controller (`Worker`, shared by its accept loop, its connections and the
//! handlers) and the public handle to it ([`SimWorker`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::SimError;
use crate::clock::SimClock;
use crate::cml_error::CmlError;
use crate::config::CmlSimConfig;
use crate::endpoint::{ENDPOINT_COUNT, Endpoint};
use crate::faults::{FaultSpec, WorkerFaults};
use crate::state::{Ctx, STUDENT_ID, User, WorkerState};
use crate::tls::TlsMaterial;

/// JWT issuer, as on a real controller.
const ISSUER: &str = "com.cisco.virl";

/// What every worker of a fleet shares: configuration, clock, users, the router.
pub(crate) struct Shared {
    pub(crate) config: CmlSimConfig,
    pub(crate) clock: SimClock,
    pub(crate) users: Vec<User>,
    pub(crate) router: axum::Router,
    pub(crate) tls: Option<Arc<TlsMaterial>>,
    jwt_secret: [u8; 32],
    validation: Validation,
    /// Requests to one worker from two user agents less than this apart (milliseconds) are
    /// a double poll ([`CounterSnapshot::double_polls`]); set with the control API.
    pub(crate) double_poll_window_ms: AtomicU64,
}

/// The default double-poll window: two replicas' syncs of one worker closer than this are
/// counted as overlapping. Longer than one sync's burst of calls (milliseconds), shorter than
/// a lease handover (at least `lease_ttl / 5` between the old holder's last poll and the new
/// one's first).
pub const DEFAULT_DOUBLE_POLL_WINDOW: Duration = Duration::from_secs(1);

/// Distinct user agents counted per worker; more go under [`OTHER_AGENT`].
const MAX_AGENTS: usize = 16;
/// Double-poll examples kept per worker (and in a fleet-wide sum).
const MAX_EXAMPLES: usize = 10;
/// The user agent of requests beyond [`MAX_AGENTS`] distinct ones.
pub const OTHER_AGENT: &str = "(other)";
/// The user agent of requests without one.
pub const NO_AGENT: &str = "(none)";

impl Shared {
    pub(crate) fn new(
        config: CmlSimConfig,
        router: axum::Router,
        tls: Option<Arc<TlsMaterial>>,
    ) -> Self {
        let users = crate::state::seed_users(&config);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[ISSUER]);
        Shared {
            config,
            clock: SimClock::new(),
            users,
            router,
            tls,
            jwt_secret: rand::random(),
            validation,
            double_poll_window_ms: AtomicU64::new(
                u64::try_from(DEFAULT_DOUBLE_POLL_WINDOW.as_millis()).unwrap_or(u64::MAX),
            ),
        }
    }

    pub(crate) fn user(&self, id: Uuid) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    iat: i64,
    exp: i64,
    sub: Uuid,
    jti: String,
}

/// Power state seen by the accept loop and the connections: `epoch` grows on every power-off,
/// so a connection accepted before a power cycle knows it must die.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Power {
    pub(crate) up: bool,
    pub(crate) epoch: u64,
}

/// Request counters of one worker.
pub(crate) struct Counters {
    per_endpoint: [AtomicU64; ENDPOINT_COUNT],
    /// Requests being answered now, per endpoint.
    in_flight: [AtomicU64; ENDPOINT_COUNT],
    /// The most requests of one endpoint answered at once since the last reset.
    max_in_flight: [AtomicU64; ENDPOINT_COUNT],
    logins: AtomicU64,
    connections: AtomicU64,
    tls_handshakes: AtomicU64,
    tls_resumed: AtomicU64,
    h2_connections: AtomicU64,
    agents: Mutex<AgentLog>,
}

/// Who called one worker: requests per user agent, the last caller, double polls.
#[derive(Default)]
struct AgentLog {
    by_agent: BTreeMap<String, u64>,
    last: Option<(String, Instant)>,
    double_polls: u64,
    examples: Vec<DoublePoll>,
}

/// One double poll: a worker called by `later` less than the window after `earlier` called it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoublePoll {
    /// The worker (fleet-wide index).
    pub worker: usize,
    /// The user agent that called first.
    pub earlier: String,
    /// The other user agent.
    pub later: String,
    /// Milliseconds between the two requests.
    pub gap_ms: u64,
}

impl Counters {
    fn new() -> Self {
        Counters {
            per_endpoint: std::array::from_fn(|_| AtomicU64::new(0)),
            in_flight: std::array::from_fn(|_| AtomicU64::new(0)),
            max_in_flight: std::array::from_fn(|_| AtomicU64::new(0)),
            logins: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            tls_handshakes: AtomicU64::new(0),
            tls_resumed: AtomicU64::new(0),
            h2_connections: AtomicU64::new(0),
            agents: Mutex::new(AgentLog::default()),
        }
    }

    fn snapshot(&self) -> CounterSnapshot {
        let mut by_endpoint = BTreeMap::new();
        let mut requests = 0;
        for (e, c) in Endpoint::ALL.iter().zip(&self.per_endpoint) {
            let n = c.load(Ordering::Relaxed);
            requests += n;
            if n > 0 {
                by_endpoint.insert(e.name().to_owned(), n);
            }
        }
        let mut max_in_flight = BTreeMap::new();
        for (e, c) in Endpoint::ALL.iter().zip(&self.max_in_flight) {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                max_in_flight.insert(e.name().to_owned(), n);
            }
        }
        let agents = self.agents.lock();
        CounterSnapshot {
            requests,
            logins: self.logins.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            tls_handshakes: self.tls_handshakes.load(Ordering::Relaxed),
            tls_resumed: self.tls_resumed.load(Ordering::Relaxed),
            h2_connections: self.h2_connections.load(Ordering::Relaxed),
            by_endpoint,
            max_in_flight,
            workers_by_agent: agents.by_agent.keys().map(|a| (a.clone(), 1)).collect(),
            by_agent: agents.by_agent.clone(),
            last_agent: agents.last.as_ref().map(|(a, _)| a.clone()),
            double_polls: agents.double_polls,
            double_poll_examples: agents.examples.clone(),
        }
    }

    fn reset(&self) {
        for c in self.per_endpoint.iter().chain(&self.max_in_flight) {
            c.store(0, Ordering::Relaxed);
        }
        self.logins.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        self.tls_handshakes.store(0, Ordering::Relaxed);
        self.tls_resumed.store(0, Ordering::Relaxed);
        self.h2_connections.store(0, Ordering::Relaxed);
        *self.agents.lock() = AgentLog::default();
    }
}

/// Request counters at one moment (one worker, or summed over several).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// HTTP requests received (every endpoint, faults included).
    pub requests: u64,
    /// Successful logins (`/authenticate` and `/auth_extended`).
    pub logins: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// TLS handshakes completed (`--tls`), full and resumed.
    #[serde(default)]
    pub tls_handshakes: u64,
    /// Of those, handshakes that resumed an earlier session (a session ticket the client
    /// kept): no certificate sent, signed or verified.
    #[serde(default)]
    pub tls_resumed: u64,
    /// Of the TLS connections, those that spoke HTTP/2 (`h2` chosen by ALPN, `--http2`); the
    /// others spoke HTTP/1.1.
    #[serde(default)]
    pub h2_connections: u64,
    /// Requests per endpoint name (endpoints with no request are left out).
    pub by_endpoint: BTreeMap<String, u64>,
    /// The most requests of one endpoint answered at once, per endpoint name (summed over
    /// workers: the sum of each worker's maximum). Shows overlapping polls of one worker.
    #[serde(default)]
    pub max_in_flight: BTreeMap<String, u64>,
    /// Requests per `User-Agent` (a ccm replica names itself in it; at most 16 distinct per
    /// worker, more under `(other)`; none as `(none)`).
    #[serde(default)]
    pub by_agent: BTreeMap<String, u64>,
    /// Workers each user agent called (1 or 0 for one worker).
    #[serde(default)]
    pub workers_by_agent: BTreeMap<String, u64>,
    /// The user agent of one worker's latest request (`None` in a sum over several).
    #[serde(default)]
    pub last_agent: Option<String>,
    /// Double polls: a request from one user agent less than the double-poll window (control
    /// action `double_poll_window`, default 1 s) after another user agent's request to the same
    /// worker, counted once per change of caller. Two replicas polling one worker in
    /// overlapping syncs show here; a clean handover does not.
    #[serde(default)]
    pub double_polls: u64,
    /// Some of them (at most 10).
    #[serde(default)]
    pub double_poll_examples: Vec<DoublePoll>,
}

impl CounterSnapshot {
    /// Requests to one endpoint.
    pub fn get(&self, endpoint: Endpoint) -> u64 {
        self.by_endpoint.get(endpoint.name()).copied().unwrap_or(0)
    }

    /// The most requests of one endpoint that were answered at once.
    pub fn max_in_flight(&self, endpoint: Endpoint) -> u64 {
        self.max_in_flight
            .get(endpoint.name())
            .copied()
            .unwrap_or(0)
    }

    /// Adds another snapshot to this one.
    pub fn add(&mut self, other: &CounterSnapshot) {
        self.requests += other.requests;
        self.logins += other.logins;
        self.connections += other.connections;
        self.tls_handshakes += other.tls_handshakes;
        self.tls_resumed += other.tls_resumed;
        self.h2_connections += other.h2_connections;
        for (k, v) in &other.by_endpoint {
            *self.by_endpoint.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.max_in_flight {
            *self.max_in_flight.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.by_agent {
            *self.by_agent.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.workers_by_agent {
            *self.workers_by_agent.entry(k.clone()).or_default() += v;
        }
        self.last_agent = None;
        self.double_polls += other.double_polls;
        let room = MAX_EXAMPLES.saturating_sub(self.double_poll_examples.len());
        self.double_poll_examples
            .extend(other.double_poll_examples.iter().take(room).cloned());
    }
}

/// A request being answered (see [`Worker::enter`]).
pub(crate) struct InFlight<'a> {
    counter: &'a AtomicU64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One simulated controller.
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) addr: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    counters: Counters,
    faults: RwLock<Option<Arc<WorkerFaults>>>,
    fail_401: AtomicU32,
    powered: AtomicBool,
    power: watch::Sender<Power>,
    ready: AtomicBool,
    boot_until: Mutex<Option<Instant>>,
    state: Mutex<Option<Box<WorkerState>>>,
}

impl Worker {
    pub(crate) fn new(index: usize, addr: SocketAddr, shared: Arc<Shared>) -> Self {
        Worker {
            index,
            addr,
            shared,
            counters: Counters::new(),
            faults: RwLock::new(None),
            fail_401: AtomicU32::new(0),
            powered: AtomicBool::new(true),
            power: watch::Sender::new(Power { up: true, epoch: 0 }),
            ready: AtomicBool::new(true),
            boot_until: Mutex::new(None),
            state: Mutex::new(None),
        }
    }

    pub(crate) fn base_url(&self) -> String {
        let scheme = if self.shared.config.tls {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    // --- counters ---

    pub(crate) fn count_request(&self, e: Endpoint) {
        self.counters.per_endpoint[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request's user agent, and a double poll when another agent called less than
    /// the window ago (once per change of caller).
    pub(crate) fn count_agent(&self, agent: Option<&[u8]>) {
        let now = Instant::now();
        let window =
            Duration::from_millis(self.shared.double_poll_window_ms.load(Ordering::Relaxed));
        let mut agent: String = match agent {
            Some(a) => String::from_utf8_lossy(a).chars().take(128).collect(),
            None => NO_AGENT.to_owned(),
        };
        let mut log = self.counters.agents.lock();
        if log.by_agent.len() >= MAX_AGENTS && !log.by_agent.contains_key(&agent) {
            OTHER_AGENT.clone_into(&mut agent);
        }
        if let Some((earlier, at)) = &log.last
            && *earlier != agent
        {
            let gap = now.saturating_duration_since(*at);
            if gap < window {
                let example = DoublePoll {
                    worker: self.index,
                    earlier: earlier.clone(),
                    later: agent.clone(),
                    gap_ms: u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
                };
                log.double_polls += 1;
                if log.examples.len() < MAX_EXAMPLES {
                    log.examples.push(example);
                }
            }
        }
        *log.by_agent.entry(agent.clone()).or_default() += 1;
        log.last = Some((agent, now));
    }

    /// Counts a request of `e` as being answered until the guard drops (for
    /// [`CounterSnapshot::max_in_flight`]).
    pub(crate) fn enter(&self, e: Endpoint) -> InFlight<'_> {
        let now = self.counters.in_flight[e as usize].fetch_add(1, Ordering::Relaxed) + 1;
        self.counters.max_in_flight[e as usize].fetch_max(now, Ordering::Relaxed);
        InFlight {
            counter: &self.counters.in_flight[e as usize],
        }
    }

    pub(crate) fn count_connection(&self) {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a TLS connection that chose HTTP/2.
    pub(crate) fn count_h2_connection(&self) {
        self.counters.h2_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a completed TLS handshake, and whether it resumed a session.
    pub(crate) fn count_tls_handshake(&self, resumed: bool) {
        self.counters.tls_handshakes.fetch_add(1, Ordering::Relaxed);
        if resumed {
            self.counters.tls_resumed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    pub(crate) fn reset_counters(&self) {
        self.counters.reset();
    }

    // --- faults and power ---

    pub(crate) fn faults(&self) -> Option<Arc<WorkerFaults>> {
        self.faults.read().clone()
    }

    pub(crate) fn set_faults(&self, faults: WorkerFaults) {
        *self.faults.write() = (!faults.is_empty()).then(|| Arc::new(faults));
        self.refresh_power();
    }

    /// Applies a spec to this worker; returns whether any rule selected it.
    pub(crate) fn apply_spec(&self, spec: &FaultSpec, replace: bool) -> bool {
        let mut faults = if replace {
            WorkerFaults::default()
        } else {
            self.faults().map(|f| (*f).clone()).unwrap_or_default()
        };
        let Some(actions) = spec.apply(self.index, &mut faults) else {
            return false;
        };
        self.set_faults(faults);
        if actions.expire_tokens {
            self.expire_tokens_now();
        }
        if let Some(n) = actions.fail_401 {
            self.fail_next_401(n);
        }
        true
    }

    pub(crate) fn power(&self) -> watch::Receiver<Power> {
        self.power.subscribe()
    }

    pub(crate) fn is_up(&self) -> bool {
        self.power.borrow().up
    }

    fn refresh_power(&self) {
        let down_fault = self.faults.read().as_ref().is_some_and(|f| f.down);
        let up = self.powered.load(Ordering::SeqCst) && !down_fault;
        self.power.send_if_modified(|p| {
            if p.up == up {
                return false;
            }
            if !up {
                p.epoch += 1;
            }
            p.up = up;
            true
        });
    }

    pub(crate) fn power_off(&self) {
        self.powered.store(false, Ordering::SeqCst);
        self.refresh_power();
    }

    pub(crate) fn power_on(&self, boot: Duration) {
        *self.boot_until.lock() = Some(Instant::now() + boot);
        self.powered.store(true, Ordering::SeqCst);
        self.refresh_power();
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Ready as `system_information.ready` reports it.
    pub(crate) fn is_ready(&self) -> bool {
        if !self.ready.load(Ordering::Relaxed) || !self.is_up() {
            return false;
        }
        if self.faults.read().as_ref().is_some_and(|f| f.not_ready) {
            return false;
        }
        let mut boot = self.boot_until.lock();
        match *boot {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                *boot = None;
                true
            }
            None => true,
        }
    }

    pub(crate) fn in_flap_down(&self, faults: &WorkerFaults) -> bool {
        faults
            .flap
            .is_some_and(|p| self.shared.clock.in_flap_down(p, Instant::now()))
    }

    pub(crate) fn fail_next_401(&self, n: u32) {
        self.fail_401.store(n, Ordering::SeqCst);
    }

    /// Consumes one "fail with 401" if any are left.
    pub(crate) fn take_fail_401(&self) -> bool {
        self.fail_401.load(Ordering::Relaxed) > 0
            && self
                .fail_401
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }

    pub(crate) fn expire_tokens_now(&self) {
        self.with_state(|st, _| st.tokens.revoke_all());
    }

    // --- state ---

    /// Runs `f` on the worker's state (created on first use, advanced to now).
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut WorkerState, &Ctx<'_>) -> R) -> R {
        let faults = self.faults();
        let ctx = Ctx {
            cfg: &self.shared.config,
            clock: &self.shared.clock,
            now: Instant::now(),
            index: self.index,
            ready: self.is_ready(),
            disconnected: faults.as_ref().is_some_and(|f| f.disconnected),
            ssms_unreachable: faults.as_ref().is_some_and(|f| f.ssms_unreachable),
        };
        let mut guard = self.state.lock();
        let st = guard.get_or_insert_with(|| Box::new(WorkerState::new()));
        st.advance(&ctx);
        f(st, &ctx)
    }

    // --- tokens ---

    fn jwt_key(&self) -> [u8; 40] {
        let mut key = [0u8; 40];
        key[..32].copy_from_slice(&self.shared.jwt_secret);
        key[32..].copy_from_slice(&(self.index as u64).to_le_bytes());
        key
    }

    /// Checks credentials, issues a token and records the login.
    pub(crate) fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(String, &User), CmlError> {
        let user = self
            .shared
            .users
            .iter()
            .find(|u| u.username == username && u.password.expose() == password)
            .ok_or_else(|| CmlError::forbidden("Authentication failed: access is denied"))?;
        let token = self.issue_token(user)?;
        self.counters.logins.fetch_add(1, Ordering::Relaxed);
        Ok((token, user))
    }

    fn issue_token(&self, user: &User) -> Result<String, CmlError> {
        let jti = self.with_state(|st, ctx| {
            st.user_activity(ctx, user);
            st.tokens.issue()
        });
        let iat = self.shared.clock.unix_now();
        let ttl = i64::try_from(self.shared.config.token_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            iss: ISSUER.to_owned(),
            iat,
            exp: iat.saturating_add(ttl),
            sub: user.id,
            jti: jti.to_string(),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.jwt_key()),
        )
        .map_err(|e| {
            CmlError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot sign token: {e}"),
            )
        })
    }

    /// Validates a bearer token: signature, issuer, expiry, revocation.
    pub(crate) fn check_token(&self, token: &str) -> Result<(&User, u64), CmlError> {
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(&self.jwt_key()),
            &self.shared.validation,
        )
        .map_err(|_| CmlError::unauthorized())?;
        let claims = data.claims;
        if claims.exp <= self.shared.clock.unix_now() {
            return Err(CmlError::new(
                http::StatusCode::UNAUTHORIZED,
                "Token has expired",
            ));
        }
        let jti: u64 = claims.jti.parse().map_err(|_| CmlError::unauthorized())?;
        let user = self
            .shared
            .user(claims.sub)
            .ok_or_else(CmlError::unauthorized)?;
        if !self.with_state(|st, _| st.tokens.is_valid(jti, user.id)) {
            return Err(CmlError::new(
                http::StatusCode::UNAUTHORIZED,
                "Token is no longer valid",
            ));
        }
        Ok((user, jti))
    }

    fn student(&self) -> Result<&User, SimError> {
        self.shared
            .user(STUDENT_ID)
            .ok_or_else(|| SimError::Refused {
                status: 500,
                description: "the simulated user is missing".to_owned(),
            })
    }
}

/// A cheap handle to one simulated worker: faults, power, counters, and helpers that act as a
/// non-admin CML user (`student`) so that idle detection sees real activity.
#[derive(Clone)]
pub struct SimWorker {
    pub(crate) inner: Arc<Worker>,
}

impl fmt::Debug for SimWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimWorker")
            .field("index", &self.inner.index)
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl SimWorker {
    /// Fleet-wide index.
    pub fn index(&self) -> usize {
        self.inner.index
    }

    /// The socket address the worker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Base URL such as `http://127.1.0.1:9443` (no trailing slash, no `/api/v0`).
    pub fn endpoint(&self) -> String {
        self.inner.base_url()
    }

    /// Replaces the worker's faults.
    pub fn set_faults(&self, faults: WorkerFaults) {
        self.inner.set_faults(faults);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.inner.set_faults(WorkerFaults::default());
    }

    /// The current faults.
    pub fn faults(&self) -> WorkerFaults {
        self.inner
            .faults()
            .map(|f| (*f).clone())
            .unwrap_or_default()
    }

    /// Applies a fault spec (merging into the current faults); true if a rule selected it.
    pub fn apply_faults(&self, spec: &FaultSpec) -> bool {
        self.inner.apply_spec(spec, false)
    }

    /// Request counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.inner.counters()
    }

    /// Sets every counter to zero.
    pub fn reset_counters(&self) {
        self.inner.reset_counters();
    }

    /// The worker goes down: its listener closes (connections are refused) and open
    /// connections are reset.
    pub fn power_off(&self) {
        self.inner.power_off();
    }

    /// The worker comes back; `system_information.ready` stays false until `boot` has passed.
    pub fn power_on(&self, boot: Duration) {
        self.inner.power_on(boot);
    }

    /// Whether the worker accepts connections.
    pub fn is_up(&self) -> bool {
        self.inner.is_up()
    }

    /// Sets the readiness flag (`system_information.ready`; labs cannot start when false).
    pub fn set_ready(&self, ready: bool) {
        self.inner.set_ready(ready);
    }

    /// Ready as `system_information.ready` would report it now.
    pub fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    /// Every token issued so far becomes invalid (401).
    pub fn expire_tokens_now(&self) {
        self.inner.expire_tokens_now();
    }

    /// The next `n` requests to bearer endpoints get 401 (to drive a client's re-login path).
    pub fn fail_next_requests_with_401(&self, n: u32) {
        self.inner.fail_next_401(n);
    }

    /// The id of the simulated non-admin user the helpers act as.
    pub fn user_id(&self) -> Uuid {
        STUDENT_ID
    }

    /// The non-admin user logs in: adds `user_activity` telemetry with the user's id.
    pub fn simulate_user_login(&self) -> Uuid {
        let w = &self.inner;
        if let Ok(user) = w.student() {
            w.with_state(|st, ctx| st.user_activity(ctx, user));
        }
        STUDENT_ID
    }

    /// Imports a lab (YAML or JSON topology) as the non-admin user; returns its id.
    pub fn import_lab_as_user(&self, topology: &str) -> Result<Uuid, SimError> {
        let w = &self.inner;
        let user = w.student()?;
        Ok(w.with_state(|st, ctx| st.import(ctx, user, topology.as_bytes(), None))?)
    }

    /// Starts a lab as the non-admin user.
    pub fn start_lab_as_user(&self, lab: Uuid) -> Result<(), SimError> {
        let w = &self.inner;
        let user = w.student()?;
        Ok(w.with_state(|st, ctx| st.start_lab(ctx, &lab.to_string(), user))?)
    }

    /// Stops a lab as the non-admin user.
    pub fn stop_lab_as_user(&self, lab: Uuid) -> Result<(), SimError> {
        let w = &self.inner;
        let user = w.student()?;
        Ok(w.with_state(|st, ctx| st.stop_lab(ctx, &lab.to_string(), user))?)
    }

    /// The non-admin user starts their lab (importing the two-node demo lab first if they
    /// have none): `import_lab`, `start_lab`, `queue_node` telemetry, then the nodes boot.
    pub fn start_user_lab(&self) -> Result<(), SimError> {
        let id = match self.user_lab() {
            Some((id, _)) => id,
            None => self.import_lab_as_user(crate::activity::DEMO_LAB)?,
        };
        self.start_lab_as_user(id)
    }

    /// The non-admin user stops their lab, if it runs.
    pub fn stop_user_lab(&self) -> Result<(), SimError> {
        match self.user_lab() {
            Some((id, true)) => self.stop_lab_as_user(id),
            _ => Ok(()),
        }
    }

    /// Sets the fleet's wall clock to read `now` (see the control action `set_clock`).
    pub fn set_wall_clock(&self, now: chrono::DateTime<chrono::Utc>) {
        self.inner.shared.clock.set_wall(now);
    }

    /// The user's first lab, and whether it is running (for the activity generator).
    pub(crate) fn user_lab(&self) -> Option<(Uuid, bool)> {
        self.inner.with_state(|st, _| st.user_lab(STUDENT_ID))
    }
}
