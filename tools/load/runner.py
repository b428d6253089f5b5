"""Runs one load: clients connect, orders flow for T seconds, then a bounded drain.

    connect N clients (+ one logged-in "trader" connection per trading user, so every
    order's owner is listening) → flow: M orders/s for T s (a fault script may run
    alongside) → drain: wait until every accepted order has a status, cancel the ones
    still open, wait until every one is final (at most `drain` seconds) → read the
    final depth of each symbol over REST → stop the clients.

`run_load` returns the `Recorder`; `tools.load.model.build_report` makes figures of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from chalice_app.messages import FINAL_STATUSES, OPEN_STATUSES
from tools.load.clients import LoadClient
from tools.load.model import (
    TIER_LOGGED_IN,
    ClientLog,
    LoadConfig,
    Recorder,
    now_ms,
    order_statuses,
)
from tools.load.orders import OrderSender

log = logging.getLogger("supernoba.load")


@dataclass
class LoadContext:
    """What a fault script gets while the flow runs."""

    cfg: LoadConfig
    rec: Recorder
    clients: list[LoadClient]
    http: httpx.AsyncClient
    flow_done: asyncio.Event = field(default_factory=asyncio.Event)
    extra_tasks: list[asyncio.Task] = field(default_factory=list)

    def add_client(self, index_hint: int, tier: str, user_id: str | None, symbol: str) -> LoadClient:
        """Start one more client mid-run (used to check that new subscribers get data after a fault)."""
        logbook = ClientLog(index=len(self.rec.clients), tier=tier, user_id=user_id, symbol=symbol)
        self.rec.clients.append(logbook)
        client = LoadClient(self.cfg.ws_url, logbook, connect_timeout=self.cfg.connect_timeout,
                            max_reconnects=self.cfg.max_reconnects)
        client.flowing = True
        self.clients.append(client)
        self.extra_tasks.append(asyncio.create_task(client.run()))
        return client


FaultScript = Callable[[LoadContext], Awaitable[None]]


async def ensure_symbols(http: httpx.AsyncClient, cfg: LoadConfig) -> None:
    """Make the run's symbols tradable through the admin API (idempotent)."""
    if not cfg.admin_key:
        return
    for sym in cfg.symbols:
        resp = await http.post("/admin/symbols", json={"symbol": sym}, headers={"X-Admin-Key": cfg.admin_key})
        if resp.status_code >= 400 and resp.status_code != 409:
            log.warning("event=admin_symbol_failed symbol=%s status=%d body=%s", sym, resp.status_code, resp.text[:200])


def _pending(rec: Recorder) -> tuple[list, list]:
    """(accepted orders with no status yet, accepted orders whose last status is open)."""
    statuses = order_statuses(rec)
    missing, open_ = [], []
    for o in rec.orders:
        if not o.accepted or o.kind == "cancel":
            continue
        evs = statuses.get(o.order_id or "")
        if not evs:
            missing.append(o)
        elif not any(e.get("status") in FINAL_STATUSES for e in evs):
            if evs[-1].get("status") in OPEN_STATUSES:
                open_.append(o)
    return missing, open_


async def _drain(cfg: LoadConfig, rec: Recorder, sender: OrderSender, idle: float = 20.0) -> None:
    """Wait for final statuses: until none is missing, or nothing new arrived for `idle`
    seconds, or `cfg.drain` seconds passed (a hard bound)."""
    deadline = time.monotonic() + cfg.drain
    cancelled: set[str] = set()
    seen, last_progress = -1, time.monotonic()
    while time.monotonic() < deadline:
        received = sum(len(c.messages) for c in rec.clients)
        if received != seen:
            seen, last_progress = received, time.monotonic()
        elif time.monotonic() - last_progress > idle:
            break
        missing, open_ = _pending(rec)
        to_cancel = [o for o in open_ if o.order_id not in cancelled]
        if to_cancel:  # resting makers are cancelled as soon as they are seen open
            log.info("event=cancel_open count=%d still_without_status=%d", len(to_cancel), len(missing))
            cancelled.update(o.order_id for o in to_cancel if o.order_id)
            await sender.cancel_all(to_cancel)
        elif not missing and not open_:
            log.info("event=drained")
            return
        await asyncio.sleep(0.2)
    missing, open_ = _pending(rec)
    log.warning("event=drain_timeout missing=%d open=%d", len(missing), len(open_))


async def final_depth_u(http: httpx.AsyncClient, symbols: tuple[str, ...]) -> dict[str, int]:
    """The `u` of each symbol's current depth, from `GET /depth/{symbol}`."""
    out: dict[str, int] = {}
    for sym in symbols:
        try:
            resp = await http.get(f"/depth/{sym}")
            if resp.status_code == 200:
                u = resp.json().get("u")
                if isinstance(u, int):
                    out[sym] = u
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("event=final_depth_failed symbol=%s error=%s", sym, exc)
    return out


async def run_load(cfg: LoadConfig, fault_script: FaultScript | None = None) -> tuple[Recorder, dict[str, int]]:
    """One whole run; returns what was recorded and the final depth `u` per symbol."""
    rec = Recorder(config=cfg)
    limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
    async with httpx.AsyncClient(base_url=cfg.rest_url, timeout=10.0, limits=limits, trust_env=False) as http:
        await ensure_symbols(http, cfg)
        clients: list[LoadClient] = []
        for i in range(cfg.users):  # one trader connection per trading user
            rec.clients.append(ClientLog(index=len(rec.clients), tier=TIER_LOGGED_IN, user_id=cfg.user_id(i),
                                         symbol=cfg.symbols[i % len(cfg.symbols)]))
        for i in range(cfg.clients):
            tier = cfg.tier_of_client(i)
            rec.clients.append(ClientLog(index=len(rec.clients), tier=tier,
                                         user_id=cfg.user_id(i) if tier == TIER_LOGGED_IN else None,
                                         symbol=cfg.symbols[i % len(cfg.symbols)]))
        for logbook in rec.clients:
            clients.append(LoadClient(cfg.ws_url, logbook, connect_timeout=cfg.connect_timeout,
                                      max_reconnects=cfg.max_reconnects))
        tasks = [asyncio.create_task(c.run()) for c in clients]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.opened.wait() for c in clients)), cfg.connect_timeout)
        except TimeoutError:
            rec.error("client not connected in time")
            log.warning("event=connect_timeout open=%d of=%d", sum(c.opened.is_set() for c in clients), len(clients))
        log.info("event=connected clients=%d", sum(c.opened.is_set() for c in clients))
        await asyncio.sleep(0.5)  # subscriptions registered before the first order

        ctx = LoadContext(cfg, rec, clients, http)
        sender = OrderSender(cfg, rec, http)
        for c in clients:
            c.flowing = True
        rec.started_ms = now_ms()
        fault_task = asyncio.create_task(fault_script(ctx)) if fault_script else None
        await sender.run()
        rec.flow_ended_ms = now_ms()
        ctx.flow_done.set()
        if fault_task is not None:
            await fault_task
        log.info("event=flow_done orders=%d late=%d", len(rec.orders), sender.late)
        await _drain(cfg, rec, sender)
        await asyncio.sleep(1.0)  # the anonymous tier's last push (500 ms) arrives
        depth_u = await final_depth_u(http, cfg.symbols)
        for c in clients:
            c.flowing = False
        await asyncio.sleep(0.6)
        rec.ended_ms = now_ms()
        for c in clients:
            c.stop()
        await asyncio.wait([*tasks, *ctx.extra_tasks], timeout=5.0)
    return rec, depth_u
