// The app: session, navigation (hash routes), the connection indicator and sign-out.
//
// Routes: `#/` fleet · `#/workers/<id>` one worker · `#/create` new worker · `#/import`
// import workers · `#/system` · `#/settings`. The sign-in
// is shown whenever nobody is signed in (also at `/login`).

import { currentSession, setCsrf, setUnauthorizedHandler, del } from './api.js';
import { fleet, subscribe, start as startLive, stop as stopLive } from './live.js';
import { replaceChildren, loading, errorBox } from './dom.js';
import { notifyError } from './dialog.js';
import { mountSignIn } from './view-signin.js';
import { mountFleet } from './view-fleet.js';
import { mountWorker } from './view-worker.js';
import { mountSystem } from './view-system.js';
import { mountSettings } from './view-settings.js';
import { mountCreate } from './view-create.js';
import { mountImport } from './view-import.js';

const ROUTES = [
  { pattern: /^\/?$/, nav: 'fleet', mount: mountFleet },
  { pattern: /^\/workers\/([0-9a-fA-F-]{36})$/, nav: 'fleet', mount: mountWorker },
  { pattern: /^\/create$/, nav: 'fleet', mount: mountCreate },
  { pattern: /^\/import$/, nav: 'fleet', mount: mountImport },
  { pattern: /^\/system$/, nav: 'system', mount: mountSystem },
  { pattern: /^\/settings$/, nav: 'settings', mount: mountSettings },
];

const CONNECTION_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
};

let session = null;
let current = null;
let unsubscribe = null;

const main = () => document.getElementById('main');

/** The hash route: path and query parameters. */
export function parseHash() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(1) : '/';
  const [path, query = ''] = raw.split('?');
  return { path: decodeURIComponent(path), params: new URLSearchParams(query) };
}

function unmount() {
  if (current && typeof current.destroy === 'function') current.destroy();
  current = null;
}

function route() {
  if (!session) return;
  const { path, params } = parseHash();
  unmount();
  const container = main();
  let match = null;
  let found = null;
  for (const r of ROUTES) {
    match = path.match(r.pattern);
    if (match) {
      found = r;
      break;
    }
  }
  for (const a of document.querySelectorAll('.mainnav a')) {
    if (found && a.dataset.nav === found.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!found) {
    replaceChildren(container, errorBox('Page not found', `Nothing lives at ${path}.`));
    document.title = 'Not found · ccm';
    return;
  }
  replaceChildren(container, loading());
  try {
    current = found.mount(container, { args: match.slice(1), params, session });
  } catch (e) {
    console.error(e);
    replaceChildren(container, errorBox('This page failed to load', String(e)));
  }
}

function showConnection() {
  const el = document.getElementById('connection');
  const state = fleet.connection;
  el.dataset.state = state;
  el.querySelector('.conn-text').textContent = CONNECTION_TEXT[state] || state;
  el.title = state === 'live' ? 'Live updates are on' : state === 'offline' ? 'No live updates: the server cannot be reached' : 'Live updates are reconnecting';
}

function showUser() {
  document.getElementById('user-name').textContent = session.user;
  const role = document.getElementById('user-role');
  role.textContent = session.role;
  role.dataset.role = session.role;
}

/** Signed in: the shell, live updates, the page. */
export function enter(s) {
  session = s;
  setCsrf(s.csrf_token);
  document.body.classList.remove('signed-out');
  showUser();
  if (location.pathname !== '/') history.replaceState(null, '', `/${location.hash || '#/'}`);
  unsubscribe = subscribe((change) => {
    if (change.connection) showConnection();
  });
  startLive({
    checkSession: async () => (await currentSession()) !== null,
    signedOut: () => leave('Your session has ended. Sign in again.'),
  });
  showConnection();
  route();
}

/** Signed out (or the session ended): back to the sign-in. */
function leave(message) {
  unmount();
  session = null;
  setCsrf(null);
  if (unsubscribe) unsubscribe();
  unsubscribe = null;
  stopLive();
  document.body.classList.add('signed-out');
  showConnection();
  current = mountSignIn(main(), { message, onSignedIn: enter });
}

async function signOut() {
  try {
    await del('/api/v1/session');
  } catch (e) {
    if (e.status !== 401) {
      notifyError('Sign-out failed', e);
      return;
    }
  }
  leave('You are signed out.');
}

async function boot() {
  window.addEventListener('hashchange', route);
  document.getElementById('sign-out').addEventListener('click', signOut);
  document.getElementById('skip-link').addEventListener('click', (e) => {
    e.preventDefault();
    main().focus();
  });
  let s = null;
  try {
    s = await currentSession();
  } catch (e) {
    replaceChildren(main(), errorBox('The server cannot be reached', e.detail || String(e)));
    return;
  }
  setUnauthorizedHandler(() => {
    if (session) leave('Your session has ended. Sign in again.');
  });
  if (s && s.cookie) enter(s);
  else leave(null);
}

boot();
