//! `GET /api/v1/events`: the domain's CloudEvents as Server-Sent Events.
//!
//! - **Fan-out**: one hub task subscribes to the engine's bus, formats each event once into a
//!   complete SSE frame (`id:` = log position, `event:` = CloudEvents type, `data:` = the
//!   CloudEvent JSON) and re-broadcasts the shared bytes on a bounded channel
//!   (`api.sse_buffer` frames). Each client reads that channel at its own pace.
//! - **Clients that follow workers** (`?worker=`) do not read that channel: the hub also
//!   routes each frame about a worker to the clients following that worker, each through its
//!   own bounded queue (`api.sse_buffer` frames). So a frame costs only the clients that want
//!   it: 5,000 clients on one worker page each no longer wake 5,000 times per event
//!   (BENCHMARKS.md, "API under load").
//! - **Slow clients**: a client that falls more than `api.sse_buffer` frames behind gets a
//!   final `event: reset` (with the last id it got) and is disconnected; it never blocks the
//!   hub or other clients. A client that stops reading altogether is cut off by the
//!   connection's write-stall timeout ([`crate::serve`]).
//! - **Per connection**: subscribe first; replay the log after `Last-Event-ID` (header or
//!   `?last_event_id=`); then one `ccm.worker.snapshot` per visible worker (to this client
//!   only, never on the bus); then live events, skipping any with a position already
//!   replayed — no gaps, no duplicates. Comment lines keep an idle stream alive.
//! - **A `Last-Event-ID` above the log's newest event** (a recreated database, a restored
//!   backup) cannot be resumed from: the client gets `ccm.stream.reset` saying so, then the
//!   replay starts from the oldest event kept — never a silent gap.
//! - **Streams end with their credential**: a stream opened with a session cookie ends when
//!   that session is signed out or expires, one opened with an OIDC token when the token
//!   expires — a final `ccm.session.ended` (whatever the filters), then the stream closes.
//! - **Filters**: `?worker=<id>` (repeatable) and `?type=<type or prefix.*>` (repeatable).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ccm_domain::{Event, EventKind, WorkerId};
use ccm_engine::{BusEvent, Criticality, Engine};
use ccm_store::{EventQuery, WorkerFilter};
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::auth::session::SessionWatch;
use crate::dto::{ViewContext, WorkerView};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Query, split_list};
use crate::state::ApiState;

/// The source of events the API makes itself (snapshots).
const API_SOURCE: &str = "/ccm/api";
/// Log rows read per replay page.
const REPLAY_PAGE: u32 = 500;
/// Workers read per snapshot page.
const SNAPSHOT_PAGE: u32 = 200;
/// Frames waiting for a client are sent together up to about this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;
/// Reconnect delay suggested to `EventSource` clients, in milliseconds.
const RETRY_MS: u32 = 2000;

/// One frame on the hub: a formatted event, or the order to reset.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    /// A formatted event.
    Event {
        seq: Option<u64>,
        type_name: &'static str,
        subject: Option<WorkerId>,
        bytes: Bytes,
    },
    /// The hub itself fell behind the bus: every client must reconnect and replay.
    Reset,
}

/// Formats one event as an SSE frame.
pub(crate) fn format_event(seq: Option<u64>, event: &Event) -> Bytes {
    let json = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    let mut s = String::with_capacity(json.len() + 64);
    if let Some(seq) = seq {
        let _ = writeln!(s, "id: {seq}");
    }
    let _ = writeln!(s, "event: {}", event.type_name());
    s.push_str("data: ");
    s.push_str(&json);
    s.push_str("\n\n");
    Bytes::from(s)
}

impl Frame {
    fn of(seq: Option<u64>, event: &Event) -> Self {
        Frame::Event {
            seq,
            type_name: event.type_name(),
            subject: event.worker_id(),
            bytes: format_event(seq, event),
        }
    }
}

/// The reset frame: tells the client to reconnect with its Last-Event-ID.
fn reset_frame(reason: &str, last: Option<u64>) -> Bytes {
    let data = serde_json::json!({
        "reason": reason,
        "last_event_id": last,
        "detail": "reconnect with Last-Event-ID to replay what you missed",
    });
    Bytes::from(format!("event: reset\ndata: {data}\n\n"))
}

