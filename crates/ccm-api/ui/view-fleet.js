// The fleet: counts by status, filters (region, EC2 state, service status), text search, a
// table or cards. Filters live in the URL (`#/?state=running&q=lab`), so a filtered view can
// be bookmarked and survives a reload.
//
// Filters, search, sort and paging are done by the API (`GET /api/v1/workers`, pages of 100,
// "show more" up to 1,000 rows) and the counts come from `/api/v1/system/counts`, so a fleet
// of 5,000 or 10,000 workers shows its first rows as fast as one of ten. The rows shown are
// kept current by the live store (views patched in place); events that can change which
// workers match or their order re-read the page (at most once a second).

import { h, render, replaceChildren, fmtAgo, fmtPct, fmtNum, focusHeading, loading, errorBox } from './dom.js';
import { get, put, seg } from './api.js';
import { fleet, subscribe, applyView } from './live.js';
import { EC2_STATES, SERVICE_STATES, ec2Badge, serviceBadge, breakerBadge, badge } from './badges.js';
import { permitted } from './forms.js';
import { notify, notifyError } from './dialog.js';

// A worker about to be paused (idle or off-hours): a badge, and a one-click keep-awake.
function pauseSoon(w) {
  const idle = w.monitoring?.idle;
  if (!idle?.warning || w.ec2_state !== 'running') return null;
  return h('span', { class: 'pause-soon' },
    badge('pause soon', 'warn', { title: `Will be paused at ${new Date(idle.pause_at).toLocaleTimeString()} unless used or kept awake` }),
    h('button', { type: 'button', class: 'btn btn-small', dataset: { action: 'snooze', workerId: w.id } }, 'Keep awake 1 h'));
}

const PAGE = 100;
const MAX_ROWS = 1000;
/** Events after which the page is read again: they can change which workers match, or their order. */
const RELIST = new Set([
  'ccm.worker.created', 'ccm.worker.imported', 'ccm.worker.deleted', 'ccm.worker.state_changed',
  'ccm.worker.service_changed', 'ccm.worker.provisioned', 'ccm.worker.provisioning_failed',
  'ccm.worker.terminated', 'ccm.worker.tags_updated', 'ccm.import.completed', 'ccm.stream.reset',
]);
/** Sort keys the API knows (`sort=`); the rest sort the shown rows only. */
const API_SORTS = new Set(['name', 'state', 'service', 'region', 'updated']);
const VIEW_KEY = 'ccm.fleet.view';
const SORTS = {
  name: (a, b) => collator.compare(a.name, b.name),
  state: (a, b) => order(EC2_STATES, a.ec2_state) - order(EC2_STATES, b.ec2_state),
  service: (a, b) => order(SERVICE_STATES, a.service?.status) - order(SERVICE_STATES, b.service?.status),
  region: (a, b) => collator.compare(a.region, b.region),
  cpu: (a, b) => (cpuOf(a) ?? -1) - (cpuOf(b) ?? -1),
  updated: (a, b) => Date.parse(a.updated_at) - Date.parse(b.updated_at),
};
const collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });

function order(list, key) {
  const i = list.findIndex(([k]) => k === key);
  return i < 0 ? list.length : i;
}

/** The CPU figure to show: CML's own when known, else CloudWatch's. */
export function cpuOf(w) {
  const cml = w.sources?.stats;
  if (cml?.value && cml.freshness !== 'unknown') return cml.value.cpu_percent;
  const cw = w.sources?.cloudwatch;
  if (cw?.value && cw.freshness !== 'unknown') return cw.value.cpu_percent ?? null;
  return null;
}

/** The worst freshness among a running worker's CML sources. */
export function staleness(w) {
  if (w.ec2_state !== 'running') return null;
  const s = w.sources || {};
  const list = [s.system_information, s.health, s.stats].filter(Boolean);
  const stale = list.filter((x) => x.freshness === 'stale');
  if (stale.length) return { freshness: 'stale', age: Math.max(...stale.map((x) => x.age_seconds || 0)) };
  if (list.some((x) => x.freshness === 'unknown')) return { freshness: 'unknown' };
  return { freshness: 'fresh' };
}

function cpuCell(w) {
  const v = cpuOf(w);
  if (v === null || v === undefined) return h('span', { class: 'muted' }, '—');
  const pct = Math.max(0, Math.min(100, v));
  const tone = pct >= 90 ? 'bad' : pct >= 70 ? 'warn' : 'ok';
  return h('span', { class: 'meter-cell' },
    h('span', { class: ['meter', `meter-${tone}`], 'aria-hidden': 'true' }, h('span', { class: 'meter-fill', dataset: { pct: Math.round(pct) } })),
    h('span', { class: 'meter-text' }, fmtPct(v)));
}

