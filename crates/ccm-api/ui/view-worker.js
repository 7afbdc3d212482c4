// One worker: EC2, CML (version, health, computes, load), licence, monitoring (idle detection,
// pauses and resumes), each source's freshness and the breaker, metrics charts, labs with
// their actions, recent events — and the worker's actions. Live: every event about this
// worker re-reads what it changed.

import { get, post, put, patch, del, seg } from './api.js';
import {
  h, render, replaceChildren, facts, time, fmtAgo, fmtDuration, fmtPct, fmtBytes, humanize,
  focusHeading, loading, errorBox,
} from './dom.js';
import { fleet, subscribe, applyView, refetch } from './live.js';
import { ec2Badge, serviceBadge, freshnessBadge, breakerBadge, boolBadge, badge } from './badges.js';
import { confirmAction, notify, notifyError } from './dialog.js';
import { lineChart } from './chart.js';
import { permitted, field, clearErrors, showProblem, formError } from './forms.js';

const W = '/api/v1/workers/{id}';
const LAB = `${W}/labs/{lab_id}`;
const RANGES = [['1h', 'Last hour'], ['6h', 'Last 6 hours'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days']];
const RANGE_MS = { '1h': 3_600_000, '6h': 21_600_000, '24h': 86_400_000, '7d': 604_800_000 };

/** Whether the worker's current state allows `name` (the server says, in `actions`). */
const can = (name) => (w) => Array.isArray(w.actions) && w.actions.includes(name);

/** The worker's actions: who may, when, and what to ask first. */
const ACTIONS = {
  start: { label: 'Start', route: ['POST', `${W}/start`], when: can('start'), busy: 'Starting…' },
  resume: { label: 'Resume', route: ['POST', `${W}/resume`], when: (w) => can('resume')(w) && !!w.monitoring?.paused_at, busy: 'Resuming…' },
  stop: {
    label: 'Stop', route: ['POST', `${W}/stop`], when: can('stop'), busy: 'Stopping…',
    confirm: (w) => ({ title: `Stop ${w.name}?`, body: 'The EC2 instance stops: running labs end and everyone using them is cut off. ccm counts it as a manual pause.', confirm: 'Stop worker' }),
  },
  pause: {
    label: 'Pause', route: ['POST', `${W}/pause`], when: can('pause'), busy: 'Pausing…',
    confirm: (w) => ({ title: `Pause ${w.name}?`, body: 'The EC2 instance stops (reason: manual) and can be resumed later. Running labs end.', confirm: 'Pause worker' }),
  },
  refresh: { label: 'Refresh now', route: ['POST', `${W}/refresh`], when: can('refresh'), busy: 'Refreshing…' },
  terminate: {
    label: 'Terminate', route: ['POST', `${W}/terminate`], danger: true, when: can('terminate'), busy: 'Terminating…',
    confirm: (w) => ({ title: `Terminate ${w.name}?`, body: ['The EC2 instance and its disks are destroyed, with every lab on it. ', h('strong', null, 'This cannot be undone.')], confirm: 'Terminate instance' }),
  },
  delete: {
    label: 'Delete record', route: ['DELETE', W], danger: true, when: can('delete'), busy: 'Deleting…',
    confirm: (w) => ({ title: `Delete the record of ${w.name}?`, body: 'ccm forgets this worker and its history. The EC2 instance itself is not touched; import it again to see it.', confirm: 'Delete record' }),
  },
};

// A lab's actions; whether its state allows one is the API's (`action_reasons` of the lab).
const LAB_ACTIONS = {
  'lab-start': { label: 'Start', key: 'start', route: ['POST', `${LAB}/start`] },
  'lab-stop': { label: 'Stop', key: 'stop', route: ['POST', `${LAB}/stop`], confirm: (l) => ({ title: `Stop lab ${l.title}?`, body: 'Every node of the lab stops; people working in it lose their sessions.', confirm: 'Stop lab' }) },
  'lab-wipe': { label: 'Wipe', key: 'wipe', route: ['POST', `${LAB}/wipe`], confirm: (l) => ({ title: `Wipe lab ${l.title}?`, body: 'The nodes’ disks and configurations are erased; the topology stays.', confirm: 'Wipe lab' }) },
  'lab-delete': { label: 'Delete', key: 'delete', route: ['DELETE', LAB], confirm: (l) => ({ title: `Delete lab ${l.title}?`, body: ['The lab and its nodes are removed from CML. ', h('strong', null, 'This cannot be undone.')], confirm: 'Delete lab' }) },
};

/** Whether the session's role may call the route `[method, template]` (the server's table). */
function may(session, [method, template]) {
  return permitted(session, method, template);
}

/** Why the worker's state forbids `action` now, as the API says (`action_reasons`). */
function reasonOf(w, action) {
  return w.action_reasons?.[action] || null;
}

// The end of a keep-awake preset, in the browser's time zone: `1h`, `4h`, or `tomorrow`
// (09:00 the next day).
export function snoozeUntil(preset, now) {
  if (preset === 'tomorrow') {
    const t = new Date(now);
    t.setDate(t.getDate() + 1);
    t.setHours(9, 0, 0, 0);
    return t;
  }
  const hours = preset === '4h' ? 4 : 1;
  return new Date(now.getTime() + hours * 3600 * 1000);
}

function eventSummary(ev) {
  const d = ev.data || {};
  const by = d.by ? ` by ${d.by}` : '';
  switch (ev.type) {
    case 'ccm.worker.state_changed': return `EC2 ${d.from} → ${d.to}`;
    case 'ccm.worker.service_changed': return `CML ${d.from} → ${d.to}${(d.reasons || []).length ? ` (${d.reasons.map((r) => `${r.call}: ${r.code}`).join(', ')})` : ''}`;
    case 'ccm.worker.action_requested': return `${humanize(d.action)} requested${by}${d.reason ? ` (${d.reason})` : ''}`;
    case 'ccm.worker.action_failed': return `${humanize(d.action)} failed: ${d.error}`;
    case 'ccm.worker.paused': return `Paused (${d.reason})${by}`;
    case 'ccm.worker.resumed': return `Resumed (${d.reason})${by}`;
    case 'ccm.worker.idle_detected': return `Idle for ${fmtDuration(d.idle_for_seconds)}: ${d.action}`;
    case 'ccm.worker.idle_detection_changed': return `Idle detection ${d.enabled ? 'on' : 'off'}${by}`;
    case 'ccm.worker.idle_warning': return `Will be paused (${d.reason === 'schedule' ? 'off-hours' : 'idle'}) at ${new Date(d.at).toLocaleTimeString()} unless used or kept awake`;
    case 'ccm.worker.snoozed': return `Kept awake until ${new Date(d.until).toLocaleString()}${by}`;
    case 'ccm.worker.snooze_cleared': return `Keep-awake ended${by}`;
    case 'ccm.worker.tags_updated': return `Tags updated${by}`;
    case 'ccm.worker.refresh_skipped': return `Refresh skipped: ${d.reason}`;
    case 'ccm.worker.status_checks_changed': return `EC2 status checks: system ${d.system}, instance ${d.instance}`;
    case 'ccm.lab.action_completed': return `Lab ${d.title || d.lab_id}: ${d.action}${by}`;
    case 'ccm.lab.action_failed': return `Lab ${d.lab_id || ''} ${d.action} failed: ${d.error}`;
    case 'ccm.labs.refreshed': return `${d.count} labs (${d.added} new, ${d.removed} gone)`;
    case 'ccm.breaker.opened': return `Breaker opened after ${d.consecutive_failures} failures: ${d.reason}`;
    case 'ccm.breaker.half_open': return 'Breaker half-open: probing';
    case 'ccm.breaker.closed': return 'Breaker closed';
    case 'ccm.licence.registration_failed': return `Licence registration failed: ${d.reason}`;
    case 'ccm.licence.registered': return 'Licence registered';
    default: return humanize(ev.type.split('.').slice(-1)[0]);
  }
}

function sourceRow(name, s) {
  return h('tr', { dataset: { source: name } },
    h('th', { scope: 'row' }, name),
    h('td', null, freshnessBadge(s)),
    h('td', null, s?.age_seconds != null ? fmtDuration(s.age_seconds) : '—'),
    h('td', { class: 'hide-sm' }, time(s?.attempted_at, true)),
    h('td', { class: 'num' }, String(s?.consecutive_failures ?? 0)),
    h('td', null, s?.error ? h('span', { class: 'error-text' }, `${s.error.code}${s.error.status ? ` ${s.error.status}` : ''}${s.error.detail ? `: ${s.error.detail}` : ''}`) : h('span', { class: 'muted' }, '—')));
}

const CHECK_TONE = { ok: 'ok', impaired: 'bad', initializing: 'info', 'insufficient-data': 'warn', 'not-applicable': 'neutral' };

/** One EC2 status check (`ok`, `impaired`, …) as a badge. */
function checkBadge(which, status) {
  return badge(`${which} ${status}`, CHECK_TONE[status] || 'muted', { 'data-check': which, 'data-status': status, title: `EC2 ${which} status check: ${status}` });
}

/** EC2's status checks with their freshness, or a dash before the first read. */
function statusChecks(source) {
  const c = source?.value;
  if (!c) return h('span', { id: 'worker-status-checks' }, '—');
  return h('span', { id: 'worker-status-checks' }, checkBadge('system', c.system), ' ', checkBadge('instance', c.instance), ' ', freshnessBadge(source));
}

function card(title, id, ...children) {
  return h('section', { class: 'panel', 'aria-labelledby': `${id}-title`, id },
    h('h2', { class: 'panel-title', id: `${id}-title` }, title),
    ...children);
}

/** Mounts the worker page. */
export function mountWorker(container, { args, session }) {
  const id = args[0].toLowerCase();
  const st = {
    worker: fleet.workers.get(id) || null,
    labs: null,
    labsError: null,
    metrics: null,
    metricsError: null,
    events: null,
    range: '24h',
    busy: new Set(),
    /** The last failure of each form (by form id), shown again after every redraw. */
    errors: {},
    notFound: false,
    error: null,
  };
  let headingFocused = false;
  let destroyed = false;

  async function loadWorker() {
    try {
      const w = await get(`/api/v1/workers/${seg(id)}`);
      applyView(w);
      st.worker = fleet.workers.get(id) || w;
      st.error = null;
    } catch (e) {
      if (e.status === 404) st.notFound = true;
      else st.error = e;
    }
    draw();
  }
  async function loadLabs() {
    try {
      st.labs = (await get(`/api/v1/workers/${seg(id)}/labs`)).items;
      st.labsError = null;
    } catch (e) {
      st.labsError = e;
    }
    draw();
  }
  async function loadMetrics() {
    try {
      st.metrics = await get(`/api/v1/workers/${seg(id)}/metrics?since=${st.range}`);
      st.metricsError = null;
    } catch (e) {
      st.metricsError = e;
    }
    draw();
  }
  async function loadEvents() {
    try {
      st.events = (await get(`/api/v1/workers/${seg(id)}/events?limit=15`)).items;
    } catch {
      // keep the previous list
    }
    draw();
  }

  // === drawing ===

  function actionButton(name, w) {
    const a = ACTIONS[name];
    // Buttons the caller's role may not use are not shown at all.
    if (!may(session, a.route)) return null;
    const possible = a.when(w);
    const busy = st.busy.has(name);
    const why = possible ? null : reasonOf(w, name) || (name === 'resume' ? 'The worker is not paused' : `Not possible while ${w.ec2_state}`);
    return h('button', {
      type: 'button', class: ['btn', a.danger && 'btn-danger-outline'], dataset: { action: name, reason: why },
      disabled: !possible || busy, title: why,
    }, busy ? a.busy : a.label);
  }

  function header(w) {
    return h('div', { class: 'page-head worker-head' },
      h('div', { class: 'worker-title' },
        h('nav', { 'aria-label': 'Breadcrumb', class: 'breadcrumb' }, h('a', { href: '#/' }, 'Fleet'), h('span', { 'aria-hidden': 'true' }, ' / '), h('span', { 'aria-current': 'page' }, w.name)),
        h('h1', { id: 'worker-name' }, w.name),
        h('p', { class: 'worker-badges' },
          ec2Badge(w.ec2_state, { id: 'worker-state' }),
          serviceBadge(w.service?.status, { id: 'worker-service' }),
          w.monitoring?.paused_at ? badge(`paused (${w.monitoring.pause_reason || 'manual'})`, 'neutral', { id: 'worker-paused' }) : null,
          w.breaker && w.breaker.state !== 'closed' ? breakerBadge(w.breaker) : null),
        h('p', { class: 'muted mono small' }, `${w.id}${w.instance_id ? ` · ${w.instance_id}` : ''}`)),
      h('div', { class: 'actions', role: 'toolbar', 'aria-label': 'Worker actions' },
        ['start', 'resume', 'stop', 'pause', 'refresh'].map((n) => actionButton(n, w)),
        ['terminate', 'delete'].some((n) => may(session, ACTIONS[n].route)) ? h('span', { class: 'actions-sep', 'aria-hidden': 'true' }) : null,
        ['terminate', 'delete'].map((n) => actionButton(n, w))));
  }

  function ec2Panel(w) {
    const tags = Object.entries(w.tags || {});
    return card('EC2 instance', 'ec2',
      facts([
        ['State', h('span', null, ec2Badge(w.ec2_state), w.state_reason ? h('span', { class: 'muted small' }, ` ${w.state_reason}`) : null)],
        ['Instance', w.instance_id || '—'],
        ['Type', w.instance_type || '—'],
        ['Region', w.region],
        ['AMI', w.ami ? h('span', null, h('span', { class: 'mono' }, w.ami.id), w.ami.name ? h('span', { class: 'muted small' }, ` ${w.ami.name}`) : null) : '—'],
        ['Image owner', w.ami?.owner ? h('span', { class: 'mono', id: 'worker-ami-owner' }, w.ami.owner) : '—'],
        ['Status checks', statusChecks(w.sources?.ec2_status)],
        ['Public IP', w.public_ip || '—'],
        ['Private IP', w.private_ip || '—'],
        ['Endpoint', w.endpoint ? h('span', { class: 'mono' }, w.endpoint) : '—'],
        ['Launched', time(w.launched_at)],
        ['Created', h('span', null, time(w.created_at), h('span', { class: 'muted small' }, ` by ${w.created_by}`))],
        ['Updated', h('span', null, time(w.updated_at, true), h('span', { class: 'muted small' }, ` by ${w.updated_by}`))],
        w.terminated_at ? ['Terminated', h('span', null, time(w.terminated_at), ` by ${w.terminated_by || '—'}`)] : null,
      ]),
      h('h3', { class: 'sub-title' }, 'Tags'),
      tags.length
        ? h('ul', { class: 'tags' }, tags.map(([k, v]) => h('li', { class: 'tag' }, h('span', { class: 'tag-k' }, k), h('span', { class: 'tag-v' }, v))))
        : h('p', { class: 'muted' }, 'No tags.'));
  }

  /** Tag editing (shown to roles that may PATCH tags): remove a tag, set one. */
  function tagsPanel(w) {
    if (!may(session, ['PATCH', `${W}/tags`])) return null;
    const why = reasonOf(w, 'update_tags');
    const tags = Object.entries(w.tags || {});
    return card('Edit tags', 'tags-edit',
      tags.length
        ? h('ul', { class: 'tags', id: 'tags-edit-list' }, tags.map(([k, v]) => h('li', { class: 'tag', 'data-key': k },
          h('span', { class: 'tag-k' }, k), h('span', { class: 'tag-v' }, v),
          h('button', { type: 'button', class: 'btn btn-ghost btn-small', dataset: { action: 'tag-remove', tag: k, reason: why }, disabled: !!why || st.busy.has('tags'), title: why || `Remove ${k}`, 'aria-label': `Remove tag ${k}` }, '×'))))
        : h('p', { class: 'muted' }, 'No tags.'),
      h('form', { class: 'inline-form tags-form', id: 'tags-form', 'aria-label': 'Set a tag', novalidate: true },
        field({ id: 'tag-key', label: 'Key', control: h('input', { id: 'tag-key', class: 'input mono', maxlength: 128, autocomplete: 'off', 'data-keep': true, disabled: !!why }), errorFor: ['tags', 'set'] }),
        field({ id: 'tag-value', label: 'Value', control: h('input', { id: 'tag-value', class: 'input mono', maxlength: 256, autocomplete: 'off', 'data-keep': true, disabled: !!why }), errorFor: 'remove', grow: true }),
        h('div', { class: 'field field-end' }, h('button', { type: 'submit', class: 'btn', id: 'tag-save', disabled: !!why || st.busy.has('tags'), title: why }, st.busy.has('tags') ? 'Saving…' : 'Set tag')),
        formError('tags-error')),
      why ? h('p', { class: 'help', id: 'tags-blocked' }, `Not now: ${why}.`) : null);
  }

  function cmlPanel(w) {
    const s = w.sources || {};
    const info = s.system_information?.value;
    const health = s.health?.value;
    const stats = s.stats?.value;
    const computes = health?.computes || [];
    return card('CML', 'cml',
      facts([
        ['Service', h('span', null, serviceBadge(w.service?.status), w.service?.checked_at ? h('span', { class: 'muted small' }, ` checked ${fmtAgo(w.service.checked_at)}`) : null)],
        ['Version', info?.version || '—'],
        ['Ready', info ? boolBadge(info.ready, 'ready', 'not ready') : '—'],
        ['Health', health ? boolBadge(health.valid, 'valid', 'invalid') : '—'],
        ['Controller', health ? boolBadge(health.controller_valid, 'valid', 'invalid') : '—'],
        ['Core connected', health ? boolBadge(health.core_connected) : '—'],
        ['CPU', stats ? `${fmtPct(stats.cpu_percent)} of ${stats.cpu_count} CPUs` : '—'],
        ['Memory', stats ? `${fmtPct(stats.memory_percent)} (${fmtBytes(stats.memory_used)} of ${fmtBytes(stats.memory_total)})` : '—'],
        ['Disk', stats ? `${fmtBytes(stats.disk_used)} of ${fmtBytes(stats.disk_total)}` : '—'],
        ['Nodes', stats ? `${stats.running_nodes ?? '—'} running of ${stats.total_nodes ?? '—'}` : '—'],
      ]),
      (w.service?.reasons || []).length
        ? h('div', { class: 'reasons', id: 'service-reasons' }, h('h3', { class: 'sub-title' }, 'Why not ready'),
          h('ul', null, w.service.reasons.map((r) => h('li', null, h('span', { class: 'mono' }, r.call), `: ${r.code}${r.status ? ` ${r.status}` : ''}${r.detail ? ` — ${r.detail}` : ''}`))))
        : null,
      h('h3', { class: 'sub-title' }, `Computes (${computes.length})`),
      computes.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact' },
          h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Host'), h('th', { scope: 'col' }, 'Role'), h('th', { scope: 'col' }, 'Admission'), h('th', { scope: 'col' }, 'Valid'), h('th', { scope: 'col' }, 'Driver'))),
          h('tbody', null, computes.map((c) => h('tr', { 'data-key': c.id },
            h('th', { scope: 'row' }, c.hostname || c.id),
            h('td', null, c.is_controller ? 'controller' : 'compute'),
            h('td', null, c.admission_state),
            h('td', null, boolBadge(c.valid)),
            h('td', null, boolBadge(c.lld_connected, 'connected', 'disconnected')))))))
        : h('p', { class: 'muted' }, 'No compute data.'));
  }

  function licencePanel(w) {
    const lic = w.sources?.licence;
    const l = lic?.value;
    const canRegister = may(session, ['POST', `${W}/licence`]);
    const canDeregister = may(session, ['DELETE', `${W}/licence`]);
    const blocked = w.cml_blocked || reasonOf(w, 'licence');
    const running = !blocked;
    return card('Licence', 'licence',
      facts([
        ['Registration', l ? badge(l.registration, l.registration === 'COMPLETED' ? 'ok' : l.registration === 'FAILED' ? 'bad' : 'warn', { id: 'licence-registration' }) : '—'],
        ['Authorisation', l?.authorization || '—'],
        ['Product', l?.product || '—'],
        ['Smart account', l?.smart_account || '—'],
        ['Virtual account', l?.virtual_account || '—'],
        ['Expires', time(l?.expires)],
        ['Data', freshnessBadge(lic)],
        l?.last_failure ? ['Last failure', h('span', { class: 'error-text' }, l.last_failure)] : null,
      ]),
      canRegister || canDeregister ? h('form', { class: 'inline-form', id: 'licence-form', 'aria-label': 'Register the licence', novalidate: true },
        canRegister ? h('div', { class: 'field field-grow' },
          h('label', { for: 'licence-token', class: 'label' }, 'Smart Licensing token'),
          h('input', { id: 'licence-token', type: 'password', class: 'input', autocomplete: 'off', 'data-keep': true, disabled: !running, 'aria-describedby': 'licence-token-error' }),
          h('p', { id: 'licence-token-error', class: 'field-error', dataset: { errorFor: 'token', control: 'licence-token' } })) : null,
        canRegister ? h('div', { class: 'field check' },
          h('input', { id: 'licence-reregister', type: 'checkbox', 'data-keep': true, disabled: !running }),
          h('label', { for: 'licence-reregister' }, 'Register again')) : null,
        h('div', { class: 'field field-end' },
          canRegister ? h('button', { type: 'submit', class: 'btn', id: 'licence-register', disabled: !running || st.busy.has('licence'), title: blocked }, st.busy.has('licence') ? 'Registering…' : 'Register') : null,
          canDeregister ? h('button', { type: 'button', class: 'btn btn-danger-outline', id: 'licence-deregister', dataset: { action: 'deregister' }, disabled: !running || st.busy.has('deregister'), title: blocked }, 'Deregister') : null),
        formError('licence-error')) : null,
      blocked && (canRegister || canDeregister) ? h('p', { class: 'help', id: 'licence-blocked' }, `Not now: ${blocked}.`) : null);
  }

  function sourcesPanel(w) {
    const s = w.sources || {};
    const b = w.breaker;
    return card('Data sources', 'sources',
      h('p', { class: 'help' }, 'When a source fails, its last good value is shown, marked stale with its age, until it is too old.'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact', id: 'sources-table' },
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Source'), h('th', { scope: 'col' }, 'Freshness'), h('th', { scope: 'col' }, 'Age'), h('th', { scope: 'col', class: 'hide-sm' }, 'Last try'), h('th', { scope: 'col', class: 'num' }, 'Failures'), h('th', { scope: 'col' }, 'Last error'))),
        h('tbody', null,
          sourceRow('System information', s.system_information),
          sourceRow('Health', s.health),
          sourceRow('Statistics', s.stats),
          sourceRow('Licence', s.licence),
          sourceRow('Labs', s.labs_count),
          sourceRow('CloudWatch', s.cloudwatch),
          sourceRow('EC2 status checks', s.ec2_status)))),
      h('h3', { class: 'sub-title' }, 'Circuit breaker of the CML endpoint'),
      facts([
        ['State', h('span', { id: 'worker-breaker' }, breakerBadge(b))],
        ['Key', b ? h('span', { class: 'mono small' }, b.key) : '—'],
        ['Failures in a row', b ? String(b.consecutive_failures) : '—'],
        ['Opened', time(b?.opened_at, true)],
      ]));
  }

  function monitoringPanel(w) {
    const m = w.monitoring || {};
    const idle = m.idle || {};
    const canManage = may(session, ['PUT', `${W}/idle-detection`]);
    const canMonitor = may(session, ['POST', `${W}/detailed-monitoring`]);
    const monitorWhy = reasonOf(w, 'enable_detailed_monitoring');
    const idleText = idle.action === 'pause' ? 'idle: will be paused'
      : idle.action === 'would_pause' ? 'idle: would be paused (dry run)'
        : idle.keep_reason === 'not_idle' ? `in use · idle in ${fmtDuration(idle.remaining_seconds)}`
          : idle.keep_reason === 'snoozed' ? `resumed recently · ${fmtDuration(idle.remaining_seconds)} of grace left`
            : idle.keep_reason === 'kept_awake' ? 'kept awake'
              : idle.keep_reason ? humanize(idle.keep_reason) : '—';
    const counters = (c) => c ? `${c.idle_timeout} idle · ${c.schedule || 0} schedule · ${c.manual} manual · ${c.external} external` : '—';
    const src = m.last_activity_source;
    const source = !src ? '—'
      : src.kind === 'running_nodes' ? `${src.running_nodes} running node${src.running_nodes === 1 ? '' : 's'}${idle.running_nodes_count_as_use ? '' : ' (not counted as use)'}`
        : `telemetry: ${humanize(src.category || 'event')}${src.user_id ? ` · user ${src.user_id}` : ''}`;
    const acts = idle.pause_at
      ? h('span', { id: 'idle-pause-at' }, time(idle.pause_at), idle.warning ? [' ', badge('pause soon', 'warn')] : null)
      : h('span', { id: 'idle-pause-at' }, 'never, as things stand');
    const snooze = m.snooze;
    const running = w.ec2_state === 'running';
    const snoozeBusy = st.busy.has('snooze');
    const snoozeRow = h('div', { class: 'snooze', id: 'snooze' },
      snooze
        ? h('span', null, 'Kept awake until ', time(snooze.until), h('span', { class: 'muted small' }, ` · set by ${snooze.by}`), ' ',
          h('button', { type: 'button', class: 'btn btn-small', dataset: { action: 'snooze-clear' }, disabled: !canManage || snoozeBusy }, 'End'))
        : h('span', { class: 'muted' }, 'Not kept awake. '),
      h('span', { class: 'btn-group', role: 'group', 'aria-label': 'Keep awake' },
        h('button', { type: 'button', class: 'btn btn-small', dataset: { action: 'snooze', preset: '1h' }, disabled: !canManage || !running || snoozeBusy }, 'Keep awake 1 h'),
        h('button', { type: 'button', class: 'btn btn-small', dataset: { action: 'snooze', preset: '4h' }, disabled: !canManage || !running || snoozeBusy }, '4 h'),
        h('button', { type: 'button', class: 'btn btn-small', dataset: { action: 'snooze', preset: 'tomorrow' }, disabled: !canManage || !running || snoozeBusy }, 'Until tomorrow 09:00')));
    const sch = m.schedule;
    const schedule = !sch ? 'none'
      : h('span', { id: 'schedule' }, h('span', { class: 'mono small' }, sch.off_hours), ' · ',
        sch.state === 'off_hours' ? ['off-hours until ', time(sch.until)] : ['next off-hours ', time(sch.next)]);
    return card('Monitoring', 'monitoring',
      h('div', { class: 'switch-row' },
        h('input', { type: 'checkbox', id: 'idle-detection', role: 'switch', class: 'switch', checked: !!m.idle_detection, disabled: !canManage || st.busy.has('idle'), 'aria-describedby': 'idle-detection-help' }),
        h('label', { for: 'idle-detection' }, 'Idle detection and auto-pause'),
        h('span', { id: 'idle-detection-help', class: 'help' }, m.idle_detection ? 'On: stopped after the idle timeout without activity.' : 'Off: this worker is never paused for idleness.')),
      facts([
        ['Idle policy', h('span', { id: 'idle-state' }, idleText)],
        ['Idle for', idle.idle_for_seconds != null ? fmtDuration(idle.idle_for_seconds) : '—'],
        ['Last activity', time(m.last_activity, true)],
        ['Activity source', h('span', { id: 'activity-source' }, source)],
        ['Policy acts', acts],
        ['Idle timeout', h('span', { id: 'idle-timeout' }, fmtDuration(idle.timeout_seconds),
          ({
            fleet_busy: ' · break: most of the fleet is in use',
            session_ended: ' · session ended: lab stopped, no running nodes',
            no_return: ' · session ended at an hour when people (almost) never come back',
            run_ended: ' · unattended run ended: lab stopped after hours untouched; its user may come for the results',
            learned_return: ' · people often come back after breaks at this hour (a lunch — quiet from midday, or from the morning where the fleet\'s users are away at midday — waits for the longest remembered return)',
            nobody_since_start: ' · nobody has used it since ccm brought it up (an automatic import, a schedule\'s start)',
            midday: ' · lunch: quiet into the middle of the working day, no evidence about this hour when it went quiet: the longest lunch the policy allows',
          })[idle.timeout_rule] || '',
          idle.return_breaks != null
            ? h('span', { class: 'muted small' }, ` (${idle.return_returned} of ${idle.return_breaks} ${idle.return_scope === 'fleet' ? 'fleet' : 'own'} breaks near this hour ended in a return)`)
            : null)],
        ['Midday dip', h('span', { id: 'midday-dip' }, !idle.midday_dip ? '—'
          : [idle.midday_dip.dip ? 'yes: a morning stretch that reaches midday is a lunch' : 'no: a morning stretch is no lunch',
            h('span', { class: 'muted small' }, ` (users away an hour before / in the middle of / an hour after the midday hours: ${idle.midday_dip.before} / ${idle.midday_dip.middle} / ${idle.midday_dip.after}; a dip needs the middle above each side by more than twice the square root of their sum)`)])],
        ['Keep awake', snoozeRow],
        ['Schedule', schedule],
        ['Activity read', time(m.activity_checked_at, true)],
        ['Last resume', time(m.last_resume, true)],
        ['Paused', m.paused_at ? h('span', null, time(m.paused_at, true), ` (${m.pause_reason || '—'})`) : 'no'],
        ['Pauses', counters(m.pauses)],
        ['Resumes', counters(m.resumes)],
        ['Stopped by ccm', fmtDuration(m.seconds_stopped_by_ccm)],
        ['Detailed CloudWatch', m.detailed_monitoring ? badge('on (1 min)', 'ok') : h('span', null, 'off (5 min) ',
          canMonitor ? h('button', { type: 'button', class: 'btn btn-small', id: 'detailed-monitoring', dataset: { action: 'detailed-monitoring', reason: monitorWhy }, disabled: !!monitorWhy || st.busy.has('detailed-monitoring'), title: monitorWhy }, 'Turn on') : null)],
      ]),
      h('h3', { class: 'sub-title' }, 'Pause and resume history'),
      (m.history || []).length
        ? h('ol', { class: 'history', reversed: true }, [...m.history].reverse().slice(0, 10).map((e) => h('li', null,
          badge(e.kind, e.kind === 'paused' ? 'neutral' : 'ok'), ' ', time(e.at), h('span', { class: 'muted small' }, ` ${e.reason}${e.by ? ` · ${e.by}` : ''}`))))
        : h('p', { class: 'muted' }, 'Never paused.'));
  }

  function metricsPanel() {
    const now = Date.now();
    let from = now - RANGE_MS[st.range];
    let body;
    if (st.metricsError) body = errorBox('The metrics could not be loaded', st.metricsError.detail);
    else if (!st.metrics) body = loading('Loading metrics…');
    else {
      const pts = st.metrics.points.map((p) => ({ ...p, t: Date.parse(p.at) }));
      // A history younger than the range fills the chart (at least 15 minutes wide).
      if (pts.length) from = Math.max(from, Math.min(pts[0].t, now - 15 * 60_000));
      const line = (key) => pts.map((p) => [p.t, p[key] ?? null]);
      body = h('div', { class: 'charts' },
        lineChart({ id: 'chart-cpu', title: 'CPU', unit: '%', max: 100, from, to: now, series: [{ name: 'CloudWatch', points: line('cpu_percent') }, { name: 'CML', points: line('cml_cpu_percent') }] }),
        lineChart({ id: 'chart-memory', title: 'Memory', unit: '%', max: 100, from, to: now, series: [{ name: 'CloudWatch', points: line('memory_percent') }, { name: 'CML', points: line('cml_memory_percent') }] }),
        lineChart({ id: 'chart-nodes', title: 'Running nodes', from, to: now, series: [{ name: 'Nodes', points: line('running_nodes') }] }));
    }
    return h('section', { class: 'panel panel-wide', 'aria-labelledby': 'metrics-title', id: 'metrics' },
      h('div', { class: 'panel-head' },
        h('h2', { class: 'panel-title', id: 'metrics-title' }, 'Metrics history'),
        h('div', { class: 'field field-inline' },
          h('label', { for: 'metrics-range', class: 'label' }, 'Range'),
          h('select', { id: 'metrics-range', class: 'input' }, RANGES.map(([v, t]) => h('option', { value: v, selected: v === st.range }, t))))),
      body);
  }

  function labsPanel(w) {
    const canImport = may(session, ['POST', `${W}/labs`]);
    const canDownload = may(session, ['GET', `${LAB}/topology`]);
    const blocked = w.cml_blocked;
    const running = !blocked;
    let body;
    if (st.labsError) body = errorBox('The labs could not be loaded', st.labsError.detail);
    else if (!st.labs) body = loading('Loading labs…');
    else if (!st.labs.length) body = h('p', { class: 'muted' }, 'No labs on this worker.');
    else {
      body = h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'labs-table' },
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Lab'), h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col', class: 'num' }, 'Nodes'), h('th', { scope: 'col', class: 'num hide-sm' }, 'Links'), h('th', { scope: 'col', class: 'hide-sm' }, 'Owner'), h('th', { scope: 'col', class: 'hide-md' }, 'Modified'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
        h('tbody', null, st.labs.map((l) => h('tr', { 'data-key': l.lab_id, dataset: { lab: l.lab_id } },
          h('th', { scope: 'row' }, h('span', { class: 'lab-title' }, l.title), l.description ? h('span', { class: 'sub' }, l.description) : null),
          h('td', null, badge(l.state.toLowerCase().replace(/_/g, ' '), l.state === 'STARTED' ? 'ok' : l.state === 'STOPPED' ? 'neutral' : 'muted')),
          h('td', { class: 'num' }, String(l.node_count)),
          h('td', { class: 'num hide-sm' }, String(l.link_count)),
          h('td', { class: 'hide-sm' }, l.owner_username || l.owner || '—'),
          h('td', { class: 'hide-md' }, time(l.modified, true)),
          h('td', { class: 'row-actions' },
            Object.entries(LAB_ACTIONS).filter(([, a]) => may(session, a.route)).map(([name, a]) => {
              const busy = st.busy.has(`${name}:${l.lab_id}`);
              const why = blocked || l.action_reasons?.[a.key] || null;
              return h('button', {
                type: 'button', class: ['btn', 'btn-small', a.confirm && name !== 'lab-stop' && 'btn-danger-outline'],
                dataset: { action: name, lab: l.lab_id, reason: why }, disabled: !!why || busy, title: why,
                'aria-label': `${a.label} lab ${l.title}`,
              }, busy ? '…' : a.label);
            }),
            canDownload ? h('button', { type: 'button', class: 'btn btn-small', dataset: { action: 'lab-download', lab: l.lab_id, reason: blocked }, disabled: !!blocked || st.busy.has(`lab-download:${l.lab_id}`), title: blocked, 'aria-label': `Download the topology of lab ${l.title}` }, 'Download') : null))))));
    }
    return h('section', { class: 'panel panel-wide', 'aria-labelledby': 'labs-title', id: 'labs' },
      h('h2', { class: 'panel-title', id: 'labs-title' }, `Labs${st.labs ? ` (${st.labs.length})` : ''}`),
      body,
      canImport ? h('form', { class: 'inline-form', id: 'lab-import-form', 'aria-label': 'Import a lab', novalidate: true },
        h('div', { class: 'field field-grow' },
          h('label', { for: 'lab-file', class: 'label' }, 'Import a topology (CML YAML)'),
          h('input', { id: 'lab-file', type: 'file', accept: '.yaml,.yml,application/yaml,text/yaml', class: 'input', 'data-keep': true, disabled: !running, 'aria-describedby': 'lab-file-error' }),
          h('p', { id: 'lab-file-error', class: 'field-error', dataset: { errorFor: 'topology', control: 'lab-file' } })),
        h('div', { class: 'field' },
          h('label', { for: 'lab-title', class: 'label' }, 'Title (optional)'),
          h('input', { id: 'lab-title', type: 'text', class: 'input', maxlength: 128, 'data-keep': true, disabled: !running, 'aria-describedby': 'lab-title-error' }),
          h('p', { id: 'lab-title-error', class: 'field-error', dataset: { errorFor: 'title', control: 'lab-title' } })),
        h('div', { class: 'field field-end' },
          h('button', { type: 'submit', class: 'btn', id: 'lab-import', disabled: !running || st.busy.has('import'), title: blocked }, st.busy.has('import') ? 'Importing…' : 'Import')),
        formError('lab-import-error'),
        blocked ? h('p', { class: 'help', id: 'labs-blocked' }, `Not now: ${blocked}.`) : null) : null);
  }

  function eventsPanel() {
    return h('section', { class: 'panel', 'aria-labelledby': 'events-title', id: 'events' },
      h('h2', { class: 'panel-title', id: 'events-title' }, 'Recent events'),
      !st.events ? loading('Loading events…')
        : !st.events.length ? h('p', { class: 'muted' }, 'No events yet.')
          : h('ol', { class: 'events' }, st.events.slice(0, 12).map(({ seq, event }) => h('li', { 'data-key': String(seq) },
            time(event.time, true),
            h('span', { class: 'event-text' }, eventSummary(event), h('span', { class: 'event-type mono small' }, event.type.replace(/^ccm\./, '')))))));
  }

  function draw() {
    if (destroyed) return;
    if (st.notFound) {
      document.title = 'Worker not found · ccm';
      render(container, h('div', { class: 'page' }, errorBox('Worker not found', 'It may have been deleted.'), h('p', null, h('a', { href: '#/' }, 'Back to the fleet'))));
      return;
    }
    const w = st.worker;
    if (!w) {
      render(container, st.error ? errorBox('The worker could not be loaded', st.error.detail) : loading('Loading worker…'));
      return;
    }
    document.title = `${w.name} · ccm`;
    render(container, h('div', { class: 'page worker-page', dataset: { workerId: w.id } },
      header(w),
      h('div', { class: 'grid' },
        ec2Panel(w),
        tagsPanel(w),
        cmlPanel(w),
        monitoringPanel(w),
        sourcesPanel(w),
        metricsPanel(),
        labsPanel(w),
        licencePanel(w),
        eventsPanel())));
    for (const [formId, err] of Object.entries(st.errors)) {
      const form = document.getElementById(formId);
      if (form) showProblem(form, err, { focus: false });
    }
    if (!headingFocused) {
      headingFocused = true;
      focusHeading(container);
    }
  }

  // === actions ===

  async function runWorkerAction(name) {
    const w = st.worker;
    const a = ACTIONS[name];
    if (a.confirm && !(await confirmAction(a.confirm(w)))) return;
    st.busy.add(name);
    draw();
    try {
      const path = `/api/v1/workers/${seg(id)}`;
      if (name === 'delete') {
        await del(path);
        notify(`${w.name}: record deleted`);
        location.hash = '#/';
        return;
      }
      const res = await post(`${path}/${name}`);
      if (name === 'refresh') {
        applyView(res.worker);
        notify(res.outcome === 'skipped' ? `Refresh skipped: ${humanize(res.reason || '')}${res.retry_in_seconds ? ` (try again in ${res.retry_in_seconds} s)` : ''}` : `${w.name} refreshed`, res.outcome === 'skipped' ? 'info' : 'ok');
        loadLabs();
      } else {
        applyView(res);
        notify(`${w.name}: ${a.label.toLowerCase()} requested`);
      }
    } catch (e) {
      notifyError(`${a.label} failed`, e);
    } finally {
      st.busy.delete(name);
      st.worker = fleet.workers.get(id) || st.worker;
      draw();
    }
  }

  async function runLabAction(name, labId) {
    const lab = (st.labs || []).find((l) => l.lab_id === labId);
    if (!lab) return;
    const a = LAB_ACTIONS[name];
    if (a.confirm && !(await confirmAction(a.confirm(lab)))) return;
    const key = `${name}:${labId}`;
    st.busy.add(key);
    draw();
    const path = `/api/v1/workers/${seg(id)}/labs/${seg(labId)}`;
    try {
      if (name === 'lab-delete') await del(path);
      else await post(`${path}/${name.slice(4)}`);
      notify(`Lab ${lab.title}: ${a.label.toLowerCase()} done`);
    } catch (e) {
      notifyError(`${a.label} of lab ${lab.title} failed`, e);
    } finally {
      st.busy.delete(key);
      loadLabs();
    }
  }

  /** Downloads a lab's topology (YAML) through the API, as a file. */
  async function downloadLab(labId) {
    const lab = (st.labs || []).find((l) => l.lab_id === labId);
    if (!lab) return;
    const key = `lab-download:${labId}`;
    st.busy.add(key);
    draw();
    try {
      const text = await get(`/api/v1/workers/${seg(id)}/labs/${seg(labId)}/topology`, { headers: { Accept: 'application/yaml, text/yaml, */*' } });
      const url = URL.createObjectURL(new Blob([text], { type: 'application/yaml' }));
      const a = h('a', { href: url, download: `${lab.title.replace(/[^\w.-]+/g, '_') || 'lab'}.yaml`, class: 'sr-only' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      notify(`Lab ${lab.title}: topology downloaded (${text.length} characters)`);
    } catch (e) {
      notifyError(`Download of lab ${lab.title} failed`, e);
    } finally {
      st.busy.delete(key);
      draw();
    }
  }

  async function setIdleDetection(enabled) {
    st.busy.add('idle');
    draw();
    try {
      applyView(await put(`/api/v1/workers/${seg(id)}/idle-detection`, { enabled }));
      notify(`Idle detection ${enabled ? 'on' : 'off'}`);
    } catch (e) {
      notifyError('Idle detection could not be changed', e);
    } finally {
      st.busy.delete('idle');
      st.worker = fleet.workers.get(id) || st.worker;
      draw();
    }
  }

  async function simple(key, fn, ok, failed) {
    st.busy.add(key);
    draw();
    try {
      const res = await fn();
      if (res && res.id === id) applyView(res);
      notify(ok);
    } catch (e) {
      notifyError(failed, e);
    } finally {
      st.busy.delete(key);
      st.worker = fleet.workers.get(id) || st.worker;
      draw();
    }
  }

  container.addEventListener('click', onClick);
  container.addEventListener('change', onChange);
  container.addEventListener('submit', onSubmit);

  function onClick(e) {
    const b = e.target.closest('button[data-action]');
    if (!b || b.disabled) return;
    const name = b.dataset.action;
    if (ACTIONS[name]) runWorkerAction(name);
    else if (LAB_ACTIONS[name]) runLabAction(name, b.dataset.lab);
    else if (name === 'snooze') {
      const until = snoozeUntil(b.dataset.preset, new Date());
      simple('snooze', () => put(`/api/v1/workers/${seg(id)}/snooze`, { until: until.toISOString() }),
        `Kept awake until ${until.toLocaleString()}`, 'Could not keep the worker awake');
    } else if (name === 'snooze-clear') {
      simple('snooze', () => del(`/api/v1/workers/${seg(id)}/snooze`), 'Keep-awake ended', 'Could not end the keep-awake');
    }
    else if (name === 'lab-download') downloadLab(b.dataset.lab);
    else if (name === 'tag-remove') {
      const key = b.dataset.tag;
      confirmAction({ title: `Remove the tag ${key}?`, body: `The tag is removed from the EC2 instance and from ccm's record.`, confirm: 'Remove tag' })
        .then((yes) => yes && simple('tags', () => patch(`/api/v1/workers/${seg(id)}/tags`, { remove: [key] }), `Tag ${key} removed`, `Tag ${key} could not be removed`));
    }
    else if (name === 'detailed-monitoring') {
      simple('detailed-monitoring', () => post(`/api/v1/workers/${seg(id)}/detailed-monitoring`), 'Detailed monitoring on', 'Detailed monitoring could not be turned on');
    } else if (name === 'deregister') {
      confirmAction({ title: `Deregister the licence of ${st.worker.name}?`, body: 'CML loses its licence and stops accepting new nodes until registered again.', confirm: 'Deregister' })
        .then((yes) => yes && simple('deregister', () => del(`/api/v1/workers/${seg(id)}/licence`), 'Deregistration started', 'Deregistration failed'));
    }
  }

  function onChange(e) {
    if (e.target.id === 'idle-detection') setIdleDetection(e.target.checked);
    if (e.target.id === 'metrics-range') {
      st.range = e.target.value;
      st.metrics = null;
      draw();
      loadMetrics();
    }
  }

  /** Shows a form's failure next to its field, and keeps it shown across live redraws. */
  function failed(form, err) {
    st.errors[form.id] = err;
    showProblem(form, err);
  }

  function cleared(form) {
    delete st.errors[form.id];
    clearErrors(form);
  }

  async function onSubmit(e) {
    e.preventDefault();
    const form = e.target;
    if (form.id === 'tags-form') {
      cleared(form);
      const key = form.querySelector('#tag-key').value.trim();
      const value = form.querySelector('#tag-value').value;
      if (!key) {
        failed(form, { field: 'tags', detail: 'Enter the tag key.' });
        return;
      }
      st.busy.add('tags');
      draw();
      try {
        applyView(await patch(`/api/v1/workers/${seg(id)}/tags`, { set: { [key]: value } }));
        notify(`Tag ${key} set`);
        form.reset();
      } catch (err) {
        failed(form, err);
      } finally {
        st.busy.delete('tags');
        st.worker = fleet.workers.get(id) || st.worker;
        draw();
      }
    } else if (form.id === 'licence-form') {
      cleared(form);
      const token = form.querySelector('#licence-token');
      if (!token.value.trim()) {
        failed(form, { field: 'token', detail: 'Enter the Smart Licensing token.' });
        return;
      }
      const reregister = form.querySelector('#licence-reregister').checked;
      st.busy.add('licence');
      draw();
      try {
        await post(`/api/v1/workers/${seg(id)}/licence`, { token: token.value.trim(), reregister });
        notify('Registration started: watch the licence status');
        token.value = '';
      } catch (err) {
        failed(form, err);
      } finally {
        st.busy.delete('licence');
        draw();
      }
    } else if (form.id === 'lab-import-form') {
      cleared(form);
      const file = form.querySelector('#lab-file').files[0];
      if (!file) {
        failed(form, { field: 'topology', detail: 'Choose a topology file.' });
        return;
      }
      const title = form.querySelector('#lab-title').value.trim();
      st.busy.add('import');
      draw();
      try {
        const topology = await file.text();
        const res = await post(`/api/v1/workers/${seg(id)}/labs`, title ? { topology, title } : { topology });
        notify(`Lab imported: ${res.lab?.title || res.lab_id}`);
        form.reset();
      } catch (err) {
        failed(form, err);
      } finally {
        st.busy.delete('import');
        loadLabs();
      }
    }
  }

  // === live ===

  let eventsTimer = null;
  let metricsTimer = null;
  const off = subscribe((change) => {
    let mine = false;
    for (const ev of change.events) {
      if (ev.subject !== id) continue;
      mine = true;
      if (ev.type === 'ccm.worker.synced') refetch(id);
      if (ev.type.startsWith('ccm.lab')) loadLabs();
      if (ev.type === 'ccm.worker.metrics_updated' && !metricsTimer) {
        metricsTimer = setTimeout(() => {
          metricsTimer = null;
          loadMetrics();
        }, 5000);
      }
    }
    if (mine && !eventsTimer) {
      eventsTimer = setTimeout(() => {
        eventsTimer = null;
        loadEvents();
      }, 1000);
    }
    if (change.ids.has(id)) {
      if (!fleet.workers.has(id) && st.worker) {
        st.notFound = true;
      } else {
        st.worker = fleet.workers.get(id) || st.worker;
      }
      draw();
    }
  });
  const tick = setInterval(draw, 10_000);

  replaceChildren(container, loading('Loading worker…'));
  draw();
  loadWorker();
  loadLabs();
  loadMetrics();
  loadEvents();

  return {
    destroy() {
      destroyed = true;
      off();
      clearInterval(tick);
      clearTimeout(eventsTimer);
      clearTimeout(metricsTimer);
      container.removeEventListener('click', onClick);
      container.removeEventListener('change', onChange);
      container.removeEventListener('submit', onSubmit);
    },
  };
}

