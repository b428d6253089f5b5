"""Puts back the depth-cache keys a shard's engine can rebuild, when the cache lost them.

The engine writes `depth:{SYM}` and `ticker:{SYM}` only for the symbols a batch touched. A
depth cache that lost its keys (a restart without persistence, a failover to an empty node,
FLUSHDB, a stray DEL) therefore served an empty book (`u` 0) for a quiet symbol until its
next order, while the engine's book still held its resting orders. So each shard worker
keeps a `DepthRebuilder` and, once a second, asks the cache whether its keys are still
there (`DepthWriter.missing`: one round trip of multi-key EXISTS counts while nothing is
missing; single-key EXISTS on a cluster):

- `depth:{SYM}` of every symbol the shard's engine has a book for;
- `ticker:{SYM}` and `candle:1m:{SYM}` of every symbol that traded (the ticker's day
  statistics are the engine's; the engine never deletes the candle hash of a symbol that
  traded).

What is missing is written back from the engine's own state (`plan`, `DepthWriter.rebuild`)
and announced on `depth:changed`, so the streamer pushes it: the depth from the in-memory
book with `u` = the book's last seq and, when this worker wrote that same `u`, the same `t`
(else the time of the rebuild, e.g. a depth written by the shard's previous owner); the
ticker from the day statistics, with the last fill's `t`. The result equals what was lost.

What cannot be rebuilt, because the engine never holds it: the open 1-minute candle (the Lua
script folds trades into the hash in Valkey) and the closed candles waiting for the backup
job. The next trade opens a new candle. Only the candle hash's replay guard is put back
(`seq` = the book's seq), so a crash replay cannot fold older trades into that new candle.
The streamer's roll-ups and everything else of the depth cache are not the engine's.

Cost on the hot path: one dict store per symbol a batch wrote (`wrote`). The check runs in
the worker's own thread, between two GetRecords, so it never races the worker's own writes,
and only while the worker holds the shard's lease (and not during a silent replay, whose
effects the previous owner wrote). A check that fails (Valkey down) is tried again a second
later; after the service saw a Valkey connection error recover (`recoveries` moved), the next
check runs at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import orjson

from chalice_app import messages
from engine_pkg import Engine
from engine_pkg.service.depth_writer import SymbolUpdate
from engine_pkg.service.ticker import TickerBook

#: Seconds between two checks of one shard.
CHECK_EVERY_S = 1.0


class DepthRebuilder:
    """The missing-key check of one shard worker (used by its thread only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, interval: float = CHECK_EVERY_S) -> None:
        self.clock = clock
        self.interval = interval
        self.written: dict[str, tuple[int, int]] = {}  # symbol -> (u, t) of the depth this worker wrote last
        self._checked_at: float | None = None
        self._recoveries = 0

    def wrote(self, symbol: str, u: int, t: int) -> None:
        """The worker wrote `symbol`'s depth with this `u` and `t` (the hot path: one store)."""
        self.written[symbol] = (u, t)

    def due(self, recoveries: int) -> bool:
        """True when a check is due: `interval` since the last one, or at once when the
        service's count of recovered Valkey connection errors moved since the last check."""
        now = self.clock()
        if recoveries != self._recoveries:
            self._recoveries = recoveries
        elif self._checked_at is not None and now - self._checked_at < self.interval:
            return False
        self._checked_at = now
        return True

    def plan(self, engine: Engine, ticker: TickerBook, no_depth: Iterable[str], no_ticker: Iterable[str],
             no_candle: Iterable[str], now_ms: int) -> list[SymbolUpdate]:
        """The writes that put back the missing keys (call with the worker's engine lock held):
        one `SymbolUpdate` per symbol named, its `u` the book's last seq (the candle guard of a
        symbol in `no_candle`), a `depth_json` for a symbol in `no_depth`, a `ticker_json` for
        one in `no_ticker` (when its day statistics give one). A symbol without a book seq
        (none taken yet) is left out."""
        out: dict[str, SymbolUpdate] = {}
        for s in no_depth:
            u = engine.last_seq(s)
            if u is None:
                continue
            mine = self.written.get(s)
            t = mine[1] if mine is not None and mine[0] == u else now_ms
            d = engine.depth(s, messages.DEPTH_LEVELS)
            out[s] = SymbolUpdate(s, u, orjson.dumps(messages.depth_message(s, t, u, d["b"], d["a"])))
        no_ticker = set(no_ticker)
        for s in dict.fromkeys([*no_ticker, *no_candle]):
            up = out.get(s)
            if up is None:
                u = engine.last_seq(s)
                if u is None:
                    continue
                up = out[s] = SymbolUpdate(s, u)
            msg = ticker.message(s, ticker.last_t.get(s, now_ms)) if s in no_ticker else None
            if msg is not None:
                up.ticker_json = orjson.dumps(msg)
        return list(out.values())
