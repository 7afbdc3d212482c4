// The live picture of the fleet: one EventSource on /api/v1/events feeds an in-memory map
// of worker views that every page reads.
//
// - The list is read once through the API (pages of 1000) after the stream is open, so
//   nothing that happens meanwhile is missed; the stream is asked for no snapshots (they
//   would send every worker a second time: ~3 KB each, 30 MB for 10,000 workers). After a
//   dropped connection the server replays the logged events since Last-Event-ID instead.
// - A view only replaces one with a lower or equal `version`; snapshots, when they come,
//   are applied the same way.
// - Cheap, frequent events (sync results, metrics) patch the view in place; the others make
//   the store re-read that worker (debounced, a few at a time).
// - The connection state (live / reconnecting / offline) is published for the indicator.
//   The browser reconnects by itself after a dropped stream, sending Last-Event-ID; when
//   the server refuses the stream (401, 503) the store retries with backoff and
//   `?last_event_id=`, so nothing logged is missed.

import { get, seg } from './api.js';

/** Every event type of the catalogue (ccm_domain::EventKind::TYPES; a test keeps them equal). */
export const EVENT_TYPES = [
  'ccm.worker.created', 'ccm.worker.imported', 'ccm.worker.provisioned',
  'ccm.worker.provisioning_failed', 'ccm.worker.state_changed', 'ccm.worker.invalid_transition',
  'ccm.worker.service_changed', 'ccm.worker.status_checks_changed',
  'ccm.worker.action_requested', 'ccm.worker.action_failed',
  'ccm.worker.paused', 'ccm.worker.resumed', 'ccm.worker.terminated', 'ccm.worker.deleted',
  'ccm.worker.tags_updated', 'ccm.worker.detailed_monitoring_enabled',
  'ccm.worker.idle_detection_changed', 'ccm.worker.refresh_requested',
  'ccm.worker.refresh_skipped', 'ccm.worker.idle_detected', 'ccm.worker.idle_warning',
  'ccm.worker.snoozed', 'ccm.worker.snooze_cleared', 'ccm.worker.synced',
  'ccm.worker.metrics_updated', 'ccm.worker.snapshot',
  'ccm.lab.action_completed', 'ccm.lab.action_failed', 'ccm.labs.refreshed',
  'ccm.licence.registration_requested', 'ccm.licence.registration_progress',
  'ccm.licence.registered', 'ccm.licence.registration_failed',
  'ccm.licence.deregistration_requested', 'ccm.licence.deregistered',
  'ccm.licence.deregistration_failed',
  'ccm.breaker.opened', 'ccm.breaker.half_open', 'ccm.breaker.closed',
  'ccm.retry_budget.exhausted', 'ccm.retry_budget.recovered', 'ccm.bulkhead.rejected',
  'ccm.job.started', 'ccm.job.completed', 'ccm.job.failed', 'ccm.import.completed',
  'ccm.settings.updated', 'ccm.session.ended', 'ccm.stream.reset',
];

/** Events that change nothing a worker view shows, or that are patched in place. */
const NO_REFETCH = new Set([
  'ccm.worker.snapshot', 'ccm.worker.synced', 'ccm.worker.metrics_updated',
  'ccm.worker.refresh_requested', 'ccm.worker.action_requested', 'ccm.worker.deleted',
  'ccm.licence.registration_progress', 'ccm.labs.refreshed',
]);

const REFETCH_DELAY_MS = 250;
const REFETCH_PARALLEL = 4;
const LIST_PAGE = 1000;
const LIST_MAX_PAGES = 20;

/** The store: worker views by id, plus load and connection state. */
export const fleet = {
  /** @type {Map<string, object>} */
  workers: new Map(),
  /** Whether the first full list has arrived. */
  loaded: false,
  /** The error of the first load, if it failed. */
  loadError: null,
  /** `connecting`, `live`, `reconnecting`, `offline`. */
  connection: 'offline',
  /** The id of the last logged event received. */
  lastEventId: null,
  /** When the last event (or heartbeat-free open) arrived. */
  lastEventAt: null,
};

const listeners = new Set();
let pendingIds = new Set();
let pendingEvents = [];
let flushTimer = null;

/**
 * Calls `fn({ ids, events, connection })` after changes, batched (every 100 ms; every second
 * above 1,000 workers):
 * `ids` the workers that changed, `events` the CloudEvents received, `connection` true when
 * the connection state changed. Returns the unsubscribe function.
 */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

let connectionChanged = false;

