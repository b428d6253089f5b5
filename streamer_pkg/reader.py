"""Reads what the streamer pushes from the depth cache, in one pipelined round trip per tick.

Per tick, for the symbols in `subscribed:symbols` (as of the previous tick):

    SMEMBERS subscribed:symbols, SMEMBERS realtime:connections,
    and per symbol: GET depth:{SYM}, GET ticker:{SYM}, HGETALL candle:1m:{SYM},
                    SMEMBERS symbol:{SYM}:main, SMEMBERS symbol:{SYM}:sub

plus any writes queued since the last tick (roll-ups, the anonymous-tier cache), so the
steady state is exactly one round trip. A symbol that just joined `subscribed:symbols`
costs one extra round trip for that symbol on the tick it appears. Payloads the engine
wrote badly are logged, counted (`bad_data`) and treated as absent; they never stop a tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aredis

from chalice_app import keys

log = logging.getLogger("supernoba.streamer.reader")

CANDLE_FIELDS = ("o", "h", "l", "c", "v", "t")


@dataclass
class SymbolData:
    symbol: str
    depth: dict | None = None
    ticker: dict | None = None
    candle: dict[str, str] | None = None
    main: frozenset[str] = frozenset()
    sub: frozenset[str] = frozenset()


@dataclass
class Snapshot:
    """One tick's view of the depth cache."""

    read_at: float
    realtime: frozenset[str]
    symbols: dict[str, SymbolData] = field(default_factory=dict)


PER_SYMBOL = 5


def _queue_reads(pipe: Any, symbol: str) -> None:
    pipe.get(keys.depth(symbol))
    pipe.get(keys.ticker(symbol))
    pipe.hgetall(keys.candle(symbol))
    pipe.smembers(keys.symbol_main(symbol))
    pipe.smembers(keys.symbol_sub(symbol))


class Reader:
    def __init__(self, client: aredis.Redis, on_bad_data: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.known: list[str] = []
        self._writes: list[Callable[[Any], None]] = []
        self._on_bad = on_bad_data or (lambda kind: None)

    def queue_write(self, op: Callable[[Any], None]) -> None:
        """`op(pipe)` runs on the next tick's pipeline (after the reads)."""
        self._writes.append(op)

    async def flush_writes(self) -> None:
        if not self._writes:
            return
        pipe = self.client.pipeline(transaction=False)
        for op in self._writes:
            op(pipe)
        self._writes.clear()
        await pipe.execute()

    async def read(self, now: float) -> Snapshot:
        symbols = list(self.known)
        pipe = self.client.pipeline(transaction=False)
        pipe.smembers(keys.SUBSCRIBED_SYMBOLS)
        pipe.smembers(keys.REALTIME_CONNECTIONS)
        for s in symbols:
            _queue_reads(pipe, s)
        writes, self._writes = self._writes, []
        for op in writes:
            op(pipe)
        res = await pipe.execute()
        subscribed = {s for s in res[0] if keys.is_valid_symbol(s)}
        snap = Snapshot(read_at=now, realtime=frozenset(res[1]))
        for i, s in enumerate(symbols):
            if s in subscribed:
                snap.symbols[s] = self._parse(s, res[2 + i * PER_SYMBOL: 2 + (i + 1) * PER_SYMBOL])
        new = sorted(subscribed - set(symbols))
        if new:
            pipe = self.client.pipeline(transaction=False)
            for s in new:
                _queue_reads(pipe, s)
            res2 = await pipe.execute()
            for i, s in enumerate(new):
                snap.symbols[s] = self._parse(s, res2[i * PER_SYMBOL:(i + 1) * PER_SYMBOL])
        self.known = sorted(subscribed)
        return snap

    def _parse(self, symbol: str, raw: list[Any]) -> SymbolData:
        depth_raw, ticker_raw, candle_raw, main, sub = raw
        data = SymbolData(symbol, main=frozenset(main), sub=frozenset(sub))
        data.depth = self._json(symbol, "depth", depth_raw)
        data.ticker = self._json(symbol, "ticker", ticker_raw)
        if candle_raw:
            if all(f in candle_raw for f in CANDLE_FIELDS):
                data.candle = {f: candle_raw[f] for f in CANDLE_FIELDS}
            else:
                self._bad(symbol, "candle", f"missing fields in {sorted(candle_raw)}")
        return data

    def _json(self, symbol: str, what: str, raw: str | None) -> dict | None:
        if raw is None:
            return None
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._bad(symbol, what, str(exc))
            return None
        if not isinstance(value, dict):
            self._bad(symbol, what, "not an object")
            return None
        return value

    def _bad(self, symbol: str, what: str, why: str) -> None:
        self._on_bad("bad_data")
        log.warning("event=bad_data symbol=%s key=%s reason=%s", symbol, what, why)

    async def closed_candles(self, symbols: list[str]) -> dict[str, list[dict]]:
        """The newest closed 1-minute candles (RPUSHed by the engine) of each symbol."""
        pipe = self.client.pipeline(transaction=False)
        for s in symbols:
            pipe.lrange(keys.candle_closed(s), -5, -1)
        out: dict[str, list[dict]] = {}
        for s, items in zip(symbols, await pipe.execute(), strict=True):
            parsed = []
            for item in items:
                try:
                    c = orjson.loads(item)
                except orjson.JSONDecodeError:
                    self._bad(s, "candle_closed", "bad JSON")
                    continue
                if isinstance(c, dict):
                    parsed.append(c)
            out[s] = parsed
        return out
