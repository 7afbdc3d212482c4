// Import workers: by instance ids, by image id, by image name pattern, or the configured
// filter. A preview (the API's dry run) lists the matching instances and which already are
// workers; the import itself is confirmed from there. Errors appear next to the field.

import { get, post } from './api.js';
import { h, render, replaceChildren, time, focusHeading, loading, errorBox, fmtNum } from './dom.js';
import { ec2Badge, badge } from './badges.js';
import { confirmAction, notify } from './dialog.js';
import { field, clearErrors, showProblem, showFieldError, formError, permitted } from './forms.js';

const MODES = [
  ['instance_ids', 'Instance ids'],
  ['ami_id', 'Image id'],
  ['ami_name_pattern', 'Image name pattern'],
  ['configured', 'The configured filter'],
];

/** Mounts the import page. */
export function mountImport(container, { session }) {
  document.title = 'Import workers · ccm';
  if (!permitted(session, 'POST', '/api/v1/workers/import/preview')) {
    render(container, h('div', { class: 'page' }, errorBox('Not allowed', `Your role (${session.role}) may not import workers.`), h('p', null, h('a', { href: '#/' }, 'Back to the fleet'))));
    return null;
  }
  let destroyed = false;
  replaceChildren(container, loading('Loading the import options…'));
  get('/api/v1/system/provisioning').then((opts) => {
    if (!destroyed) draw(opts);
  }).catch((e) => {
    if (!destroyed) render(container, errorBox('The import options could not be loaded', e.detail || e.message));
  });

  function draw(opts) {
    const imp = opts.import || {};
    const configuredText = [imp.ami_name_pattern && `images named “${imp.ami_name_pattern}”`, imp.tag && `tag ${imp.tag}`].filter(Boolean).join(' and ') || 'no filter configured';
    const mode = h('select', { id: 'import-mode', class: 'input' }, MODES.map(([v, t]) => h('option', { value: v }, v === 'configured' ? `${t} (${configuredText})` : t)));
    const value = h('textarea', { id: 'import-value', class: 'input mono', rows: 2, autocomplete: 'off', placeholder: 'i-0123456789abcdef0, one per line or comma-separated' });
    const region = h('select', { id: 'import-region', class: 'input' },
      h('option', { value: '' }, `All (${(imp.regions || []).join(', ') || 'configured regions'})`),
      (opts.regions || []).map((r) => h('option', { value: r }, r)));
    const previewBtn = h('button', { type: 'submit', class: 'btn btn-primary', id: 'import-preview' }, 'Preview');
    const result = h('div', { id: 'import-result', 'aria-live': 'polite' });
    const form = h('form', { class: 'panel form-panel', id: 'import-form', 'aria-labelledby': 'import-title', novalidate: true },
      h('div', { class: 'form-grid' },
        field({ id: 'import-mode', label: 'Import by', control: mode, errorFor: ['import', 'configured'] }),
        field({ id: 'import-region', label: 'Region', control: region, errorFor: 'region' }),
        field({ id: 'import-value', label: 'Instance ids, image id or pattern', control: value, errorFor: ['instance_ids', 'ami_id', 'ami_name_pattern'], grow: true })),
      formError('import-error'),
      h('div', { class: 'form-actions' }, previewBtn, h('a', { href: '#/', class: 'btn btn-ghost' }, 'Cancel')));
    render(container, h('div', { class: 'page' },
      h('div', { class: 'page-head' }, h('div', null,
        h('nav', { 'aria-label': 'Breadcrumb', class: 'breadcrumb' }, h('a', { href: '#/' }, 'Fleet'), h('span', { 'aria-hidden': 'true' }, ' / '), h('span', { 'aria-current': 'page' }, 'Import')),
        h('h1', { id: 'import-title' }, 'Import workers'),
        h('p', { class: 'muted' }, 'Existing EC2 instances become workers. Preview first: nothing changes until you confirm.'))),
      form,
      result));
    focusHeading(container);

    const placeholders = {
      instance_ids: 'i-0123456789abcdef0, one per line or comma-separated',
      ami_id: 'ami-0123456789abcdef0',
      ami_name_pattern: 'cml-controller-2.9*',
      configured: '',
    };
    mode.addEventListener('change', () => {
      value.disabled = mode.value === 'configured';
      value.placeholder = placeholders[mode.value];
      replaceChildren(result);
    });

    function body() {
      const b = {};
      if (region.value) b.region = region.value;
      const text = value.value.trim();
      switch (mode.value) {
        case 'instance_ids': b.instance_ids = text.split(/[\s,]+/).filter(Boolean); break;
        case 'ami_id': b.ami_id = text; break;
        case 'ami_name_pattern': b.ami_name_pattern = text; break;
        default: b.configured = true;
      }
      return b;
    }

    async function doImport(req, preview) {
      const n = preview.new;
      const yes = await confirmAction({
        title: `Import ${fmtNum(n)} instance${n === 1 ? '' : 's'}?`,
        body: `They become workers and are monitored from now on${preview.existing ? `; ${preview.existing} already are workers and stay as they are` : ''}. The instances themselves are not changed.`,
        confirm: 'Import', danger: false,
      });
      if (!yes) return;
      const btn = document.getElementById('import-confirm');
      if (btn) {
        btn.disabled = true;
        btn.textContent = 'Importing…';
      }
      try {
        const res = await post('/api/v1/workers/import', { ...req, all: preview.needs_all });
        notify(`Imported ${res.imported.length}, ${res.existing.length} already workers`);
        replaceChildren(result, h('section', { class: 'panel', id: 'import-done' },
          h('h2', { class: 'panel-title' }, 'Imported'),
          h('p', null, `${res.imported.length} new worker${res.imported.length === 1 ? '' : 's'}, ${res.existing.length} already known, ${res.skipped.length} left out.`),
          res.imported.length ? h('ul', { class: 'link-list' }, res.imported.map((id) => h('li', null, h('a', { href: `#/workers/${id}`, class: 'mono' }, id)))) : null,
          h('p', null, h('a', { href: '#/' }, 'Back to the fleet'))));
      } catch (err) {
        showProblem(form, err);
        if (btn) {
          btn.disabled = false;
          btn.textContent = 'Import';
        }
      }
    }

    function showPreview(req, p) {
      const rows = p.candidates;
      replaceChildren(result, h('section', { class: 'panel', id: 'import-preview-panel', 'aria-labelledby': 'import-preview-title' },
        h('h2', { class: 'panel-title', id: 'import-preview-title' }, `${fmtNum(rows.length)} matching instance${rows.length === 1 ? '' : 's'}`),
        h('p', { id: 'import-summary' }, `${p.new} would become new workers; ${p.existing} already are workers.`),
        rows.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'import-table' },
          h('thead', null, h('tr', null, ['Instance', 'Name', 'Region', 'State', 'Type', 'Image', 'Launched', 'In ccm'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', null, rows.map((c) => h('tr', { dataset: { instance: c.instance_id, status: c.skip_reason ? 'skipped' : c.worker_id ? 'existing' : 'new' } },
            h('th', { scope: 'row', class: 'mono' }, c.instance_id),
            h('td', null, c.name || '—'),
            h('td', null, c.region),
            h('td', null, ec2Badge(c.state)),
            h('td', { class: 'mono' }, c.instance_type),
            h('td', { class: 'mono' }, c.image_id),
            h('td', null, time(c.launch_time)),
            h('td', null, c.skip_reason ? badge(`skipped: ${c.skip_reason}`, 'muted')
              : c.worker_id ? h('a', { href: `#/workers/${c.worker_id}` }, badge('already a worker', 'neutral'))
                : badge('new', 'ok'))))))) : null,
        p.skipped.length ? h('ul', { class: 'reasons', id: 'import-skipped' }, p.skipped.map((s) => h('li', null, h('span', { class: 'mono' }, s.instance_id), `: ${s.reason}`))) : null,
        h('div', { class: 'form-actions' },
          h('button', { type: 'button', class: 'btn btn-primary', id: 'import-confirm', disabled: p.new === 0, title: p.new === 0 ? 'Nothing new to import' : null, onclick: () => doImport(req, p) }, 'Import'),
          p.needs_all ? h('span', { class: 'help' }, 'Several instances match: all of them are imported.') : null)));
    }

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clearErrors(form);
      const req = body();
      if (mode.value !== 'configured' && !value.value.trim()) {
        showFieldError(form, mode.value, 'Enter what to import.');
        return;
      }
      previewBtn.disabled = true;
      replaceChildren(result, loading('Looking for matching instances…'));
      try {
        const p = await post('/api/v1/workers/import/preview', req);
        if (!destroyed) showPreview(req, p);
      } catch (err) {
        replaceChildren(result);
        showProblem(form, err);
      } finally {
        previewBtn.disabled = false;
      }
    });
  }

  return {
    destroy() {
      destroyed = true;
    },
  };
}