/// The fan-out point between the engine's bus and the SSE clients.
#[derive(Debug)]
pub(crate) struct Hub {
    tx: broadcast::Sender<Frame>,
    /// Clients following workers, by worker: their queues.
    routes: parking_lot::RwLock<HashMap<WorkerId, Vec<RouteEntry>>>,
    next_route: AtomicU64,
    buffer: usize,
    clients: AtomicUsize,
    max_clients: usize,
}

/// One client's queue in [`Hub::routes`].
#[derive(Debug, Clone)]
struct RouteEntry {
    id: u64,
    tx: mpsc::Sender<Frame>,
    /// Set when a frame did not fit in the queue: the client must reset.
    lagged: Arc<AtomicBool>,
}

/// A client's subscription to the frames about the workers it follows; unregistered when
/// dropped.
struct Route {
    hub: Arc<Hub>,
    id: u64,
    workers: Vec<WorkerId>,
    rx: mpsc::Receiver<Frame>,
    lagged: Arc<AtomicBool>,
}

impl Drop for Route {
    fn drop(&mut self) {
        let mut routes = self.hub.routes.write();
        for w in &self.workers {
            if let Some(entries) = routes.get_mut(w) {
                entries.retain(|e| e.id != self.id);
                if entries.is_empty() {
                    routes.remove(w);
                }
            }
        }
    }
}

/// Where a client's live frames come from.
enum Source {
    /// Every frame (the hub's channel); the client filters.
    All(broadcast::Receiver<Frame>),
    /// Only the frames about the workers it follows (and resets).
    Routed(Route),
}

impl Source {
    async fn recv(&mut self) -> Result<Frame, broadcast::error::RecvError> {
        match self {
            Self::All(rx) => rx.recv().await,
            Self::Routed(route) => {
                let frame = route.rx.recv().await;
                if route.lagged.load(Ordering::Acquire) {
                    return Err(broadcast::error::RecvError::Lagged(1));
                }
                frame.ok_or(broadcast::error::RecvError::Closed)
            }
        }
    }

    fn try_recv(&mut self) -> Result<Frame, broadcast::error::TryRecvError> {
        match self {
            Self::All(rx) => rx.try_recv(),
            Self::Routed(route) => {
                if route.lagged.load(Ordering::Acquire) {
                    return Err(broadcast::error::TryRecvError::Lagged(1));
                }
                route.rx.try_recv().map_err(|e| match e {
                    mpsc::error::TryRecvError::Empty => broadcast::error::TryRecvError::Empty,
                    mpsc::error::TryRecvError::Disconnected => {
                        broadcast::error::TryRecvError::Closed
                    }
                })
            }
        }
    }
}

impl Hub {
    /// A hub fed from `engine`'s bus by a task that ends when the hub is dropped or `stop` is
    /// cancelled. The task runs under the engine's supervisor (`sse_hub`, critical): if it
    /// panics it is restarted and clients are told to reset (they replay from the log). Must
    /// be called inside a tokio runtime.
    pub(crate) fn start(
        engine: &Engine,
        buffer: usize,
        max_clients: usize,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let (tx, _) = broadcast::channel(buffer);
        let hub = Arc::new(Self {
            tx,
            routes: parking_lot::RwLock::new(HashMap::new()),
            next_route: AtomicU64::new(0),
            buffer,
            clients: AtomicUsize::new(0),
            max_clients,
        });
        let weak = Arc::downgrade(&hub);
        let bus = engine.clone();
        // Subscribed now, so nothing published after `start` returns is missed.
        let first = parking_lot::Mutex::new(Some(engine.subscribe()));
        engine.spawn_supervised("sse_hub", Criticality::Critical, stop.clone(), move || {
            let rx = match first.lock().take() {
                Some(rx) => rx,
                None => {
                    // A restart: events published while the hub was down were missed,
                    // so clients reset and replay from the log.
                    if let Some(hub) = weak.upgrade() {
                        hub.send(Frame::Reset);
                    }
                    bus.subscribe()
                }
            };
            forward(rx, weak.clone(), stop.clone())
        });
        hub
    }

