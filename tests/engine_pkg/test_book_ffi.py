"""engine_pkg.book_ffi: the two ways a batch reaches C give the same results.

A list or tuple of ``bytes`` is read in place (``sb_process_pylist``, csrc/pyglue.h); anything
else (a list subclass, ``bytearray``/``memoryview`` records) is joined first (``sb_process``).
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_pkg import Engine, book_ffi
from engine_pkg.book_ffi import lib
from tests.engine_pkg.helpers import cmd
from tests.engine_pkg.strategies import SYMBOLS, command

BUY = cmd(action="ADD", symbol="AAA", order_id="b1", user_id="u1", is_buy=True, price=100, quantity=5)
SELL = cmd(action="ADD", symbol="AAA", order_id="s1", user_id="u2", is_buy=False, price=100, quantity=3)
BATCH = [BUY, SELL, b"not json", b'{"action":"ADD","order_id":"n\x00ul","user_id":"u1"}']


def joined_engine(monkeypatch: pytest.MonkeyPatch) -> Engine:
    """An engine whose batches take the join path (as on an interpreter without in-place reads)."""
    monkeypatch.setattr(book_ffi, "_IN_PLACE", False)
    return Engine(clock=lambda: 7)


def outcome(eng: Engine, batch: Any) -> tuple[Any, ...]:
    r = eng.process(batch)
    return (r.events, list(r.status_users), r.touched, r.dropped)


def test_a_list_of_bytes_is_read_in_place() -> None:
    eng = Engine(clock=lambda: 7)
    assert lib.sb_process_pylist(eng._book._e, id(BATCH), 7, id(eng._book._out)) == 0
    r = lib.sb_last(eng._book._e)
    # ACCEPTED, ACCEPTED, the maker's PARTIALLY_FILLED, the taker's FILLED; the last two records
    # are unreadable (a raw NUL is not JSON) and the NUL does not split the fourth in two
    assert (r.n_statuses, r.n_fills, r.n_dropped) == (4, 1, 2)
    assert [r.dropped[i] for i in range(4)] == [2, 1, 3, 1]


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(lambda b: type("L", (list,), {})(b), id="list subclass"),
        pytest.param(lambda b: [bytearray(r) for r in b], id="bytearray records"),
        pytest.param(lambda b: [*b[:-1], memoryview(b[-1])], id="one memoryview record"),
        pytest.param(lambda b: iter(b), id="iterator"),
    ],
)
def test_other_shapes_are_refused_in_place_and_joined(shape: Any) -> None:
    eng = Engine(clock=lambda: 7)
    batch = shape(BATCH)
    assert lib.sb_process_pylist(eng._book._e, id(batch), 7, id(eng._book._out)) == -3  # nothing done
    assert lib.sb_book_count(eng._book._e) == 0


def test_every_shape_gives_the_same_events(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = outcome(joined_engine(monkeypatch), BATCH)
    monkeypatch.setattr(book_ffi, "_IN_PLACE", True)
    shapes = [
        list(BATCH),
        tuple(BATCH),
        type("L", (list,), {})(BATCH),
        [bytearray(r) for r in BATCH],
        [*BATCH[:-1], memoryview(BATCH[-1])],
    ]
    for batch in shapes:
        assert outcome(Engine(clock=lambda: 7), batch) == reference, type(batch)


def test_empty_batch_in_place() -> None:
    eng = Engine(clock=lambda: 7)
    r = eng.process([])
    assert (len(r.events), r.touched, r.dropped) == (0, {}, [])
    assert eng.process(()).touched == {}


def test_in_place_read_keeps_no_reference() -> None:
    batch = [bytes(BUY), bytes(SELL)]
    before = [sys.getrefcount(batch), *(sys.getrefcount(r) for r in batch)]
    Engine(clock=lambda: 7).process(batch)
    assert [sys.getrefcount(batch), *(sys.getrefcount(r) for r in batch)] == before


@given(st.lists(st.lists(command(junk=True), max_size=30), min_size=1, max_size=6))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
def test_in_place_and_joined_batches_give_identical_results(
    monkeypatch: pytest.MonkeyPatch, batches: list[list[bytes]]
) -> None:
    in_place = Engine(clock=lambda: 7)
    with monkeypatch.context() as m:
        m.setattr(book_ffi, "_IN_PLACE", False)
        joined = Engine(clock=lambda: 7)
        joined_out = [outcome(joined, b) for b in batches]
    assert [outcome(in_place, b) for b in batches] == joined_out
    assert in_place.snapshot() == joined.snapshot()
    for s in SYMBOLS:
        assert in_place.depth(s, 20) == joined.depth(s, 20)


def test_outputs_written_in_place_grow_past_the_last_batchs_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each output starts a quarter bigger than the last batch's (+1 KiB); a batch that writes
    far more grows the bytes objects mid-batch and must still give exactly the joined path's
    events."""
    asks = [cmd(action="ADD", symbol="AAA", order_id=f"a{i}", user_id=f"s{i}", is_buy=False, price=200 + i,
                quantity=1) for i in range(400)]
    sweep = cmd(action="ADD", symbol="AAA", order_id="m", user_id="buyer", is_buy=True, quantity=400, type="MARKET")
    batches = [[BUY], asks, [sweep]]
    joined = joined_engine(monkeypatch)
    want = [outcome(joined, b) for b in batches]
    monkeypatch.setattr(book_ffi, "_IN_PLACE", True)
    in_place = Engine(clock=lambda: 7)
    got = [outcome(in_place, b) for b in batches]
    assert got == want
    # every fill, each maker's FILLED, the taker's ACCEPTED and FILLED
    assert len(got[2][0]) == 400 + 400 + 2
    # and after it, a small batch's buffer is cut to its exact size
    late = cmd(action="ADD", symbol="AAA", order_id="late", user_id="u9", is_buy=False, price=999, quantity=1)
    raw = in_place.process([late]).statuses.raw
    assert type(raw) is bytes and raw.startswith(b'{"e":"order","user_id":"u9"') and raw.count(b"\n") == 1
    assert raw.endswith(b'"seq":803}\n')


