/**
 * config.js — where the console points: the REST base URL, the WebSocket URL, the stage.
 *
 * Read once at start from `console-config.json` next to the page (serve.py generates it;
 * a static copy points at a deployed stage), then overridden by the page's query string:
 * `?rest=https://…&ws=wss://…&admin=KEY`.
 */

export const DEFAULTS = Object.freeze({
  restUrl: 'http://127.0.0.1:8000',
  wsUrl: 'ws://127.0.0.1:8001/api',
  stage: 'local',
  adminKey: '',
});

/** Load the configuration; never throws (a missing file means the defaults). */
export async function loadConfig(search = window.location.search) {
  let fromFile = {};
  try {
    const res = await fetch('console-config.json', { cache: 'no-store' });
    if (res.ok) fromFile = await res.json();
  } catch (err) {
    console.warn('console-config.json unreadable, using defaults', err);
  }
  const q = new URLSearchParams(search);
  const cfg = { ...DEFAULTS, ...fromFile };
  if (q.get('rest')) cfg.restUrl = q.get('rest');
  if (q.get('ws')) cfg.wsUrl = q.get('ws');
  if (q.get('admin')) cfg.adminKey = q.get('admin');
  cfg.restUrl = String(cfg.restUrl).replace(/\/+$/, '');
  return Object.freeze(cfg);
}