    /// Live SSE clients.
    pub(crate) fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Sends a frame to the clients that read every frame and to those following its
    /// worker (a reset to every client). A routed client whose queue is full is marked
    /// lagged: it resets, as a client of the channel does when it falls behind.
    fn send(&self, frame: Frame) {
        let routes = self.routes.read();
        let offer = |entries: &[RouteEntry]| {
            for e in entries {
                if e.tx.try_send(frame.clone()).is_err() {
                    e.lagged.store(true, Ordering::Release);
                }
            }
        };
        match &frame {
            Frame::Event {
                subject: Some(w), ..
            } => {
                if let Some(entries) = routes.get(w) {
                    offer(entries);
                }
            }
            Frame::Event { subject: None, .. } => {}
            Frame::Reset => {
                for entries in routes.values() {
                    offer(entries);
                }
            }
        }
        drop(routes);
        let _ = self.tx.send(frame);
    }

    /// Where a client with `filter` reads its live frames from, subscribed now.
    fn subscribe(self: &Arc<Self>, filter: &Filter) -> Source {
        let Some(workers) = &filter.workers else {
            return Source::All(self.tx.subscribe());
        };
        let (tx, rx) = mpsc::channel(self.buffer);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_route.fetch_add(1, Ordering::Relaxed);
        let workers: Vec<WorkerId> = workers.iter().copied().collect();
        {
            let mut routes = self.routes.write();
            for w in &workers {
                routes.entry(*w).or_default().push(RouteEntry {
                    id,
                    tx: tx.clone(),
                    lagged: lagged.clone(),
                });
            }
        }
        Source::Routed(Route {
            hub: self.clone(),
            id,
            workers,
            rx,
            lagged,
        })
    }
}

async fn forward(mut rx: broadcast::Receiver<BusEvent>, hub: Weak<Hub>, stop: CancellationToken) {
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.recv() => r,
        };
        let Some(hub) = hub.upgrade() else { return };
        match next {
            Ok(e) => hub.send(Frame::of(e.seq, &e.event)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "the SSE hub fell behind the event bus; clients will replay"
                );
                hub.send(Frame::Reset);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Counts a client while its stream lives.
struct ClientSlot(Arc<Hub>);

impl ClientSlot {
    fn acquire(hub: &Arc<Hub>) -> Option<Self> {
        let n = hub.clients.fetch_add(1, Ordering::AcqRel);
        if n >= hub.max_clients {
            hub.clients.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        metrics::gauge!(crate::metrics::SSE_CLIENTS).set((n + 1) as f64);
        Some(Self(hub.clone()))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let n = self
            .0
            .clients
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        metrics::gauge!(crate::metrics::SSE_CLIENTS).set(n as f64);
    }
}

/// A type filter: one exact type, or a prefix (`ccm.worker.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum TypePattern {
    Exact(&'static str),
    Prefix(String),
}

impl TypePattern {
    fn matches(&self, t: &str) -> bool {
        match self {
            Self::Exact(e) => *e == t,
            Self::Prefix(p) => t.starts_with(p.as_str()),
        }
    }
}

/// Which events a client wants.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    workers: Option<HashSet<WorkerId>>,
    types: Vec<TypePattern>,
}

impl Filter {
    /// Parses `worker` and `type` values, naming the bad one.
    pub(crate) fn parse(workers: &[String], types: &[String]) -> ApiResult<Self> {
        let workers = split_list(workers);
        let types = split_list(types);
        if workers.len() > 1000 || types.len() > 100 {
            return Err(ApiError::bad_request(None, "too many filter values"));
        }
        let ids = workers
            .iter()
            .map(|w| {
                w.parse::<WorkerId>()
                    .map_err(|e| ApiError::invalid("worker", format!("worker: {e}")))
            })
            .collect::<ApiResult<HashSet<_>>>()?;
        let mut patterns = Vec::new();
        for t in &types {
            let p = if t == "*" {
                TypePattern::Prefix(String::new())
            } else if let Some(prefix) = t.strip_suffix('*') {
                if !prefix.is_empty() && !prefix.ends_with('.') {
                    return Err(ApiError::invalid(
                        "type",
                        format!("type: {t:?}: a prefix must end with `.*`, such as ccm.worker.*"),
                    ));
                }
                TypePattern::Prefix(prefix.to_owned())
            } else {
                match EventKind::TYPES.iter().find(|x| **x == t.as_str()) {
                    Some(x) => TypePattern::Exact(x),
                    None => {
                        return Err(ApiError::invalid(
                            "type",
                            format!("type: {t:?} is not an event type of the catalogue"),
                        ));
                    }
                }
            };
            if !EventKind::TYPES.iter().any(|x| p.matches(x)) {
                return Err(ApiError::invalid(
                    "type",
                    format!("type: {t:?} matches no event type of the catalogue"),
                ));
            }
            patterns.push(p);
        }
        Ok(Self {
            workers: (!ids.is_empty()).then_some(ids),
            types: patterns,
        })
    }

    fn wants_type(&self, t: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|p| p.matches(t))
    }

    fn wants_subject(&self, subject: Option<WorkerId>) -> bool {
        match (&self.workers, subject) {
            (None, _) => true,
            (Some(set), Some(id)) => set.contains(&id),
            (Some(_), None) => false,
        }
    }

    fn matches(&self, t: &str, subject: Option<WorkerId>) -> bool {
        self.wants_type(t) && self.wants_subject(subject)
    }

    /// The exact stored types for a log query (empty: all).
    fn log_types(&self) -> Vec<String> {
        if self.types.is_empty() {
            return Vec::new();
        }
        EventKind::TYPES
            .iter()
            .filter(|t| self.wants_type(t))
            .map(|t| (*t).to_owned())
            .collect()
    }

    fn log_subjects(&self) -> Vec<String> {
        self.workers
            .as_ref()
            .map(|s| s.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }
}

/// Query parameters of the event stream.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events about these workers (repeat, or comma-separate).
    #[serde(default)]
    #[param(value_type = Vec<uuid::Uuid>)]
    pub worker: Vec<String>,
    /// Only these types; a prefix ends with `.*` (`ccm.worker.*`). Repeatable.
    #[serde(default, rename = "type")]
    #[param(rename = "type")]
    pub types: Vec<String>,
    /// Resume after this event id (instead of the `Last-Event-ID` header).
    #[serde(default)]
    pub last_event_id: Option<u64>,
    /// Send the `ccm.worker.snapshot` events on connect (default true).
    #[serde(default)]
    pub snapshot: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hello,
    Replay,
    Snapshot,
    Live,
    Done,
}

