"""The handle door (``sb_hcore_cmd``, the book core alone that the C benchmark drives) and its
look-ahead hint ``sb_hprefetch``: handles, stale handles, ownership, events counted, and the
same book as the JSON door for the same commands."""

from __future__ import annotations

from typing import Any

import pytest

from engine_pkg import Engine
from engine_pkg.book_ffi import ffi, lib

HNONE = 0xFFFFFFFFFFFFFFFF  # SB_HNONE (book.h; #defines are not in the cffi cdef)
HERR = 0xFFFFFFFFFFFFFFFE


@pytest.fixture()
def core() -> Any:
    e = ffi.gc(lib.sb_new(), lib.sb_free)
    lib.sb_set_emit(e, 0)
    return e


def cmd(e: Any, action: int, user: int, *, is_buy: int = 1, price: int = 0, qty: int = 0, handle: int = 0,
        mtype: int = 0, tif: int = 0, has_price: int = 0, has_qty: int = 0) -> int:
    c = ffi.new("sb_hcmd *")
    c.action, c.is_buy, c.type, c.tif = action, is_buy, mtype, tif
    c.has_price, c.has_qty = has_price, has_qty
    c.book, c.user, c.handle, c.price, c.qty = 0, user, handle, price, qty
    for h in (handle, HNONE, HERR, 0, 2**63, 12345 << 32 | 7):  # hints never fail, whatever the value
        lib.sb_hprefetch(e, h, 0)
        lib.sb_hprefetch(e, h, 1)
    return int(lib.sb_hcore_cmd(e, c))


def depth(e: Any, side: int) -> list[tuple[int, int]]:
    out = ffi.new("uint64_t[]", 20)
    k = lib.sb_depth(e, 0, side, 10, out)
    return [(out[2 * i], out[2 * i + 1]) for i in range(k)]


def test_handles_cancel_replace_and_stale(core: Any) -> None:
    assert lib.sb_book_get(core, b"AAA", 3) == 0
    u1, u2 = lib.sb_user(core, b"u1", 2), lib.sb_user(core, b"u2", 2)
    h1 = cmd(core, 0, u1, is_buy=1, price=100, qty=5)
    h2 = cmd(core, 0, u1, is_buy=1, price=100, qty=3)
    assert h1 not in (HNONE, HERR) and h2 not in (HNONE, HERR) and h1 != h2
    assert depth(core, 0) == [(100, 8)]
    assert cmd(core, 1, u2, handle=h1) == HNONE  # NOT_OWNER: still resting
    assert depth(core, 0) == [(100, 8)]
    assert cmd(core, 2, u1, handle=h2, price=101, qty=4, has_price=1, has_qty=1) == h2  # moved, rests
    assert depth(core, 0) == [(101, 4), (100, 5)]
    assert cmd(core, 1, u1, handle=h1) == HNONE
    assert depth(core, 0) == [(101, 4)]
    assert cmd(core, 1, u1, handle=h1) == HNONE  # stale handle: UNKNOWN_ORDER, no change
    h3 = cmd(core, 0, u1, is_buy=1, price=99, qty=1)  # may reuse h1's slot with a new generation
    assert h3 != h1
    assert cmd(core, 1, u1, handle=h1) == HNONE and depth(core, 0) == [(101, 4), (99, 1)]
    # a sell of u2 crosses: fills h2 completely, rests the rest
    h4 = cmd(core, 0, u2, is_buy=0, price=101, qty=6)
    assert h4 not in (HNONE, HERR)
    assert depth(core, 0) == [(99, 1)] and depth(core, 1) == [(101, 2)]
    assert cmd(core, 1, u1, handle=h2) == HNONE  # filled: stale
    assert cmd(core, 0, u1, is_buy=1, qty=10, mtype=1) == HNONE  # market buy: takes 2, expires
    assert depth(core, 1) == []
    assert cmd(core, 0, u1, is_buy=1, price=0, qty=1) == HNONE  # BAD_ORDER
    assert lib.sb_open_orders(core) == 1
    assert lib.sb_event_count(core) > 0


def test_handle_door_matches_json_door(core: Any) -> None:
    """The same random commands through the handle door and Engine.process: same book."""
    import random

    rnd = random.Random(5)
    assert lib.sb_book_get(core, b"AAA", 3) == 0
    users = [lib.sb_user(core, b"u%d" % i, len(b"u%d" % i)) for i in range(3)]
    eng = Engine(clock=lambda: 0)
    handles: dict[int, int] = {}
    recs = []
    for i in range(400):
        u = rnd.randrange(3)
        k = rnd.random()
        if k < 0.3 and handles:
            j = rnd.choice(list(handles))
            cmd(core, 1, users[u], handle=handles[j])
            recs.append(b'{"action":"CANCEL","symbol":"AAA","order_id":"o%d","user_id":"u%d"}' % (j, u))
        else:
            is_buy, price, qty = rnd.randrange(2), rnd.randint(95, 105), rnd.randint(1, 9)
            h = cmd(core, 0, users[u], is_buy=is_buy, price=price, qty=qty)
            if h != HNONE:
                handles[i] = h
            recs.append(b'{"action":"ADD","symbol":"AAA","order_id":"o%d","user_id":"u%d","is_buy":%s,'
                        b'"price":%d,"quantity":%d}' % (i, u, b"true" if is_buy else b"false", price, qty))
    eng.process(recs)
    d = eng.depth("AAA", 10)
    assert [tuple(x) for x in d["b"]] == depth(core, 0)
    assert [tuple(x) for x in d["a"]] == depth(core, 1)
    assert eng.open_orders() == lib.sb_open_orders(core)
