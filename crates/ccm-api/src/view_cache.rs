//! [`ViewCache`]: rendered worker views (their JSON bytes), reused while nothing they were
//! rendered from has changed — so that a list page or a detail under load costs a lookup
//! and a copy instead of decoding the stored document, building the view and serializing it.
//!
//! A worker's view is a function of its stored document, of the [`RenderFrame`] (the
//! answer's whole second, the runtime settings' version, the fleet picture) and of its CML
//! endpoint's breaker. An entry keeps the document's `version` and the frame and breaker it
//! was rendered with, and is used only when all three are equal to the answer's:
//!
//! - a **list page** asks the store for the page's ids and committed versions
//!   ([`ccm_store::WorkerRepo::list_stamps`]: one query, no documents), takes the cached
//!   bytes of every worker whose entry has that version, and reads only the other documents;
//! - a **detail** reads the document (one primary-key read) and reuses the rendered bytes of
//!   that version.
//!
//! So an answer is never older than the store's last commit, on any replica: a worker
//! changed by anyone (this process, another replica, a write behind ccm's back) has a new
//! version, and its entry no longer matches. The cache holds at most `capacity` workers
//! (least recently used evicted; each entry is one view, ~3–4 KB, two while one is prepared)
//! and is filled on read.
//!
//! **Prepared for the next second.** Every view depends on the second it is rendered in
//! (ages, idle countdowns), so at the turn of each second every kept view stops matching,
//! and the first answers of the new second would all render at once (under load, the slowest
//! answers of the API were exactly those). Workers read by at least two answers in each of two
//! seconds in a row are *hot*; shortly before the second ends, [`ViewCache::prepare_next_second`] reads their
//! documents and renders them for the next second, kept beside the current view. An answer
//! in the next second uses the prepared bytes only under the same rules (the version the
//! store has then, that frame, the breaker as it is then), so nothing older is ever served;
//! a prepared view that no longer matches is simply not used.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ccm_domain::{Worker, WorkerId};
use ccm_engine::Engine;
use ccm_store::WorkerStamp;
use chrono::{DateTime, TimeZone as _, Utc};
use hashlink::LruCache;
use parking_lot::Mutex;

use axum::http::StatusCode;

use crate::dto::{BreakerView, RenderFrame, ViewContext, WorkerView};
use crate::error::ApiError;

/// How long before the end of a second the hot views are prepared for the next one.
pub(crate) const PREPARE_LEAD: Duration = Duration::from_millis(250);

/// Documents read per store call while preparing.
const PREPARE_CHUNK: usize = 256;

/// One rendered view and what it was rendered from.
struct Render {
    version: u64,
    frame: RenderFrame,
    endpoint: Option<Arc<str>>,
    breaker: Option<BreakerView>,
    bytes: Bytes,
}

impl Render {
    fn matches(&self, version: u64, frame: &RenderFrame) -> bool {
        self.version == version && self.frame == *frame
    }
}

/// A worker's kept view, the one prepared for the next second, and how often it was read in
/// the current second.
struct Entry {
    current: Render,
    next: Option<Render>,
    reads: Reads,
}

/// Answers that read a worker's view in one second.
#[derive(Debug, Clone, Copy, Default)]
struct Reads {
    /// A frame's second.
    second: i64,
    count: u32,
    /// The last second in which the worker was read at least twice.
    hot_second: Option<i64>,
}

impl Reads {
    /// Counts a read in `second`; true when this read makes the worker hot: its second read
    /// in `second` (once per second) when it was also read twice in the second before. A
    /// worker that only passes through a page (one sorted by update time, where every save
    /// moves a worker to the top) is not worth rendering ahead; one that stays on a page
    /// several clients follow is.
    fn read_in(&mut self, second: i64) -> bool {
        if self.second == second {
            self.count = self.count.saturating_add(1);
        } else {
            self.second = second;
            self.count = 1;
        }
        if self.count != 2 {
            return false;
        }
        let sustained = self.hot_second == Some(second.saturating_sub(1));
        self.hot_second = Some(second);
        sustained
    }
}

/// The workers read at least twice in `second`, in the order they became hot.
#[derive(Default)]
struct Hot {
    second: i64,
    ids: Vec<WorkerId>,
}

/// Counts of what the cache did, for tests and the benchmark's report (the Prometheus
/// counter [`crate::metrics::VIEW_CACHE`] has the same outcomes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ViewCacheStats {
    /// Answers that used a kept view rendered in their own second.
    pub hits: u64,
    /// Answers that used a view prepared for their second before it began.
    pub prepared_hits: u64,
    /// Views rendered while answering (not kept, or kept for another version or frame).
    pub misses: u64,
    /// Views rendered ahead for a next second.
    pub prepared: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    prepared_hits: AtomicU64,
    misses: AtomicU64,
    prepared: AtomicU64,
}

