/**
 * ws.js — the WebSocket connection (SPEC §6) as a small state machine.
 *
 *   IDLE ──connect()──▶ CONNECTING ──open──▶ OPEN
 *                          │  ▲                │ socket closed / failed (not by us)
 *                          ▼  │ timer          ▼
 *                       RECONNECTING ◀─────────┘     backoff 0.5 s, 1 s, 2 s … 15 s (+ jitter)
 *   CONNECTING / RECONNECTING ──credentials refused──▶ CLOSED (no retry)
 *   any state ──disconnect()──▶ CLOSED
 *
 * On every OPEN the last subscription is sent again (resubscribe), and a ping keeps the
 * connection inside API Gateway's idle timeout.
 *
 * A browser hides a refused handshake's HTTP status, so when a socket with credentials
 * (`?token=` or a test-mode user) never opens, an anonymous probe tells the two causes
 * apart: the probe opens → the gateway refused the credentials → CLOSED, no retry, saying
 * what was refused (`refused` is set); the probe fails too → the gateway is unreachable →
 * reconnect with backoff.
 *
 * Subscriptions are acknowledged (SPEC §6): every subscribe sent waits in `pending` for its
 * answer, a `subscribed` event (handed on with `request`, the {main, sub} it answers) or an
 * `error` with a subscribe code (all-or-nothing: nothing changed on the server). A refused
 * request leaves `subscription` at the last acknowledged one, sent again if the request
 * had unsubscribed symbols first, so the server keeps the previous subscription. Messages are parsed once and handed to
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
/** `error` codes that answer (refuse) a subscribe. */
export const SUBSCRIBE_ERRORS = new Set(['UNKNOWN_SYMBOL', 'INVALID_SYMBOL', 'TOO_MANY_SUBSCRIPTIONS']);

/** Delay before reconnect attempt `n` (0-based): exponential, capped, with ±25 % jitter. */
export function backoffDelay(n, rand = Math.random) {
  const raw = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** n);
  return Math.round(raw * (0.75 + rand() * 0.5));
}

/** The server's test-mode user id pattern (chalice_app/auth.py USER_ID_RE, matched whole). */
export const USER_ID_PATTERN = '[A-Za-z0-9_.@:-]{1,64}';
const USER_ID_RE = new RegExp(`^${USER_ID_PATTERN}$`);

/** '' for a user id the server accepts, else why it would refuse it. */
export function userIdProblem(userId) {
  if (!userId) return 'test mode needs a user id';
  if (!USER_ID_RE.test(userId)) return `invalid user id: it must match ${USER_ID_PATTERN}`;
  return '';
}

/** The same URL without credentials (no `token`, `testMode`, `userId`). */
export function anonymousUrl(url) {
  const u = new URL(url);
  for (const k of ['token', 'testMode', 'userId']) u.searchParams.delete(k);
  return u.toString();
}

/** What a refused handshake of this URL refused, in words. */
export function refusedWhat(url) {
  const q = new URL(url).searchParams;
  if (q.get('token')) return 'the JWT (bad or expired?)';
  if (q.get('userId')) return `test-mode user "${q.get('userId')}" (invalid id, or test mode off)`;
  return 'the connection';
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
    this.subscription = null; // {main, sub}: the latest wanted (sent again on every OPEN)
    this.acked = null; // the last {main, sub} the server acknowledged
    this.pending = []; // subscribe requests sent on this socket, waiting for their answer
    this.listeners = new Map();
    this.stateListeners = [];
    this.opens = 0;
    this.prober = null; // the anonymous probe socket after a failed handshake
    this.refused = ''; // what the gateway refused (set with State.CLOSED), else ''
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
    this.refused = '';
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
      if (this.subscription) this.sendSubscribe(this.subscription);
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
      this.pending = [];
      if (opened) this.scheduleReconnect(`closed (${ev.code})`);
      else if (anonymousUrl(this.url) !== this.url) this.probe(ev.code);
      else this.scheduleReconnect(`could not connect (${ev.code}): gateway unreachable`);
    };
  }

  /** After a credentialed handshake failed: refused credentials, or an unreachable gateway? */
  probe(code) {
    let probe;
    try {
      probe = new this.WebSocketImpl(anonymousUrl(this.url));
    } catch {
      this.scheduleReconnect(`could not connect (${code}): gateway unreachable`);
      return;
    }
    this.prober = probe;
    const done = (gatewayUp) => {
      if (probe !== this.prober) return;
      this.prober = null;
      probe.onopen = null;
      probe.onclose = null;
      if (gatewayUp) probe.close(1000, 'probe');
      if (gatewayUp) {
        this.refused = refusedWhat(this.url);
        this.setState(State.CLOSED, `refused: the gateway is up but refused ${this.refused}; fix it and Connect`);
      } else {
        this.scheduleReconnect(`could not connect (${code}): gateway unreachable`);
      }
    };
    probe.onopen = () => done(true);
    probe.onclose = () => done(false);
  }

  emit(msg) {
    const kind = msg && msg.e;
    if (kind === 'subscribed' && this.pending.length) {
      msg.request = this.pending.shift();
      this.acked = { main: msg.request.main, sub: msg.request.sub };
    } else if (kind === 'error' && SUBSCRIBE_ERRORS.has(msg.code) && this.pending.length) {
      msg.request = this.pending.shift();
      this.refusedSubscribe(msg.request);
    }
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
    if (this.prober) this.prober.close(1000, 'client disconnect');
    this.prober = null;
    this.pending = [];
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

  /** Send one subscribe request and wait for its answer (see `emit`). */
  sendSubscribe(request) {
    const sent = this.sendJson({ action: 'subscribe', main: request.main, sub: request.sub });
    if (sent) this.pending.push(request);
    return sent;
  }

  /** Refused: back to the last acknowledged subscription, restored on the server if need be. */
  refusedSubscribe(request) {
    if (this.pending.length) return; // a later request is on its way; its answer decides
    this.subscription = this.acked;
    if (request.unsubscribed && request.unsubscribed.length && this.acked) {
      this.sendSubscribe({ ...this.acked, restore: true });
    }
  }

  /** Ask for a subscription; it becomes `subscription` (and is resent after every reconnect),
   * but only an acknowledgement (`subscribed`, with `request`) makes it the page's. */
  subscribe(main, sub) {
    const request = { main, sub, unsubscribed: [] };
    if (this.subscription) {
      const gone = this.subscription.sub.filter((s) => !sub.includes(s));
      if (gone.length && this.sendJson({ action: 'unsubscribe', sub: gone })) request.unsubscribed = gone;
    }
    this.subscription = { main, sub };
    return this.sendSubscribe(request);
  }
}
