// The runtime settings: a form built from the settings the API returns (so a new setting
// shows up without a UI change), saved as a JSON merge patch of what changed, with the
// version read as If-Match. The server validates; its error names the field, shown next to
// that field.

import { get, patch } from './api.js';
import { h, replaceChildren, humanize, focusHeading, loading, errorBox } from './dom.js';
import { notify } from './dialog.js';

/** Labels and help for the known settings (others fall back to their key). */
const LABELS = {
  idle: ['Idle detection', 'When an unused worker is paused automatically.'],
  'idle.enabled': ['Idle detection on', 'Global switch; each worker also has its own.'],
  'idle.dry_run': ['Dry run', 'Report what would be paused, pause nothing.'],
  'idle.timeout': ['Idle timeout', 'Pause a worker after this long without activity.'],
  'idle.snooze_after_resume': ['Snooze after resume', 'No auto-pause for this long after a resume.'],
  'idle.activity_max_age': ['Activity maximum age', 'Activity must have been read within this long, or nothing is paused.'],
  polling: ['Polling', 'What is polled, and how often. Each worker’s polls are spread over the interval.'],
  'polling.ec2_enabled': ['EC2 state sync'],
  'polling.ec2_interval': ['EC2 sync interval'],
  'polling.cml_enabled': ['CML sync'],
  'polling.cml_interval': ['CML sync interval'],
  'polling.metrics_enabled': ['CloudWatch metrics'],
  'polling.metrics_interval': ['Metrics interval'],
  'polling.labs_enabled': ['Labs refresh'],
  'polling.labs_interval': ['Labs interval'],
  'polling.activity_enabled': ['Activity reads and idle policy'],
  'polling.activity_interval': ['Activity interval'],
  'polling.auto_import_enabled': ['Auto-import'],
  'polling.auto_import_interval': ['Auto-import interval'],
  'polling.stale_max_age': ['Stale data maximum age', 'How long a failing source’s last value is still shown (marked stale).'],
};

const ORDER = Object.keys(LABELS);

/** Known settings in the order above (switch beside its interval), then any others. */
function byOrder([a], [b]) {
  const rank = (k) => (ORDER.includes(k) ? ORDER.indexOf(k) : ORDER.length);
  return rank(a) - rank(b) || a.localeCompare(b);
}

function fieldId(key) {
  return `setting-${key.replace(/[^a-zA-Z0-9]+/g, '-')}`;
}

function flatten(obj, prefix = '', out = {}) {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v)) flatten(v, key, out);
    else out[key] = v;
  }
  return out;
}

function setPath(obj, key, value) {
  const parts = key.split('.');
  let o = obj;
  for (const p of parts.slice(0, -1)) o = o[p] ??= {};
  o[parts[parts.length - 1]] = value;
}