function schedule() {
  if (flushTimer !== null) return;
  // Large fleets send hundreds of sync results a second: redraw at most once a second then.
  const delay = fleet.workers.size > 1000 ? 1000 : 100;
  flushTimer = setTimeout(() => {
    flushTimer = null;
    const change = { ids: pendingIds, events: pendingEvents, connection: connectionChanged };
    pendingIds = new Set();
    pendingEvents = [];
    connectionChanged = false;
    for (const fn of [...listeners]) {
      try {
        fn(change);
      } catch (e) {
        console.error('a live-update listener failed', e);
      }
    }
  }, delay);
}

function changed(id) {
  pendingIds.add(id);
  schedule();
}

/** How long a connection may stay `reconnecting` before it is shown as `offline`. */
const OFFLINE_AFTER_MS = 10_000;
let offlineTimer = null;

function setConnection(state) {
  if (state === 'reconnecting' || state === 'connecting') {
    if (offlineTimer === null) {
      offlineTimer = setTimeout(() => {
        offlineTimer = null;
        if (fleet.connection !== 'live') setConnection('offline');
      }, OFFLINE_AFTER_MS);
    }
  } else {
    clearTimeout(offlineTimer);
    offlineTimer = null;
  }
  if (fleet.connection === state) return;
  fleet.connection = state;
  connectionChanged = true;
  schedule();
}

/** Stores a full worker view unless a newer one is already known. */
export function applyView(view) {
  if (!view || !view.id) return;
  const cur = fleet.workers.get(view.id);
  if (cur && cur.version > view.version) return;
  fleet.workers.set(view.id, view);
  changed(view.id);
}

function patchView(id, fn) {
  const w = fleet.workers.get(id);
  if (!w) return;
  fn(w);
  changed(id);
}

function removeView(id) {
  if (fleet.workers.delete(id)) changed(id);
}

// === re-reading single workers ===

const refetchDue = new Map();
const refetchQueue = [];
let refetchRunning = 0;

/** Re-reads one worker soon (coalesced per worker). */
export function refetch(id) {
  if (!id || refetchDue.has(id)) return;
  refetchDue.set(id, setTimeout(() => {
    refetchDue.delete(id);
    refetchQueue.push(id);
    pump();
  }, REFETCH_DELAY_MS));
}

function pump() {
  while (refetchRunning < REFETCH_PARALLEL && refetchQueue.length) {
    const id = refetchQueue.shift();
    refetchRunning++;
    const gen = generation;
    get(`/api/v1/workers/${seg(id)}`)
      .then((w) => {
        if (gen === generation) applyView(w);
      })
      .catch((e) => {
        if (e.status === 404) removeView(id);
      })
      .finally(() => {
        refetchRunning--;
        pump();
      });
  }
}

// === the first load ===

/** Reads the whole list (pages of 1000) so that an empty or quiet fleet still loads. */
let loadingFleet = false;
/** Bumped at sign-out: answers of an older session are dropped. */
let generation = 0;

export async function loadFleet() {
  if (loadingFleet) return;
  loadingFleet = true;
  const gen = generation;
  try {
    const seen = new Set();
    let total = 0;
    for (let page = 0; page < LIST_MAX_PAGES; page++) {
      const res = await get(`/api/v1/workers?limit=${LIST_PAGE}&offset=${page * LIST_PAGE}`);
      if (gen !== generation) return;
      for (const w of res.items) {
        seen.add(w.id);
        applyView(w);
      }
      total = res.total;
      if (res.items.length < LIST_PAGE || seen.size >= total) break;
    }
    // Workers that were deleted while this page was not looking.
    for (const id of [...fleet.workers.keys()]) {
      if (!seen.has(id) && seen.size >= total) removeView(id);
    }
    fleet.loaded = true;
    fleet.loadError = null;
  } catch (e) {
    fleet.loadError = e;
    if (fleet.workers.size) fleet.loaded = true;
  } finally {
    loadingFleet = false;
  }
  connectionChanged = true;
  schedule();
}

// === the event stream ===

let source = null;
let retryTimer = null;
let failures = 0;
let onSignedOut = () => {};
let sessionCheck = async () => true;

