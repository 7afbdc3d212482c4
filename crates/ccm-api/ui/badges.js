// Status badges: the state as text, plus a tone (colour) and a shape for those who cannot
// tell the colours apart. Status is never conveyed by colour alone.

import { h, fmtDuration } from './dom.js';

/** EC2 states in lifecycle order, with their tone. */
export const EC2_STATES = [
  ['pending', 'info'], ['running', 'ok'], ['stopping', 'info'], ['stopped', 'neutral'],
  ['shutting-down', 'warn'], ['terminated', 'muted'], ['failed', 'bad'], ['unknown', 'muted'],
];

/** Service statuses, best first, with their tone. */
export const SERVICE_STATES = [
  ['ready', 'ok'], ['degraded', 'warn'], ['unavailable', 'bad'], ['unknown', 'muted'],
];

const EC2_TONE = Object.fromEntries(EC2_STATES);
const SERVICE_TONE = Object.fromEntries(SERVICE_STATES);
const SHAPES = { ok: '●', info: '◐', warn: '▲', bad: '■', neutral: '○', muted: '○' };

/** A badge: `tone` one of ok, info, warn, bad, neutral, muted. */
export function badge(text, tone, attrs = {}) {
  return h('span', { class: ['badge', `tone-${tone}`], ...attrs }, h('span', { class: 'badge-shape', 'aria-hidden': 'true' }, SHAPES[tone] || '○'), text);
}

/** The EC2 state of a worker. */
export function ec2Badge(state, attrs = {}) {
  const s = state || 'unknown';
  const transient = s === 'pending' || s === 'stopping' || s === 'shutting-down';
  return badge(s, EC2_TONE[s] || 'muted', { 'data-state': s, title: `EC2 state: ${s}`, class: ['badge', `tone-${EC2_TONE[s] || 'muted'}`, transient && 'pulse'], ...attrs });
}

/** The CML service status of a worker. */
export function serviceBadge(status, attrs = {}) {
  const s = status || 'unknown';
  return badge(s, SERVICE_TONE[s] || 'muted', { 'data-service': s, title: `CML service: ${s}`, ...attrs });
}

/** Freshness of a source: fresh, stale (with its age) or unknown. */
export function freshnessBadge(source) {
  const f = source?.freshness || 'unknown';
  if (f === 'fresh') return badge('fresh', 'ok', { 'data-freshness': f });
  if (f === 'stale') {
    const age = source.age_seconds;
    return badge(age != null ? `stale · ${fmtDuration(age)} old` : 'stale', 'warn', { 'data-freshness': f });
  }
  return badge('unknown', 'muted', { 'data-freshness': f });
}

/** A circuit breaker's state. */
export function breakerBadge(breaker) {
  if (!breaker) return badge('no calls yet', 'muted', { 'data-breaker': 'none' });
  const s = breaker.state;
  if (s === 'closed') return badge('closed', 'ok', { 'data-breaker': s, title: 'Calls go through' });
  if (s === 'half_open') return badge('half-open', 'warn', { 'data-breaker': s, title: 'One probe call is let through' });
  const wait = breaker.retry_in_seconds != null ? ` · probe in ${fmtDuration(breaker.retry_in_seconds)}` : '';
  return badge(`open${wait}`, 'bad', { 'data-breaker': s, title: 'Calls are refused without being made' });
}

/** A yes/no value. */
export function boolBadge(v, yes = 'yes', no = 'no', invert = false) {
  if (v === null || v === undefined) return badge('unknown', 'muted');
  const good = invert ? !v : v;
  return badge(v ? yes : no, good ? 'ok' : 'bad');
}