/// What ends a stream besides the client: its session's sign-out, its credential's expiry.
#[derive(Debug, Default)]
struct Ending {
    at: Option<tokio::time::Instant>,
    watch: Option<SessionWatch>,
}

impl Ending {
    /// Why the stream must end now, if it must.
    fn reason(&self) -> Option<&'static str> {
        if self.watch.as_ref().is_some_and(SessionWatch::is_signed_out) {
            Some("signed_out")
        } else if self.at.is_some_and(|at| at <= tokio::time::Instant::now()) {
            Some("expired")
        } else {
            None
        }
    }

    /// Resolves when the stream must end, with why.
    async fn wait(&self) -> &'static str {
        let signed_out = async {
            match &self.watch {
                Some(w) => w.signed_out().await,
                None => std::future::pending().await,
            }
        };
        let expired = async {
            match self.at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = signed_out => "signed_out",
            () = expired => "expired",
        }
    }
}

/// A frame of an event only this client gets (no log position).
fn private_frame(engine: &Engine, kind: EventKind) -> Bytes {
    format_event(None, &Event::new(API_SOURCE, None, kind, engine.now()))
}

/// One client's stream.
struct Conn {
    engine: Engine,
    rx: Source,
    filter: Filter,
    phase: Phase,
    ending: Ending,
    queue: VecDeque<Bytes>,
    last_seq: Option<u64>,
    cursor: u64,
    snapshot: bool,
    snapshot_offset: u32,
    heartbeat: tokio::time::Interval,
    stop: CancellationToken,
    _slot: ClientSlot,
}