function freshnessCell(w) {
  const s = staleness(w);
  if (!s) return h('span', { class: 'muted' }, '—');
  if (s.freshness === 'stale') return badge(`stale · ${fmtAgo(new Date(Date.now() - s.age * 1000).toISOString()).replace(' ago', '')}`, 'warn', { 'data-freshness': 'stale' });
  if (s.freshness === 'unknown') return badge('no data', 'muted', { 'data-freshness': 'unknown' });
  return badge('fresh', 'ok', { 'data-freshness': 'fresh' });
}

function sortHeader(label, key, f, cls) {
  const active = f.sort === key;
  const dir = active ? (f.order === 'desc' ? 'descending' : 'ascending') : null;
  return h('th', { scope: 'col', 'aria-sort': dir || 'none', class: cls },
    h('button', { type: 'button', class: 'th-sort', dataset: { sort: key } }, label,
      h('span', { class: 'sort-mark', 'aria-hidden': 'true' }, active ? (f.order === 'desc' ? '▼' : '▲') : '↕')));
}

function table(rows, f) {
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'table fleet-table', id: 'fleet-table' },
      h('caption', { class: 'sr-only' }, 'Workers, with their EC2 state, CML service status and load'),
      h('thead', null, h('tr', null,
        sortHeader('Name', 'name', f),
        sortHeader('EC2 state', 'state', f),
        sortHeader('Service', 'service', f),
        sortHeader('Region', 'region', f, 'hide-sm nowrap'),
        h('th', { scope: 'col', class: 'hide-md' }, 'Type'),
        h('th', { scope: 'col', class: 'hide-md' }, 'CML'),
        sortHeader('CPU', 'cpu', f),
        h('th', { scope: 'col', class: 'hide-sm num' }, 'Labs'),
        h('th', { scope: 'col', class: 'hide-md' }, 'Breaker'),
        h('th', { scope: 'col', class: 'hide-sm' }, 'Data'))),
      h('tbody', null, rows.map((w) => h('tr', { 'data-key': w.id, dataset: { workerId: w.id, state: w.ec2_state } },
        h('th', { scope: 'row', class: 'cell-name' },
          h('a', { href: `#/workers/${w.id}`, class: 'worker-link' }, w.name),
          h('span', { class: 'sub' }, w.instance_id || 'no instance'),
          pauseSoon(w)),
        h('td', { dataset: { col: 'state' } }, ec2Badge(w.ec2_state)),
        h('td', { dataset: { col: 'service' } }, serviceBadge(w.service?.status)),
        h('td', { class: 'hide-sm nowrap' }, w.region),
        h('td', { class: 'hide-md mono' }, w.instance_type || '—'),
        h('td', { class: 'hide-md' }, w.sources?.system_information?.value?.version || '—'),
        h('td', null, cpuCell(w)),
        h('td', { class: 'hide-sm num' }, w.sources?.labs_count?.value ?? '—'),
        h('td', { class: 'hide-md' }, w.breaker && w.breaker.state !== 'closed' ? breakerBadge(w.breaker) : h('span', { class: 'muted' }, w.breaker ? 'closed' : '—')),
        h('td', { class: 'hide-sm' }, freshnessCell(w)))))));
}

function cards(rows) {
  return h('ul', { class: 'cards', id: 'fleet-cards' }, rows.map((w) => h('li', { class: ['card', 'worker-card', `state-${w.ec2_state}`], 'data-key': w.id, dataset: { workerId: w.id, state: w.ec2_state } },
    h('div', { class: 'card-head' },
      h('h2', { class: 'card-title' }, h('a', { href: `#/workers/${w.id}`, class: 'worker-link stretched' }, w.name)),
      ec2Badge(w.ec2_state)),
    h('p', { class: 'card-sub' }, [w.region, w.instance_type, w.public_ip].filter(Boolean).join(' · ') || 'no instance yet'),
    h('dl', { class: 'card-facts' },
      h('div', null, h('dt', null, 'Service'), h('dd', { dataset: { col: 'service' } }, serviceBadge(w.service?.status))),
      h('div', null, h('dt', null, 'CPU'), h('dd', null, cpuCell(w))),
      h('div', null, h('dt', null, 'CML'), h('dd', null, w.sources?.system_information?.value?.version || '—')),
      h('div', null, h('dt', null, 'Labs'), h('dd', null, String(w.sources?.labs_count?.value ?? '—'))),
      h('div', null, h('dt', null, 'Data'), h('dd', null, freshnessCell(w))),
      w.breaker && w.breaker.state !== 'closed' ? h('div', null, h('dt', null, 'Breaker'), h('dd', null, breakerBadge(w.breaker))) : null))));
}

