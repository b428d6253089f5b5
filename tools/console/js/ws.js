/**
 * ws.js — the WebSocket connection (SPEC §6) as a small state machine.
 *
 *   IDLE ──connect()──▶ CONNECTING ──open──▶ OPEN
 *                          │  ▲                │ socket closed / failed (not by us)
 *                          ▼  │ timer          ▼
 *                       RECONNECTING ◀─────────┘     backoff 0.5 s, 1 s, 2 s … 15 s (+ jitter)
 *   any state ──disconnect()──▶ CLOSED
 *
 * On every OPEN the last subscription is sent again (resubscribe), and a ping keeps the
 * connection inside API Gateway's idle timeout. Messages are parsed once and handed to
 * listeners by their `e` field; listeners of `*` see every message.
 */

export const State = Object.freeze({
  IDLE: 'idle',
  CONNECTING: 'connecting',
  OPEN: 'open',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
});

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_MAX_MS = 15000;
export const PING_EVERY_MS = 60000;

/** Delay before reconnect attempt `n` (0-based): exponential, capped, with ±25 % jitter. */
export function backoffDelay(n, rand = Math.random) {
  const raw = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** n);
  return Math.round(raw * (0.75 + rand() * 0.5));
}

/** The connect URL for a session: `?token=` (JWT), `?testMode=true&userId=` or none. */
export function connectUrl(wsUrl, session) {
  const u = new URL(wsUrl);
  if (session.mode === 'jwt' && session.token) u.searchParams.set('token', session.token);
  else if (session.mode === 'test' && session.userId) {
    u.searchParams.set('testMode', 'true');
    u.searchParams.set('userId', session.userId);
  }
  return u.toString();
}

export class Connection {
  constructor({ WebSocketImpl = window.WebSocket } = {}) {
    this.WebSocketImpl = WebSocketImpl;
    this.state = State.IDLE;
    this.url = null;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.pinger = null;
    this.subscription = null; // {main, sub}
    this.listeners = new Map();
    this.stateListeners = [];
    this.opens = 0;
  }

  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push(fn);
  }

  onState(fn) {
    this.stateListeners.push(fn);
  }

  setState(state, detail = '') {
    this.state = state;
    for (const fn of this.stateListeners) fn(state, detail, this);
  }

  connect(url) {
    this.disconnect(false);
    this.url = url;
    this.attempt = 0;
    this.open();
  }

  open() {
    this.setState(this.attempt === 0 ? State.CONNECTING : State.RECONNECTING, `attempt ${this.attempt + 1}`);
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (err) {
      this.setState(State.CLOSED, `bad URL: ${err.message}`);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      opened = true;
      this.attempt = 0;
      this.opens += 1;
      this.setState(State.OPEN);
      if (this.subscription) this.sendJson({ action: 'subscribe', ...this.subscription });
      this.pinger = setInterval(() => this.sendJson({ action: 'ping' }), PING_EVERY_MS);
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        console.warn('non-JSON WebSocket message', ev.data);
        return;
      }
      this.emit(msg);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.stopPing();
      this.ws = null;
      // a browser hides the handshake's HTTP status: say what a socket that never opened means
      this.scheduleReconnect(opened ? `closed (${ev.code})`
        : `could not connect (${ev.code}): gateway down, or the token was refused (bad or expired?)`);
    };
  }

  emit(msg) {
    const kind = msg && msg.e;
    for (const fn of this.listeners.get(kind) || []) fn(msg);
    for (const fn of this.listeners.get('*') || []) fn(msg);
  }

  scheduleReconnect(why) {
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.setState(State.RECONNECTING, `${why}; retry in ${(delay / 1000).toFixed(1)} s`);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.open();
    }, delay);
  }

  stopPing() {
    if (this.pinger) clearInterval(this.pinger);
    this.pinger = null;
  }

  /** Close for good (no reconnect). */
  disconnect(announce = true) {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.stopPing();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'client disconnect');
    if (announce) this.setState(State.CLOSED);
  }

  sendJson(obj) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  /** Remember and send the subscription; it is sent again after every reconnect. */
  subscribe(main, sub) {
    if (this.subscription) {
      const gone = this.subscription.sub.filter((s) => !sub.includes(s));
      if (gone.length) this.sendJson({ action: 'unsubscribe', sub: gone });
    }
    this.subscription = { main, sub };
    return this.sendJson({ action: 'subscribe', main, sub });
  }
}
