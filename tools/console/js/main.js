/**
 * main.js — wires the console together: configuration, session, WebSocket connection,
 * ladder, chart, ticker strip, order entry, my orders/fills, admin panel, event log.
 *
 * On load it connects (anonymous, or as the test-mode user of `?user=`) and subscribes to
 * the main symbol field (`?main=`, `?sub=`) unless the page was opened with `?auto=0`.
 * A subscription becomes the page's (entry symbol, ladder, chart, ticker strip) only when
 * the server acknowledges it; a refused one keeps the previous symbols and shows the error. `window.supernoba` exposes the parts for debugging and tests.
 */

import { AdminPanel, jwtPayload } from './admin.js';
import { Api, isLoggedIn } from './api.js';
import { CandleChart } from './chart.js';
import { loadConfig } from './config.js';
import { Ladder } from './ladder.js';
import { MyFills, MyOrders, OrderEntry } from './orders.js';
import { TickerStrip } from './ticker.js';
import { Connection, connectUrl, State, SUBSCRIBE_ERRORS, userIdProblem } from './ws.js';

const $ = (sel) => document.querySelector(sel);
const LOG_MAX = 80;

function parseSubs(text) {
  return [...new Set(String(text).split(/[\s,]+/).map((s) => s.trim().toUpperCase()).filter(Boolean))];
}

function logLine(text, kind = '') {
  const li = document.createElement('li');
  li.className = kind;
  li.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  const log = $('#event-log');
  log.prepend(li);
  while (log.children.length > LOG_MAX) log.lastElementChild.remove();
}

