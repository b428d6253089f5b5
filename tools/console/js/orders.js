/**
 * orders.js — order entry, "my orders" and "my fills".
 *
 * Order entry posts to `POST /orders` (SPEC §5) and shows the server's validation errors
 * next to the field they name (`[data-error-for=price]` …, else under the buttons) until the
 * next submit or a change of symbol (`clearErrors`). It is disabled while nobody is logged
 * in (the login guard; api.js refuses too) and while the WebSocket is not open (no order or
 * fill events would arrive); so are my orders' cancel/replace buttons.
 * My orders starts a row at QUEUED from the 202 answer and follows the owner's `order`
 * events (SPEC §3); a REJECTED status for a cancel/replace of a known order is shown as a
 * note and does not overwrite the order's own status. Rows of open orders have cancel
 * (DELETE) and replace (PATCH, inline price/quantity) buttons. My fills lists `fill`
 * events with the user's own side and role.
 */

import { ApiError } from './api.js';

export const OPEN_STATUSES = new Set(['QUEUED', 'ACCEPTED', 'PARTIALLY_FILLED', 'REPLACED']);
const MAX_ROWS = 200;
const GUARD_LOGIN = 'Log in (test-mode user or JWT) to trade.';
const GUARD_OFFLINE = 'Not connected: trading is off until the connection is open again (Connect).';
const NEEDS_CONNECTION = new Set(['cancel', 'replace', 'replace-send']);

/** "123" → 123; anything that is not a plain integer is sent as typed (the server judges). */
export function intOrRaw(text) {
  const t = String(text).trim();
  if (t === '') return null;
  return /^-?\d+$/.test(t) && Number.isSafeInteger(Number(t)) ? Number(t) : t;
}

function cell(text, className = '') {
  const td = document.createElement('td');
  td.textContent = text === null || text === undefined ? '—' : String(text);
  if (className) td.className = className;
  return td;
}

function showErrors(root, err) {
  const field = err.field && root.querySelector(`[data-error-for="${CSS.escape(err.field)}"]`);
  const target = field || root.querySelector('[data-error-for="_form"]');
  target.textContent = `${err.code}: ${err.message}`;
  target.dataset.code = err.code;
}

function clearErrors(root) {
  for (const el of root.querySelectorAll('[data-error-for]')) {
    el.textContent = '';
    delete el.dataset.code;
  }
}

export class OrderEntry {
  constructor(form, api, getSymbol, onPlaced) {
    this.form = form;
    this.api = api;
    this.getSymbol = getSymbol;
    this.onPlaced = onPlaced;
    this.fieldset = form.querySelector('fieldset');
    this.guard = form.querySelector('#login-guard');
    this.result = form.querySelector('#order-result');
    this.type = form.querySelector('#order-type');
    this.tif = form.querySelector('#order-tif');
    this.price = form.querySelector('#order-price');
    this.qty = form.querySelector('#order-qty');
    form.querySelector('#btn-buy').addEventListener('click', () => this.submit('BUY'));
    form.querySelector('#btn-sell').addEventListener('click', () => this.submit('SELL'));
    form.addEventListener('submit', (ev) => ev.preventDefault());
    this.type.addEventListener('change', () => {
      this.price.disabled = this.type.value === 'MARKET';
    });
    this.loggedIn = false;
    this.connected = false;
    this.update();
  }

  setLoggedIn(loggedIn) {
    this.loggedIn = loggedIn;
    this.update();
  }

  setConnected(connected) {
    this.connected = connected;
    this.update();
  }

  /** data-guard: `blocked` (nobody logged in), `offline` (not connected) or `open`. */
  update() {
    const guard = !this.loggedIn ? 'blocked' : !this.connected ? 'offline' : 'open';
    this.fieldset.disabled = guard !== 'open';
    this.guard.hidden = guard === 'open';
    this.guard.textContent = guard === 'offline' ? GUARD_OFFLINE : GUARD_LOGIN;
    this.form.dataset.guard = guard;
    if (guard === 'open') this.price.disabled = this.type.value === 'MARKET';
  }

  /** Forget the last submit's errors (they were about another order, e.g. another symbol). */
  clearErrors() {
    clearErrors(this.form);
  }

  async submit(side) {
    clearErrors(this.form);
    const order = { symbol: this.getSymbol(), side, quantity: intOrRaw(this.qty.value), type: this.type.value, tif: this.tif.value };
    if (order.type !== 'MARKET') order.price = intOrRaw(this.price.value);
    this.result.textContent = `sending ${side} …`;
    try {
      const res = await this.api.placeOrder(order);
      this.result.textContent = `${res.order_id} ${res.status}`;
      this.onPlaced({ ...order, order_id: res.order_id, status: res.status || 'QUEUED' });
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      this.result.textContent = '';
      showErrors(this.form, err);
    }
  }
}

export class MyOrders {
  constructor(table, api) {
    this.tbody = table.querySelector('tbody');
    this.api = api;
    this.rows = new Map();
    this.connected = false;
  }

  /** Cancel/replace only while connected (their outcome arrives as `order` events). */
  setConnected(connected) {
    this.connected = connected;
    for (const b of this.tbody.querySelectorAll('button[data-testid]')) {
      if (NEEDS_CONNECTION.has(b.dataset.testid)) b.disabled = !connected;
    }
  }

  clear() {
    this.rows.clear();
    this.tbody.replaceChildren();
  }