impl Conn {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.phase != Phase::Done
                && let Some(reason) = self.ending.reason()
            {
                self.queue.clear();
                return Some(self.end(reason));
            }
            if let Some(b) = self.queue.pop_front() {
                return Some(b);
            }
            match self.phase {
                Phase::Hello => {
                    self.queue
                        .push_back(Bytes::from(format!("retry: {RETRY_MS}\n: connected\n\n")));
                    self.phase = match self.last_seq {
                        Some(last) => {
                            self.check_resumable(last).await;
                            Phase::Replay
                        }
                        None => Phase::Snapshot,
                    };
                }
                Phase::Replay => self.replay_page().await,
                Phase::Snapshot => self.snapshot_page().await,
                Phase::Live => return self.live().await,
                Phase::Done => return None,
            }
        }
    }

    /// The final frame: the credential ended.
    fn end(&mut self, reason: &'static str) -> Bytes {
        metrics::counter!(crate::metrics::SSE_DROPPED, "reason" => "session_ended").increment(1);
        tracing::debug!(reason, "an event stream ended with its session");
        self.phase = Phase::Done;
        private_frame(
            &self.engine,
            EventKind::SessionEnded {
                reason: reason.to_owned(),
            },
        )
    }

    /// A `Last-Event-ID` above the log's newest event cannot be resumed from: say so and
    /// replay from the oldest event kept.
    async fn check_resumable(&mut self, last: u64) {
        let newest = match self.engine.store().last_seq().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event log's head; resuming as asked");
                return;
            }
        };
        if last > newest {
            tracing::info!(
                last_event_id = last,
                newest,
                "a client resumes above the event log's head; replaying from the start"
            );
            metrics::counter!(crate::metrics::SSE_RESETS, "reason" => "last_event_id_ahead")
                .increment(1);
            self.queue.push_back(private_frame(
                &self.engine,
                EventKind::StreamReset {
                    reason: "last_event_id_ahead".to_owned(),
                    last_event_id: last,
                    newest_event_id: newest,
                },
            ));
            self.cursor = 0;
            self.last_seq = None;
        }
    }

    async fn replay_page(&mut self) {
        let q = EventQuery {
            after: Some(self.cursor),
            subjects: self.filter.log_subjects(),
            types: self.filter.log_types(),
            limit: REPLAY_PAGE,
            ..Default::default()
        };
        match self.engine.store().read(&q).await {
            Ok(page) => {
                let full = page.len() as u32 >= REPLAY_PAGE;
                for e in &page {
                    self.cursor = self.cursor.max(e.seq);
                    self.last_seq = Some(self.cursor);
                    self.queue.push_back(format_event(Some(e.seq), &e.event));
                }
                metrics::counter!(crate::metrics::SSE_REPLAYED).increment(page.len() as u64);
                if !full {
                    self.phase = Phase::Snapshot;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "event replay failed");
                self.queue
                    .push_back(reset_frame("replay_failed", self.last_seq));
                self.phase = Phase::Done;
            }
        }
    }

    async fn snapshot_page(&mut self) {
        if !self.snapshot || !self.filter.wants_type("ccm.worker.snapshot") {
            self.phase = Phase::Live;
            return;
        }
        let f = WorkerFilter {
            ids: self
                .filter
                .workers
                .as_ref()
                .map(|s| s.iter().copied().collect()),
            limit: SNAPSHOT_PAGE,
            offset: self.snapshot_offset,
            ..Default::default()
        };
        match self.engine.workers(&f).await {
            Ok(page) => {
                let now = self.engine.now();
                let ctx = ViewContext::new(&self.engine);
                for w in &page.items {
                    let view = WorkerView::in_context(w, &ctx);
                    let data = serde_json::to_value(&view).unwrap_or_default();
                    let event = Event::new(
                        API_SOURCE,
                        Some(w.id),
                        EventKind::WorkerSnapshot { worker: data },
                        now,
                    );
                    self.queue.push_back(format_event(None, &event));
                }
                self.snapshot_offset += page.items.len() as u32;
                if (page.items.len() as u32) < SNAPSHOT_PAGE {
                    self.phase = Phase::Live;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "snapshot failed");
                self.phase = Phase::Live;
            }
        }
    }

    /// The bytes of a live frame for this client, if it wants it (updates the position).
    fn accept(&mut self, frame: Frame) -> Result<Option<Bytes>, &'static str> {
        match frame {
            Frame::Event {
                seq,
                type_name,
                subject,
                bytes,
            } => {
                if let (Some(s), Some(last)) = (seq, self.last_seq)
                    && s <= last
                {
                    return Ok(None); // already replayed
                }
                if !self.filter.matches(type_name, subject) {
                    return Ok(None);
                }
                if seq.is_some() {
                    self.last_seq = seq;
                }
                Ok(Some(bytes))
            }
            Frame::Reset => Err("server_lagged"),
        }
    }

    async fn live(&mut self) -> Option<Bytes> {
        loop {
            let received = tokio::select! {
                biased;
                _ = self.stop.cancelled() => {
                    self.phase = Phase::Done;
                    return None;
                }
                reason = self.ending.wait() => return Some(self.end(reason)),
                r = self.rx.recv() => r,
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(b": heartbeat\n\n")),
            };
            let first = match received {
                Ok(frame) => match self.accept(frame) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => continue,
                    Err(reason) => return Some(self.reset(reason)),
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "a slow SSE client was dropped");
                    return Some(self.reset("lagged"));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.phase = Phase::Done;
                    return None;
                }
            };
            self.heartbeat.reset();
            // Frames already waiting go out in the same write (fewer syscalls under load).
            let mut batch: Option<bytes::BytesMut> = None;
            while batch.as_ref().map_or(first.len(), |b| b.len()) < COALESCE_BYTES {
                match self.rx.try_recv() {
                    Ok(frame) => match self.accept(frame) {
                        Ok(Some(bytes)) => batch
                            .get_or_insert_with(|| bytes::BytesMut::from(&first[..]))
                            .extend_from_slice(&bytes),
                        Ok(None) => {}
                        Err(reason) => {
                            let reset = self.reset(reason);
                            self.queue.push_back(reset);
                            break;
                        }
                    },
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        let reset = self.reset("lagged");
                        self.queue.push_back(reset);
                        break;
                    }
                    Err(broadcast::error::TryRecvError::Closed) => {
                        self.phase = Phase::Done;
                        break;
                    }
                    Err(broadcast::error::TryRecvError::Empty) => break,
                }
            }
            return Some(batch.map_or(first, bytes::BytesMut::freeze));
        }
    }

    fn reset(&mut self, reason: &'static str) -> Bytes {
        metrics::counter!(crate::metrics::SSE_DROPPED, "reason" => reason).increment(1);
        self.phase = Phase::Done;
        reset_frame(reason, self.last_seq)
    }
}

