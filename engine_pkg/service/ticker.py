"""Ticker state: last price, % change from the day's open, previous day's % change.

One `TickerBook` per shard worker folds every fill into per-symbol day statistics (open,
high, low, close, volume of the current day in `MARKET_TZ`). The day is the day of the
fill's own `t` (event time, not the wall clock), so a replay after a crash rebuilds exactly
the same state; the state is part of the shard's snapshot.

When a fill falls on a later day than the symbol's current one, the finished day is
*rolled*: it becomes the symbol's `prev:{SYM}` record in the backup cache
(`{"s","d","o","h","l","c","v","pct"}`, d = `YYYYMMDD` in MARKET_TZ) and its % change
becomes `yc`. A symbol seen for the first time loads `yc` from an existing `prev:{SYM}`.
The `t` of each symbol's last fill is kept too (`last_t`, in the snapshot state as well), so
the ticker last written can be written again, equal, when the depth cache lost it
(`depth_rebuild`).

    c  = (last - day open) / day open * 100, rounded to 2 decimals
    yc = (prev close - prev open) / prev open * 100, rounded to 2 decimals
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from chalice_app import messages


def pct(open_: int, close: int) -> float:
    return round((close - open_) * 100.0 / open_, 2) if open_ else 0.0


@dataclass
class DayStats:
    d: str  # YYYYMMDD in MARKET_TZ
    o: int
    h: int
    l: int  # noqa: E741 - the OHLC field name
    c: int
    v: int


class TickerBook:
    """Day statistics of the symbols of one shard."""

    def __init__(self, tz: str, load_prev: Callable[[str], dict | None]) -> None:
        self.tz = ZoneInfo(tz)
        self._load_prev = load_prev
        self.days: dict[str, DayStats] = {}
        self.yc: dict[str, float | None] = {}
        self.last_t: dict[str, int] = {}  # symbol -> `t` of its last fill folded (the ticker's `t`)
        self._day_cache: tuple[int, int, str] = (0, -1, "")  # (start ms, end ms, day)

    def _day(self, t_ms: int) -> str:
        start, end, day = self._day_cache
        if start <= t_ms < end:
            return day
        dt = datetime.fromtimestamp(t_ms / 1000.0, self.tz)
        midnight = dt.replace(hour=0, minute=0, second=0, microsecond=0)
        day = midnight.strftime("%Y%m%d")
        start = int(midnight.timestamp() * 1000)
        # next local midnight (DST-safe: step past 24h, then snap back to midnight)
        nxt = datetime.fromtimestamp(start / 1000.0 + 26 * 3600, self.tz).replace(
            hour=0, minute=0, second=0, microsecond=0)
        self._day_cache = (start, int(nxt.timestamp() * 1000), day)
        return day

    def fold(self, symbol: str, trades: list[tuple[int, int, int]]) -> list[dict]:
        """Fold `(t, price, qty)` trades in order; return the `prev:{SYM}` records rolled."""
        rolled: list[dict] = []
        if symbol not in self.yc:
            prev = self._load_prev(symbol)
            self.yc[symbol] = prev.get("pct") if isinstance(prev, dict) else None
        st = self.days.get(symbol)
        for t, p, q in trades:
            day = self._day(t)
            if st is None or day > st.d:
                if st is not None:
                    rec = {"s": symbol, **asdict(st), "pct": pct(st.o, st.c)}
                    rolled.append(rec)
                    self.yc[symbol] = rec["pct"]
                st = DayStats(day, p, p, p, p, q)
                self.days[symbol] = st
            else:  # same day (or a late fill from an earlier day: folded into today)
                if p > st.h:
                    st.h = p
                if p < st.l:
                    st.l = p
                st.c = p
                st.v += q
        if trades:
            self.last_t[symbol] = trades[-1][0]
        return rolled

    def message(self, symbol: str, t: int) -> dict | None:
        st = self.days.get(symbol)
        if st is None:
            return None
        return messages.ticker_message(symbol, t, st.c, pct(st.o, st.c), self.yc.get(symbol))

    # snapshot state ---------------------------------------------------------------
    def to_state(self) -> dict:
        return {"days": {s: asdict(d) for s, d in self.days.items()}, "yc": self.yc, "t": self.last_t}

    def load_state(self, state: dict) -> None:
        self.days = {s: DayStats(**d) for s, d in (state.get("days") or {}).items()}
        self.yc = dict(state.get("yc") or {})
        self.last_t = dict(state.get("t") or {})  # absent in snapshots written before it was kept
