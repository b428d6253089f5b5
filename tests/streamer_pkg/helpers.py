"""Streamer test helpers: run a real `Streamer` on its own event loop thread, and engine-style writes."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable

import orjson
import redis

from chalice_app import connections, keys
from chalice_app.config import Settings
from streamer_pkg.tiers import Streamer, StreamerOptions


class RunningStreamer:
    """`with RunningStreamer(settings, endpoint) as s:` — started on a daemon thread, stopped on exit."""

    def __init__(self, settings: Settings, endpoint: str, *, init: bool = False, **opts: object) -> None:
        self.settings = dataclasses.replace(settings, websocket_endpoint=endpoint)
        base = dict(http_port=0, http_host="127.0.0.1", send_timeout=3.0)
        base.update(opts)
        self.options = StreamerOptions(**base)  # type: ignore[arg-type]
        self.init = init
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="streamer-test")
        self.streamer: Streamer | None = None

    def call(self, fn: Callable[[], object], timeout: float = 10.0) -> object:
        async def run() -> object:
            res = fn()
            if asyncio.iscoroutine(res):
                res = await res
            return res
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def __enter__(self) -> Streamer:
        self.thread.start()

        async def make() -> Streamer:
            s = Streamer(self.settings, self.options, init=self.init)
            await s.start()
            return s
        self.streamer = asyncio.run_coroutine_threadsafe(make(), self.loop).result(10)
        return self.streamer

    def __exit__(self, *exc: object) -> None:
        if self.streamer is not None:
            asyncio.run_coroutine_threadsafe(self.streamer.stop(drain=1.0), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def connect(r: redis.Redis, conn_id: str, *, logged_in: bool, main: str | None = None,
            subs: tuple[str, ...] = ()) -> None:
    """Register and subscribe a connection with the shared registry code (chalice_app.connections)."""
    connections.register_connection(r, conn_id, f"user-{conn_id}" if logged_in else None, is_logged_in=logged_in)
    if main or subs:
        connections.subscribe(r, conn_id, main=main, subs=subs)


def write_depth(r: redis.Redis, symbol: str, u: int, bid: int = 1000, qty: int = 10, *,
                publish: bool = True, t: int | None = None) -> dict:
    """What the engine does: SET depth:{SYM} then PUBLISH the changed symbols."""
    t = int(time.time() * 1000) if t is None else t
    d = {"e": "d", "s": symbol, "t": t, "u": u, "b": [[bid, qty], [bid - 1, 20]], "a": [[bid + 1, 5]]}
    r.set(keys.depth(symbol), orjson.dumps(d))
    if publish:
        r.publish(keys.DEPTH_CHANGED_CHANNEL, orjson.dumps([symbol]))
    return d


def write_ticker(r: redis.Redis, symbol: str, p: int, c: float = 1.5, yc: float = -0.5, t: int = 0) -> None:
    r.set(keys.ticker(symbol), orjson.dumps({"e": "t", "s": symbol, "t": t, "p": p, "c": c, "yc": yc}))
    r.publish(keys.DEPTH_CHANGED_CHANNEL, symbol)


def write_candle(r: redis.Redis, symbol: str, t: str, o: int, h: int, l: int, c: int, v: int) -> None:  # noqa: E741
    r.hset(keys.candle(symbol), mapping={"seq": 1, "t": t, "o": o, "h": h, "l": l, "c": c, "v": v})
    r.publish(keys.DEPTH_CHANGED_CHANNEL, orjson.dumps([symbol]))


def listening(r: redis.Redis) -> bool:
    """The streamer's change listener is subscribed: a PUBLISH on `depth:changed` from now on
    wakes it (each test has its own Valkey, so the subscriber is that test's streamer)."""
    [(_, subscribers)] = r.pubsub_numsub(keys.DEPTH_CHANGED_CHANNEL)
    return subscribers >= 1


def of(msgs: list[dict], e: str, symbol: str | None = None) -> list[dict]:
    return [m for m in msgs if m.get("e") == e and (symbol is None or m.get("s") == symbol)]
