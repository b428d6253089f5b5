"""The in-process matching engine of SPEC section 10: ``Engine.process(records)``.

All matching, JSON parsing and JSON writing happen in C (``engine_pkg/csrc``), which writes a
batch's events into a few ``bytes`` objects (a constant number of C-level operations per batch,
never a Python loop per order); this module wraps them.  The event lists of :class:`BatchResult`
are real ``list`` objects (SPEC section 10: "lists of bytes") whose items are split from those
buffers only when a consumer first reads them (one ``bytes.split``); ``raw`` gives the whole
buffer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from chalice_app.messages import DEPTH_LEVELS
from engine_pkg.book_ffi import DROP_REASONS, CBook

log = logging.getLogger(__name__)

_SIDE_BID = 0
_SIDE_ASK = 1

#: Batches of at least this many records are parsed on the engine's second thread (when it has
#: one): below it, waking the thread costs more than it saves.
PARSE_THREAD_MIN_BATCH = 64


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """How many CPUs the process's cgroup lets it use (cgroup v2 ``cpu.max``, else v1's CFS
    quota), or None when there is no limit (a container's ``--cpus``, an ECS task's CPU)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for ctl in ("cpu", "cpu,cpuacct"):
        try:
            quota_us = int((root / ctl / "cpu.cfs_quota_us").read_text())
            period_us = int((root / ctl / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def _parse_thread_default() -> bool:
    """The parse thread pays when the process may run on two whole CPUs or more: its CPU
    affinity, and its cgroup's CPU limit if it has one (on one CPU the thread's spinning takes
    turns with the matching thread; docs/engine.md)."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return min(cpus, limit if limit is not None else cpus) >= 2


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _LazyList(list):  # type: ignore[type-arg]
    """A real ``list`` whose items are made from one buffer the first time they are needed.

    Until then the ``list`` storage is empty and ``len`` comes from the count the engine gave;
    every other ``list`` operation first fills the storage (one C-level ``split``) and then is
    plain ``list`` behaviour, mutation included.  C code that reads a list subclass's storage
    directly (``list.__eq__``/``__add__`` with the view on the right, ``PySequence_Fast`` only
    for exact lists) never sees an unfilled view: comparisons and concatenation with a
    ``_LazyList`` on either side go through the overrides below, which fill both.
    """

    __slots__ = ("_raw", "_n", "_ready")

    def __init__(self, raw: bytes, n: int) -> None:  # no list.__init__: the storage fills lazily
        self._raw = raw
        self._n = n
        self._ready = n == 0

    def _items(self) -> list[Any]:
        raise NotImplementedError

    def _fill(self) -> None:
        if not self._ready:
            self._ready = True
            list.extend(self, self._items())

    def __len__(self) -> int:
        return list.__len__(self) if self._ready else self._n

    def __radd__(self, other: Iterable[Any]) -> list[Any]:
        return [*other, *self]

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:  # copy and pickle give a plain list
        return (list, (list(self),))


def _filled(name: str) -> Any:
    """``list.<name>``, run after filling ``self`` (and the other operand, if it is lazy too)."""
    base = getattr(list, name)

    def method(self: _LazyList, *args: Any) -> Any:
        self._fill()
        if args and isinstance(args[0], _LazyList):
            args[0]._fill()
        return base(self, *args)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = base.__doc__
    return method


for _name in (
    "__getitem__", "__setitem__", "__delitem__", "__iter__", "__reversed__", "__contains__",
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__add__", "__iadd__", "__mul__",
    "__rmul__", "__imul__", "__repr__", "__sizeof__", "copy", "index", "count",
    "append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear",
):
    setattr(_LazyList, _name, _filled(_name))


class EventList(_LazyList):
    """``list[bytes]`` of newline-terminated JSON events, split from the batch buffer on first use.

    ``len`` is known without splitting; ``raw`` is the buffer the engine wrote (every event
    followed by ``\n``), the cheapest way to forward a whole batch.
    """

    __slots__ = ()

    @property
    def raw(self) -> bytes:
        return self._raw

    def _items(self) -> list[bytes]:
        items = self._raw.split(b"\n")  # no [:-1] slice: that would copy the buffer
        items.pop()  # the empty piece after the last event's newline
        return items


class UserList(_LazyList):
    """``list[str]``: the ``user_id`` of each status, decoded on first use (like :class:`EventList`)."""

    __slots__ = ("_escaped",)

    def __init__(self, raw: bytes, n: int, escaped: bool) -> None:
        super().__init__(raw, n)
        self._escaped = escaped

    def _items(self) -> list[Any]:
        if self._escaped:
            return [json.loads(b'"' + u + b'"') for u in self._raw.split(b"\n")[:-1]]
        items = self._raw.decode("utf-8").split("\n")
        items.pop()
        return items


class BatchResult:
    """Events of one ``Engine.process`` call.

    ``fills`` and ``statuses`` are JSON events (bytes, SPEC section 3) in the order they
    happened, as :class:`EventList` (a ``list[bytes]`` split from the batch buffer on first
    use); ``events`` is both interleaved in exact global order; ``status_users`` is the
    ``user_id`` of each status (Kinesis partition key); ``touched`` maps each symbol that took
    a seq in this batch to its last seq; ``dropped`` lists ``(record index, why)`` for records
    that produced no status at all (logged and counted).
    """

    __slots__ = ("fills", "statuses", "status_users", "touched", "dropped", "_kinds", "_events")

    def __init__(
        self,
        fills: EventList,
        statuses: EventList,
        status_users: UserList,
        touched: dict[str, int],
        dropped: list[tuple[int, str]],
        kinds: bytes,
    ) -> None:
        self.fills = fills
        self.statuses = statuses
        self.status_users = status_users
        self.touched = touched
        self.dropped = dropped
        self._kinds = kinds
        self._events: list[bytes] | None = None

    @property
    def events(self) -> list[bytes]:
        """Fills and statuses interleaved in the exact order they happened."""
        if self._events is None:
            fi = iter(self.fills)
            si = iter(self.statuses)
            self._events = [next(fi) if k == 102 else next(si) for k in self._kinds]  # 102 == ord("f")
        return self._events

    def __repr__(self) -> str:
        return (
            f"BatchResult(fills={len(self.fills)}, statuses={len(self.statuses)}, touched={self.touched!r})"
        )


class Engine:
    """One limit order book per symbol, fed JSON order commands (SPEC sections 2, 3, 3a, 10).

    ``clock`` returns milliseconds; it stamps commands without a ``ts`` (read once per batch).
    ``active_symbols``: ``None`` (default) treats every well-formed symbol as active; otherwise
    commands for other symbols are rejected with ``UNKNOWN_SYMBOL`` (see :meth:`set_active_symbols`).
    ``parse_thread``: parse the JSON of batches of ``PARSE_THREAD_MIN_BATCH`` records or more
    on a second thread while this one matches (``None``, the default: when the process may
    run on two CPUs or more, by its affinity and its cgroup's CPU limit). The events never
    differ; only the wall time of a batch does.
    """

    def __init__(
        self,
        clock: Callable[[], int] | None = None,
        active_symbols: Iterable[str] | None = None,
        parse_thread: bool | None = None,
    ) -> None:
        self._clock: Callable[[], int] = clock or _now_ms
        use = _parse_thread_default() if parse_thread is None else parse_thread
        self._parse_min = PARSE_THREAD_MIN_BATCH if use else 0
        self._book = self._new_book()
        self._symbols: list[str] = []
        self._active: list[str] | None = None
        if active_symbols is not None:
            self.set_active_symbols(active_symbols)

    def _new_book(self) -> CBook:
        book = CBook()
        book.set_parse_thread(self._parse_min)
        return book

    # -- configuration -----------------------------------------------------------------
    @property
    def parse_thread(self) -> bool:
        """Whether big batches are parsed on a second thread."""
        return self._parse_min > 0

    def set_active_symbols(self, symbols: Iterable[str] | None) -> None:
        """Restrict trading to ``symbols`` (``None``: every valid symbol is active)."""
        self._active = None if symbols is None else list(symbols)
        self._book.set_active(self._active)

    @property
    def dropped_total(self) -> int:
        """Records so far that produced no status (unreadable JSON or ids)."""
        return self._book.dropped_total()

    # -- the hot path ------------------------------------------------------------------
    def process(self, records: list[bytes]) -> BatchResult:
        """Apply a batch of JSON order commands; return the events they caused."""
        book = self._book
        r, fills_raw, statuses_raw, users_raw, kinds = book.process(records, int(self._clock()))
        n_statuses = r.n_statuses
        fills = EventList(fills_raw, r.n_fills)
        statuses = EventList(statuses_raw, n_statuses)
        users = UserList(users_raw, n_statuses, bool(r.users_escaped))
        if r.n_books > len(self._symbols):
            self._symbols.extend(book.book_symbol(i) for i in range(len(self._symbols), r.n_books))
        syms = self._symbols
        nt = r.n_touched
        if nt == 1:
            touched = {syms[r.touched[0]]: int(r.touched[1])}
        else:
            flat = r.touched[0 : 2 * nt]
            touched = {syms[flat[i]]: int(flat[i + 1]) for i in range(0, 2 * nt, 2)}
        dropped: list[tuple[int, str]] = []
        if r.n_dropped:
            for i in range(r.n_dropped):
                idx, why = int(r.dropped[2 * i]), DROP_REASONS.get(int(r.dropped[2 * i + 1]), "?")
                dropped.append((idx, why))
                log.warning("event=order_command_dropped record=%d why=\"%s\" data=%.200r", idx, why, records[idx])
        return BatchResult(fills, statuses, users, touched, dropped, kinds)

    # -- reading the books -------------------------------------------------------------
    def depth(self, symbol: str, levels: int = DEPTH_LEVELS) -> dict[str, list[list[int]]]:
        """Aggregated top ``levels`` per side: bids high->low, asks low->high."""
        b = self._book.book_find(symbol)
        if b < 0:
            return {"b": [], "a": []}
        return {"b": self._book.depth(b, _SIDE_BID, levels), "a": self._book.depth(b, _SIDE_ASK, levels)}

    def last_seq(self, symbol: str) -> int | None:
        """Last seq applied to ``symbol``'s book, or None if the symbol never took one."""
        b = self._book.book_find(symbol)
        return None if b < 0 else self._book.book_seq(b)

    def symbols(self) -> list[str]:
        """Symbols that have a book, in order of first appearance."""
        n = self._book.book_count()
        if n > len(self._symbols):
            self._symbols.extend(self._book.book_symbol(i) for i in range(len(self._symbols), n))
        return list(self._symbols)

    def open_orders(self) -> int:
        """Number of resting orders over all books."""
        return self._book.open_orders()

    # -- persistence -------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Binary snapshot: books (orders in priority order, seqs) and remembered ids."""
        return self._book.snapshot()

    def restore(self, data: bytes) -> None:
        """Replace this engine's state with a snapshot (ValueError if it is malformed)."""
        fresh = self._new_book()
        fresh.restore(data)
        fresh.set_active(self._active)
        self._book = fresh  # the old book is freed here; its memory goes to the C cache...
        CBook.trim_cache()  # ...which a long-lived engine would never take back: unmap it
        self._symbols = []
        self.symbols()

    @classmethod
    def from_snapshot(
        cls,
        data: bytes,
        clock: Callable[[], int] | None = None,
        active_symbols: Iterable[str] | None = None,
        parse_thread: bool | None = None,
    ) -> Engine:
        """A new engine restored from ``data``."""
        eng = cls(clock=clock, active_symbols=active_symbols, parse_thread=parse_thread)
        eng.restore(data)
        return eng
