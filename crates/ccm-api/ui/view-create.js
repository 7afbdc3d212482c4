// Create a worker: name, region, instance type (from the allowed list the API gives), the
// image by id or name pattern with a preview of the image that would be used (resolved by
// the API as a create would, nothing launched), and tags. The server validates; its errors
// appear next to the field they name.

import { get, post } from './api.js';
import { h, render, replaceChildren, time, focusHeading, loading, errorBox } from './dom.js';
import { notify } from './dialog.js';
import { applyView } from './live.js';
import { field, clearErrors, showProblem, showFieldError, parseTags, formError, permitted } from './forms.js';

const PREVIEW_DELAY_MS = 400;

function imageFacts(img) {
  return h('dl', { class: 'facts', id: 'image-preview-facts' },
    h('div', null, h('dt', null, 'Name'), h('dd', { id: 'image-preview-name' }, img.name)),
    h('div', null, h('dt', null, 'Id'), h('dd', { class: 'mono', id: 'image-preview-id' }, img.id)),
    h('div', null, h('dt', null, 'Owner'), h('dd', { class: 'mono', id: 'image-preview-owner' }, img.owner_id || '—')),
    h('div', null, h('dt', null, 'Created'), h('dd', { id: 'image-preview-created' }, img.creation_date ? time(img.creation_date) : '—')),
    h('div', null, h('dt', null, 'State'), h('dd', null, img.state)));
}