/// Rendered worker views by worker (see the module docs). Shared by every request.
pub(crate) struct ViewCache {
    entries: Option<Mutex<LruCache<WorkerId, Entry>>>,
    hot: Mutex<Hot>,
    /// Most workers prepared per second (0: none).
    prepare_max: usize,
    counters: Counters,
}

impl std::fmt::Debug for ViewCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewCache")
            .field(
                "capacity",
                &self.entries.as_ref().map(|e| e.lock().capacity()),
            )
            .field("prepare_max", &self.prepare_max)
            .finish()
    }
}

/// The breaker of `endpoint` as a view, read now.
fn breaker_at(ctx: &ViewContext<'_>, endpoint: Option<&str>) -> Option<BreakerView> {
    endpoint
        .and_then(|e| ctx.engine().breaker_at(e))
        .as_ref()
        .map(BreakerView::from)
}

/// How long from `now` until `lead` before the end of its second (or of the next second, when
/// that moment has passed).
pub(crate) fn until_prepare(now: DateTime<Utc>, lead: Duration) -> Duration {
    let into = Duration::from_nanos(u64::from(now.timestamp_subsec_nanos()));
    let at = Duration::from_secs(1).saturating_sub(lead);
    if into < at {
        at - into
    } else {
        at + Duration::from_secs(1) - into
    }
}

impl ViewCache {
    /// A cache of at most `capacity` workers' views (0: none kept, every view rendered),
    /// preparing at most `prepare_max` hot workers' views for each next second (0: none).
    pub(crate) fn new(capacity: usize, prepare_max: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| Mutex::new(LruCache::new(capacity))),
            hot: Mutex::new(Hot::default()),
            prepare_max: if capacity > 0 { prepare_max } else { 0 },
            counters: Counters::default(),
        }
    }

    /// Whether views are prepared ahead at all.
    pub(crate) fn prepares(&self) -> bool {
        self.prepare_max > 0
    }

    /// What the cache has done so far.
    pub(crate) fn stats(&self) -> ViewCacheStats {
        let c = &self.counters;
        ViewCacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            prepared_hits: c.prepared_hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            prepared: c.prepared.load(Ordering::Relaxed),
        }
    }

    /// Notes that `id` became hot in `second`.
    fn mark_hot(&self, id: WorkerId, second: i64) {
        if self.prepare_max == 0 {
            return;
        }
        let mut hot = self.hot.lock();
        if hot.second != second {
            hot.second = second;
            hot.ids.clear();
        }
        if hot.ids.len() < self.prepare_max {
            hot.ids.push(id);
        }
    }

    /// The cached bytes of the worker `stamp` names, if they were rendered (or prepared) from
    /// that version in `ctx`'s frame with the breaker its endpoint has now.
    pub(crate) fn get(&self, stamp: &WorkerStamp, ctx: &ViewContext<'_>) -> Option<Bytes> {
        let entries = self.entries.as_ref()?;
        let second = ctx.frame().second();
        let (endpoint, breaker, bytes, prepared, hot) = {
            let mut entries = entries.lock();
            let e = entries.get_mut(&stamp.id)?;
            let mut prepared = false;
            if !e.current.matches(stamp.version, ctx.frame()) {
                if !e
                    .next
                    .as_ref()
                    .is_some_and(|n| n.matches(stamp.version, ctx.frame()))
                {
                    return None;
                }
                if let Some(next) = e.next.take() {
                    e.current = next;
                    prepared = true;
                }
            }
            let hot = e.reads.read_in(second);
            let r = &e.current;
            (
                r.endpoint.clone(),
                r.breaker.clone(),
                r.bytes.clone(),
                prepared,
                hot,
            )
        };
        if hot {
            self.mark_hot(stamp.id, second);
        }
        if breaker_at(ctx, endpoint.as_deref()) != breaker {
            return None;
        }
        let counter = if prepared {
            &self.counters.prepared_hits
        } else {
            &self.counters.hits
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Some(bytes)
    }

    /// The view of `w` in `ctx` as JSON bytes: the cached ones when they match (see
    /// [`Self::get`]), else rendered now and kept.
    pub(crate) fn view(&self, w: &Worker, ctx: &ViewContext<'_>) -> Result<Bytes, ApiError> {
        let stamp = WorkerStamp {
            id: w.id,
            version: w.version,
        };
        if let Some(bytes) = self.get(&stamp, ctx) {
            metrics::counter!(crate::metrics::VIEW_CACHE, "outcome" => "hit").increment(1);
            return Ok(bytes);
        }
        let render = render_in(w, ctx)?;
        let bytes = render.bytes.clone();
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        if let Some(entries) = &self.entries {
            metrics::counter!(crate::metrics::VIEW_CACHE, "outcome" => "miss").increment(1);
            let second = ctx.frame().second();
            let hot = {
                let mut entries = entries.lock();
                match entries.get_mut(&w.id) {
                    // An answer begun in an earlier second (still rendering after the turn)
                    // never replaces the view of a later one: that view is the one the
                    // answers of the new second need.
                    Some(e) if e.current.frame.second() > second => false,
                    Some(e) => {
                        // Reads of this worker earlier in the second still count.
                        e.current = render;
                        e.next = None;
                        e.reads.read_in(second)
                    }
                    None => {
                        let mut reads = Reads::default();
                        let hot = reads.read_in(second);
                        entries.insert(
                            w.id,
                            Entry {
                                current: render,
                                next: None,
                                reads,
                            },
                        );
                        hot
                    }
                }
            };
            if hot {
                self.mark_hot(w.id, second);
            }
        }
        Ok(bytes)
    }

    /// Renders the views of the workers that are hot now for the next second, from their
    /// documents as the store has them now (see the module docs); returns how many were
    /// prepared. Workers no longer kept, or gone, are skipped.
    pub(crate) async fn prepare_next_second(&self, engine: &Engine) -> Result<usize, ApiError> {
        let Some(entries) = &self.entries else {
            return Ok(0);
        };
        if self.prepare_max == 0 {
            return Ok(0);
        }
        let now = engine.now();
        let ids = {
            let hot = self.hot.lock();
            if hot.second != now.timestamp() {
                return Ok(0);
            }
            hot.ids.clone()
        };
        let Some(next) = Utc
            .timestamp_opt(now.timestamp().saturating_add(1), 0)
            .single()
        else {
            return Ok(0);
        };
        let ctx = ViewContext::at(engine, next);
        let mut prepared = 0;
        for chunk in ids.chunks(PREPARE_CHUNK) {
            let docs = engine.workers_by_id(chunk).await?;
            for w in &docs {
                let render = render_in(w, &ctx)?;
                if let Some(e) = entries.lock().peek_mut(&w.id) {
                    e.next = Some(render);
                    prepared += 1;
                }
            }
        }
        self.counters
            .prepared
            .fetch_add(prepared as u64, Ordering::Relaxed);
        metrics::counter!(crate::metrics::VIEW_CACHE, "outcome" => "prepared")
            .increment(prepared as u64);
        Ok(prepared)
    }
}

