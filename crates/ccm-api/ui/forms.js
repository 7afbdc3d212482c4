// Forms: fields with their label, help and error line, and the server's problem shown next
// to the field it names (`field` of the problem document), else above the buttons.
//
// What a caller may do comes from the session's `permissions` (the server's role table as
// `METHOD /path/{template}`), never from a copy of the role rules here.

import { h } from './dom.js';

/** Whether the session's role may call this route (`POST`, `/api/v1/workers/{id}/stop`). */
export function permitted(session, method, template) {
  return Array.isArray(session?.permissions) && session.permissions.includes(`${method} ${template}`);
}

/**
 * A form field: label, control, optional help, and an error line bound to the API field
 * names in `errorFor` (the first also marks the control `aria-invalid`).
 */
export function field({ id, label, control, help, errorFor, grow = false }) {
  const keys = Array.isArray(errorFor) ? errorFor : [errorFor || id];
  const helpEl = help ? h('p', { class: 'help', id: `${id}-help` }, help) : null;
  if (helpEl) control.setAttribute('aria-describedby', `${id}-help ${id}-error`);
  else control.setAttribute('aria-describedby', `${id}-error`);
  return h('div', { class: ['field', grow && 'field-grow'] },
    h('label', { for: id, class: 'label' }, label),
    control,
    helpEl,
    h('p', { id: `${id}-error`, class: 'field-error', dataset: { errorFor: keys.join(' '), control: id } }));
}

/** Clears every error shown in `form`. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll('[data-error-for]')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const general = form.querySelector('.form-error');
  if (general) general.textContent = '';
}

/** The error line for an API field (`tags.env` → `tags`, `instance_ids[2]` → `instance_ids`). */
function errorLineFor(form, fieldName) {
  if (!fieldName) return null;
  const base = fieldName.replace(/\[\d+\]$/, '').split('.')[0];
  for (const el of form.querySelectorAll('[data-error-for]')) {
    const keys = el.dataset.errorFor.split(' ');
    if (keys.includes(fieldName) || keys.includes(base)) return el;
  }
  return null;
}

/**
 * Shows a failed request's problem: next to the named field (and focuses it) when the form
 * has that field, else in the form's `.form-error`. Returns the element that shows it.
 */
export function showProblem(form, err, { focus = true } = {}) {
  const text = err?.detail || err?.message || String(err);
  const line = errorLineFor(form, err?.field);
  if (line) {
    line.textContent = text;
    const control = document.getElementById(line.dataset.control);
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      if (focus) control.focus();
    }
    return line;
  }
  const general = form.querySelector('.form-error');
  if (general) general.textContent = `${err?.title && err.title !== text ? `${err.title}: ` : ''}${text}`;
  return general;
}

/** Shows an error found before sending (the same place a server error for `fieldName` goes). */
export function showFieldError(form, fieldName, text) {
  return showProblem(form, { field: fieldName, detail: text });
}

/**
 * Parses `key=value` lines (tags). Returns `{ tags }` or `{ error }` naming the bad line;
 * the server validates keys and values again.
 */
export function parseTags(text) {
  const tags = {};
  const lines = String(text || '').split('\n').map((l) => l.trim()).filter(Boolean);
  for (const [i, line] of lines.entries()) {
    const eq = line.indexOf('=');
    if (eq <= 0) return { error: `line ${i + 1}: write key=value` };
    tags[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return { tags };
}

/** A `.form-error` line (for errors that name no field), announced to screen readers. */
export function formError(id) {
  return h('p', { class: 'field-error form-error', id, role: 'alert' });
}