/** Mounts the settings page. */
export function mountSettings(container, { session }) {
  document.title = 'Settings · ccm';
  const isAdmin = session.role === 'admin';
  let loaded = null;
  let destroyed = false;

  function fieldFor(key, value) {
    const [label, help] = LABELS[key] || [humanize(key.split('.').pop())];
    const id = fieldId(key);
    const describedBy = [help ? `${id}-help` : null, `${id}-error`].filter(Boolean).join(' ');
    const error = h('p', { id: `${id}-error`, class: 'field-error', dataset: { errorFor: key } });
    const helpEl = help ? h('p', { id: `${id}-help`, class: 'help' }, help) : null;
    if (typeof value === 'boolean') {
      return h('div', { class: 'setting setting-bool' },
        h('div', { class: 'switch-row' },
          h('input', { type: 'checkbox', role: 'switch', class: 'switch', id, name: key, checked: value, disabled: !isAdmin, 'aria-describedby': describedBy, dataset: { key, kind: 'bool' } }),
          h('label', { for: id }, label)),
        helpEl, error);
    }
    const numeric = typeof value === 'number';
    return h('div', { class: 'setting' },
      h('label', { for: id, class: 'label' }, label),
      h('input', {
        type: numeric ? 'number' : 'text', class: 'input', id, name: key, value: String(value), disabled: !isAdmin,
        'aria-describedby': describedBy, spellcheck: 'false', autocomplete: 'off', dataset: { key, kind: numeric ? 'number' : 'text' },
      }),
      helpEl,
      error);
  }

  function draw(data) {
    const groups = Object.entries(data.settings).sort(byOrder);
    const status = h('p', { id: 'settings-status', class: 'form-status', role: 'status', 'aria-live': 'polite' });
    const save = h('button', { type: 'submit', class: 'btn btn-primary', id: 'settings-save', disabled: !isAdmin }, 'Save changes');
    const reset = h('button', { type: 'button', class: 'btn', id: 'settings-reset', disabled: !isAdmin }, 'Undo changes');
    const form = h('form', { class: 'settings-form', id: 'settings-form', novalidate: true, 'aria-describedby': 'settings-intro' },
      groups.map(([group, values]) => {
        const [title, help] = LABELS[group] || [humanize(group)];
        const entries = (values && typeof values === 'object' ? Object.entries(flatten(values, group)) : [[group, values]]).sort(byOrder);
        return h('fieldset', { class: 'panel settings-group' },
          h('legend', { class: 'panel-title' }, title),
          help ? h('p', { class: 'help' }, help) : null,
          h('div', { class: 'settings-fields' }, entries.map(([k, v]) => fieldFor(k, v))));
      }),
      h('div', { class: 'form-actions' }, save, reset, status));
    replaceChildren(container, h('div', { class: 'page' },
      h('div', { class: 'page-head' }, h('div', null,
        h('h1', null, 'Settings'),
        h('p', { class: 'muted', id: 'settings-intro' },
          `Runtime settings, applied at once without a restart (version ${data.version}). `,
          'Durations are written like 30s, 15m or 1h 30m. ',
          isAdmin ? 'Changes are checked by the server.' : 'Only admins can change them.'))),
      form));

    reset.addEventListener('click', () => draw(loaded));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      for (const el of form.querySelectorAll('[data-error-for]')) el.textContent = '';
      for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
      status.textContent = '';
      const before = flatten(loaded.settings);
      const changes = {};
      let n = 0;
      for (const input of form.querySelectorAll('[data-key]')) {
        const key = input.dataset.key;
        let value = input.dataset.kind === 'bool' ? input.checked : input.dataset.kind === 'number' ? Number(input.value) : input.value.trim();
        if (input.dataset.kind === 'number' && Number.isNaN(value)) value = input.value;
        if (value !== before[key]) {
          setPath(changes, key, value);
          n++;
        }
      }
      if (!n) {
        status.textContent = 'Nothing to save.';
        return;
      }
      save.disabled = true;
      save.textContent = 'Saving…';
      try {
        const saved = await patch('/api/v1/settings', changes, { contentType: 'application/merge-patch+json', headers: { 'If-Match': `"${loaded.version}"` } });
        loaded = saved;
        draw(saved);
        notify(`Settings saved (${n} change${n === 1 ? '' : 's'})`);
        document.getElementById('settings-status').textContent = `Saved: version ${saved.version}.`;
      } catch (err) {
        save.disabled = false;
        save.textContent = 'Save changes';
        if (err.status === 409) {
          status.textContent = 'Someone changed the settings meanwhile. Undo your changes to load theirs, then try again.';
          get('/api/v1/settings').then((fresh) => {
            loaded = fresh;
          }).catch(() => {});
          return;
        }
        const target = err.field && form.querySelector(`[data-error-for="${CSS.escape(err.field)}"]`);
        if (target) {
          target.textContent = err.detail;
          const input = document.getElementById(fieldId(err.field));
          if (input) {
            input.setAttribute('aria-invalid', 'true');
            input.focus();
          }
          status.textContent = 'Not saved: fix the marked field.';
        } else {
          status.textContent = `Not saved: ${err.detail || err.message}`;
        }
      }
    });
  }

  (async () => {
    replaceChildren(container, loading());
    try {
      loaded = await get('/api/v1/settings');
      if (destroyed) return;
      draw(loaded);
      focusHeading(container);
    } catch (e) {
      if (!destroyed) replaceChildren(container, errorBox('The settings could not be loaded', e.detail || e.message));
    }
  })();

  return {
    destroy() {
      destroyed = true;
    },
  };
}
