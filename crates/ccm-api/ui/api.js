// The API client: same-origin fetch with the session cookie; state-changing requests carry
// the session's CSRF token; errors become `ApiError` with the problem document's detail and
// the field it names.

let csrfToken = null;
let onUnauthorized = () => {};

/** Remembers the CSRF token of the session (kept in memory only, never stored). */
export function setCsrf(token) {
  csrfToken = token || null;
}

/** What to do when a request answers 401 (the session ended). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** A failed request: HTTP status (0 for a network error) and the RFC 9457 problem. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem?.title || (status ? `HTTP ${status}` : 'Network error');
    this.detail = problem?.detail || '';
    this.field = problem?.field || null;
    this.retryAfter = problem?.retry_after_seconds ?? null;
  }
}

/**
 * Calls the API. `body`: an object (sent as JSON) or a string/Blob (sent as `contentType`).
 * `quiet401`: do not call the unauthorized handler (for the session check itself).
 * Resolves to the parsed JSON, the text, or `null` for 204; `raw: true` gives the Response.
 */
export async function api(method, path, opts = {}) {
  const headers = { Accept: 'application/json', ...(opts.headers || {}) };
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let body;
  if (opts.body !== undefined) {
    if (typeof opts.body === 'string' || opts.body instanceof Blob) {
      body = opts.body;
      headers['Content-Type'] = opts.contentType || 'text/plain; charset=utf-8';
    } else {
      body = JSON.stringify(opts.body);
      headers['Content-Type'] = opts.contentType || 'application/json';
    }
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body, credentials: 'same-origin', cache: 'no-store' });
  } catch {
    throw new ApiError(0, { title: 'Network error', detail: 'The server could not be reached. Check the connection and try again.' });
  }
  if (!res.ok) {
    let problem = null;
    try {
      problem = await res.json();
    } catch {
      problem = { title: res.statusText };
    }
    if (res.status === 401 && !opts.quiet401) onUnauthorized();
    throw new ApiError(res.status, problem);
  }
  if (opts.raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

export const get = (path, opts) => api('GET', path, opts);
export const post = (path, body, opts = {}) => api('POST', path, { ...opts, body });
export const put = (path, body, opts = {}) => api('PUT', path, { ...opts, body });
export const patch = (path, body, opts = {}) => api('PATCH', path, { ...opts, body });
export const del = (path, opts) => api('DELETE', path, opts);

/** The signed-in caller, or `null` when nobody is. */
export async function currentSession() {
  try {
    return await get('/api/v1/session', { quiet401: true });
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

/** `id` made safe for a URL path segment. */
export function seg(id) {
  return encodeURIComponent(String(id));
}
