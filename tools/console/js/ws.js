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
 * One request in flight per socket: the server answers every `subscribe`, `unsubscribe` and
 * `ping` with exactly one message, but its events name no request, and API Gateway may run two
 * messages of one connection concurrently (answers out of order). So requests wait in `queue`
 * and the next one is sent only when the one in flight (`inflight`) is answered — by its
 * `subscribed` / `unsubscribed` / `pong`, or by any `error` (whatever the code, or an API
 * Gateway failure without an `e` field, handed on as `INTERNAL_ERROR`) — or when no answer
 * came within `answerTimeoutMs` (5 s; a subscribe then counts as refused, handed on as a local
 * `NO_ANSWER` error, so a lost answer cannot block the queue). Every answer thus pairs with
 * exactly one request; only an answer arriving after its timeout could still be taken for the
 * next request's.
 *
 * Subscriptions are acknowledged (SPEC §6) and reconciled: `subscription` is the one wanted
 * state, `acked` the last one the server acknowledged (what the page shows), `server` what the
 * server last reported for this socket (`subscribed` / `unsubscribed` echo the connection's
 * whole main + sub). Every subscribe queued or in flight waits in `pending`. A `subscribed`
 * event that matches the subscribe in flight by content (its main, and every sub symbol asked
 * for) acknowledges it and is handed on with `request` and `state` ({main, sub} in the
 * request's order); one that matches nothing in flight (a late answer) is handed on with
 * `request: null` (the page then ignores it). An `error` answering a subscribe refuses it (a
 * subscribe is all-or-nothing) and is handed on with `request`; one answering an
 * `unsubscribe` or `ping` refuses no subscribe (`answers` names the action). When nothing is
 * pending any more the outcome is settled: the latest request sent that was acknowledged
 * wins, else the previous acknowledged state; if anything was refused or the server reports
 * another state, one restoring subscribe (with an `unsubscribe` of the extra sub symbols
 * first) re-establishes it. A refused restore is not retried. After a reconnect the wanted
 * subscription is sent again; if that is refused, the acknowledged one is restored on the new
 * connection. Messages are parsed once and handed to listeners by their `e` field; listeners
 * of `*` see every message.
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
/** A request unanswered this long counts as answered (a subscribe: refused) and the next one goes out. */
export const ANSWER_TIMEOUT_MS = 5000;
/** `error` codes that refuse a subscribe's symbols (any other error refuses it too). */
export const SUBSCRIBE_ERRORS = new Set(['UNKNOWN_SYMBOL', 'INVALID_SYMBOL', 'TOO_MANY_SUBSCRIPTIONS']);

/** Does a `subscribed` ack ({main, sub}: the connection's whole state) answer this request? */
export function ackMatches(ack, request) {
  const sub = Array.isArray(ack.sub) ? ack.sub : [];
  return ack.main === request.main && request.sub.every((s) => sub.includes(s));
}

/** Same main and the same set of sub symbols. */
export function sameState(a, b) {
  if (!a || !b) return a === b;
  return a.main === b.main && a.sub.length === b.sub.length && a.sub.every((s) => b.sub.includes(s));
}

/** A server answer without an `e` (API Gateway's `{"message": "Internal server error", …}` when
 * the Lambda fails) as an `error` event. */
function asEvent(msg) {
  if (msg && typeof msg === 'object' && !('e' in msg) && typeof msg.message === 'string') {
    return { ...msg, e: 'error', code: msg.code || 'INTERNAL_ERROR' };
  }
  return msg;
}

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
    this.subscription = null; // {main, sub}: the wanted state (sent again on every OPEN)
    this.acked = null; // the last {main, sub} the server acknowledged (the page's)
    this.server = null; // the {main, sub} this socket's server side last reported
    this.queue = []; // {msg, request} to send on this socket, each after the previous one's answer
    this.inflight = null; // the {msg, request} sent and not answered yet
    this.answerTimer = null;
    this.answerTimeoutMs = ANSWER_TIMEOUT_MS;
    this.pending = []; // subscribe requests queued or in flight on this socket, waiting for their answer
    this.unanswered = null; // the subscribe last given up on (no answer in time), if nothing followed
    this.batch = []; // the requests sent since everything was last settled, with their outcome
    this.base = null; // `acked` when the batch started
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
      this.server = { main: null, sub: [] };
      this.setState(State.OPEN);
      if (this.subscription) this.sendSubscribe({ main: this.subscription.main, sub: this.subscription.sub });
      this.pinger = setInterval(() => this.ping(), PING_EVERY_MS);
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
      this.forgetPending();
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

  emit(raw) {
    const msg = asEvent(raw);
    const kind = msg && msg.e;
    if (kind === 'subscribed') this.onSubscribed(msg);
    else if (kind === 'unsubscribed') {
      this.server = { main: msg.main ?? null, sub: msg.sub || [] };
      if (this.inflightIs('unsubscribe')) this.answered();
    } else if (kind === 'pong') {
      if (this.inflightIs('ping')) this.answered();
    } else if (kind === 'error' && this.inflight) {
      const item = this.answered(); // errors name no request: it answers the one in flight
      msg.answers = item.msg.action;
      if (item.request) {
        msg.request = item.request;
        this.refuse(item.request);
      }
    }
    this.pump();
    this.dispatch(msg);
  }

  dispatch(msg) {
    const kind = msg && msg.e;
    for (const fn of this.listeners.get(kind) || []) fn(msg);
    for (const fn of this.listeners.get('*') || []) fn(msg);
  }

  inflightIs(action) {
    return Boolean(this.inflight) && this.inflight.msg.action === action;
  }

  /** Queue one request (only on an open socket); it goes out once nothing else is in flight. */
  enqueue(msg, request = null) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.queue.push({ msg, request });
    this.pump();
    return true;
  }

  /** Send the next queued request if nothing is in flight. */
  pump() {
    if (this.inflight || !this.queue.length) return;
    const item = this.queue.shift();
    if (!this.sendJson(item.msg)) return; // the socket is closing: onclose forgets everything
    this.inflight = item;
    this.answerTimer = setTimeout(() => this.onNoAnswer(item), this.answerTimeoutMs);
  }

  /** The request in flight is answered: it is returned, and the next one may go out. */
  answered() {
    const item = this.inflight;
    if (this.answerTimer) clearTimeout(this.answerTimer);
    this.answerTimer = null;
    this.inflight = null;
    return item;
  }

  /** No answer in time: a subscribe counts as refused (reconciled like any refusal). */
  onNoAnswer(item) {
    if (item !== this.inflight) return;
    this.answered();
    console.warn(`event=ws_no_answer action=${item.msg.action} timeout_ms=${this.answerTimeoutMs}`);
    let msg = null;
    if (item.request) {
      msg = { e: 'error', code: 'NO_ANSWER', local: true, answers: item.msg.action, request: item.request,
        message: `no answer from the server within ${this.answerTimeoutMs / 1000} s` };
      this.unanswered = item.request; // a late ack of it is still taken (see onSubscribed)
      this.refuse(item.request);
    }
    this.pump();
    if (msg) this.dispatch(msg);
  }

  /** A subscribe request was refused; settle once nothing is pending. */
  refuse(request) {
    request.outcome = 'refused';
    const i = this.pending.indexOf(request);
    if (i >= 0) this.pending.splice(i, 1);
    if (!this.pending.length) this.settle();
  }

  /** A ping (keeps API Gateway's idle timeout away), unless one is already waiting. */
  ping() {
    if (this.inflightIs('ping') || this.queue.some((i) => i.msg.action === 'ping')) return false;
    return this.enqueue({ action: 'ping' });
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
    this.forgetPending();
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

  /** The socket is gone: its requests will never be answered (the next OPEN resends). */
  forgetPending() {
    this.answered();
    this.queue = [];
    this.pending = [];
    this.batch = [];
    this.unanswered = null;
    this.server = null;
  }

  /** Queue one subscribe request; it waits in `pending` for its answer (see `emit`). */
  sendSubscribe(request) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    if (!this.batch.length) this.base = this.acked;
    this.unanswered = null; // a new request: a late answer to an old one no longer decides
    this.pending.push(request);
    this.batch.push(request);
    return this.enqueue({ action: 'subscribe', main: request.main, sub: request.sub }, request);
  }

  /** A `subscribed` ack: it acknowledges the subscribe in flight if it matches its content. */
  onSubscribed(msg) {
    const sub = Array.isArray(msg.sub) ? msg.sub : [];
    this.server = { main: msg.main ?? null, sub };
    let request = this.inflight && this.inflight.request;
    const late = this.unanswered;
    if ((!request || !ackMatches(msg, request)) && late && !this.pending.length && ackMatches(msg, late)) {
      // the answer to the request given up on after its timeout: the server did take it, and
      // nothing was asked since — it is the page's after all
      this.unanswered = null;
      const state = { main: msg.main, sub: [...late.sub.filter((s) => sub.includes(s)),
        ...sub.filter((s) => !late.sub.includes(s))] };
      this.acked = state;
      this.subscription = state;
      msg.request = late;
      msg.state = state;
      return;
    }
    if (!request || !ackMatches(msg, request)) {
      msg.request = null; // answers nothing in flight (a late answer): only the server's state is learnt
      if (!this.pending.length && !sameState(this.server, this.acked)) this.settle();
      return;
    }
    this.answered();
    this.unanswered = null;
    this.pending.splice(this.pending.indexOf(request), 1);
    request.outcome = 'acked';
    // the request's order first; the server's symbols win where they differ
    request.state = { main: msg.main, sub: [...request.sub.filter((s) => sub.includes(s)),
      ...sub.filter((s) => !request.sub.includes(s))] };
    msg.request = request;
    msg.state = request.state;
    this.acked = request.state;
    if (!this.pending.length) this.settle();
  }

  /** Nothing is pending: the latest acknowledged request sent wins (else the state before the
   * batch); if anything was refused or the server says otherwise, restore it once. */
  settle() {
    const batch = this.batch;
    this.batch = [];
    const won = [...batch].reverse().find((r) => r.outcome === 'acked');
    const target = won ? won.state : batch.length ? this.base : this.acked;
    this.acked = target;
    this.subscription = target;
    if (!target || !this.server) return;
    const refused = batch.some((r) => r.outcome === 'refused');
    if (!refused && sameState(this.server, target)) return;
    if (batch.length && batch.every((r) => r.restore)) {
      console.warn(`event=subscribe_restore_failed main=${target.main} sub=${target.sub.join(',')}`);
      return; // a refused restore is not retried (no loop)
    }
    const asked = new Set([...this.server.sub, ...batch.flatMap((r) => r.sub)]);
    const extra = [...asked].filter((s) => !target.sub.includes(s));
    if (extra.length) this.enqueue({ action: 'unsubscribe', sub: extra });
    this.sendSubscribe({ main: target.main, sub: target.sub, restore: true });
  }

  /** Ask for a subscription; it becomes `subscription` (and is resent after every reconnect),
   * but only an acknowledgement (`subscribed`, with `request` and `state`) makes it the page's. */
  subscribe(main, sub) {
    const have = new Set([...(this.subscription ? this.subscription.sub : []), ...(this.server ? this.server.sub : [])]);
    const gone = [...have].filter((s) => !sub.includes(s));
    if (gone.length) this.enqueue({ action: 'unsubscribe', sub: gone });
    this.subscription = { main, sub };
    return this.sendSubscribe({ main, sub });
  }
}
