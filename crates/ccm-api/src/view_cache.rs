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
//! (least recently used evicted; each entry is one view, ~3–4 KB) and is filled on read.

use std::sync::Arc;

use bytes::Bytes;
use ccm_domain::{Worker, WorkerId};
use ccm_store::WorkerStamp;
use hashlink::LruCache;
use parking_lot::Mutex;

use axum::http::StatusCode;

use crate::dto::{BreakerView, RenderFrame, ViewContext, WorkerView};
use crate::error::ApiError;

/// One rendered view and what it was rendered from.
struct Entry {
    version: u64,
    frame: RenderFrame,
    endpoint: Option<Arc<str>>,
    breaker: Option<BreakerView>,
    bytes: Bytes,
}

/// Rendered worker views by worker (see the module docs). Shared by every request.
pub(crate) struct ViewCache {
    entries: Option<Mutex<LruCache<WorkerId, Entry>>>,
}

impl std::fmt::Debug for ViewCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewCache")
            .field(
                "capacity",
                &self.entries.as_ref().map(|e| e.lock().capacity()),
            )
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

impl ViewCache {
    /// A cache of at most `capacity` workers' views (0: none kept, every view rendered).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| Mutex::new(LruCache::new(capacity))),
        }
    }

    /// The cached bytes of the worker `stamp` names, if they were rendered from that version
    /// in `ctx`'s frame with the breaker its endpoint has now.
    pub(crate) fn get(&self, stamp: &WorkerStamp, ctx: &ViewContext<'_>) -> Option<Bytes> {
        let entries = self.entries.as_ref()?;
        let (endpoint, breaker, bytes) = {
            let mut entries = entries.lock();
            let e = entries.get(&stamp.id)?;
            if e.version != stamp.version || e.frame != *ctx.frame() {
                return None;
            }
            (e.endpoint.clone(), e.breaker.clone(), e.bytes.clone())
        };
        (breaker_at(ctx, endpoint.as_deref()) == breaker).then_some(bytes)
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
        let breaker = breaker_at(ctx, w.endpoint.as_deref());
        let bytes = render(&WorkerView::with_breaker(w, ctx, breaker.clone()))?;
        if let Some(entries) = &self.entries {
            metrics::counter!(crate::metrics::VIEW_CACHE, "outcome" => "miss").increment(1);
            entries.lock().insert(
                w.id,
                Entry {
                    version: w.version,
                    frame: ctx.frame().clone(),
                    endpoint: w.endpoint.as_deref().map(Arc::from),
                    breaker,
                    bytes: bytes.clone(),
                },
            );
        }
        Ok(bytes)
    }
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
