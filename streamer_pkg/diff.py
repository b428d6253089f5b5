"""What one tier must send this tick: only what changed since that tier's last push.

Per tier and symbol the state remembers the last pushed depth `u`, candle (o h l c v t),
ticker (p c yc) and which connections were served. A tick then yields:

- `depth` to the tier's `main` subscribers when `u` differs from the last push;
- `candle_close` (once) when the 1-minute candle's `t` moved on, with that minute's final
  values, followed by the new minute's `candle`; likewise (without a `candle`) when the
  engine closed the minute by time: the hash lost its `t` and its `ct` reached the last
  pushed minute. No candle is then open, and nothing is sent as `candle` (a new subscriber
  gets none either);
- `candle` when any of o h l c v t changed;
- `ticker` to `main` and `sub` subscribers (SPEC §6: a main subscription also receives the
  ticker) when p, c or yc changed (a new `t` alone is not a change);
- a connection that is new to the symbol in this tier gets the current depth, candle and
  ticker once, even if unchanged (a fresh subscriber must not wait for the next trade); so
  does one the reader reports as `fresh` (it subscribed again: a repeated subscribe, or an
  unsubscribe + subscribe between two reads, leaves the sets as they were). This is the only
  initial snapshot a subscriber gets (the ws handlers send none), so it is ordered with, and
  merged into, the tier's later updates: one message per kind per tick at most.

Messages are built once per symbol with `chalice_app.messages` and shared by every recipient.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, MutableMapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import orjson

from chalice_app import messages
from streamer_pkg.reader import CANDLE_FIELDS, Snapshot, SymbolData

log = logging.getLogger("supernoba.streamer.diff")

_EMPTY: frozenset[str] = frozenset()


@dataclass
class Send:
    recipients: Iterable[str]
    key: Any  # coalescing key; None = never coalesce
    data: bytes
    born: float = 0.0  # epoch seconds of the data's origin (depth `t`), for push lag
    #: the symbol whose pushed state this send changes when its key does not say (candle_close)
    symbol: str | None = None


@dataclass
class SymbolState:
    u: int | None = None
    candle: tuple | None = None
    ticker: tuple | None = None
    served_main: frozenset[str] = frozenset()
    served_ticker: frozenset[str] = frozenset()
    # the tier's share of the symbol's subscribers, and the sets it was computed from
    # (compared by identity: the reader keeps unchanged sets as the same objects)
    source: tuple | None = None
    main: frozenset[str] = frozenset()
    tick_to: frozenset[str] = frozenset()
    data: SymbolData | None = None  # the SymbolData last diffed (the reader reuses unchanged ones)


@dataclass
class TierState:
    name: str
    symbols: dict[str, SymbolState] = field(default_factory=dict)

    def forget_missing(self, present: Iterable[str]) -> None:
        keep = set(present)
        for s in [s for s in self.symbols if s not in keep]:
            del self.symbols[s]


def _candle_tuple(c: dict[str, Any] | None) -> tuple | None:
    return tuple(str(c[f]) for f in CANDLE_FIELDS) if c else None


def _ticker_tuple(t: dict | None) -> tuple | None:
    return (t.get("p"), t.get("c"), t.get("yc")) if t else None


def _close_send(sym: str, main: frozenset[str], prev: tuple, closed: dict | None) -> Send:
    """`candle_close` of the minute last pushed (`prev`): the engine's closed candle of that
    minute when known (candle:closed:1m), else the last values seen."""
    final = closed if closed is not None and str(closed.get("t")) == prev[5] else dict(
        zip(CANDLE_FIELDS, prev, strict=True))
    return Send(main, None, orjson.dumps(messages.candle_message(sym, final, closed=True)), symbol=sym)


def depth_bytes(symbol: str, d: dict) -> tuple[bytes, int, float]:
    u = int(d["u"])
    t = int(d.get("t") or 0)
    msg = messages.depth_message(symbol, t, u, d.get("b") or [], d.get("a") or [])
    return orjson.dumps(msg), u, t / 1000.0


def diff_symbol(
    st: SymbolState,
    data: SymbolData,
    member: Callable[[str], bool],
    closed: dict | None,
    tier_key: object = None,
    fresh: AbstractSet[str] = _EMPTY,
) -> list[Send]:
    """Sends for one symbol of one tier; updates `st`. `member(conn)` = belongs to this tier;
    `tier_key` = the object `member` depends on (same object → same answers), or None;
    `fresh` = connections owed the current state although already served (re-subscribed)."""
    sym = data.symbol
    src = st.source
    same_sets = tier_key is not None and src is not None and src[0] is data.main and src[1] is data.sub \
        and src[2] is tier_key
    if same_sets and st.data is data and not fresh:
        return []  # diffed this very data for these very sets: nothing can have changed
    st.data = data
    if same_sets:
        main, tick_to = st.main, st.tick_to
    else:
        main = frozenset(c for c in data.main if member(c))
        tick_to = main | frozenset(c for c in data.sub if member(c))
        if main == st.main:
            main = st.main
        if tick_to == st.tick_to:
            tick_to = st.tick_to
        st.source = (data.main, data.sub, tier_key) if tier_key is not None else None
        st.main, st.tick_to = main, tick_to
    new_main = main - st.served_main if main is not st.served_main else _EMPTY
    new_tick = tick_to - st.served_ticker if tick_to is not st.served_ticker else _EMPTY
    if fresh:
        new_main = new_main | (main & fresh)
        new_tick = new_tick | (tick_to & fresh)
    out: list[Send] = []

    # messages are encoded only when something will be sent: most symbols of a 50 ms full
    # read are unchanged, and encoding all of them was most of an idle tick's CPU
    if data.depth is not None and main:
        try:
            u = int(data.depth["u"])
            to = main if u != st.u else new_main
            if to:
                payload, u, born = depth_bytes(sym, data.depth)
                out.append(Send(to, ("d", sym), payload, born))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("event=bad_data symbol=%s key=depth reason=%r", sym, exc)
        else:
            st.u = u

    cand = _candle_tuple(data.candle)
    prev = st.candle
    if cand is not None:
        if prev is not None and cand[5] > prev[5] and main:
            out.append(_close_send(sym, main, prev, closed))
        to = main if cand != prev else new_main
        if to:
            out.append(Send(to, ("c", sym), orjson.dumps(messages.candle_message(sym, data.candle or {}))))
        st.candle = cand
    elif prev is not None and data.closed_t is not None and data.closed_t >= prev[5]:
        # closed by time, no trade since: the close once, and no candle is open any more
        if main:
            out.append(_close_send(sym, main, prev, closed))
        st.candle = None

    tick = _ticker_tuple(data.ticker)
    if tick is not None and tick_to:
        to = tick_to if tick != st.ticker else new_tick
        if to:
            t = data.ticker or {}
            out.append(Send(to, ("t", sym), orjson.dumps(
                messages.ticker_message(sym, t.get("t") or 0, t.get("p"), t.get("c"), t.get("yc")))))
    if tick is not None:
        st.ticker = tick

    st.served_main = main
    st.served_ticker = tick_to
    return out


def diff_tier(
    state: TierState,
    snap: Snapshot,
    member: Callable[[str], bool],
    closed: dict[str, dict],
    tier_key: object = None,
    fresh: MutableMapping[str, AbstractSet[str]] | None = None,
) -> list[Send]:
    """Sends for every symbol of `snap`. A partial snapshot (some symbols only) forgets nothing.

    `fresh`: symbol → connections owed its state again (see `diff_symbol`); the entries of the
    symbols diffed are taken out (all of them after a full snapshot: a symbol missing from it
    has no subscriber left). None = `snap.fresh`, left as it is."""
    out: list[Send] = []
    owed: MutableMapping[str, AbstractSet[str]] = dict(snap.fresh) if fresh is None else fresh
    for sym, data in snap.symbols.items():
        st = state.symbols.get(sym)
        if st is None:
            st = state.symbols[sym] = SymbolState()
        out.extend(diff_symbol(st, data, member, closed.get(sym), tier_key, owed.pop(sym, _EMPTY)))
    if not snap.partial:
        state.forget_missing(snap.symbols)
        owed.clear()
    return out
