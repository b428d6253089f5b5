"""Higher-timeframe roll-ups of the open 1-minute candle, kept in Valkey for the chart API.

For every subscribed symbol and every interval of `keys.ROLLUP_INTERVALS` (3m 5m 15m 30m 1h)
the streamer keeps the hash `candle:{interval}:{SYM}`:

    o h l c v   decimal integer strings (ticks / quantity), like `candle:1m:{SYM}`
    t           bucket start, `YYYYMMDDHHMM` UTC (e.g. 5m bucket of 202512161423 → 202512161420;
                1h → HH00); buckets are aligned to the hour, hence to the UTC day
    m           the 1-minute `t` last folded in (the open minute)
    bh bl bv    high / low / volume of the bucket's already closed minutes ("" when none)

`o h l c v t` are what readers use; `m bh bl bv` let a restarted streamer carry on. The
1-minute candle opens with a trade (and the engine closes it at its minute's end, or when a
later minute's trade arrives), so a roll-up's bucket likewise starts with its first trade.
When a minute closes, its final values come from the engine's closed candle
(`candle:closed:1m:{SYM}`) when available, else from the last values seen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from chalice_app import keys
from chalice_app.cache import as_str

log = logging.getLogger("supernoba.streamer.rollups")

MINUTES = {"3m": 3, "5m": 5, "15m": 15, "30m": 30, "1h": 60}
FIELDS = ("o", "h", "l", "c", "v", "t", "m", "bh", "bl", "bv")


def bucket_start(minute_t: str, interval: str) -> str:
    """`YYYYMMDDHHMM` of the bucket of `interval` that contains the minute `minute_t`."""
    size = MINUTES[interval]
    hh, mm = int(minute_t[8:10]), int(minute_t[10:12])
    if size == 60:
        return f"{minute_t[:10]}00"
    return f"{minute_t[:8]}{hh:02d}{mm - mm % size:02d}"


def _int(v: object) -> int:
    return int(as_str(v))


@dataclass
class Rollup:
    t: str
    o: int
    h: int
    l: int  # noqa: E741
    c: int
    v: int
    m: str
    bh: int | None = None
    bl: int | None = None
    bv: int = 0

    def to_hash(self) -> dict[str, str]:
        return {
            "o": str(self.o), "h": str(self.h), "l": str(self.l), "c": str(self.c), "v": str(self.v),
            "t": self.t, "m": self.m,
            "bh": "" if self.bh is None else str(self.bh), "bl": "" if self.bl is None else str(self.bl),
            "bv": str(self.bv),
        }

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> Rollup | None:
        try:
            return cls(
                t=h["t"], o=_int(h["o"]), h=_int(h["h"]), l=_int(h["l"]), c=_int(h["c"]), v=_int(h["v"]),
                m=h.get("m", ""), bh=_int(h["bh"]) if h.get("bh") else None,
                bl=_int(h["bl"]) if h.get("bl") else None, bv=_int(h.get("bv") or 0),
            )
        except (KeyError, ValueError):
            return None


def fold(current: Rollup | None, interval: str, minute: Mapping[str, object],
         closed: Mapping[str, object] | None = None) -> Rollup:
    """The roll-up after the open 1-minute candle `minute` (o h l c v t) was seen.

    `closed` is the final version of the roll-up's previous open minute, when it has just
    closed and the engine's closed candle is known.
    """
    mt = str(minute["t"])
    o, h, low, c, v = (_int(minute[f]) for f in ("o", "h", "l", "c", "v"))
    bucket = bucket_start(mt, interval)
    if current is None or current.t != bucket or mt < current.t:
        return Rollup(t=bucket, o=o, h=h, l=low, c=c, v=v, m=mt)
    r = Rollup(**current.__dict__)
    if r.m and mt > r.m:
        # r.m closed: its last-seen contribution is in r.h/r.l/r.v; prefer the engine's final values
        if closed is not None and str(closed.get("t")) == r.m:
            ch, cl, cv = _int(closed["h"]), _int(closed["l"]), _int(closed["v"])
            r.bh = ch if r.bh is None else max(r.bh, ch)
            r.bl = cl if r.bl is None else min(r.bl, cl)
            r.bv += cv
        else:
            r.bh, r.bl, r.bv = r.h, r.l, r.v
        r.m = mt
    elif not r.m:
        r.m = mt
    r.h = h if r.bh is None else max(r.bh, h)
    r.l = low if r.bl is None else min(r.bl, low)
    r.c = c
    r.v = r.bv + v
    return r


class Rollups:
    """In-memory roll-ups of all symbols, loaded lazily from and written back to Valkey."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, str], Rollup | None] = {}
        self.loaded: set[str] = set()

    def load(self, symbol: str, hashes: Mapping[str, Mapping[str, str]]) -> None:
        for interval in MINUTES:
            h = hashes.get(interval) or {}
            self.state[(symbol, interval)] = Rollup.from_hash(h) if h else None
        self.loaded.add(symbol)

    def update(self, symbol: str, minute: Mapping[str, object],
               closed: Mapping[str, object] | None = None) -> dict[str, dict[str, str]]:
        """Fold the minute into every interval; returns {key: hash} to write."""
        out = {}
        for interval in MINUTES:
            prev = self.state.get((symbol, interval))
            try:
                new = fold(prev, interval, minute, closed)
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("event=rollup_skip symbol=%s interval=%s error=%s", symbol, interval, exc)
                continue
            if new != prev:
                self.state[(symbol, interval)] = new
                out[keys.candle(symbol, interval)] = new.to_hash()
        return out

    def forget(self, symbol: str) -> None:
        self.loaded.discard(symbol)
        for interval in MINUTES:
            self.state.pop((symbol, interval), None)
