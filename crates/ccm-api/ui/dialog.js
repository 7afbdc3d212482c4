// The confirmation dialog (a native modal <dialog>: focus stays inside, Escape cancels, Enter
// confirms) and the notices area (announced to screen readers).

import { h, replaceChildren } from './dom.js';

/**
 * Asks for confirmation. Resolves to true (confirmed) or false (cancelled, Escape).
 * `danger` styles the confirm button as destructive.
 */
export function confirmAction({ title, body, confirm = 'Confirm', danger = true }) {
  const dialog = document.getElementById('confirm');
  const titleEl = document.getElementById('confirm-title');
  const bodyEl = document.getElementById('confirm-body');
  const ok = document.getElementById('confirm-ok');
  const cancel = document.getElementById('confirm-cancel');
  titleEl.textContent = title;
  replaceChildren(bodyEl, ...(Array.isArray(body) ? body : [body]));
  ok.textContent = confirm;
  ok.className = danger ? 'btn btn-danger' : 'btn btn-primary';
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const done = (result) => {
      dialog.removeEventListener('close', onClose);
      ok.removeEventListener('click', onOk);
      cancel.removeEventListener('click', onCancel);
      if (dialog.open) dialog.close();
      if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
      resolve(result);
    };
    const onOk = (e) => {
      e.preventDefault();
      done(true);
    };
    const onCancel = (e) => {
      e.preventDefault();
      done(false);
    };
    const onClose = () => done(false);
    ok.addEventListener('click', onOk);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('close', onClose);
    dialog.showModal();
    ok.focus();
  });
}

/** Shows a short notice; `tone` ok, bad or info. Errors stay until dismissed. */
export function notify(text, tone = 'ok', detail = '') {
  const area = document.getElementById('notices');
  if (!area) return;
  const close = h('button', { type: 'button', class: 'notice-close', 'aria-label': 'Dismiss notice' }, '×');
  const note = h('div', { class: ['notice', `notice-${tone}`], role: tone === 'bad' ? 'alert' : null },
    h('div', { class: 'notice-text' }, h('strong', null, text), detail ? h('span', null, detail) : null),
    close);
  close.addEventListener('click', () => note.remove());
  area.append(note);
  while (area.children.length > 5) area.firstElementChild.remove();
  if (tone !== 'bad') setTimeout(() => note.remove(), 6000);
}

/** Notifies the failure of an API call. */
export function notifyError(what, err) {
  notify(what, 'bad', err?.detail || err?.message || String(err));
}
