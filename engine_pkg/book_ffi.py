"""The one module that talks to the compiled C order book (``engine_pkg._book``).

Every ``ffi``/``lib`` call of the package lives here; :mod:`engine_pkg.engine` only sees plain
Python values.  There is no Python fallback: a missing build is an error with instructions.
"""

from __future__ import annotations

import sys
from typing import Any

try:
    from engine_pkg._book import ffi, lib
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "engine_pkg._book (the C order book) is not built. Run `make setup` or "
        "`pip install -e .` at the repository root to compile it (needs a C compiler and cffi)."
    ) from exc

#: ``id()`` is the object's address (what csrc/pyglue.h reads) only on CPython.
_IN_PLACE = sys.implementation.name == "cpython"

#: Why a record produced no status (``sb_result.dropped`` codes).
DROP_REASONS = {1: "unreadable JSON", 2: "order_id/user_id unreadable"}


def _take(ptr: Any, length: int) -> bytes:
    """Copy ``length`` bytes from a C ``char *`` (``ffi.unpack``: one call, no buffer object)."""
    return ffi.unpack(ptr, length) if length else b""


class CBook:
    """Owns one ``sb_engine``; thin, allocation-free wrappers around the C API."""

    __slots__ = ("_e", "_depth_buf", "_depth_cap", "_out")

    def __init__(self) -> None:
        e = lib.sb_new()
        if e == ffi.NULL:
            raise MemoryError("sb_new failed")
        self._e = ffi.gc(e, lib.sb_free)
        self._depth_cap = 0
        self._depth_buf: Any = None
        # the glue puts each batch's four outputs here (the last batch's stay until the next)
        self._out: list[bytes] = [b""] * 4

    # -- batch processing --------------------------------------------------------------
    def process(self, records: list[bytes], now: int) -> tuple[Any, bytes, bytes, bytes, bytes]:
        """Run a batch; returns the C ``sb_result`` (its counts; valid until the next call) and
        the batch's four outputs as ``bytes``: fills, statuses, status users, event kinds."""
        if _IN_PLACE:  # a list or tuple of bytes is read where it is, events written into bytes
            out = self._out
            rc = lib.sb_process_pylist(self._e, id(records), now, id(out))
            if rc != -3:
                if rc != 0:
                    raise MemoryError("order book out of memory")
                return lib.sb_last(self._e), out[0], out[1], out[2], out[3]
        n = len(records)
        joined = b"\0".join(records)
        rc = lib.sb_process(self._e, joined, len(joined), ffi.NULL, n, now)
        if rc == -2:  # a record holds a NUL byte (C checked, processed nothing): pass lengths
            joined = b"".join(records)
            lens = ffi.new("uint32_t[]", [len(r) for r in records])
            rc = lib.sb_process(self._e, joined, len(joined), lens, n, now)
        if rc != 0:
            raise MemoryError("order book out of memory")
        r = lib.sb_last(self._e)
        return r, _take(r.fills, r.fills_len), _take(r.statuses, r.statuses_len), \
            _take(r.users, r.users_len), _take(r.kinds, r.n_events)

    @staticmethod
    def trim_cache() -> None:
        """Unmap the memory freed engines left for the next ones (csrc/book.c's map_cache)."""
        lib.sb_cache_trim()

    def set_parse_thread(self, min_batch: int) -> None:
        """Parse batches of at least ``min_batch`` records on a second thread (0: never); the
        events are identical either way (csrc/book.c, "the parse thread")."""
        lib.sb_set_parse_thread(self._e, min_batch)

    def set_json_fast(self, on: bool) -> None:
        """Switch the JSON reader's fast path (router key order); results never differ."""
        lib.sb_set_json_fast(self._e, 1 if on else 0)

    def dropped_total(self) -> int:
        return int(lib.sb_dropped_total(self._e))

    # -- symbols -----------------------------------------------------------------------
    def set_active(self, symbols: list[str] | None) -> None:
        lib.sb_active_clear(self._e, 0 if symbols is None else 1)
        for s in symbols or ():
            b = s.encode()
            lib.sb_active_add(self._e, b, len(b))

    def book_find(self, symbol: str) -> int:
        b = symbol.encode("utf-8", "replace")
        return int(lib.sb_book_find(self._e, b, len(b)))

    def book_count(self) -> int:
        return int(lib.sb_book_count(self._e))

    def book_symbol(self, book: int) -> str:
        n = ffi.new("uint32_t *")
        p = lib.sb_book_symbol(self._e, book, n)
        return ffi.string(p, n[0]).decode("ascii")

    def book_seq(self, book: int) -> int:
        return int(lib.sb_book_seq(self._e, book))

    def depth(self, book: int, side: int, levels: int) -> list[list[int]]:
        # a side has at most as many levels as there are resting orders: the buffer never
        # grows past that, however many levels are asked for (--depth 10**21)
        levels = min(levels, int(lib.sb_open_orders(self._e)))
        if levels <= 0:
            return []
        if levels > self._depth_cap:
            self._depth_buf = ffi.new("uint64_t[]", 2 * levels)
            self._depth_cap = levels
        k = lib.sb_depth(self._e, book, side, levels, self._depth_buf)
        flat = self._depth_buf[0 : 2 * k]
        return [[flat[i], flat[i + 1]] for i in range(0, 2 * k, 2)]

    def open_orders(self) -> int:
        return int(lib.sb_open_orders(self._e))

    # -- persistence -------------------------------------------------------------------
    def snapshot(self) -> bytes:
        out = ffi.new("const char **")
        n = ffi.new("size_t *")
        if lib.sb_snapshot(self._e, out, n) != 0:
            raise MemoryError("snapshot: out of memory")
        return ffi.buffer(out[0], n[0])[:]

    def restore(self, data: bytes) -> None:
        if lib.sb_restore(self._e, data, len(data)) != 0:
            raise ValueError("not a valid order-book snapshot")