/// `w`'s view in `ctx` with its endpoint's breaker as read now, and what it was rendered from.
fn render_in(w: &Worker, ctx: &ViewContext<'_>) -> Result<Render, ApiError> {
    let breaker = breaker_at(ctx, w.endpoint.as_deref());
    let bytes = render(&WorkerView::with_breaker(w, ctx, breaker.clone()))?;
    Ok(Render {
        version: w.version,
        frame: ctx.frame().clone(),
        endpoint: w.endpoint.as_deref().map(Arc::from),
        breaker,
        bytes,
    })
}

/// A view's JSON. (A view is strings, numbers and maps with string keys: it serializes; the
/// error is what `axum::Json` would answer.)
fn render(view: &WorkerView) -> Result<Bytes, ApiError> {
    serde_json::to_vec(view).map(Bytes::from).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the worker view could not be serialized: {e}"),
        )
    })
}

/// The JSON of a [`crate::dto::WorkerPage`] made of already rendered views: the bytes
/// `serde_json` writes for the same page (a test compares them).
pub(crate) fn page_json(items: &[Bytes], total: u64, limit: u32, offset: u32) -> Vec<u8> {
    let size: usize = items.iter().map(|b| b.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 64);
    out.extend_from_slice(b"{\"items\":[");
    for (i, b) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b);
    }
    out.extend_from_slice(
        format!("],\"total\":{total},\"limit\":{limit},\"offset\":{offset}}}").as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, millis: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, millis * 1_000_000)
            .single()
            .unwrap()
    }

    #[test]
    fn the_preparer_should_wake_the_lead_before_each_second_ends() {
        let lead = Duration::from_millis(250);
        assert_eq!(until_prepare(at(10, 0), lead), Duration::from_millis(750));
        assert_eq!(until_prepare(at(10, 700), lead), Duration::from_millis(50));
        // At or past the moment: the next second's.
        assert_eq!(
            until_prepare(at(10, 750), lead),
            Duration::from_millis(1000)
        );
        assert_eq!(until_prepare(at(10, 900), lead), Duration::from_millis(850));
    }

    #[test]
    fn a_worker_should_become_hot_when_read_twice_in_two_seconds_in_a_row() {
        let mut reads = Reads::default();
        assert!(!reads.read_in(5));
        assert!(!reads.read_in(5), "read twice in 5, but not in 4");
        assert!(!reads.read_in(5), "once per second");
        assert!(!reads.read_in(6));
        assert!(reads.read_in(6), "twice in 5 and twice in 6");
        assert!(!reads.read_in(6), "once per second");
        assert!(!reads.read_in(8));
        assert!(!reads.read_in(8), "a gap (7) starts over");
        assert!(!reads.read_in(9));
        assert!(reads.read_in(9));
    }
}
