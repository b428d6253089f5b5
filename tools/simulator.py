"""Market simulator for the local stack (`make dev ARGS=--simulate`).

Trades a few symbols through the REST API, exactly as users do, so the console shows a
live market: for each symbol two market makers keep a handful of bids and asks around a
drifting mid price (cancelling their oldest orders to stay within a few per side), and
three takers now and then cross the spread with IOC limits or MARKET orders. Users are
test-mode users (`X-Test-User`, the local stage allows them); the extra symbols are
activated through the admin API (`X-Admin-Key`).

    python -m tools.simulator [--rest URL] [--admin-key KEY] [--symbols TEST,AAA,BBB] [--rate 5]

Errors from the API (a 4xx for an order the book moved away from, a 503 while a part
restarts) are counted and logged, never fatal.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import httpx

from chalice_app.logs import setup_logging
from tools.ports import REST_URL

log = logging.getLogger("supernoba.simulator")

DEFAULT_SYMBOLS = ("TEST", "AAA", "BBB")
START_PRICE = {"TEST": 10_000, "AAA": 2_500, "BBB": 48_000}
MAKERS = ("sim-mm-1", "sim-mm-2")
TAKERS = ("sim-taker-1", "sim-taker-2", "sim-taker-3")


@dataclass
class _Book:
    symbol: str
    mid: float
    resting: dict[str, deque[str]] = field(default_factory=dict)  # user -> order ids, oldest first


class Simulator:
    """Runs in a background thread; `start()`, `stop()`, `summary()`."""

    def __init__(self, rest_url: str, *, admin_key: str = "", symbols: tuple[str, ...] = DEFAULT_SYMBOLS,
                 orders_per_second: float = 5.0, seed: int | None = None, per_side: int = 4) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.admin_key = admin_key
        self.symbols = list(symbols)
        self.interval = 1.0 / max(0.1, orders_per_second)
        self.per_side = per_side
        self.rng = random.Random(seed)
        self.counters: Counter[str] = Counter()
        self._books = {s: _Book(s, float(START_PRICE.get(s, 1_000))) for s in self.symbols}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(base_url=self.rest_url, timeout=5.0)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Simulator:
        self._activate_symbols()
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._thread.start()
        log.info("event=simulator_started symbols=%s rate=%.1f/s", ",".join(self.symbols), 1 / self.interval)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._client.close()
        log.info("event=simulator_stopped counters=%s", dict(self.counters))

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def summary(self) -> str:
        c = self.counters
        return f"{c['placed']} placed, {c['cancelled']} cancelled, {c['errors']} errors"

    # ----------------------------------------------------------------- REST
    def _activate_symbols(self) -> None:
        for symbol in self.symbols:
            try:
                resp = self._client.post("/admin/symbols", json={"symbol": symbol},
                                         headers={"X-Admin-Key": self.admin_key})
            except httpx.HTTPError as exc:
                log.warning("event=activate_failed symbol=%s error=%s", symbol, exc)
                continue
            if resp.status_code >= 300:
                log.warning("event=activate_failed symbol=%s status=%d body=%s", symbol, resp.status_code,
                            resp.text[:200])

    def _place(self, user: str, body: dict) -> str | None:
        try:
            resp = self._client.post("/orders", json=body, headers={"X-Test-User": user})
        except httpx.HTTPError as exc:
            self.counters["errors"] += 1
            log.warning("event=order_failed user=%s symbol=%s error=%s", user, body["symbol"], exc)
            return None
        if resp.status_code != 202:
            self.counters["errors"] += 1
            log.warning("event=order_refused user=%s symbol=%s status=%d body=%s", user, body["symbol"],
                        resp.status_code, resp.text[:200])
            return None
        self.counters["placed"] += 1
        return resp.json().get("order_id")

    def _cancel(self, user: str, symbol: str, order_id: str) -> None:
        try:
            resp = self._client.delete(f"/orders/{order_id}", params={"symbol": symbol},
                                       headers={"X-Test-User": user})
        except httpx.HTTPError as exc:
            self.counters["errors"] += 1
            log.warning("event=cancel_failed user=%s order=%s error=%s", user, order_id, exc)
            return
        if resp.status_code >= 300:
            self.counters["errors"] += 1
            return
        self.counters["cancelled"] += 1

    # ----------------------------------------------------------------- behaviour
    def _step(self, book: _Book) -> None:
        rng = self.rng
        book.mid = max(10.0, book.mid * (1 + rng.gauss(0, 0.0015)))
        mid = round(book.mid)
        tick = max(1, mid // 1000)
        if rng.random() < 0.7:
            user = rng.choice(MAKERS)
            is_buy = rng.random() < 0.5
            offset = tick * rng.randint(1, 6)
            price = mid - offset if is_buy else mid + offset
            order_id = self._place(user, {"symbol": book.symbol, "side": "BUY" if is_buy else "SELL",
                                          "price": max(1, price), "quantity": rng.randint(1, 20) * 5})
            if order_id:
                mine = book.resting.setdefault(user, deque())
                mine.append(order_id)
                if len(mine) > self.per_side * 2:
                    self._cancel(user, book.symbol, mine.popleft())
        else:
            user = rng.choice(TAKERS)
            is_buy = rng.random() < 0.5
            if rng.random() < 0.5:
                body = {"symbol": book.symbol, "side": "BUY" if is_buy else "SELL", "type": "MARKET",
                        "quantity": rng.randint(1, 10) * 5}
            else:
                cross = tick * rng.randint(2, 8)
                body = {"symbol": book.symbol, "side": "BUY" if is_buy else "SELL", "tif": "IOC",
                        "price": max(1, mid + cross if is_buy else mid - cross), "quantity": rng.randint(1, 10) * 5}
            self._place(user, body)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._step(self._books[self.rng.choice(self.symbols)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.simulator", description=__doc__.splitlines()[0])
    p.add_argument("--rest", default=REST_URL, help="REST API (default %(default)s)")
    p.add_argument("--admin-key", default="", help="X-Admin-Key, to activate the symbols")
    p.add_argument("--symbols", default=",".join(DEFAULT_SYMBOLS), help="comma-separated (default %(default)s)")
    p.add_argument("--rate", type=float, default=5.0, help="orders per second (default 5)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    setup_logging(logging.INFO)
    sim = Simulator(args.rest, admin_key=args.admin_key, symbols=tuple(s for s in args.symbols.split(",") if s),
                    orders_per_second=args.rate, seed=args.seed).start()
    try:
        while True:
            time.sleep(10)
            print(f"simulator: {sim.summary()}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
