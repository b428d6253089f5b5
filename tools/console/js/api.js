/**
 * api.js — the REST client (SPEC §5): orders, chart, depth, admin symbols.
 *
 * Auth headers come from the session: a test-mode user sends `X-Test-User`, a JWT user
 * `Authorization: Bearer …`, an admin key `X-Admin-Key`. Every non-2xx answer becomes
 * an `ApiError` carrying the server's JSON `{code, message}` and, when the server names
 * one, the offending `field` (so the page can show it next to that input).
 *
 *   Error
 *    └── ApiError              status (0 = network), code, message, field
 *         └── LoginRequired    an order call without a logged-in session (never sent)
 */

export class ApiError extends Error {
  constructor(status, code, message, field = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export class LoginRequired extends ApiError {
  constructor() {
    super(401, 'LOGIN_REQUIRED', 'log in (test-mode user or JWT) to trade');
    this.name = 'LoginRequired';
  }
}

const FIELDS = ['symbol', 'side', 'price', 'quantity', 'type', 'tif', 'client_order_id'];
/** Codes of the Chalice app (chalice_app/errors.py) that always concern one field. */
const CODE_FIELDS = {
  INVALID_TICK: 'price',
  PRICE_OUT_OF_BAND: 'price',
  PRICE_REQUIRED: 'price',
  INVALID_SYMBOL: 'symbol',
  UNKNOWN_SYMBOL: 'symbol',
};

/** Which request field an error body talks about, if any. */
export function errorField(body) {
  if (!body || typeof body !== 'object') return null;
  const direct = body.field ?? body.param ?? body.loc;
  if (typeof direct === 'string' && direct) return direct;
  if (Array.isArray(direct) && direct.length) return String(direct[direct.length - 1]);
  for (const key of ['details', 'errors', 'detail']) {
    const list = body[key];
    if (Array.isArray(list) && list.length && list[0] && Array.isArray(list[0].loc)) {
      return String(list[0].loc[list[0].loc.length - 1]);
    }
  }
  if (CODE_FIELDS[body.code]) return CODE_FIELDS[body.code];
  // the app's messages name the field first ("price: Input should be …", "price 7 is not …")
  const text = String(body.message || '').toLowerCase();
  let best = null;
  let at = Infinity;
  for (const f of FIELDS) {
    const m = new RegExp(`\\b${f}\\b`).exec(text);
    if (m && m.index < at) {
      best = f;
      at = m.index;
    }
  }
  return best;
}

export function isLoggedIn(session) {
  return (session.mode === 'test' && !!session.userId) || (session.mode === 'jwt' && !!session.token);
}

export class Api {
  /** @param {() => object} getConfig  @param {() => object} getSession */
  constructor(getConfig, getSession) {
    this.getConfig = getConfig;
    this.getSession = getSession;
  }

  headers(extra = {}) {
    const s = this.getSession();
    const h = { Accept: 'application/json', ...extra };
    if (s.mode === 'test' && s.userId) h['X-Test-User'] = s.userId;
    if (s.mode === 'jwt' && s.token) h.Authorization = `Bearer ${s.token}`;
    if (s.adminKey) h['X-Admin-Key'] = s.adminKey;
    return h;
  }

  async request(method, path, { query, body } = {}) {
    let url = this.getConfig().restUrl + path;
    if (query) url += '?' + new URLSearchParams(query).toString();
    const init = { method, headers: this.headers(body !== undefined ? { 'Content-Type': 'application/json' } : {}) };
    if (body !== undefined) init.body = JSON.stringify(body);
    let res;
    try {
      res = await fetch(url, init);
    } catch (err) {
      throw new ApiError(0, 'NETWORK', `cannot reach ${url}: ${err.message}`);
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const code = (data && (data.code || data.Code)) || `HTTP_${res.status}`;
      const message = (data && (data.message || data.Message)) || text || res.statusText;
      throw new ApiError(res.status, code, message, errorField(data));
    }
    return data;
  }

  requireLogin() {
    if (!isLoggedIn(this.getSession())) throw new LoginRequired();
  }

  async placeOrder(order) {
    this.requireLogin();
    return this.request('POST', '/orders', { body: order });
  }

  async cancelOrder(orderId, symbol) {
    this.requireLogin();
    return this.request('DELETE', `/orders/${encodeURIComponent(orderId)}`, { query: { symbol } });
  }

  async replaceOrder(orderId, change) {
    this.requireLogin();
    return this.request('PATCH', `/orders/${encodeURIComponent(orderId)}`, { body: change });
  }

  chart(symbol, interval, limit = 300) {
    return this.request('GET', '/chart', { query: { symbol, interval, limit: String(limit) } });
  }

  depth(symbol) {
    return this.request('GET', `/depth/${encodeURIComponent(symbol)}`);
  }

  adminListSymbols() {
    return this.request('GET', '/admin/symbols');
  }

  adminAddSymbol(symbol, meta = {}) {
    return this.request('POST', '/admin/symbols', { body: { symbol, ...meta } });
  }

  adminRemoveSymbol(symbol) {
    return this.request('DELETE', '/admin/symbols', { query: { symbol }, body: { symbol } });
  }
}
