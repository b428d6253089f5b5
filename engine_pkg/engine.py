"""The in-process matching engine of SPEC section 10: ``Engine.process(records)``.

All matching, JSON parsing and JSON writing happen in C (``engine_pkg/csrc``); this module
copies one C batch result into a few ``bytes`` buffers (a constant number of C-level operations
per batch, never a Python loop per order).  The event lists of :class:`BatchResult` are lazy
sequences over those buffers: they are split into one ``bytes`` object per event only when a
consumer first reads them (one ``bytes.split``), and ``raw`` gives the whole buffer at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, overload

from engine_pkg.book_ffi import DROP_REASONS, CBook

log = logging.getLogger(__name__)

_SIDE_BID = 0
_SIDE_ASK = 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class EventList(Sequence[bytes]):
    """Read-only ``list[bytes]``-like view of newline-terminated JSON events.

    ``len`` is known without splitting; the first indexing or iteration splits the buffer once
    (one C-level ``bytes.split``) and later accesses use that list.  Compares equal to a list
    or tuple holding the same items; slicing returns a list.  ``raw`` is the buffer itself
    (every event followed by ``\\n``), the cheapest way to forward a whole batch.
    """

    __slots__ = ("_raw", "_n", "_items")

    def __init__(self, raw: bytes, n: int) -> None:
        self._raw = raw
        self._n = n
        self._items: list[bytes] | None = None

    @property
    def raw(self) -> bytes:
        return self._raw

    def _list(self) -> list[bytes]:
        items = self._items
        if items is None:
            if self._n:
                items = self._raw.split(b"\n")  # no [:-1] slice: that would copy the buffer
                items.pop()  # the empty piece after the last event's newline
            else:
                items = []
            self._items = items
        return items

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> list[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | list[bytes]:
        return self._list()[i]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._list())

    def __contains__(self, x: object) -> bool:
        return x in self._list()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventList):
            return self._raw == other._raw
        if isinstance(other, (list, tuple)):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Iterable[bytes]) -> list[bytes]:
        return [*self._list(), *other]

    def __radd__(self, other: Iterable[bytes]) -> list[bytes]:
        return [*other, *self._list()]

    def __repr__(self) -> str:
        return f"EventList({self._list()!r})"


class UserList(Sequence["str | None"]):
    """The ``user_id`` of each status, decoded on first use (like :class:`EventList`)."""

    __slots__ = ("_raw", "_n", "_escaped", "_items")

    def __init__(self, raw: bytes, n: int, escaped: bool) -> None:
        self._raw = raw
        self._n = n
        self._escaped = escaped
        self._items: list[str | None] | None = None

    def _list(self) -> list[str | None]:
        items = self._items
        if items is None:
            if not self._n:
                items = []
            elif self._escaped:
                items = [json.loads(b'"' + u + b'"') for u in self._raw.split(b"\n")[:-1]]
            else:
                items = self._raw.decode("utf-8").split("\n")  # type: ignore[assignment]
                items.pop()
            self._items = items
        return items

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        return self._list()[i]

    def __iter__(self) -> Iterator[str | None]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (UserList, list, tuple)):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Iterable[str | None]) -> list[str | None]:
        return [*self._list(), *other]

    def __radd__(self, other: Iterable[str | None]) -> list[str | None]:
        return [*other, *self._list()]

    def __repr__(self) -> str:
        return f"UserList({self._list()!r})"


class BatchResult:
    """Events of one ``Engine.process`` call.

    ``fills`` and ``statuses`` are JSON events (bytes, SPEC section 3) in the order they
    happened, as lazy :class:`EventList` sequences (``list[bytes]`` behaviour; split on first
    use); ``events`` is both interleaved in exact global order; ``status_users`` is the
    ``user_id`` of each status (Kinesis partition key); ``touched`` maps each symbol that took
    a seq in this batch to its last seq; ``dropped`` lists ``(record index, why)`` for records
    that produced no status at all (logged and counted).
    """

    __slots__ = ("fills", "statuses", "status_users", "touched", "dropped", "_kinds", "_events")

    def __init__(
        self,
        fills: Sequence[bytes],
        statuses: Sequence[bytes],
        status_users: Sequence[str | None],
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
    """

    def __init__(
        self,
        clock: Callable[[], int] | None = None,
        active_symbols: Iterable[str] | None = None,
    ) -> None:
        self._clock: Callable[[], int] = clock or _now_ms
        self._book = CBook()
        self._symbols: list[str] = []
        self._active: list[str] | None = None
        if active_symbols is not None:
            self.set_active_symbols(active_symbols)

    # -- configuration -----------------------------------------------------------------
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
        r = book.process(records, int(self._clock()))
        take = CBook.take
        n_statuses = r.n_statuses
        fills = EventList(take(r.fills, r.fills_len), r.n_fills)
        statuses = EventList(take(r.statuses, r.statuses_len), n_statuses)
        users = UserList(take(r.users, r.users_len), n_statuses, bool(r.users_escaped))
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
                log.warning("order command dropped (%s): %.200r", why, records[idx])
        kinds = take(r.kinds, r.n_events)
        return BatchResult(fills, statuses, users, touched, dropped, kinds)

    # -- reading the books -------------------------------------------------------------
    def depth(self, symbol: str, levels: int = 10) -> dict[str, list[list[int]]]:
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
        fresh = CBook()
        fresh.restore(data)
        fresh.set_active(self._active)
        self._book = fresh
        self._symbols = []
        self.symbols()

    @classmethod
    def from_snapshot(
        cls,
        data: bytes,
        clock: Callable[[], int] | None = None,
        active_symbols: Iterable[str] | None = None,
    ) -> Engine:
        """A new engine restored from ``data``."""
        eng = cls(clock=clock, active_symbols=active_symbols)
        eng.restore(data)
        return eng