def test_a_wrong_output_list_is_refused() -> None:
    eng = Engine(clock=lambda: 7)
    for out in ([b""] * 3, (b"",) * 4, None):
        assert lib.sb_process_pylist(eng._book._e, id(BATCH), 7, id(out)) == -3
    assert lib.sb_book_count(eng._book._e) == 0


def test_a_freed_engines_memory_serves_the_next_engine_unchanged() -> None:
    """sb_free keeps an engine's big mappings for the next engine (map_cache in book.c): the
    order pool comes back with the old orders' bytes in it, unzeroed, and must not change a
    single event, and the cache gives them out once."""
    lib.sb_cache_trim()
    batch = [cmd(action="ADD", symbol="AAA", order_id=f"o{i}", user_id=f"u{i % 7}", is_buy=i % 2 == 0,
                 price=100 + (i * 7919) % 9, quantity=1 + i % 5) for i in range(3000)]
    batch += [cmd(action="CANCEL", symbol="AAA", order_id=f"o{i}", user_id=f"u{i % 7}") for i in range(0, 3000, 3)]
    first = Engine(clock=lambda: 7)
    want = outcome(first, batch)
    del first
    kept = lib.sb_cache_bytes()
    assert kept >= 4 << 20  # at least the first order-pool chunk (65,536 orders of 64 bytes)
    second = Engine(clock=lambda: 7)
    assert outcome(second, batch) == want
    assert lib.sb_cache_bytes() < kept  # taken, not copied
    del second
    lib.sb_cache_trim()
    assert lib.sb_cache_bytes() == 0


def test_restore_leaves_no_freed_memory_behind() -> None:
    eng = Engine(clock=lambda: 7)
    eng.process([BUY])
    snap = eng.snapshot()
    lib.sb_cache_trim()
    eng.restore(snap)  # the replaced book's memory would sit in the cache for good
    assert lib.sb_cache_bytes() == 0
    assert eng.depth("AAA") == {"b": [[100, 5]], "a": []}


def test_engines_made_and_freed_in_threads_share_the_cache_safely() -> None:
    """cffi runs sb_new/sb_free without the GIL: engines of several threads take and give back
    cached mappings at once (book.c guards map_cache with a mutex), and every engine's events
    stay those of an engine made alone."""
    import threading

    batch = [cmd(action="ADD", symbol="AAA", order_id=f"t{i}", user_id=f"u{i % 5}", is_buy=i % 2 == 1,
                 price=50 + i % 7, quantity=1 + i % 3) for i in range(500)]
    want = outcome(Engine(clock=lambda: 7), batch)
    results: list[Any] = []

    def work() -> None:
        for _ in range(15):
            results.append(outcome(Engine(clock=lambda: 7), batch))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 60
    assert all(r == want for r in results)
    assert lib.sb_cache_bytes() <= 256 << 20