/** Mounts the create-worker page. */
export function mountCreate(container, { session }) {
  document.title = 'New worker · ccm';
  if (!permitted(session, 'POST', '/api/v1/workers')) {
    render(container, h('div', { class: 'page' }, errorBox('Not allowed', `Your role (${session.role}) may not create workers.`), h('p', null, h('a', { href: '#/' }, 'Back to the fleet'))));
    return null;
  }
  let destroyed = false;
  let previewTimer = null;
  let previewSeq = 0;
  replaceChildren(container, loading('Loading the provisioning options…'));

  get('/api/v1/system/provisioning').then((opts) => {
    if (!destroyed) draw(opts);
  }).catch((e) => {
    if (!destroyed) render(container, errorBox('The provisioning options could not be loaded', e.detail || e.message));
  });

  function draw(opts) {
    const name = h('input', { id: 'create-name', class: 'input', required: true, maxlength: 128, autocomplete: 'off' });
    const region = h('select', { id: 'create-region', class: 'input' },
      opts.regions.map((r) => h('option', { value: r, selected: r === opts.default_region }, r)));
    let itype;
    if (opts.instance_types.length) {
      itype = h('select', { id: 'create-instance-type', class: 'input' },
        opts.instance_types.map((t) => h('option', { value: t, selected: t === opts.default_instance_type }, t)));
    } else {
      itype = h('input', { id: 'create-instance-type', class: 'input mono', value: opts.default_instance_type, autocomplete: 'off' });
    }
    const defaultText = opts.ami_id ? `configured: ${opts.ami_id}` : opts.ami_name_pattern ? `configured: newest “${opts.ami_name_pattern}”` : 'none configured';
    const amiMode = h('select', { id: 'create-ami-mode', class: 'input' },
      h('option', { value: 'default' }, `Default (${defaultText})`),
      h('option', { value: 'id' }, 'By image id'),
      h('option', { value: 'pattern' }, 'By name pattern'));
    const amiValue = h('input', { id: 'create-ami-value', class: 'input mono', autocomplete: 'off', disabled: true, placeholder: 'ami-… or cml-controller-2.9*' });
    const tags = h('textarea', { id: 'create-tags', class: 'input mono', rows: 3, placeholder: 'team=training\ncourse=ccna' });
    const preview = h('div', { id: 'image-preview', class: 'image-preview', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Choose an image to see which one would be used.'));
    const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'create-submit' }, 'Create worker');
    const previewBtn = h('button', { type: 'button', class: 'btn', id: 'image-preview-button' }, 'Preview image');
    const form = h('form', { class: 'panel form-panel', id: 'create-form', 'aria-labelledby': 'create-title', novalidate: true },
      h('div', { class: 'form-grid' },
        field({ id: 'create-name', label: 'Name', control: name, help: 'Also the EC2 Name tag.', errorFor: 'name', grow: true }),
        field({ id: 'create-region', label: 'Region', control: region, errorFor: 'region' }),
        field({ id: 'create-instance-type', label: 'Instance type', control: itype, help: opts.instance_types.length ? 'The types this installation allows.' : 'Any valid type; the default is preselected.', errorFor: 'instance_type' })),
      h('fieldset', { class: 'fieldset' },
        h('legend', null, 'Image'),
        h('div', { class: 'form-grid' },
          field({ id: 'create-ami-mode', label: 'Choose by', control: amiMode, errorFor: 'ami' }),
          field({ id: 'create-ami-value', label: 'Image id or name pattern', control: amiValue, errorFor: ['ami_id', 'ami_name_pattern'], grow: true }),
          h('div', { class: 'field field-end' }, previewBtn)),
        preview),
      field({ id: 'create-tags', label: 'Tags (one key=value per line)', control: tags, help: opts.tags && Object.keys(opts.tags).length ? `Always added: ${Object.entries(opts.tags).map(([k, v]) => `${k}=${v}`).join(', ')}` : null, errorFor: 'tags' }),
      formError('create-error'),
      h('div', { class: 'form-actions' }, submit, h('a', { href: '#/', class: 'btn btn-ghost' }, 'Cancel')));

    render(container, h('div', { class: 'page' },
      h('div', { class: 'page-head' }, h('div', null,
        h('nav', { 'aria-label': 'Breadcrumb', class: 'breadcrumb' }, h('a', { href: '#/' }, 'Fleet'), h('span', { 'aria-hidden': 'true' }, ' / '), h('span', { 'aria-current': 'page' }, 'New worker')),
        h('h1', { id: 'create-title' }, 'New worker'),
        h('p', { class: 'muted' }, 'The worker appears at once as pending; EC2 launches its instance in the background.'))),
      form));
    focusHeading(container);

    function selector() {
      const mode = amiMode.value;
      const value = amiValue.value.trim();
      const out = {};
      if (mode === 'id' && value) out.ami_id = value;
      if (mode === 'pattern' && value) out.ami_name_pattern = value;
      return out;
    }

    async function runPreview() {
      const seq = ++previewSeq;
      const sel = selector();
      if (amiMode.value !== 'default' && !amiValue.value.trim()) {
        replaceChildren(preview, h('p', { class: 'muted' }, 'Enter an image id or a name pattern.'));
        return;
      }
      const qs = new URLSearchParams({ region: region.value, ...sel });
      replaceChildren(preview, loading('Resolving the image…'));
      try {
        const res = await get(`/api/v1/images?${qs}`);
        if (seq !== previewSeq || destroyed) return;
        if (!res.selected) {
          replaceChildren(preview, h('p', { class: 'error-text', id: 'image-preview-none' }, `No image in ${res.region} matches: a create would be refused.`));
          return;
        }
        replaceChildren(preview,
          h('p', { class: 'help' }, `Would use, in ${res.region}${res.images.length > 1 ? ` (newest of ${res.images.length} matches)` : ''}:`),
          imageFacts(res.selected));
      } catch (e) {
        if (seq !== previewSeq || destroyed) return;
        replaceChildren(preview, h('p', { class: 'error-text', id: 'image-preview-error' }, e.detail || e.message));
        if (e.field) showProblem(form, e);
      }
    }
    function schedulePreview() {
      clearTimeout(previewTimer);
      previewTimer = setTimeout(runPreview, PREVIEW_DELAY_MS);
    }

    amiMode.addEventListener('change', () => {
      amiValue.disabled = amiMode.value === 'default';
      if (amiMode.value === 'default') amiValue.value = '';
      else amiValue.focus();
      schedulePreview();
    });
    amiValue.addEventListener('input', schedulePreview);
    region.addEventListener('change', schedulePreview);
    previewBtn.addEventListener('click', () => {
      clearTimeout(previewTimer);
      runPreview();
    });

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clearErrors(form);
      if (!name.value.trim()) {
        showFieldError(form, 'name', 'Give the worker a name.');
        return;
      }
      const parsed = parseTags(tags.value);
      if (parsed.error) {
        showFieldError(form, 'tags', parsed.error);
        return;
      }
      const body = { name: name.value.trim(), region: region.value, instance_type: itype.value.trim(), tags: parsed.tags, ...selector() };
      if (amiMode.value !== 'default' && !amiValue.value.trim()) {
        showFieldError(form, amiMode.value === 'id' ? 'ami_id' : 'ami_name_pattern', 'Enter the image id or name pattern, or use the default.');
        return;
      }
      submit.disabled = true;
      submit.textContent = 'Creating…';
      try {
        const w = await post('/api/v1/workers', body);
        applyView(w);
        notify(`${w.name}: provisioning started`);
        location.hash = `#/workers/${w.id}`;
      } catch (err) {
        showProblem(form, err);
      } finally {
        submit.disabled = false;
        submit.textContent = 'Create worker';
      }
    });
    runPreview();
  }

  return {
    destroy() {
      destroyed = true;
      clearTimeout(previewTimer);
    },
  };
}
