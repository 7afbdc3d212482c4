// The system page: health of ccm and its dependencies, the replicas sharing the fleet (or the
// single node), the background jobs (with a run button for admins), circuit breakers, the
// retry budget, bulkheads and the savings report.
// Re-read every 10 s and after job, breaker and budget events.

import { get, post, seg } from './api.js';
import { h, render, replaceChildren, facts, time, fmtDuration, fmtNum, humanize, focusHeading, loading, errorBox } from './dom.js';
import { subscribe } from './live.js';
import { badge, breakerBadge } from './badges.js';
import { notify, notifyError } from './dialog.js';

const BREAKERS_SHOWN = 25;
const JOB_NAMES = {
  ec2_sync: 'EC2 sync', cml_sync: 'CML sync', metrics: 'CloudWatch metrics', labs: 'Labs refresh',
  activity: 'Activity and idle policy', auto_import: 'Auto-import', event_retention: 'Event retention',
};
const jobName = (j) => JOB_NAMES[j] || humanize(j);

/** Instance time: minutes below an hour, else hours with one decimal. */
function fmtHours(hours) {
  if (!(hours > 0)) return '0 h';
  return hours < 1 ? `${Math.max(1, Math.round(hours * 60))} min` : `${hours.toFixed(1)} h`;
}

function okBadge(ok) {
  return badge(ok ? 'healthy' : 'failing', ok ? 'ok' : 'bad');
}

