// Building and updating the DOM safely.
//
// Every string goes in as text (text nodes, setAttribute), never as markup: a worker name or
// tag that holds `<script>` is shown as those characters. `morph` updates a rendered tree in
// place, so live updates keep focus, scroll position and half-typed input.

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * Creates an element. `tag` may be prefixed `svg:` for SVG elements. Attributes: `class`
 * (string or array), `dataset` (object), `value`/`checked` (properties), `on<event>`
 * (listener; only on elements that are never morphed), anything else as an attribute
 * (`true` → empty attribute; `null`/`false`/`undefined` → left out). Children: nodes,
 * strings, numbers, arrays of those; `null`/`false` are skipped.
 */
export function h(tag, attrs, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') {
        el.addEventListener(k.slice(2), v);
      } else if (k === 'class') {
        const text = Array.isArray(v) ? v.filter(Boolean).join(' ') : String(v);
        if (text) el.setAttribute('class', text);
      } else if (k === 'dataset') {
        for (const [dk, dv] of Object.entries(v)) {
          if (dv !== null && dv !== undefined) el.dataset[dk] = String(dv);
        }
      } else if (k === 'value' && !svg) {
        el.value = String(v);
        el.setAttribute('value', String(v));
      } else if (k === 'checked' && !svg) {
        el.checked = true;
        el.setAttribute('checked', '');
      } else {
        el.setAttribute(k, v === true ? '' : String(v));
      }
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Removes every child of `el` and appends `children`. */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/**
 * Makes `from` look like `to`, reusing nodes where the tag (and `data-key`) match, so the
 * focused element, scroll position and the value of fields marked `data-keep` survive.
 * Listeners stay those of `from`: morphed trees use delegated listeners (`data-action`).
 */
export function morph(from, to) {
  if (
    from.nodeType !== to.nodeType ||
    from.nodeName !== to.nodeName ||
    (from.nodeType === Node.ELEMENT_NODE && from.getAttribute('data-key') !== to.getAttribute('data-key'))
  ) {
    from.replaceWith(to);
    return;
  }
  if (from.nodeType === Node.TEXT_NODE || from.nodeType === Node.COMMENT_NODE) {
    if (from.data !== to.data) from.data = to.data;
    return;
  }
  if (from.nodeType !== Node.ELEMENT_NODE) return;
  for (const a of [...from.attributes]) {
    if (!to.hasAttribute(a.name)) from.removeAttribute(a.name);
  }
  for (const a of [...to.attributes]) {
    if (from.getAttribute(a.name) !== a.value) from.setAttribute(a.name, a.value);
  }
  const field = from instanceof HTMLInputElement || from instanceof HTMLSelectElement || from instanceof HTMLTextAreaElement;
  if (field && !from.hasAttribute('data-keep')) {
    if (from.value !== to.value) from.value = to.value;
    if ('checked' in from && from.checked !== to.checked) from.checked = to.checked;
  }
  const a = [...from.childNodes];
  const b = [...to.childNodes];
  for (let i = 0; i < b.length; i++) {
    if (i < a.length) morph(a[i], b[i]);
    else from.append(b[i]);
  }
  for (let i = b.length; i < a.length; i++) a[i].remove();
}

/** Renders `tree` into `container`: the first time by insertion, then by `morph`. */
export function render(container, tree) {
  const first = container.firstElementChild;
  if (first && container.childNodes.length === 1) morph(first, tree);
  else replaceChildren(container, tree);
}

// === formatting ===

/** `12 s`, `3 min`, `2 h 5 min`, `4 d`. */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return m % 60 ? `${hrs} h ${m % 60} min` : `${hrs} h`;
  return `${Math.floor(hrs / 24)} d`;
}

/** Seconds since an RFC 3339 time. */
export function ageOf(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : Math.max(0, (Date.now() - t) / 1000);
}

/** `3 min ago`, or `—`. */
export function fmtAgo(iso) {
  const age = ageOf(iso);
  return age === null ? '—' : `${fmtDuration(age)} ago`;
}

/** A local date and time, `2026-11-30 06:01:40`. */
export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '—';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A `<time>` element: local time as text, the ISO value as `datetime`. */
export function time(iso, relative = false) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: fmtTime(iso) }, relative ? fmtAgo(iso) : fmtTime(iso));
}

/** `42 %`, `—`. */
export function fmtPct(v) {
  return v === null || v === undefined || Number.isNaN(v) ? '—' : `${Math.round(v)} %`;
}

/** `1.5 GiB`. */
export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

/** `1,234`. */
export function fmtNum(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
}

/** `snake_case` → `Snake case`. */
export function humanize(key) {
  const s = String(key).replace(/[_-]+/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** A definition list from `[label, value]` pairs (values may be nodes). */
export function facts(pairs, cls = 'facts') {
  return h('dl', { class: cls }, pairs.filter(Boolean).map(([k, v]) => h('div', { class: 'fact' }, h('dt', null, k), h('dd', null, v ?? '—'))));
}

/** A small loading placeholder. */
export function loading(text = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), text);
}

/** An error box. */
export function errorBox(title, detail) {
  return h('div', { class: 'alert alert-error', role: 'alert' }, h('strong', null, title), detail ? h('p', null, detail) : null);
}

/** Moves keyboard focus to a page's heading after navigation (screen readers announce it). */
export function focusHeading(container) {
  const heading = container.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: true });
  }
}
