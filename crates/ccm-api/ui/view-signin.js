// The sign-in: an API token, or the OIDC provider when one is configured. Signing in sets an
// HttpOnly, SameSite=Strict session cookie; the answer carries the CSRF token.

import { get, post } from './api.js';
import { h, replaceChildren, focusHeading } from './dom.js';

/** Shows the sign-in in `container`; calls `onSignedIn(session)` when done. */
export function mountSignIn(container, { message, onSignedIn }) {
  document.title = 'Sign in · ccm';
  const token = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, 'aria-describedby': 'token-help sign-in-error', class: 'input',
  });
  const error = h('p', { id: 'sign-in-error', class: 'field-error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block', id: 'sign-in' }, 'Sign in');
  const oidcSlot = h('div', { class: 'oidc-slot' });
  const form = h('form', { class: 'signin-form', novalidate: true },
    h('label', { for: 'token', class: 'label' }, 'API token'),
    token,
    h('p', { id: 'token-help', class: 'help' }, 'A token from the configuration, or the admin token that ccm demo prints.'),
    error,
    submit);
  const card = h('section', { class: 'signin-card', 'aria-labelledby': 'signin-title' },
    h('div', { class: 'signin-brand' }, h('img', { src: '/ui/icon.svg', alt: '', width: 40, height: 40 }),
      h('div', null, h('h1', { id: 'signin-title' }, 'Sign in to ccm'), h('p', { class: 'muted' }, 'Control plane for Cisco Modeling Labs fleets'))),
    message ? h('p', { class: 'alert alert-info', role: 'status' }, message) : null,
    form,
    oidcSlot);
  replaceChildren(container, h('div', { class: 'signin-page' }, card));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    token.removeAttribute('aria-invalid');
    const value = token.value.trim();
    if (!value) {
      error.textContent = 'Enter a token.';
      token.setAttribute('aria-invalid', 'true');
      token.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Signing in…';
    try {
      const session = await post('/api/v1/session', { token: value }, { quiet401: true });
      token.value = '';
      onSignedIn(session);
    } catch (err) {
      error.textContent = err.status === 401 ? 'That token is not valid.'
        : err.status === 429 ? `Too many failed attempts. Try again in ${err.retryAfter ?? 'a few'} seconds.`
          : err.detail || err.message;
      token.setAttribute('aria-invalid', 'true');
      token.focus();
      token.select();
    } finally {
      submit.disabled = false;
      submit.textContent = 'Sign in';
    }
  });

  get('/api/v1/session/methods', { quiet401: true }).then((m) => {
    if (!m.oidc) return;
    const returnTo = `/${location.hash || '#/'}`;
    const href = `${m.oidc}?return_to=${encodeURIComponent(returnTo)}`;
    replaceChildren(oidcSlot,
      h('div', { class: 'divider' }, h('span', null, 'or')),
      h('a', { class: 'btn btn-block', href, id: 'sign-in-oidc' }, 'Sign in with your organisation (OIDC)'));
  }).catch(() => {});

  focusHeading(container);
  token.focus();
  return { destroy() {} };
}