function onEvent(message) {
  let ev;
  try {
    ev = JSON.parse(message.data);
  } catch {
    return;
  }
  if (message.lastEventId) fleet.lastEventId = message.lastEventId;
  fleet.lastEventAt = Date.now();
  const id = ev.subject || null;
  const d = ev.data || {};
  switch (ev.type) {
    case 'ccm.worker.snapshot':
      applyView(d.worker);
      break;
    case 'ccm.worker.state_changed':
      patchView(id, (w) => {
        w.ec2_state = d.to;
      });
      break;
    case 'ccm.worker.service_changed':
      patchView(id, (w) => {
        w.service = { ...w.service, status: d.to, reasons: d.reasons || [], checked_at: ev.time };
      });
      break;
    case 'ccm.worker.status_checks_changed':
      patchView(id, (w) => {
        const s = w.sources?.ec2_status;
        if (s) s.value = { system: d.system, instance: d.instance, impaired: d.system === 'impaired' || d.instance === 'impaired' };
      });
      break;
    case 'ccm.worker.synced':
      patchView(id, (w) => {
        w.service = { ...w.service, status: d.service, checked_at: ev.time };
        const stats = w.sources?.stats?.value;
        if (stats) {
          if (d.cpu_percent != null) stats.cpu_percent = d.cpu_percent;
          if (d.memory_percent != null) stats.memory_percent = d.memory_percent;
          if (d.running_nodes != null) stats.running_nodes = d.running_nodes;
        }
        const info = w.sources?.system_information?.value;
        if (info && d.version) info.version = d.version;
      });
      break;
    case 'ccm.worker.metrics_updated':
      patchView(id, (w) => {
        const cw = w.sources?.cloudwatch;
        if (cw) {
          cw.value = { ...(cw.value || {}), cpu_percent: d.cpu_percent ?? null, memory_percent: d.memory_percent ?? null };
        }
      });
      break;
    case 'ccm.worker.deleted':
      removeView(id);
      break;
    case 'ccm.session.ended':
      // The session this stream was opened with ended (signed out elsewhere, expired).
      if (source) source.close();
      source = null;
      onSignedOut();
      return;
    case 'ccm.stream.reset':
      // The resume position was above the server's newest event (a recreated database):
      // what follows is replayed from the start, and the list is read again.
      loadFleet();
      break;
    default:
      break;
  }
  if (id && /^[0-9a-f-]{36}$/i.test(id) && !NO_REFETCH.has(ev.type)) refetch(id);
  pendingEvents.push(ev);
  schedule();
}

function streamUrl() {
  const resume = fleet.lastEventId ? `&last_event_id=${encodeURIComponent(fleet.lastEventId)}` : '';
  return `/api/v1/events?snapshot=false${resume}`;
}

/** Opens the event stream (again). */
export function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (source) source.close();
  if (!failures) setConnection('connecting');
  else if (fleet.connection !== 'offline') setConnection('reconnecting');
  const es = new EventSource(streamUrl(), { withCredentials: true });
  source = es;
  es.onopen = () => {
    failures = 0;
    setConnection('live');
    // Without a position to resume from, nothing was replayed: read the list.
    if (!fleet.loaded || !fleet.lastEventId) loadFleet();
  };
  es.onerror = () => {
    if (source !== es) return;
    if (es.readyState === EventSource.CONNECTING) {
      // The browser retries by itself, sending Last-Event-ID.
      if (fleet.connection !== 'offline') setConnection('reconnecting');
      return;
    }
    // The server refused the stream: retry with backoff, after checking the session.
    es.close();
    source = null;
    failures++;
    if (failures >= 3 || !navigator.onLine) setConnection('offline');
    else if (fleet.connection !== 'offline') setConnection('reconnecting');
    const delay = Math.min(30_000, 1000 * 2 ** Math.min(failures - 1, 5));
    retryTimer = setTimeout(async () => {
      retryTimer = null;
      let alive = true;
      try {
        alive = await sessionCheck();
      } catch {
        alive = true; // unreachable: keep trying
      }
      if (!alive) {
        onSignedOut();
        return;
      }
      connect();
    }, delay * (0.75 + Math.random() / 2));
  };
  es.addEventListener('reset', (m) => {
    setConnection('reconnecting');
    // The server could not replay: the list must be read again after reconnecting.
    try {
      if (JSON.parse(m.data).reason === 'replay_failed') fleet.lastEventId = null;
    } catch {
      // not JSON: keep the position
    }
  });
  for (const type of EVENT_TYPES) es.addEventListener(type, onEvent);
}

/** Starts the live store: the first load and the stream. */
export function start({ checkSession, signedOut }) {
  sessionCheck = checkSession;
  onSignedOut = signedOut;
  connect();
  // Should the stream not open (too many clients, a proxy), the list still loads.
  setTimeout(() => {
    if (!fleet.loaded) loadFleet();
  }, 3000);
  window.addEventListener('online', onOnline);
  window.addEventListener('offline', onOffline);
}

function onOnline() {
  if (!source || source.readyState === EventSource.CLOSED) {
    failures = Math.max(failures, 1);
    connect();
  }
}

function onOffline() {
  setConnection('offline');
}

/** Closes the stream and forgets everything (sign-out). */
export function stop() {
  generation++;
  clearTimeout(retryTimer);
  retryTimer = null;
  if (source) source.close();
  source = null;
  failures = 0;
  fleet.workers.clear();
  fleet.loaded = false;
  fleet.lastEventId = null;
  window.removeEventListener('online', onOnline);
  window.removeEventListener('offline', onOffline);
  setConnection('offline');
}
