// A small dependency-free line chart in SVG: time on x, one or more series on y, gridlines,
// axis labels and a legend. Series are told apart by colour *and* dash pattern, and the
// figure carries a text summary for screen readers.

import { h, fmtTime } from './dom.js';

const W = 640;
const H = 200;
const PAD = { left: 44, right: 12, top: 12, bottom: 26 };

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function shortTime(ms, spanMs) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  if (spanMs > 2 * 86_400_000) return `${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:00`;
  return `${p(d.getHours())}:${p(d.getMinutes())}`;
}

/**
 * A line chart.
 * - `title`: caption; `unit`: appended to values (`%`); `max`: fixed y maximum (else nice
 *   rounding of the data's maximum);
 * - `series`: `[{ name, key, points: [[timeMs, value|null], …] }]` (a null breaks the line);
 * - `from`, `to`: the time range in ms.
 */
export function lineChart({ title, unit = '', max = null, series, from, to, id }) {
  const values = series.flatMap((s) => s.points.map((p) => p[1]).filter((v) => v !== null && v !== undefined));
  const yMax = max ?? niceMax(Math.max(0, ...values));
  const span = Math.max(1, to - from);
  const x = (t) => PAD.left + ((t - from) / span) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / yMax) * (H - PAD.top - PAD.bottom);
  const fmt = (v) => `${Number.isInteger(v) ? v : v.toFixed(1)}${unit ? ` ${unit}` : ''}`;

  const grid = [];
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    grid.push(h('svg:line', { class: 'chart-grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    grid.push(h('svg:text', { class: 'chart-label', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmt(v)));
  }
  for (let i = 0; i <= 3; i++) {
    const t = from + (span * i) / 3;
    const anchor = i === 0 ? 'start' : i === 3 ? 'end' : 'middle';
    grid.push(h('svg:text', { class: 'chart-label', x: x(t), y: H - 8, 'text-anchor': anchor }, shortTime(t, span)));
  }

  const lines = series.map((s, i) => {
    let d = '';
    let pen = false;
    for (const [t, v] of s.points) {
      if (v === null || v === undefined) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${x(t).toFixed(1)},${y(Math.min(v, yMax)).toFixed(1)}`;
      pen = true;
    }
    const single = s.points.filter((p) => p[1] !== null && p[1] !== undefined);
    const dots = single.length === 1 ? [h('svg:circle', { class: `chart-dot series-${i}`, cx: x(single[0][0]), cy: y(single[0][1]), r: 3 })] : [];
    return [h('svg:path', { class: `chart-line series-${i}`, d: d || 'M0,0' }), ...dots];
  });

  const summary = series.map((s) => {
    const vs = s.points.map((p) => p[1]).filter((v) => v !== null && v !== undefined);
    if (!vs.length) return `${s.name}: no data`;
    return `${s.name}: latest ${fmt(vs[vs.length - 1])}, max ${fmt(Math.max(...vs))}`;
  }).join('; ');
  const label = `${title}, ${fmtTime(new Date(from).toISOString())} to ${fmtTime(new Date(to).toISOString())}. ${summary}.`;

  const empty = values.length === 0;
  return h('figure', { class: 'chart', id },
    h('figcaption', { class: 'chart-title' }, title),
    h('svg:svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, class: 'chart-svg', focusable: 'false' },
      h('svg:rect', { class: 'chart-bg', x: PAD.left, y: PAD.top, width: W - PAD.left - PAD.right, height: H - PAD.top - PAD.bottom }),
      grid,
      lines,
      empty ? h('svg:text', { class: 'chart-empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'No data in this range yet') : null),
    h('ul', { class: 'chart-legend' }, series.map((s, i) => h('li', null, h('span', { class: `legend-swatch series-${i}`, 'aria-hidden': 'true' }), s.name))));
}
