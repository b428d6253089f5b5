"""When a shard worker may close its symbols' 1-minute candles by time (SPEC §4, §6).

Without this a candle closed only when a trade of a later minute arrived, so a quiet
symbol's last candle never closed. A `CandleCloser` per shard worker decides when the
worker runs `candle_close.lua` (through `DepthWriter.close_candles`), from:

- the *read horizon*: wall-clock ms before which every record of the shard has been read
  and its effects written. After a GetRecords that reached the tip (a page shorter than its
  Limit and MillisBehindLatest below `CATCH_UP_MS`) it is the wall clock at the start of that
  request minus MillisBehindLatest; a full page or a shard far behind (catch-up after a
  restart, commands with old `ts`) does not move it, so the wall clock never closes a minute
  that records still to be read may update. kinesalite always reports MillisBehindLatest 0:
  there the short page is what tells. Nothing closes before the shard was caught up once.
- the *event clock*: a candle's minute is that of its trades' `t` = the command's `ts` (the
  router's clock), or its arrival ms when it has none. From each batch's last record the
  worker notes `skew_ms` = arrival ms - `ts` and the newest `ts`. Live commands (|skew| up to
  `LIVE_SKEW_MS`; milliseconds in production) map the horizon onto their clock: the cutoff
  is `horizon - skew - grace`, so a router clock running a little behind does not make its
  own trades late. Commands whose `ts` is further from their arrival (a replayed or
  generated timeline: tests, load tools) carry their own clock, and the wall clock says
  nothing about when their minutes end: then the cutoff is `newest ts - grace` (a minute
  closes once the shard's own timeline has passed it, as a later trade would close it).
- the open candles: symbol → the newest trade minute the worker wrote (one dict store per
  symbol per batch on the hot path). A restored worker starts with every symbol of its
  engine (minute unknown), so a candle left open before a restart closes too.

Every `interval` seconds, `due()` returns the cutoff minute and the symbols whose recorded
minute is before it; the script closes a candle only when the hash's own `t` is before the
cutoff, and reports the `t` of a candle still open, which `checked` records for a later
check. A trade whose `ts` lags by more than `grace` may land in a minute already closed:
candles.lua folds it into the open candle (or opens the current minute), never reopening it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

#: MillisBehindLatest below this counts as caught up (with a page shorter than its Limit).
CATCH_UP_MS = 3000
#: A minute closes this long after its end (router/arrival lag of a command's `ts`).
GRACE_MS = 2000
#: Commands whose `ts` is within this of their arrival run on the live (wall) clock.
LIVE_SKEW_MS = 300_000
#: Seconds between two close checks of one shard.
CHECK_EVERY_S = 1.0


def minute_str(t_ms: int) -> str:
    """`YYYYMMDDHHMM` (UTC) of a millisecond timestamp."""
    return time.strftime("%Y%m%d%H%M", time.gmtime(t_ms // 60000 * 60))


class CandleCloser:
    """The close-by-time bookkeeping of one shard worker (used by its thread only)."""

    def __init__(self, clock: Callable[[], float] = time.time, *, grace_ms: int = GRACE_MS,
                 catch_up_ms: int = CATCH_UP_MS, interval: float = CHECK_EVERY_S) -> None:
        self.clock = clock  # wall clock, epoch seconds (injectable for tests)
        self.grace_ms = grace_ms
        self.catch_up_ms = catch_up_ms
        self.interval = interval
        self.open: dict[str, str] = {}  # symbol -> newest trade minute written ("" = unknown)
        self.horizon_ms = 0
        self.skew_ms = 0  # arrival clock - event clock (commands' ts) of the newest record read
        self.event_ms = 0  # the newest `ts` read (the event clock of commands off the live clock)
        self._checked_at = 0.0

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def adopt(self, symbols: Iterable[str]) -> None:
        """Symbols whose candle may be open from before (a restored engine): check them once."""
        for s in symbols:
            self.open.setdefault(s, "")

    def read(self, started_ms: int, n_records: int, limit: int, millis_behind: int) -> None:
        """One GetRecords answered: started at wall `started_ms`, `n_records` of `limit`."""
        if n_records < limit and millis_behind < self.catch_up_ms:
            self.horizon_ms = max(self.horizon_ms, started_ms - millis_behind)

    def seen(self, arrival_ms: int, ts_ms: int | None) -> None:
        """A batch's last record: arrived at `arrival_ms`, its command's `ts` (None: no ts, the
        engine stamped it with the arrival ms)."""
        if ts_ms is None:
            self.skew_ms = 0
        else:
            self.skew_ms = arrival_ms - ts_ms
            self.event_ms = max(self.event_ms, ts_ms)

    def clock_ms(self) -> int:
        """The event-clock ms up to which the shard's minutes may be considered over (0: none)."""
        if not self.horizon_ms:
            return 0
        if -LIVE_SKEW_MS <= self.skew_ms <= LIVE_SKEW_MS:
            return self.horizon_ms - self.skew_ms
        return min(self.event_ms, self.horizon_ms - self.skew_ms)

    def due(self) -> tuple[str, list[str]] | None:
        """(cutoff minute, symbols to close) when a check is due and something may close."""
        now = self.clock()
        if now - self._checked_at < self.interval or not self.open or not self.horizon_ms:
            return None
        self._checked_at = now
        cutoff = minute_str(self.clock_ms() - self.grace_ms)
        syms = [s for s, m in self.open.items() if m < cutoff]
        return (cutoff, syms) if syms else None

    def checked(self, symbols: list[str], still_open: dict[str, str]) -> None:
        """The close script ran for `symbols`; `still_open` = those whose candle is not due."""
        for s in symbols:
            t = still_open.get(s)
            if t:
                self.open[s] = t
            else:
                self.open.pop(s, None)
