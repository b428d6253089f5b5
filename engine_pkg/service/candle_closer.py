"""When a shard worker may close its symbols' 1-minute candles by time (SPEC §4, §6).

Without this a candle closed only when a trade of a later minute arrived, so a quiet
symbol's last candle never closed. A `CandleCloser` per shard worker decides when the
worker runs `candle_close.lua` (through `DepthWriter.close_candles`), from:

- the *read horizon*: wall-clock ms before which every record of the shard has been read
  and its effects written. After a GetRecords that reached the tip (a page shorter than its
  Limit and MillisBehindLatest below `CATCH_UP_MS`) it is the wall clock at the start of that
  request minus MillisBehindLatest; a full page or a shard far behind (catch-up after a
  restart) does not move it, so the clock never closes a minute that records still to be
  read may update. kinesalite always reports MillisBehindLatest 0: there the short page is
  what tells. Nothing closes before the shard was caught up once.
- the cutoff: a candle closes once the horizon is `GRACE_MS` past its minute's end (the
  router stamps `ts` as it puts the command, milliseconds before it arrives).
- live or replayed, per symbol: a candle whose newest trade's `ts` was within `LIVE_SKEW_MS`
  of its record's arrival is live and closes by time, however old (after an outage the
  backlog's candles close too). One whose newest trade carried a `ts` far from its arrival
  belongs to a replayed or generated timeline (a tool writing commands with old `ts`): the
  wall clock says nothing about it, and it closes as before, when a trade of a later minute
  arrives. A trade older than the symbol's recorded minute (a late `ts`, folded into the open
  candle) changes neither. The clock is the shard's read horizon, not the commands' `ts`, so
  one command's odd `ts` never moves another symbol's close.
- the open candles: symbol → the newest trade minute the worker wrote (one dict lookup per
  symbol per batch on the hot path). A restored worker starts with every symbol of its
  engine (minute and liveness unknown): those are checked once, and closed by time only when
  their minute is within the last `LIVE_WINDOW_MS`, so a recent candle left open before a
  restart closes while a replayed timeline's is left alone.

Every `interval` seconds, `due()` returns the cutoff, the window's first minute, the live
symbols whose recorded minute is before the cutoff and the unknown ones; the script closes a
candle only when the hash's own `t` qualifies, and reports the `t` of a candle it left open,
which `checked` records.
A trade whose `ts` lags by more than the grace may land in a minute already closed:
candles.lua folds it into the open candle (or opens the current minute), never reopening it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

#: MillisBehindLatest below this counts as caught up (with a page shorter than its Limit).
CATCH_UP_MS = 3000
#: A minute closes this long after its end (router-to-engine lag of a command's `ts`).
GRACE_MS = 2000
#: A trade whose `ts` is within this of its record's arrival is live (closes by time).
LIVE_SKEW_MS = 300_000
#: A restored candle (liveness unknown) closes by time only when its minute ended less than
#: this before the horizon.
LIVE_WINDOW_MS = 300_000
#: Seconds between two close checks of one shard.
CHECK_EVERY_S = 1.0


_minute_cache: dict[int, str] = {}


def minute_of(t_ms: int) -> str:
    """`YYYYMMDDHHMM` (UTC) of a millisecond timestamp (cached: every trade of a batch asks)."""
    m = t_ms // 60000
    s = _minute_cache.get(m)
    if s is None:
        if len(_minute_cache) > 4096:
            _minute_cache.clear()
        s = time.strftime("%Y%m%d%H%M", time.gmtime(m * 60))
        _minute_cache[m] = s
    return s


class CandleCloser:
    """The close-by-time bookkeeping of one shard worker (used by its thread only)."""

    def __init__(self, clock: Callable[[], float] = time.time, *, grace_ms: int = GRACE_MS,
                 catch_up_ms: int = CATCH_UP_MS, window_ms: int = LIVE_WINDOW_MS,
                 interval: float = CHECK_EVERY_S) -> None:
        self.clock = clock  # wall clock, epoch seconds (injectable for tests)
        self.grace_ms = grace_ms
        self.catch_up_ms = catch_up_ms
        self.window_ms = window_ms
        self.interval = interval
        self.open: dict[str, str] = {}  # symbol -> newest trade minute written ("" = unknown)
        self.replayed: set[str] = set()  # symbols whose newest trade came from a replayed timeline
        self.horizon_ms = 0
        self._checked_at = 0.0

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def adopt(self, symbols: Iterable[str]) -> None:
        """Symbols whose candle may be open from before (a restored engine): check them once."""
        for s in symbols:
            self.open.setdefault(s, "")

    def note(self, symbol: str, minute: str, live: bool) -> None:
        """A batch wrote `symbol`'s trades, the newest of minute `minute`; `live`: its `ts` was
        close to its arrival. An older minute (a late trade folded into the open candle) is
        not the candle's: it changes nothing."""
        if minute < self.open.get(symbol, ""):
            return
        self.open[symbol] = minute
        if live:
            self.replayed.discard(symbol)
        else:
            self.replayed.add(symbol)

    def read(self, started_ms: int, n_records: int, limit: int, millis_behind: int) -> None:
        """One GetRecords answered: started at wall `started_ms`, `n_records` of `limit`."""
        if n_records < limit and millis_behind < self.catch_up_ms:
            self.horizon_ms = max(self.horizon_ms, started_ms - millis_behind)

    def due(self) -> tuple[str, str, list[str], list[str]] | None:
        """(cutoff minute, the window's first minute, live symbols to close, unknown symbols to
        check within the window) when a check is due and a candle may close."""
        now = self.clock()
        if now - self._checked_at < self.interval or not self.open or not self.horizon_ms:
            return None
        self._checked_at = now
        cutoff = minute_of(self.horizon_ms - self.grace_ms)
        first = minute_of(self.horizon_ms - self.grace_ms - self.window_ms)
        live = [s for s, m in self.open.items() if m and m < cutoff and s not in self.replayed]
        unknown = [s for s, m in self.open.items() if not m]
        return (cutoff, first, live, unknown) if live or unknown else None

    def checked(self, symbols: list[str], still_open: dict[str, str], first: str = "") -> None:
        """The close script ran for `symbols`; `still_open` = those whose candle it left open.
        `first`: the window the restored (unknown) symbols were checked with; a candle left open
        below it is taken as a replayed timeline's (it waits for a later trade)."""
        for s in symbols:
            t = still_open.get(s)
            if t:
                self.open[s] = t
                if first and t < first:
                    self.replayed.add(s)
            else:
                self.open.pop(s, None)
                self.replayed.discard(s)