/** Mounts the system page. */
export function mountSystem(container, { session }) {
  document.title = 'System · ccm';
  const st = { health: null, jobs: null, resilience: null, savings: null, counts: null, replicas: null, error: null, running: new Set(), allBreakers: false };
  const isAdmin = session.role === 'admin';
  let destroyed = false;
  let focused = false;

  async function load() {
    const results = await Promise.allSettled([
      get('/api/v1/system/health'), get('/api/v1/system/jobs'), get('/api/v1/system/resilience'),
      get('/api/v1/system/savings'), get('/api/v1/system/counts'), get('/api/v1/system/replicas'),
    ]);
    const [health, jobs, resilience, savings, counts, replicas] = results.map((r) => (r.status === 'fulfilled' ? r.value : null));
    const failed = results.find((r) => r.status === 'rejected');
    st.error = failed ? failed.reason : null;
    if (health) st.health = health;
    if (jobs) st.jobs = jobs.items;
    if (resilience) st.resilience = resilience;
    if (savings) st.savings = savings;
    if (counts) st.counts = counts;
    if (replicas) st.replicas = replicas;
    draw();
  }

  function healthPanel() {
    const hl = st.health;
    if (!hl) return h('section', { class: 'panel', id: 'health' }, h('h2', { class: 'panel-title' }, 'Health'), loading());
    const comps = [hl.database, hl.scheduler, ...hl.providers];
    return h('section', { class: 'panel', id: 'health', 'aria-labelledby': 'health-title' },
      h('div', { class: 'panel-head' }, h('h2', { class: 'panel-title', id: 'health-title' }, 'Health'), okBadge(hl.healthy)),
      h('ul', { class: 'components' }, comps.map((c) => h('li', { class: 'component', 'data-key': c.name },
        h('span', { class: 'component-name' }, c.name), okBadge(c.ok), h('span', { class: 'component-detail muted small' }, c.detail)))),
      facts([
        ['Workers', fmtNum(hl.workers)],
        ['Live event clients', st.counts ? fmtNum(st.counts.sse_clients) : '—'],
      ]));
  }

  /** The replicas (`GET /system/replicas`): each one's heartbeat, leases and workers; a single
   * node says so and owns every worker. */
  function replicasPanel() {
    const r = st.replicas;
    const head = (extra) => h('div', { class: 'panel-head' }, h('h2', { class: 'panel-title', id: 'replicas-title' }, 'Replicas'), extra);
    if (!r) return h('section', { class: 'panel panel-wide', id: 'replicas', 'aria-labelledby': 'replicas-title' }, head(null), loading());
    if (r.mode !== 'cluster') {
      return h('section', { class: 'panel panel-wide', id: 'replicas', 'aria-labelledby': 'replicas-title', dataset: { mode: r.mode } },
        head(badge('single node', 'neutral')),
        h('p', { id: 'replicas-single' }, 'This process is the only replica: it owns every worker and every job, without leases.'),
        facts([['Workers held', st.health ? fmtNum(st.health.workers) : '—'], ['Leases', 'none (SQLite: one node)']]));
    }
    const live = r.items.filter((x) => x.live).length;
    return h('section', { class: 'panel panel-wide', id: 'replicas', 'aria-labelledby': 'replicas-title', dataset: { mode: r.mode } },
      head(h('span', null, badge(`${live} of ${r.items.length} live`, live === r.items.length ? 'ok' : 'warn'))),
      facts([['Lease TTL', fmtDuration(r.lease_ttl_seconds)], ['Worker partitions', fmtNum(r.partitions)]]),
      !r.items.length ? h('p', { class: 'muted' }, 'No replica registered yet.') : h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact', id: 'replicas-table' },
        h('thead', null, h('tr', null,
          h('th', { scope: 'col' }, 'Replica'), h('th', { scope: 'col' }, 'Heartbeat'), h('th', { scope: 'col', class: 'num' }, 'Partitions'),
          h('th', { scope: 'col', class: 'num' }, 'Workers'), h('th', { scope: 'col' }, 'Job leases'), h('th', { scope: 'col', class: 'hide-sm' }, 'Address'),
          h('th', { scope: 'col', class: 'hide-md' }, 'Version'), h('th', { scope: 'col', class: 'hide-md' }, 'Started'))),
        h('tbody', null, r.items.map((x) => h('tr', { 'data-key': x.id, dataset: { replica: x.id, live: String(x.live) } },
          h('th', { scope: 'row', class: 'mono small' }, x.id, x.this ? h('span', { class: 'sub' }, 'this replica (answering)') : null),
          h('td', null, badge(x.live ? 'live' : 'stale', x.live ? 'ok' : 'bad'), h('span', { class: 'muted small' }, ` ${x.heartbeat_age_seconds.toFixed(1)} s ago`)),
          h('td', { class: 'num' }, fmtNum(x.partitions)),
          h('td', { class: 'num' }, fmtNum(x.workers)),
          h('td', { class: 'small' }, x.jobs.length ? x.jobs.join(', ') : h('span', { class: 'muted' }, '—')),
          h('td', { class: 'mono small hide-sm' }, x.address),
          h('td', { class: 'hide-md' }, x.version),
          h('td', { class: 'hide-md' }, time(x.started_at, true))))))));
  }

  function jobsPanel() {
    const jobs = st.jobs;
    return h('section', { class: 'panel panel-wide', id: 'jobs', 'aria-labelledby': 'jobs-title' },
      h('h2', { class: 'panel-title', id: 'jobs-title' }, 'Background jobs'),
      !jobs ? loading() : h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'jobs-table' },
        h('thead', null, h('tr', null,
          h('th', { scope: 'col' }, 'Job'), h('th', { scope: 'col' }, 'Enabled'), h('th', { scope: 'col', class: 'num' }, 'Interval'),
          h('th', { scope: 'col', class: 'num' }, 'Runs'), h('th', { scope: 'col', class: 'num' }, 'Failures'), h('th', { scope: 'col', class: 'num hide-sm' }, 'Running'),
          h('th', { scope: 'col', class: 'hide-md' }, 'Last run'), h('th', { scope: 'col', class: 'num hide-md' }, 'Took'), h('th', { scope: 'col' }, 'Last error'),
          h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Run')))),
        h('tbody', null, jobs.map((j) => h('tr', { 'data-key': j.job, dataset: { job: j.job } },
          h('th', { scope: 'row' }, jobName(j.job)),
          h('td', null, j.enabled ? badge('on', 'ok') : badge('off', 'neutral')),
          h('td', { class: 'num' }, fmtDuration(j.interval_seconds)),
          h('td', { class: 'num' }, fmtNum(j.runs)),
          h('td', { class: 'num' }, j.failures ? h('span', { class: 'error-text' }, fmtNum(j.failures)) : '0'),
          h('td', { class: 'num hide-sm' }, j.in_flight ? `${j.in_flight}` : '—'),
          h('td', { class: 'hide-md' }, time(j.last_finished || j.last_started, true)),
          h('td', { class: 'num hide-md' }, j.last_duration_ms != null ? `${fmtNum(j.last_duration_ms)} ms` : '—'),
          h('td', null, j.last_error ? h('span', { class: 'error-text' }, j.last_error) : h('span', { class: 'muted' }, '—')),
          h('td', { class: 'row-actions' }, h('button', {
            type: 'button', class: 'btn btn-small', dataset: { runJob: j.job }, disabled: !isAdmin || st.running.has(j.job),
            title: isAdmin ? null : 'Needs the admin role', 'aria-label': `Run ${jobName(j.job)} now`,
          }, st.running.has(j.job) ? 'Running…' : 'Run now'))))))));
  }

  function resiliencePanel() {
    const r = st.resilience;
    if (!r) return h('section', { class: 'panel', id: 'resilience' }, h('h2', { class: 'panel-title' }, 'Resilience'), loading());
    const b = r.budget;
    const order = { open: 0, half_open: 1, closed: 2 };
    const breakers = [...r.breakers].sort((x, y) => (order[x.state] ?? 3) - (order[y.state] ?? 3) || x.key.localeCompare(y.key));
    const shown = st.allBreakers ? breakers : breakers.slice(0, BREAKERS_SHOWN);
    return [
      h('section', { class: 'panel', id: 'resilience', 'aria-labelledby': 'budget-title' },
        h('h2', { class: 'panel-title', id: 'budget-title' }, 'Retry budget and bulkheads'),
        facts([
          ['Retry budget', b.enabled ? (b.exhausted ? badge('exhausted', 'bad') : badge('available', 'ok')) : badge('unlimited', 'muted')],
          ['Retries allowed now', fmtNum(b.available)],
          ['Calls / retries in window', `${fmtNum(b.calls)} / ${fmtNum(b.retries)}`],
        ]),
        h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact', id: 'bulkheads-table' },
          h('caption', { class: 'table-caption' }, 'Bulkheads'),
          h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Bulkhead'), h('th', { scope: 'col', class: 'num' }, 'In flight'), h('th', { scope: 'col', class: 'num' }, 'Queued'), h('th', { scope: 'col', class: 'num' }, 'Limit'), h('th', { scope: 'col', class: 'num' }, 'Queue limit'))),
          h('tbody', null, r.bulkheads.map((x) => h('tr', { 'data-key': x.name },
            h('th', { scope: 'row' }, x.name), h('td', { class: 'num' }, fmtNum(x.in_flight)), h('td', { class: 'num' }, fmtNum(x.queued)),
            h('td', { class: 'num' }, x.max_concurrent == null ? 'unlimited' : fmtNum(x.max_concurrent)), h('td', { class: 'num' }, fmtNum(x.max_queue)))))))),
      h('section', { class: 'panel panel-wide', id: 'breakers', 'aria-labelledby': 'breakers-title' },
        h('div', { class: 'panel-head' },
          h('h2', { class: 'panel-title', id: 'breakers-title' }, 'Circuit breakers'),
          h('span', null, r.open ? badge(`${r.open} open`, 'bad') : badge('none open', 'ok'), h('span', { class: 'muted small' }, ` of ${fmtNum(r.breakers.length)}`))),
        !breakers.length ? h('p', { class: 'muted' }, 'No calls made yet.') : h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact', id: 'breakers-table' },
          h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Endpoint'), h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col', class: 'num' }, 'Failures in a row'), h('th', { scope: 'col', class: 'hide-sm' }, 'Opened'))),
          h('tbody', null, shown.map((x) => h('tr', { 'data-key': x.key },
            h('th', { scope: 'row', class: 'mono small' }, x.key), h('td', null, breakerBadge(x)), h('td', { class: 'num' }, fmtNum(x.consecutive_failures)), h('td', { class: 'hide-sm' }, time(x.opened_at, true))))))),
        breakers.length > BREAKERS_SHOWN
          ? h('button', { type: 'button', class: 'btn btn-ghost', dataset: { toggleBreakers: '1' } }, st.allBreakers ? 'Show fewer' : `Show all ${fmtNum(breakers.length)}`)
          : null),
    ];
  }

  function savingsPanel() {
    const s = st.savings;
    if (!s) return h('section', { class: 'panel panel-wide', id: 'savings' }, h('h2', { class: 'panel-title' }, 'Savings'), loading());
    const money = (v) => (v == null ? '—' : `${v.toFixed(2)} ${s.currency}`);
    const top = s.workers.filter((w) => w.hours > 0).slice(0, 10);
    return h('section', { class: 'panel panel-wide', id: 'savings', 'aria-labelledby': 'savings-title' },
      h('h2', { class: 'panel-title', id: 'savings-title' }, 'Savings'),
      h('div', { class: 'big-numbers' },
        h('div', { class: 'big' }, h('span', { class: 'big-n' }, fmtHours(s.total_hours)), h('span', { class: 'big-l' }, 'instance time stopped by ccm')),
        h('div', { class: 'big' }, h('span', { class: 'big-n' }, money(s.total_saved)), h('span', { class: 'big-l' }, 'saved'))),
      s.missing_prices.length ? h('p', { class: 'help' }, `No price configured for ${s.missing_prices.join(', ')}.`) : null,
      top.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact' },
        h('caption', { class: 'table-caption' }, 'Most saved'),
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Worker'), h('th', { scope: 'col', class: 'num' }, 'Stopped'), h('th', { scope: 'col', class: 'num' }, 'Saved'), h('th', { scope: 'col', class: 'num hide-sm' }, 'Idle pauses'))),
        h('tbody', null, top.map((w) => h('tr', { 'data-key': w.id },
          h('th', { scope: 'row' }, h('a', { href: `#/workers/${w.id}` }, w.name)), h('td', { class: 'num' }, fmtHours(w.hours)), h('td', { class: 'num' }, money(w.saved)), h('td', { class: 'num hide-sm' }, fmtNum(w.idle_pauses)))))))
        : h('p', { class: 'muted' }, 'Nothing stopped by ccm yet.'),
      h('p', { class: 'muted small' }, 'Computed ', time(s.generated_at, true)));
  }

  function draw() {
    if (destroyed) return;
    render(container, h('div', { class: 'page' },
      h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'System'), h('p', { class: 'muted' }, 'Health, replicas, jobs and the resilience machinery'))),
      st.error ? errorBox('Some data could not be loaded', st.error.detail || st.error.message) : null,
      h('div', { class: 'grid' }, healthPanel(), replicasPanel(), resiliencePanel(), jobsPanel(), savingsPanel())));
    if (!focused) {
      focused = true;
      focusHeading(container);
    }
  }

  async function runJob(job) {
    st.running.add(job);
    draw();
    try {
      const j = await post(`/api/v1/system/jobs/${seg(job)}/run`);
      notify(`${jobName(job)} ran`, j.last_error ? 'bad' : 'ok', j.last_error || `${fmtNum(j.last_duration_ms ?? 0)} ms`);
    } catch (e) {
      notifyError(`${jobName(job)} failed`, e);
    } finally {
      st.running.delete(job);
      load();
    }
  }

  function onClick(e) {
    const run = e.target.closest('button[data-run-job]');
    if (run && !run.disabled) runJob(run.dataset.runJob);
    if (e.target.closest('button[data-toggle-breakers]')) {
      st.allBreakers = !st.allBreakers;
      draw();
    }
  }
  container.addEventListener('click', onClick);

  let soon = null;
  const off = subscribe((change) => {
    const relevant = change.events.some((ev) => /^ccm\.(job|breaker|retry_budget|bulkhead)\./.test(ev.type));
    if (relevant && !soon) {
      soon = setTimeout(() => {
        soon = null;
        load();
      }, 3000);
    }
  });
  const tick = setInterval(load, 10_000);
  replaceChildren(container, loading());
  load();

  return {
    destroy() {
      destroyed = true;
      off();
      clearInterval(tick);
      clearTimeout(soon);
      container.removeEventListener('click', onClick);
    },
  };
}