function countButtons(kind, list, counts, active, badgeFn) {
  return list.map(([key]) => {
    const n = counts.get(key) || 0;
    if (!n && active !== key) return null;
    const pressed = active === key;
    return h('button', {
      type: 'button', class: ['count', pressed && 'count-active'], 'aria-pressed': pressed ? 'true' : 'false',
      dataset: { filterKind: kind, filterValue: key }, title: pressed ? `Show all, not only ${key}` : `Show only ${key}`,
    }, badgeFn(key), h('span', { class: 'count-n' }, fmtNum(n)));
  });
}

/** Mounts the fleet page. */
export function mountFleet(container, { params, session }) {
  document.title = 'Fleet · ccm';
  const f = {
    q: params.get('q') || '',
    region: params.get('region') || '',
    state: params.get('state') || '',
    service: params.get('service') || '',
    view: params.get('view') || localStorage.getItem(VIEW_KEY) || 'table',
    sort: SORTS[params.get('sort')] ? params.get('sort') : 'name',
    order: params.get('order') === 'desc' ? 'desc' : 'asc',
    limit: PAGE,
  };

  const search = h('input', { id: 'fleet-search', type: 'search', class: 'input', placeholder: 'Name, worker id or instance id…', value: f.q, autocomplete: 'off', 'data-keep': true });
  const region = h('select', { id: 'filter-region', class: 'input' }, h('option', { value: '' }, 'All regions'));
  const state = h('select', { id: 'filter-state', class: 'input' }, h('option', { value: '' }, 'All states'), EC2_STATES.map(([s]) => h('option', { value: s }, s)));
  const service = h('select', { id: 'filter-service', class: 'input' }, h('option', { value: '' }, 'All statuses'), SERVICE_STATES.map(([s]) => h('option', { value: s }, s)));
  state.value = f.state;
  service.value = f.service;
  const clear = h('button', { type: 'button', class: 'btn btn-ghost', id: 'filter-clear' }, 'Clear filters');
  const viewTable = h('button', { type: 'button', class: 'seg', dataset: { view: 'table' } }, 'Table');
  const viewCards = h('button', { type: 'button', class: 'seg', dataset: { view: 'cards' } }, 'Cards');
  const stats = h('div', { class: 'stats', id: 'fleet-counts', 'aria-label': 'Workers by status' });
  const summary = h('p', { class: 'results-summary', id: 'fleet-summary', role: 'status', 'aria-live': 'polite' });
  const results = h('div', { id: 'fleet-results', class: 'results' });

  const page = h('div', { class: 'page' },
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, 'Fleet'), h('p', { class: 'muted', id: 'fleet-total' }, '')),
      h('div', { class: 'head-actions' },
        permitted(session, 'POST', '/api/v1/workers') ? h('a', { href: '#/create', class: 'btn btn-primary', id: 'fleet-create' }, 'New worker') : null,
        permitted(session, 'POST', '/api/v1/workers/import/preview') ? h('a', { href: '#/import', class: 'btn', id: 'fleet-import' }, 'Import') : null,
        h('div', { class: 'seg-group', role: 'group', 'aria-label': 'Layout' }, viewTable, viewCards))),
    stats,
    h('form', { class: 'toolbar', role: 'search', 'aria-label': 'Filter workers', onsubmit: (e) => e.preventDefault() },
      h('div', { class: 'field field-grow' }, h('label', { for: 'fleet-search', class: 'label' }, 'Search'), search),
      h('div', { class: 'field' }, h('label', { for: 'filter-region', class: 'label' }, 'Region'), region),
      h('div', { class: 'field' }, h('label', { for: 'filter-state', class: 'label' }, 'EC2 state'), state),
      h('div', { class: 'field' }, h('label', { for: 'filter-service', class: 'label' }, 'Service'), service),
      h('div', { class: 'field field-end' }, clear)),
    summary,
    results);
  replaceChildren(container, page);

  function syncUrl() {
    const p = new URLSearchParams();
    for (const k of ['q', 'region', 'state', 'service']) if (f[k]) p.set(k, f[k]);
    if (f.view !== 'table') p.set('view', f.view);
    if (f.sort !== 'name') p.set('sort', f.sort);
    if (f.order !== 'asc') p.set('order', f.order);
    const qs = p.toString();
    history.replaceState(null, '', `#/${qs ? `?${qs}` : ''}`);
  }

  // What the API answered for the current filters: the ids in order, the total matching.
  const list = { ids: [], total: 0, loaded: false, error: null, seq: 0, counts: null, regions: [] };
  let destroyed = false;

  function query() {
    const p = new URLSearchParams();
    for (const k of ['q', 'region', 'state', 'service']) if (f[k]) p.set(k, f[k]);
    if (API_SORTS.has(f.sort)) p.set('sort', f.sort);
    if (f.order === 'desc') p.set('order', 'desc');
    p.set('limit', String(Math.min(f.limit, MAX_ROWS)));
    return p.toString();
  }

  /** Reads the page for the current filters (answers to older filters are dropped). */
  async function loadList() {
    const seq = ++list.seq;
    try {
      const res = await get(`/api/v1/workers?${query()}`);
      if (seq !== list.seq || destroyed) return;
      for (const w of res.items) applyView(w);
      list.ids = res.items.map((w) => w.id);
      list.total = res.total;
      list.loaded = true;
      list.error = null;
    } catch (e) {
      if (seq !== list.seq || destroyed) return;
      list.error = e;
    }
    redraw();
    // When the first rows were on screen, measured from the navigation (the browser test
    // reads it: the fleet list's time to first render).
    if (list.ids.length && !performance.getEntriesByName('ccm:fleet-first-rows').length) {
      performance.mark('ccm:fleet-first-rows');
    }
  }

  async function loadCounts() {
    try {
      const c = await get('/api/v1/system/counts');
      if (destroyed) return;
      list.counts = c;
      redraw();
    } catch {
      // keep the last counts
    }
  }

  async function loadRegions() {
    try {
      const p = await get('/api/v1/system/provisioning');
      if (destroyed) return;
      list.regions = p.regions || [];
      redraw();
    } catch {
      // regions of the rows shown only
    }
  }

  let relistTimer = null;
  function relistSoon() {
    if (relistTimer !== null) return;
    relistTimer = setTimeout(() => {
      relistTimer = null;
      loadList();
      loadCounts();
    }, 1000);
  }

  function syncRegions() {
    const shownRegions = list.ids.map((id) => fleet.workers.get(id)?.region).filter(Boolean);
    const regions = [...new Set([...list.regions, ...shownRegions])].sort();
    if (f.region && !regions.includes(f.region)) regions.push(f.region);
    const have = [...region.options].slice(1).map((o) => o.value);
    if (have.join() !== regions.join()) {
      replaceChildren(region, h('option', { value: '' }, 'All regions'), regions.map((r) => h('option', { value: r }, r)));
    }
    region.value = f.region;
  }

  function draw() {
    syncRegions();
    viewTable.setAttribute('aria-pressed', String(f.view === 'table'));
    viewCards.setAttribute('aria-pressed', String(f.view === 'cards'));
    clear.disabled = !(f.q || f.region || f.state || f.service);
    const counts = list.counts;
    const byState = new Map(Object.entries(counts?.by_state || {}));
    const byService = new Map(Object.entries(counts?.by_service || {}));
    const fleetTotal = counts ? counts.total : null;
    document.getElementById('fleet-total').textContent = fleetTotal !== null
      ? `${fmtNum(fleetTotal)} worker${fleetTotal === 1 ? '' : 's'} · ${fleet.connection === 'live' ? 'updated live' : 'live updates paused'}`
      : '';
    render(stats, h('div', { class: 'stats-inner' },
      h('div', { class: 'stat-group' }, h('span', { class: 'stat-label' }, 'EC2'), countButtons('state', EC2_STATES, byState, f.state, (k) => ec2Badge(k))),
      h('div', { class: 'stat-group' }, h('span', { class: 'stat-label' }, 'Service'), countButtons('service', SERVICE_STATES, byService, f.service, (k) => serviceBadge(k)))));

    if (!list.loaded) {
      if (list.error) render(results, errorBox('The workers could not be loaded', list.error.detail || list.error.message));
      else render(results, loading('Loading workers…'));
      summary.textContent = '';
      return;
    }
    // The rows in the API's order, with the live store's newest view of each.
    const rows = list.ids.map((id) => fleet.workers.get(id)).filter(Boolean);
    if (!API_SORTS.has(f.sort)) {
      const cmp = SORTS[f.sort];
      rows.sort((a, b) => (f.order === 'desc' ? -1 : 1) * (cmp(a, b) || collator.compare(a.name, b.name)));
    }
    const shown = rows;
    const filtered = f.q || f.region || f.state || f.service;
    const text = !filtered ? `${fmtNum(list.total)} workers` : `${fmtNum(list.total)}${fleetTotal !== null ? ` of ${fmtNum(fleetTotal)}` : ''} workers match`;
    if (summary.textContent !== text) summary.textContent = text;
    if (!list.total && !filtered) {
      render(results, h('div', { class: 'empty' }, h('h2', null, 'No workers yet'), h('p', null, 'Create or import workers here, through the API or the CLI; they appear at once.')));
      return;
    }
    if (!rows.length) {
      render(results, h('div', { class: 'empty' }, h('h2', null, 'No worker matches'), h('p', null, 'Change the search or clear the filters.')));
      return;
    }
    render(results, h('div', { class: 'results-inner' },
      f.view === 'cards' ? cards(shown) : table(shown, f),
      list.total > shown.length
        ? h('div', { class: 'more' }, f.limit < MAX_ROWS
          ? h('button', { type: 'button', class: 'btn', dataset: { action: 'more' } }, `Show ${Math.min(PAGE, list.total - shown.length)} more (${fmtNum(list.total - shown.length)} not shown)`)
          : h('p', { class: 'muted' }, `${fmtNum(list.total - shown.length)} more not shown: narrow the search or the filters.`))
        : null));
  }

  // Widths of the CPU meters: set through CSSOM (the page's CSP forbids inline style markup).
  function paintMeters() {
    for (const el of results.querySelectorAll('.meter-fill')) el.style.width = `${el.dataset.pct}%`;
  }
  const redraw = () => {
    draw();
    paintMeters();
  };

  let searchTimer = null;
  search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      f.q = search.value.trim();
      f.limit = PAGE;
      syncUrl();
      loadList();
    }, 120);
  });
  for (const [el, key] of [[region, 'region'], [state, 'state'], [service, 'service']]) {
    el.addEventListener('change', () => {
      f[key] = el.value;
      f.limit = PAGE;
      syncUrl();
      loadList();
    });
  }
  clear.addEventListener('click', () => {
    f.q = f.region = f.state = f.service = '';
    search.value = '';
    state.value = '';
    service.value = '';
    f.limit = PAGE;
    syncUrl();
    loadList();
    search.focus();
  });
  for (const btn of [viewTable, viewCards]) {
    btn.addEventListener('click', () => {
      f.view = btn.dataset.view;
      localStorage.setItem(VIEW_KEY, f.view);
      syncUrl();
      redraw();
    });
  }
  stats.addEventListener('click', (e) => {
    const b = e.target.closest('[data-filter-kind]');
    if (!b) return;
    const kind = b.dataset.filterKind;
    f[kind] = f[kind] === b.dataset.filterValue ? '' : b.dataset.filterValue;
    (kind === 'state' ? state : service).value = f[kind];
    f.limit = PAGE;
    syncUrl();
    loadList();
  });
  results.addEventListener('click', (e) => {
    const sort = e.target.closest('[data-sort]');
    if (sort) {
      const key = sort.dataset.sort;
      f.order = f.sort === key && f.order === 'asc' ? 'desc' : 'asc';
      f.sort = key;
      syncUrl();
      if (API_SORTS.has(key)) loadList();
      else redraw();
      return;
    }
    if (e.target.closest('[data-action="more"]')) {
      f.limit = Math.min(MAX_ROWS, f.limit + PAGE);
      loadList();
    }
    const snooze = e.target.closest('[data-action="snooze"]');
    if (snooze && !snooze.disabled) {
      snooze.disabled = true;
      const until = new Date(Date.now() + 3600 * 1000);
      put(`/api/v1/workers/${seg(snooze.dataset.workerId)}/snooze`, { until: until.toISOString() })
        .then((view) => { applyView(view); notify(`Kept awake until ${until.toLocaleTimeString()}`); redraw(); })
        .catch((err) => { snooze.disabled = false; notifyError('Could not keep the worker awake', err); });
    }
  });

  redraw();
  focusHeading(container);
  loadList();
  loadCounts();
  loadRegions();
  const shownIds = () => new Set(list.ids);
  const off = subscribe((change) => {
    if (change.events.some((ev) => RELIST.has(ev.type))) relistSoon();
    const ids = shownIds();
    if (change.connection || [...change.ids].some((id) => ids.has(id))) redraw();
  });
  const tick = setInterval(() => {
    loadCounts();
    redraw();
  }, 5000);
  return {
    destroy() {
      destroyed = true;
      off();
      clearInterval(tick);
      clearTimeout(searchTimer);
      clearTimeout(relistTimer);
    },
  };
}
