"""Malformed commands of every kind: BAD_ORDER when ids are readable, dropped otherwise."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine_pkg import Engine
from tests.engine_pkg.helpers import CLOCK, cmd

GOOD: dict[str, Any] = {
    "action": "ADD",
    "symbol": "TEST",
    "order_id": "o1",
    "user_id": "u1",
    "is_buy": True,
    "price": 100,
    "quantity": 10,
    "type": "LIMIT",
    "tif": "GTC",
}


def run(record: bytes) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    eng = Engine(clock=lambda: CLOCK)
    res = eng.process([record])
    return [json.loads(e) for e in res.events], res.dropped


def reason_of(record: bytes) -> str | None:
    ev, dropped = run(record)
    assert not dropped
    return ev[0]["reason"] if ev[0]["status"] == "REJECTED" else None


def with_(**changes: Any) -> bytes:
    d = dict(GOOD)
    for k, v in changes.items():
        if v is ...:
            d.pop(k, None)
        else:
            d[k] = v
    return json.dumps(d).encode()


def test_good_command_is_accepted() -> None:
    assert reason_of(with_()) is None


@pytest.mark.parametrize("field", ["action", "symbol", "is_buy", "quantity", "price"])
def test_missing_required_add_field(field: str) -> None:
    assert reason_of(with_(**{field: ...})) == "BAD_ORDER"


@pytest.mark.parametrize("field", ["action", "symbol", "is_buy", "quantity", "price"])
def test_null_required_field_equals_absent(field: str) -> None:
    assert reason_of(with_(**{field: None})) == "BAD_ORDER"


@pytest.mark.parametrize("field", ["type", "tif", "ts"])
def test_null_optional_field_equals_absent(field: str) -> None:
    assert reason_of(with_(**{field: None})) is None


@pytest.mark.parametrize(
    "value",
    [0, -1, 10**12 + 1, 1.0, 1.5, 1e3, "100", True, False, [1], {"v": 1}, 2**64, 2**63, -(2**63) - 1, 10**40],
)
@pytest.mark.parametrize("field", ["price", "quantity"])
def test_bad_numbers(field: str, value: Any) -> None:
    assert reason_of(with_(**{field: value})) == "BAD_ORDER"


def test_exponent_and_fraction_literals_are_not_integers() -> None:
    base = b'{"action":"ADD","symbol":"TEST","order_id":"o1","user_id":"u1","is_buy":true,"quantity":1,"price":%s}'
    for lit in [b"1e2", b"1E2", b"100.0", b"1.0e2", b"1e+2", b"-0.0"]:
        assert reason_of(base % lit) == "BAD_ORDER", lit
    assert reason_of(base % b"-0") == "BAD_ORDER"
    assert reason_of(base % b"1000000000000") is None


@pytest.mark.parametrize("value", [1, 0, "true", "BUY", None])
def test_is_buy_must_be_boolean(value: Any) -> None:
    assert reason_of(with_(is_buy=value)) == "BAD_ORDER"


@pytest.mark.parametrize(
    "field,value",
    [
        ("action", "add"),
        ("action", "DELETE"),
        ("action", 1),
        ("type", "STOP"),
        ("type", "limit"),
        ("type", 0),
        ("tif", "DAY"),
        ("tif", "gtc"),
        ("tif", 1),
        ("symbol", "TE ST"),
        ("symbol", ["TEST"]),
    ],
)
def test_bad_enumerations(field: str, value: Any) -> None:
    assert reason_of(with_(**{field: value})) == "BAD_ORDER"


def test_market_with_bad_tif_is_bad_order() -> None:
    assert reason_of(with_(type="MARKET", tif="DAY")) == "BAD_ORDER"


def test_ids_at_most_64_utf8_bytes() -> None:
    assert reason_of(with_(order_id="x" * 64, user_id="y" * 64)) is None
    ev, _ = run(with_(order_id="x" * 65))
    assert (ev[0]["reason"], ev[0]["order_id"]) == ("BAD_ORDER", "x" * 65)
    assert reason_of(with_(user_id="é" * 33)) == "BAD_ORDER"  # 66 bytes
    assert reason_of(with_(user_id="é" * 32)) is None


@pytest.mark.parametrize(
    "changes",
    [
        {"order_id": ""},
        {"user_id": ""},
        {"order_id": 5},
        {"user_id": None},
        {"order_id": ...},
        {"user_id": ["u"]},
    ],
)
def test_unreadable_ids_are_dropped_not_answered(changes: dict[str, Any]) -> None:
    ev, dropped = run(with_(**changes))
    assert ev == [] and dropped == [(0, "order_id/user_id unreadable")]


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"   ",
        b"not json",
        b"{",
        b'{"action":"ADD"',
        b"[]",
        b"1",
        b'"x"',
        b"null",
        b'{"action":"ADD"} trailing',
        b'{"a":1,}',
        b"{'a':1}",
        b'{"a":01}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":"\x01"}',
        b'{"a":"\\x"}',
        b'{"a":"\\ud800"}',
        b'{"a":"\xff"}',
        b'{"a":"\xc0\xaf"}',
        b'{"a":"\xed\xa0\x80"}',
        b"\xef\xbb\xbf{}",
        b'{"a" 1}',
        b'{"a":1 "b":2}',
        b'{"a":tru}',
        b'{"a":-}',
        b'{"a":1.}',
        b'{"a":.5}',
        b'{"a":1e}',
        b'{"a":[1,]}',
        b'{"a":' + b"[" * 200 + b"]" * 200 + b"}",
        b'{"order_id":"o","user_id":"u","symbol":"TEST"',
        b"\x00",
    ],
)
def test_unreadable_lines_are_dropped(record: bytes) -> None:
    ev, dropped = run(record)
    assert ev == [] and dropped == [(0, "unreadable JSON")]


def test_unreadable_line_does_not_stop_the_batch() -> None:
    eng = Engine(clock=lambda: 0)
    res = eng.process([b"garbage", with_(), b"\x00\x01", with_(order_id="o2")])
    assert len(res.statuses) == 2 and [d[0] for d in res.dropped] == [0, 2]


def test_record_with_nul_bytes_inside_uses_length_path() -> None:
    eng = Engine(clock=lambda: 0)
    res = eng.process([with_() + b"\x00" + with_(order_id="o2"), with_(order_id="o3")])
    assert res.dropped == [(0, "unreadable JSON")]
    assert [json.loads(s)["order_id"] for s in res.statuses] == ["o3"]


def test_unknown_fields_are_ignored_even_nested() -> None:
    rec = with_(extra={"deep": [1, 2.5, {"x": None}], "s": "\\u00e9"}, client_order_id=12, side="SELL")
    assert reason_of(rec) is None


def test_whitespace_and_key_escapes_are_fine() -> None:
    rec = (
        b' \n{ "\\u0061ction" : "ADD" ,"symbol":"TEST","order_id":"o1","user_id":"u1",\r\n"is_buy":true,'
        b'"price":100,"quantity":10 }\t'
    )
    assert reason_of(rec) is None


def test_repeated_key_last_one_wins() -> None:
    rec = (
        b'{"action":"ADD","symbol":"TEST","order_id":"o1","user_id":"u1","is_buy":true,"price":"x","price":7,'
        b'"quantity":1}'
    )
    ev, _ = run(rec)
    assert (ev[0]["status"], ev[0]["price"]) == ("ACCEPTED", 7)


def test_cancel_ignores_other_fields() -> None:
    eng = Engine(clock=lambda: 0)
    eng.process([with_()])
    res = eng.process(
        [
            cmd(
                action="CANCEL",
                symbol="TEST",
                order_id="o1",
                user_id="u1",
                price="junk",
                quantity=-5,
                is_buy="x",
                type="NOPE",
                tif=3,
            )
        ]
    )
    assert json.loads(res.statuses[0])["status"] == "CANCELLED"


@pytest.mark.parametrize("field,value", [("price", 0), ("price", "1"), ("quantity", -1), ("quantity", 1.5)])
def test_replace_bad_numbers(field: str, value: Any) -> None:
    eng = Engine(clock=lambda: 0)
    eng.process([with_()])
    res = eng.process([cmd(action="REPLACE", symbol="TEST", order_id="o1", user_id="u1", **{field: value})])
    assert json.loads(res.statuses[0])["reason"] == "BAD_ORDER"
    assert eng.depth("TEST") == {"b": [[100, 10]], "a": []}


def test_bad_order_status_fields() -> None:
    ev, _ = run(with_(quantity=0, ts=42))
    assert ev == [
        {
            "e": "order",
            "user_id": "u1",
            "order_id": "o1",
            "s": "TEST",
            "status": "REJECTED",
            "reason": "BAD_ORDER",
            "filled": 0,
            "remaining": 0,
            "price": 100,
            "t": 42,
            "seq": 1,
        }
    ]


def test_random_garbage_never_crashes() -> None:
    import random

    rnd = random.Random(7)
    good = with_()
    eng = Engine(clock=lambda: 0)
    batch = []
    for _ in range(3000):
        b = bytearray(good)
        for _ in range(rnd.randint(1, 4)):
            op = rnd.random()
            pos = rnd.randrange(len(b) + 1)
            if op < 0.4 and b:
                del b[min(pos, len(b) - 1)]
            elif op < 0.8:
                b.insert(pos, rnd.randrange(256))
            else:
                b[pos:pos] = rnd.choice([b"\\u0000", b"9" * 30, b"{", b'"', b"e5", b"null"])
        batch.append(bytes(b))
    res = eng.process(batch)
    assert len(res.statuses) + len(res.dropped) >= len(batch) - 1
    for s in res.statuses:
        json.loads(s)