async function start() {
  const config = await loadConfig();
  const query = new URLSearchParams(window.location.search);
  let session = { mode: 'anonymous', userId: '', token: '', adminKey: config.adminKey || '' };
  const api = new Api(() => config, () => session);
  const conn = new Connection();
  const ladder = new Ladder($('#ladder'), (sym) => api.depth(sym));
  const chart = new CandleChart($('#chart'), (sym, tf, limit) => api.chart(sym, tf, limit), $('#chart-legend'));
  const ticker = new TickerStrip($('#ticker-strip'));
  const myOrders = new MyOrders($('#my-orders'), api);
  const myFills = new MyFills($('#my-fills'));
  const admin = new AdminPanel($('#admin-panel'), api);
  let main = null; // the acknowledged subscription
  let subs = [];
  let tf = '1m';
  let counts = { d: 0, candle: 0 };
  const entry = new OrderEntry($('#order-form'), api, () => main || '',
    (o) => {
      myOrders.addPlaced(o);
      logLine(`placed ${o.side} ${o.quantity}@${o.price ?? 'MKT'} ${o.symbol} → ${o.order_id}`);
    });
  $('#admin-key').value = session.adminKey;

  function myUserId() {
    if (session.mode === 'test') return session.userId;
    if (session.mode === 'jwt') return (jwtPayload(session.token) || {}).sub || '';
    return '';
  }

  function showMode() {
    const mode = $('#conn-mode').value;
    document.body.dataset.mode = mode;
  }

  function readSession() {
    const mode = $('#conn-mode').value;
    return {
      mode,
      userId: mode === 'test' ? $('#user-id').value.trim() : '',
      token: mode === 'jwt' ? $('#jwt').value.trim() : '',
      adminKey: $('#admin-key').value.trim(),
    };
  }

  function connect() {
    const next = readSession();
    const badUser = next.mode === 'test' ? userIdProblem(next.userId) : '';
    $('#user-id-error').textContent = badUser;
    if (badUser) { // the gateway would refuse the handshake (400 INVALID_USER_ID): do not log in
      logLine(badUser, 'error');
      $('#user-id').focus();
      return;
    }
    if (next.mode === 'jwt' && !next.token) {
      logLine('paste a JWT first', 'error');
      $('#jwt').focus();
      return;
    }
    if (next.mode !== session.mode || next.userId !== session.userId || next.token !== session.token) {
      myOrders.clear();
      myFills.clear();
    }
    session = next;
    const loggedIn = isLoggedIn(session);
    entry.setLoggedIn(loggedIn);
    $('#whoami').textContent = loggedIn ? `as ${myUserId() || '(JWT)'}` : 'anonymous (read-only)';
    $('#whoami').dataset.user = myUserId();
    admin.setSession(session);
    conn.connect(connectUrl(config.wsUrl, session));
  }

  /** Ask the server; `applySubscription` runs when it acknowledges. */
  function subscribe(newMain, newSubs) {
    if (!newMain) return;
    const wanted = newSubs.filter((s) => s !== newMain);
    $('#main-symbol').value = newMain; // what was asked for (a refusal's error sits next to it)
    $('#sub-symbols').value = wanted.join(', ');
    if (conn.state === State.IDLE || conn.state === State.CLOSED) connect();
    conn.subscribe(newMain, wanted);
    logLine(`subscribe main=${newMain} sub=[${wanted.join(',')}]`);
  }

  function applySubscription(newMain, newSubs) {
    const mainChanged = newMain !== main;
    main = newMain;
    subs = newSubs.filter((s) => s !== main);
    ticker.setSymbols(main, subs);
    $('#entry-symbol').textContent = main;
    $('#chart-title').textContent = main;
    if (mainChanged) {
      entry.clearErrors();
      ladder.reset(main);
      ladder.refetch('subscribe');
      chart.load(main, tf);
    }
  }

  conn.onState((state, detail) => {
    const badge = $('#conn-state');
    badge.dataset.state = state;
    badge.textContent = detail && state !== State.OPEN ? `${state} · ${detail}` : state;
    logLine(`connection ${state}${detail ? ` (${detail})` : ''}`, state === State.OPEN ? 'ok' : conn.refused ? 'error' : '');
    entry.setConnected(state === State.OPEN); // no order/fill events would arrive otherwise
    myOrders.setConnected(state === State.OPEN);
    if (state === State.CLOSED && conn.refused) {
      $('#whoami').textContent = 'not logged in (refused)';
      $('#whoami').dataset.user = '';
      entry.setLoggedIn(false);
    }
    if (state === State.OPEN && conn.opens > 1 && main) {
      ladder.refetch('reconnect', { force: true });
      chart.load(main, tf);
    }
  });
  conn.on('d', (m) => {
    if (ladder.onDepth(m) === 'ignored') return; // another symbol's (e.g. the old main's) depth
    counts.d += 1;
    $('#ladder-info').textContent = `u ${m.u} · ${counts.d} updates`;
  });
  const onCandle = (m) => {
    counts.candle += 1;
    chart.onCandle(m);
    if (m.e === 'candle_close') logLine(`candle closed ${m.s} ${m.t} c=${m.c} v=${m.v}`);
  };
  conn.on('candle', onCandle);
  conn.on('candle_close', onCandle);
  conn.on('t', (m) => ticker.onTicker(m));
  conn.on('order', (m) => {
    myOrders.onOrder(m);
    logLine(`order ${m.order_id} ${m.s} ${m.status}${m.reason ? ` ${m.reason}` : ''} filled=${m.filled} rem=${m.remaining}`,
      m.status === 'REJECTED' ? 'error' : '');
  });
  conn.on('fill', (m) => {
    myFills.onFill(m, myUserId());
    logLine(`fill ${m.trade_id} ${m.q}@${m.p}`, 'ok');
  });
  conn.on('error', (m) => {
    logLine(`${m.local ? 'request failed' : 'server error'} ${m.code}: ${m.message}`, 'error');
    if (m.request || SUBSCRIBE_ERRORS.has(m.code)) { // it refused a subscribe request
      $('#sub-error').textContent = `${m.code}: ${m.message}${main ? ` (still on ${main})` : ''}`;
    }
  });
  conn.on('subscribed', (m) => {
    if (m.request) { // else it answers no request we wait for (ws.js reconciles)
      if (!m.request.restore) $('#sub-error').textContent = '';
      applySubscription(m.state.main, m.state.sub); // the request's order; the server's symbols win
    }
    logLine(`subscribed main=${m.main} sub=[${(m.sub || []).join(',')}]`, m.request ? 'ok' : '');
  });

  ticker.onPick = (sym) => {
    const rest = [...subs.filter((s) => s !== sym), main].filter(Boolean);
    subscribe(sym, rest);
  };
  ladder.onPrice = (p) => {
    $('#order-price').value = String(p);
  };

  $('#conn-mode').addEventListener('change', () => {
    showMode();
    $('#user-id-error').textContent = '';
  });
  $('#conn-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    connect();
    if (main) conn.subscription = { main, sub: subs };
  });
  $('#btn-disconnect').addEventListener('click', () => conn.disconnect());
  $('#sub-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    subscribe($('#main-symbol').value.trim().toUpperCase(), parseSubs($('#sub-symbols').value));
  });
  for (const b of document.querySelectorAll('#timeframes [data-tf]')) {
    b.addEventListener('click', () => {
      tf = b.dataset.tf;
      for (const o of document.querySelectorAll('#timeframes [data-tf]')) o.classList.toggle('active', o === b);
      if (main) chart.load(main, tf);
    });
  }

  showMode();
  window.supernoba = { config, api, conn, ladder, chart, ticker, myOrders, myFills, admin, get session() { return session; } };
  document.body.dataset.ready = 'true';
  if (query.get('user')) {
    // ?user=u1 opens the page as that test-mode user (a JWT is never taken from the URL)
    $('#conn-mode').value = 'test';
    $('#user-id').value = query.get('user');
    showMode();
  }
  if (query.get('auto') !== '0') {
    if (query.get('main')) $('#main-symbol').value = query.get('main');
    connect();
    subscribe($('#main-symbol').value.trim().toUpperCase(), parseSubs(query.get('sub') || $('#sub-symbols').value));
  }
}

start().catch((err) => {
  console.error('console failed to start', err);
  document.body.dataset.ready = 'failed';
});
