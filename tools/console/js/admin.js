/**
 * admin.js — the admin panel: list, add and remove tradable symbols (`/admin/symbols`).
 *
 * Shown only when the session has an admin key (`X-Admin-Key`, local stage) or a JWT whose
 * `app_metadata.role` (or `role`) is `admin` (SPEC §5). The server decides in the end; the
 * panel shows its errors.
 */

import { ApiError } from './api.js';

/** Symbol metadata shown in the list (the app's SymbolMeta has more, e.g. created_at). */
const SHOWN_META = ['display_name', 'tick_size', 'price_band_pct', 'min_price', 'max_price'];

/** The payload of a JWT, unverified (only to decide what to show), or null. */
export function jwtPayload(token) {
  try {
    const part = String(token).split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    return JSON.parse(atob(b64));
  } catch {
    return null;
  }
}

export function isAdmin(session) {
  if (session.adminKey) return true;
  if (session.mode !== 'jwt' || !session.token) return false;
  const p = jwtPayload(session.token);
  return !!p && ((p.app_metadata && p.app_metadata.role === 'admin') || p.role === 'admin');
}

/** `GET /admin/symbols` answers a list of names or of objects; either way, names + details. */
export function symbolEntries(body) {
  const list = Array.isArray(body) ? body : (body && (body.symbols || body.data)) || [];
  return list.map((x) => (typeof x === 'string' ? { symbol: x } : { ...x, symbol: x.symbol || x.name }));
}

export class AdminPanel {
  constructor(root, api) {
    this.root = root;
    this.api = api;
    this.list = root.querySelector('#admin-symbols');
    this.input = root.querySelector('#admin-new-symbol');
    this.error = root.querySelector('#admin-error');
    root.querySelector('#admin-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.add(this.input.value.trim().toUpperCase());
    });
    root.querySelector('#btn-admin-refresh').addEventListener('click', () => this.refresh());
  }

  async setSession(session) {
    const show = isAdmin(session);
    this.root.hidden = !show;
    if (show) await this.refresh();
  }

  /** Runs one API call; `{ ok, value }`. A failure's server error stays in the panel. */
  async guard(fn) {
    this.error.textContent = '';
    try {
      return { ok: true, value: await fn() };
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      this.error.textContent = `${err.code}: ${err.message}`;
      return { ok: false, value: null };
    }
  }

  async refresh() {
    const { ok, value: body } = await this.guard(() => this.api.adminListSymbols());
    if (!ok) return;
    const entries = symbolEntries(body).sort((a, b) => a.symbol.localeCompare(b.symbol));
    this.list.replaceChildren(...entries.map((e) => this.item(e)));
    this.root.dataset.count = String(entries.length);
  }

  item(entry) {
    const li = document.createElement('li');
    li.dataset.testid = `admin-symbol-${entry.symbol}`;
    const name = document.createElement('span');
    const extra = SHOWN_META.filter((k) => entry[k] !== null && entry[k] !== undefined && entry[k] !== entry.symbol)
      .map((k) => `${k}=${entry[k]}`).join(' ');
    name.textContent = extra ? `${entry.symbol}  ${extra}` : entry.symbol;
    const rm = document.createElement('button');
    rm.type = 'button';
    rm.textContent = 'remove';
    rm.dataset.testid = `admin-remove-${entry.symbol}`;
    rm.addEventListener('click', async () => {
      // after a refused change the list is unchanged: no refresh, which would clear the error
      if ((await this.guard(() => this.api.adminRemoveSymbol(entry.symbol))).ok) await this.refresh();
    });
    li.append(name, ' ', rm);
    return li;
  }

  async add(symbol) {
    if (!symbol) return;
    if (!(await this.guard(() => this.api.adminAddSymbol(symbol))).ok) return;
    this.input.value = '';
    await this.refresh();
  }
}
