"""The order flow of a load run and the REST client that sends it.

The flow is deterministic for a seed: order n goes to symbol `n % S`; even steps are
makers (GTC LIMIT a few ticks either side of the mid price), odd steps are takers (IOC
LIMIT crossing the mid by a few ticks), so the books keep trading without drifting and
every taker ends in a final status at once. Maker and taker of one step are different
users (no self-trade prevention noise). At the end, `cancel_open` cancels every order
whose last known status is still open, so every accepted order can reach a final status.

Errors of the sender are counted, never raised::

    timeout | connect error | HTTP <status> (with the JSON `code` when there is one)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tools.load.model import LoadConfig, Recorder, SentOrder, now_ms

log = logging.getLogger("supernoba.load.orders")


@dataclass(frozen=True)
class PlannedOrder:
    n: int
    user_id: str
    symbol: str
    kind: str  # maker | taker
    body: dict[str, Any]


def plan(cfg: LoadConfig, count: int) -> Iterator[PlannedOrder]:
    """`count` orders of the flow described in the module docstring."""
    rng = random.Random(cfg.seed)
    for n in range(count):
        symbol = cfg.symbols[n % len(cfg.symbols)]
        step = n // len(cfg.symbols)
        is_maker = step % 2 == 0
        buy = (step // 2) % 2 == 0
        if is_maker:
            user = cfg.user_id(step)
            offset = rng.randint(1, 5)
            price = cfg.mid_price - offset if buy else cfg.mid_price + offset
            body = {"symbol": symbol, "side": "BUY" if buy else "SELL", "price": price,
                    "quantity": rng.randint(1, 20), "type": "LIMIT", "tif": "GTC"}
        else:
            user = cfg.user_id(step + 1)
            # the taker crosses the maker placed just before it (opposite side)
            taker_buy = not buy
            price = cfg.mid_price + 5 if taker_buy else cfg.mid_price - 5
            body = {"symbol": symbol, "side": "BUY" if taker_buy else "SELL", "price": price,
                    "quantity": rng.randint(1, 20), "type": "LIMIT", "tif": "IOC"}
        body["client_order_id"] = f"load{cfg.run_id}-{cfg.seed}-{n}"
        yield PlannedOrder(n, user, symbol, "maker" if is_maker else "taker", body)


def _error_kind(resp: httpx.Response) -> str:
    code = ""
    try:
        data = resp.json()
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            code = " " + data["code"]
    except ValueError:
        code = " non-JSON body"
    return f"HTTP {resp.status_code}{code}"


class OrderSender:
    """Sends planned orders at a fixed rate with a bounded number of requests in flight."""

    def __init__(self, cfg: LoadConfig, rec: Recorder, http: httpx.AsyncClient) -> None:
        self.cfg, self.rec, self.http = cfg, rec, http
        self._sem = asyncio.Semaphore(cfg.concurrency)
        self._tasks: set[asyncio.Task] = set()
        self.late = 0

    async def _request(self, so: SentOrder, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        """Record `so`, send the request and note its REST latency and status on `so`; None (with
        `so.error` set) when it timed out or could not connect."""
        self.rec.orders.append(so)
        t0 = time.perf_counter()
        try:
            resp = await self.http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            so.error = "timeout"
            return None
        except httpx.TransportError as exc:
            so.error = f"connect error {type(exc).__name__}"
            return None
        so.rest_ms = (time.perf_counter() - t0) * 1000.0
        so.http_status = resp.status_code
        return resp

    async def _send(self, po: PlannedOrder) -> None:
        async with self._sem:
            so = SentOrder(order_id=None, user_id=po.user_id, symbol=po.symbol, kind=po.kind, sent_ms=now_ms())
            resp = await self._request(so, "POST", "/orders", json=po.body, headers={"X-Test-User": po.user_id})
            if resp is None:
                return
            if resp.status_code == 202:
                try:
                    so.order_id = resp.json().get("order_id")
                except ValueError:
                    so.error = "202 without JSON"
            else:
                so.error = _error_kind(resp)
                log.debug("event=order_refused user=%s symbol=%s status=%d body=%s",
                          po.user_id, po.symbol, resp.status_code, resp.text[:200])

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Send `rate * duration` orders, paced; returns when all of them have answered."""
        cfg = self.cfg
        count = int(cfg.rate * cfg.duration)
        if count == 0:
            return
        interval = 1.0 / cfg.rate
        start = time.perf_counter()
        for po in plan(cfg, count):
            if stop is not None and stop.is_set():
                break
            due = start + po.n * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                self.late += 1
            task = asyncio.create_task(self._send(po))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if po.n % max(1, int(cfg.rate * 5)) == 0 and po.n:
                log.info("event=progress sent=%d of=%d in_flight=%d", po.n, count, len(self._tasks))
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def cancel(self, order: SentOrder) -> None:
        async with self._sem:
            so = SentOrder(order_id=order.order_id, user_id=order.user_id, symbol=order.symbol,
                           kind="cancel", sent_ms=now_ms())
            resp = await self._request(so, "DELETE", f"/orders/{order.order_id}", params={"symbol": order.symbol},
                                       headers={"X-Test-User": order.user_id})
            if resp is None:
                return
            if resp.status_code != 202:
                so.error = _error_kind(resp)

    async def cancel_all(self, orders: list[SentOrder]) -> None:
        await asyncio.gather(*(self.cancel(o) for o in orders))
