"""The JSON reader's fast path (router key order) must read exactly what the general reader reads.

``sb_json_check`` parses one record through both readers in C and compares every field; the
engine-level property runs random command streams through an engine with the fast path and
one without it and requires byte-identical results.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_pkg import Engine
from engine_pkg.book_ffi import lib
from tests.engine_pkg.strategies import FIELDS, SYMBOLS, command, router_json

TEXT = st.text(alphabet=st.sampled_from(list('ab01"\\\n\té€\x7f/ -')), max_size=6)
VALUES = st.one_of(
    st.sampled_from(["ADD", "CANCEL", "REPLACE", "AAA", "BBB", "o1", "u1", "LIMIT", "MARKET", "GTC", "IOC", "FOK"]),
    TEXT,
    st.booleans(),
    st.none(),
    st.integers(-(10**20), 10**20),
    st.sampled_from([0, -0, 10**17, 10**18 - 1, 10**18, 2**63 - 1, 2**63, -(2**63), 1.5, 1e3, -0.0]),
    st.sampled_from([[], [1, "x"], {}, {"k": [1]}]),
)


def check(rec: bytes) -> int:
    rc = lib.sb_json_check(rec, len(rec))
    assert rc in (0, 1), (rc, rec)
    return rc


@given(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=10))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_canonical_order_records_read_alike(d: dict[str, Any]) -> None:
    rec = router_json(d)
    rc = check(rec)
    plain = all(v is None or _plain_of_its_type(k, v) for k, v in d.items())
    if plain and d:
        assert rc == 1, rec  # the router's shape really takes the fast path


#: the fields the fast path reads as booleans / integers; the others it reads as strings
BOOL_FIELDS, INT_FIELDS = {"is_buy"}, {"price", "quantity", "ts"}


def _plain_of_its_type(field: str, v: Any) -> bool:
    """A value of the field's own type in the router's plain form (what the fast path takes)."""
    if field in BOOL_FIELDS:
        return isinstance(v, bool)
    if field in INT_FIELDS:
        return isinstance(v, int) and not isinstance(v, bool) and len(str(abs(v))) <= 18
    return isinstance(v, str) and v.isascii() and not any(c in v for c in '"\\') and v.isprintable()


@given(
    st.dictionaries(st.sampled_from(FIELDS + ["x", "actio", "tss"]), VALUES, max_size=11),
    st.sampled_from([(",", ":"), (", ", ": "), (",", ": ")]),
    st.randoms(use_true_random=False),
    st.sampled_from([b"", b" ", b"\n", b"}", b",", b"x"]),
    st.integers(0, 60),
)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_any_record_reads_alike(d: dict[str, Any], seps: tuple[str, str], rnd: Any, tail: bytes, cut: int) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    rec = json.dumps(dict(items), separators=seps, ensure_ascii=rnd.random() < 0.5).encode()
    check(rec + tail)
    check(rec[:cut])  # truncated records
    if len(items) >= 2:  # a repeated key
        k, v = items[0]
        check(rec[:-1] + b"," + json.dumps({k: v}, separators=(",", ":")).encode()[1:])


def test_edge_records() -> None:
    for rec in [
        b"{}",
        b'{"action":"ADD"}',
        b'{"action":"ADD","symbol":"AAA","order_id":"o1","user_id":"u1","is_buy":true,"price":100,"quantity":5}',
        b'{"action":"ADD","price":-0}',
        b'{"action":"ADD","price":01}',
        b'{"action":"ADD","price":1.0}',
        b'{"action":"ADD","price":1e2}',
        b'{"action":"ADD","price":-}',
        b'{"action":"ADD","price":999999999999999999}',
        b'{"action":"ADD","price":9999999999999999999}',
        b'{"action":"ADD","price":99999999999999999999999}',
        b'{"action":"ADD","is_buy":tru}',
        b'{"action":"ADD","is_buy":nul}',
        b'{"action":"ADD","symbol":"A\\u0041"}',
        b'{"action":"ADD","symbol":"\xc3\xa9"}',
        b'{"action":"ADD","symbol":"\xff"}',
        b'{"action":"ADD","symbol":"AAA"',
        b'{"action":"ADD","symbol":"AAA"} ',
        b'{"action":"ADD","symbol":"AAA"}x',
        b'{"action":"ADD","symbol":"AAA",}',
        b'{"action":"ADD","action":"CANCEL"}',
        b'{"symbol":"AAA","action":"ADD"}',
        b'{"action":"ADD","ts":1,"tif":"GTC"}',
        b'{"action":"ADD","ts":1,"ts":2}',
        b'{"action":["ADD"]}',
        b'{"action":"A\x00D"}',
        b'{"action":"ADD","symbol":"01234567890123456789"}',
    ]:
        check(rec)
    assert check(b'{"action":"ADD","price":999999999999999999}') == 1
    assert check(b'{"action":"ADD","price":-0}') == 1
    assert check(b'{"action":"ADD","price":9999999999999999999}') == 0
    assert check(b'{"symbol":"AAA","action":"ADD"}') == 0


def test_fast_path_reads_each_field_as_its_own_type_or_null() -> None:
    """Values of another type are left to the general reader (which reads them alike)."""
    for rec in [b'{"action":null}', b'{"is_buy":null}', b'{"price":null}', b'{"ts":null}', b'{"ts":1}',
                b'{"action":"ADD","type":"LIMIT"}', b'{"is_buy":false}', b'{"is_buy":true}']:
        assert check(rec) == 1, rec
    for rec in [b'{"action":1}', b'{"action":true}', b'{"is_buy":"true"}', b'{"is_buy":1}',
                b'{"price":"5"}', b'{"price":true}', b'{"price":-null}', b'{"quantity":[1]}',
                b'{"action":"ADD","symbol":"AAA"', b'{"type":"LIMIT}', b'{"type":"LI\x01"}']:
        assert check(rec) == 0, rec


def test_fast_path_integers_of_every_digit_count() -> None:
    """Digits are read eight at a time: every length up to 18, at the record's end and inside it."""
    for digits in range(1, 19):
        for lead in "19":
            n = int(lead + "0" * (digits - 2) + "7") if digits > 1 else int(lead)
            for rec in [b'{"price":%d}' % n, b'{"price":-%d,"quantity":%d}' % (n, n),
                        b'{"action":"ADD","ts":%d}' % n]:
                assert check(rec) == 1, rec
    assert check(b'{"ts":1234567890123456789}') == 0  # 19 digits: the general reader decides


def test_router_record_takes_fast_path() -> None:
    import orjson

    from chalice_app.messages import order_command

    rec = orjson.dumps(order_command("ADD", "AAA", "o1", "u1", ts=5, is_buy=True, price=10, quantity=2,
                                     type="LIMIT", tif="IOC"))
    assert check(rec) == 1


@given(st.lists(st.lists(command(router_order=True), max_size=30), min_size=1, max_size=6))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_engine_events_identical_with_and_without_fast_path(batches: list[list[bytes]]) -> None:
    fast, slow = Engine(clock=lambda: 7), Engine(clock=lambda: 7)
    slow._book.set_json_fast(False)
    for b in batches:
        rf, rs = fast.process(b), slow.process(b)
        assert rf.events == rs.events
        assert list(rf.status_users) == list(rs.status_users)
        assert rf.touched == rs.touched
        assert rf.dropped == rs.dropped
    assert fast.snapshot() == slow.snapshot()
    for s in SYMBOLS:
        assert fast.depth(s, 20) == slow.depth(s, 20)