/// The `Last-Event-ID` of a request (header, else query), validated.
fn last_event_id(headers: &HeaderMap, query: Option<u64>) -> ApiResult<Option<u64>> {
    match headers.get("last-event-id") {
        Some(v) => {
            let text = v.to_str().unwrap_or("").trim();
            if text.is_empty() {
                return Ok(query);
            }
            text.parse::<u64>().map(Some).map_err(|_| {
                ApiError::bad_request(
                    Some("Last-Event-ID"),
                    "Last-Event-ID must be an event id (a non-negative integer)",
                )
            })
        }
        None => Ok(query),
    }
}

/// The live event stream.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `id:` the log position (absent for transient events), `event:` the CloudEvents type, `data:` the CloudEvent JSON (schema `CloudEvent` in the components: one `{Variant}Event` per type, its payload `{Variant}Data`). First `ccm.worker.snapshot` per visible worker, then live events. `event: reset` means: reconnect with Last-Event-ID. `ccm.stream.reset`: the Last-Event-ID was above the log's newest event, replaying from the oldest kept. `ccm.session.ended`: the session or token the stream was opened with ended; the stream closes.", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad Last-Event-ID or parameter", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown worker id shape or event type", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many clients", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn events(
    axum::extract::State(state): axum::extract::State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Response> {
    let filter = Filter::parse(&q.worker, &q.types)?;
    let last = last_event_id(&headers, q.last_event_id)?;
    let hub = state.hub();
    let slot = ClientSlot::acquire(hub).ok_or_else(|| {
        ApiError::unavailable(
            "too many event stream clients; try again later",
            Some(Duration::from_secs(10)),
        )
    })?;
    // Subscribe before reading the log: nothing published from now on can be missed.
    let rx = hub.subscribe(&filter);
    let period = state.config().sse_heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ending = match &caller.session {
        Some(info) => Ending {
            at: Some(info.expires()),
            watch: Some(state.auth().sessions.watch(info)),
        },
        None => Ending {
            at: caller.bearer_expires.map(|exp| {
                let left = (exp - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::time::Instant::now() + left
            }),
            watch: None,
        },
    };
    let conn = Conn {
        engine: state.engine().clone(),
        rx,
        filter,
        phase: Phase::Hello,
        ending,
        queue: VecDeque::new(),
        last_seq: last,
        cursor: last.unwrap_or(0),
        snapshot: q.snapshot.unwrap_or(true),
        snapshot_offset: 0,
        heartbeat,
        stop: state.stop_token(),
        _slot: slot,
    };
    let stream = futures::stream::unfold(conn, |mut c| async move {
        c.next().await.map(|b| (Ok::<_, Infallible>(b), c))
    });
    let mut res = Body::from_stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // The stream holds the connection for its whole life; once it ends (reset, shutdown)
    // the connection closes too, so a dropped client is really disconnected.
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_should_validate_types_and_ids() {
        let f = Filter::parse(
            &[],
            &["ccm.worker.*".into(), "ccm.licence.registered".into()],
        )
        .unwrap();
        assert!(f.wants_type("ccm.worker.state_changed"));
        assert!(f.wants_type("ccm.licence.registered"));
        assert!(!f.wants_type("ccm.licence.registration_failed"));
        assert!(f.log_types().contains(&"ccm.worker.created".to_owned()));
        for bad in ["ccm.nope", "ccm.nope.*", "ccm.work*"] {
            let e = Filter::parse(&[], &[bad.into()]).unwrap_err();
            assert_eq!(e.field(), Some("type"), "{bad}");
        }
        let e = Filter::parse(&["not-a-uuid".into()], &[]).unwrap_err();
        assert_eq!(e.field(), Some("worker"));
        let id = WorkerId::new();
        let f = Filter::parse(&[id.to_string()], &[]).unwrap();
        assert!(f.wants_subject(Some(id)));
        assert!(!f.wants_subject(Some(WorkerId::new())));
        assert!(!f.wants_subject(None));
    }

    #[test]
    fn frames_should_carry_id_type_and_one_data_line() {
        let e = Event::new(
            "/t",
            Some(WorkerId::new()),
            EventKind::LabsRefreshed {
                count: 1,
                added: 1,
                removed: 0,
            },
            chrono::Utc::now(),
        );
        let text = String::from_utf8(format_event(Some(42), &e).to_vec()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "id: 42");
        assert_eq!(lines[1], "event: ccm.labs.refreshed");
        assert!(lines[2].starts_with("data: {"));
        assert!(text.ends_with("\n\n"));
        let text = String::from_utf8(format_event(None, &e).to_vec()).unwrap();
        assert!(text.starts_with("event: "));
    }

    #[tokio::test]
    async fn a_client_following_a_worker_should_get_only_its_frames_and_reset_when_behind() {
        let (tx, _) = broadcast::channel(16);
        let hub = Arc::new(Hub {
            tx,
            routes: parking_lot::RwLock::new(HashMap::new()),
            next_route: AtomicU64::new(0),
            buffer: 16,
            clients: AtomicUsize::new(0),
            max_clients: 10,
        });
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let frame = |w: WorkerId| Frame::Event {
            seq: None,
            type_name: "ccm.worker.synced",
            subject: Some(w),
            bytes: Bytes::from_static(b"x"),
        };
        let mut src = hub.subscribe(&Filter::parse(&[a.to_string()], &[]).unwrap());
        let mut all = hub.subscribe(&Filter::default());
        hub.send(frame(b));
        hub.send(frame(a));
        assert!(matches!(src.try_recv(), Ok(Frame::Event { subject, .. }) if subject == Some(a)));
        assert!(matches!(
            src.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        // A client of the whole stream still gets both.
        assert!(matches!(all.try_recv(), Ok(Frame::Event { subject, .. }) if subject == Some(b)));
        assert!(matches!(all.try_recv(), Ok(Frame::Event { subject, .. }) if subject == Some(a)));
        // A reset reaches routed clients too.
        hub.send(Frame::Reset);
        assert!(matches!(src.try_recv(), Ok(Frame::Reset)));
        // One frame more than its queue holds: the client lags and must reset.
        for _ in 0..17 {
            hub.send(frame(a));
        }
        assert!(matches!(
            src.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        drop(src);
        assert!(
            hub.routes.read().is_empty(),
            "a closed stream leaves no route"
        );
    }

    #[test]
    fn last_event_id_should_be_a_number() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h, Some(3)).unwrap(), Some(3));
        h.insert("last-event-id", "17".parse().unwrap());
        assert_eq!(last_event_id(&h, None).unwrap(), Some(17));
        h.insert("last-event-id", "x".parse().unwrap());
        assert_eq!(last_event_id(&h, None).unwrap_err().status().as_u16(), 400);
    }
}