  /** An order accepted by the REST API (202): a QUEUED row unless events got there first. */
  addPlaced(o) {
    const row = this.row(o.order_id);
    const d = row.data;
    Object.assign(d, { symbol: o.symbol, side: o.side, type: o.type, tif: o.tif });
    if (d.price === undefined || d.price === null) d.price = o.type === 'MARKET' ? null : o.price;
    if (d.quantity === undefined) d.quantity = o.quantity;
    if (!d.status) d.status = 'QUEUED';
    this.render(row);
  }

  onOrder(ev) {
    const row = this.row(ev.order_id);
    const d = row.data;
    if (typeof ev.seq === 'number' && typeof d.seq === 'number' && ev.seq < d.seq) return;
    if (ev.status === 'REJECTED' && d.status && d.status !== 'QUEUED') {
      d.note = `request rejected: ${ev.reason}`;
    } else {
      d.status = ev.status;
      d.reason = ev.reason;
      d.note = ev.reason ? ev.reason : '';
      d.filled = ev.filled;
      d.remaining = ev.remaining;
      if (ev.status === 'REPLACED' || ev.status === 'ACCEPTED') {
        d.price = ev.price;
        d.quantity = Number(ev.filled) + Number(ev.remaining);
      }
      if (typeof ev.seq === 'number') d.seq = ev.seq;
    }
    d.symbol = d.symbol || ev.s;
    this.render(row);
  }

  row(orderId) {
    let row = this.rows.get(orderId);
    if (!row) {
      const tr = document.createElement('tr');
      tr.dataset.orderId = orderId;
      tr.dataset.testid = 'order-row';
      row = { tr, data: { order_id: orderId } };
      this.rows.set(orderId, row);
      this.tbody.prepend(tr);
      while (this.tbody.children.length > MAX_ROWS) {
        const old = this.tbody.lastElementChild;
        this.rows.delete(old.dataset.orderId);
        old.remove();
      }
    }
    return row;
  }

  render(row) {
    const { tr, data: d } = row;
    const status = d.status || '…';
    tr.dataset.status = status;
    const statusCell = cell(status, `status s-${status}`);
    statusCell.dataset.testid = 'order-status';
    if (d.note) statusCell.title = d.note;
    const actions = document.createElement('td');
    actions.className = 'actions';
    if (OPEN_STATUSES.has(status)) {
      actions.append(this.button('Cancel', 'cancel', () => this.cancel(row)));
      actions.append(this.button('Replace', 'replace', () => this.editReplace(row, actions)));
    }
    const note = document.createElement('span');
    note.className = 'note';
    note.dataset.testid = 'order-note';
    note.textContent = d.note || '';
    actions.append(note);
    tr.replaceChildren(
      cell(d.order_id.length > 14 ? `…${d.order_id.slice(-12)}` : d.order_id, 'oid'),
      cell(d.symbol),
      cell(d.side, d.side === 'BUY' ? 'buy' : d.side === 'SELL' ? 'sell' : ''),
      cell(d.price),
      cell(d.quantity),
      cell(d.filled ?? 0),
      statusCell,
      actions,
    );
    tr.firstChild.title = d.order_id;
  }

  button(label, testid, fn) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = label;
    b.dataset.testid = testid;
    if (NEEDS_CONNECTION.has(testid)) b.disabled = !this.connected;
    b.addEventListener('click', fn);
    return b;
  }

  async cancel(row) {
    const d = row.data;
    d.note = 'cancel sent';
    this.render(row);
    try {
      await this.api.cancelOrder(d.order_id, d.symbol);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      d.note = `cancel failed: ${err.code}: ${err.message}`;
      this.render(row);
    }
  }

  editReplace(row, actions) {
    const d = row.data;
    const price = document.createElement('input');
    price.size = 7;
    price.value = d.price ?? '';
    price.dataset.testid = 'replace-price';
    const qty = document.createElement('input');
    qty.size = 5;
    qty.value = d.quantity ?? '';
    qty.dataset.testid = 'replace-qty';
    const ok = this.button('Send', 'replace-send', async () => {
      d.note = 'replace sent';
      const change = { symbol: d.symbol };
      const p = intOrRaw(price.value);
      const q = intOrRaw(qty.value);
      if (p !== null) change.price = p;
      if (q !== null) change.quantity = q;
      try {
        await this.api.replaceOrder(d.order_id, change);
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        d.note = `replace failed: ${err.code}: ${err.message}`;
      }
      this.render(row);
    });
    const back = this.button('×', 'replace-cancel', () => this.render(row));
    actions.replaceChildren(price, qty, ok, back);
    price.focus();
  }
}

export class MyFills {
  constructor(table) {
    this.tbody = table.querySelector('tbody');
    this.seen = new Set();
  }

  clear() {
    this.seen.clear();
    this.tbody.replaceChildren();
  }

  onFill(ev, me) {
    if (this.seen.has(ev.trade_id)) return;
    this.seen.add(ev.trade_id);
    const taker = ev.taker_user_id === me;
    const side = taker ? ev.taker_side : ev.taker_side === 'BUY' ? 'SELL' : 'BUY';
    const tr = document.createElement('tr');
    tr.dataset.testid = 'fill-row';
    tr.dataset.tradeId = ev.trade_id;
    const when = typeof ev.t === 'number' && ev.t > 0 ? new Date(ev.t).toISOString().slice(11, 19) : '—';
    tr.append(
      cell(when),
      cell(ev.s),
      cell(side, side === 'BUY' ? 'buy' : 'sell'),
      cell(ev.p),
      cell(ev.q),
      cell(taker ? 'taker' : 'maker'),
      cell(ev.trade_id, 'oid'),
    );
    this.tbody.prepend(tr);
    while (this.tbody.children.length > MAX_ROWS) this.tbody.lastElementChild.remove();
  }
}
