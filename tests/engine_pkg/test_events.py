"""Event contents and order: seq, trade_id, t, field values, duplicates, symbols (SPEC 3, 3a)."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from engine_pkg import Engine
from tests.engine_pkg.helpers import CLOCK, Book, cmd, fills, kinds, statuses


def test_exact_bytes_of_a_fill_and_statuses() -> None:
    eng = Engine(clock=lambda: 0)
    res = eng.process(
        [
            cmd(
                action="ADD",
                symbol="TEST",
                order_id="m1",
                user_id="u1",
                is_buy=False,
                price=15000,
                quantity=30,
                ts=1733896438267,
            ),
            cmd(
                action="ADD",
                symbol="TEST",
                order_id="t1",
                user_id="u2",
                is_buy=True,
                price=15000,
                quantity=100,
                ts=1733896438268,
            ),
        ]
    )
    assert res.fills == [
        b'{"e":"fill","s":"TEST","trade_id":"TEST-000000000003","p":15000,"q":30,"maker_order_id":"m1",'
        b'"maker_user_id":"u1","taker_order_id":"t1","taker_user_id":"u2","taker_side":"BUY",'
        b'"t":1733896438268,"seq":3}'
    ]
    assert res.statuses[-1] == (
        b'{"e":"order","user_id":"u2","order_id":"t1","s":"TEST","status":"PARTIALLY_FILLED","reason":null,'
        b'"filled":30,"remaining":70,"price":15000,"t":1733896438268,"seq":2}'
    )
    assert res.status_users == ["u1", "u2", "u1", "u2"]
    assert res.touched == {"TEST": 3}
    assert [json.loads(e)["e"] for e in res.events] == ["order", "order", "fill", "order", "order"]


def test_seq_per_command_and_per_fill_with_maker_status_on_fill_seq() -> None:
    b = Book()
    assert b.sell("s1", 100, 5)[0]["seq"] == 1
    assert b.sell("s2", 100, 5)[0]["seq"] == 2
    ev = b.buy("b1", 100, 10)
    assert [(e["e"], e["seq"]) for e in ev] == [
        ("order", 3),
        ("fill", 4),
        ("order", 4),
        ("fill", 5),
        ("order", 5),
        ("order", 3),
    ]
    assert [e["trade_id"] for e in ev if e["e"] == "fill"] == ["TEST-000000000004", "TEST-000000000005"]
    assert b.engine.last_seq("TEST") == 5


def test_rejected_commands_take_a_seq() -> None:
    b = Book()
    assert b.cancel("x", "u")[0]["seq"] == 1
    assert b.buy("b1", 0, 5)[0]["seq"] == 2  # BAD_ORDER
    assert b.buy("b2", 100, 5)[0]["seq"] == 3


def test_seq_counters_are_per_symbol() -> None:
    eng = Engine(clock=lambda: 0)
    a, c = Book("AAA", eng), Book("BBB", eng)
    a.buy("a1", 1, 1)
    a.buy("a2", 1, 1)
    assert c.buy("c1", 1, 1)[0]["seq"] == 1
    assert eng.symbols() == ["AAA", "BBB"]
    assert eng.last_seq("AAA") == 2 and eng.last_seq("BBB") == 1 and eng.last_seq("CCC") is None


def test_command_with_unreadable_ids_still_takes_a_seq() -> None:
    b = Book()
    res = b.engine.process(
        [cmd(action="ADD", symbol="TEST", order_id="", user_id="u", is_buy=True, price=1, quantity=1)]
    )
    assert (
        res.events == []
        and res.touched == {"TEST": 1}
        and res.dropped == [(0, "order_id/user_id unreadable")]
    )
    assert b.buy("b1", 1, 1)[0]["seq"] == 2
    assert b.engine.dropped_total == 1


def test_invalid_symbol_status_has_null_seq_and_echoes_string_symbol() -> None:
    eng = Engine(clock=lambda: 0)
    res = eng.process(
        [
            cmd(action="ADD", symbol="test", order_id="o1", user_id="u", is_buy=True, price=1, quantity=1),
            cmd(action="ADD", symbol=7, order_id="o2", user_id="u", is_buy=True, price=1, quantity=1),
            cmd(action="ADD", order_id="o3", user_id="u", is_buy=True, price=1, quantity=1),
        ]
    )
    ev = [json.loads(e) for e in res.statuses]
    assert [(e["s"], e["status"], e["reason"], e["seq"]) for e in ev] == [
        ("test", "REJECTED", "BAD_ORDER", None),
        (None, "REJECTED", "BAD_ORDER", None),
        (None, "REJECTED", "BAD_ORDER", None),
    ]
    assert res.touched == {} and eng.symbols() == []


def test_symbol_regex_must_match_in_full() -> None:
    eng = Engine(clock=lambda: 0)
    good = ["A", "0", "BTC-USD", "A.B_C-D", "ABCDEFGHIJKLMNOP"]
    bad = ["", "-A", ".A", "a", "ABCDEFGHIJKLMNOPQ", "A B", "A\n", "\nA", "AÅ", "A/B"]
    for s in good + bad:
        ev = json.loads(eng.process([cmd(action="CANCEL", symbol=s, order_id="x", user_id="u")]).statuses[0])
        assert (ev["reason"] == "BAD_ORDER") == (s in bad), s


def test_unknown_symbol_when_active_symbols_are_set() -> None:
    eng = Engine(clock=lambda: 0, active_symbols=["AAA"])
    res = eng.process(
        [
            cmd(action="ADD", symbol="BBB", order_id="o1", user_id="u", is_buy=True, price=5, quantity=1),
            cmd(action="ADD", symbol="AAA", order_id="o2", user_id="u", is_buy=True, price=5, quantity=1),
        ]
    )
    ev = [json.loads(e) for e in res.statuses]
    assert (ev[0]["status"], ev[0]["reason"], ev[0]["seq"], ev[0]["s"], ev[0]["price"]) == (
        "REJECTED",
        "UNKNOWN_SYMBOL",
        None,
        "BBB",
        5,
    )
    assert ev[1]["status"] == "ACCEPTED"
    eng.set_active_symbols(None)
    assert (
        json.loads(
            eng.process(
                [
                    cmd(
                        action="ADD",
                        symbol="BBB",
                        order_id="o1",
                        user_id="u",
                        is_buy=True,
                        price=5,
                        quantity=1,
                    )
                ]
            ).statuses[0]
        )["status"]
        == "ACCEPTED"
    )


def test_t_is_the_commands_ts_else_the_clock() -> None:
    b = Book()
    assert b.buy("b1", 100, 1, ts=0)[0]["t"] == 0
    assert b.buy("b2", 100, 1)[0]["t"] == CLOCK
    assert b.buy("b3", 100, 1, ts=2**53 - 1)[0]["t"] == 2**53 - 1
    assert b.buy("b4", 100, 1, ts=None)[0]["t"] == CLOCK


def test_bad_ts_is_bad_order_stamped_with_clock() -> None:
    b = Book()
    for i, ts in enumerate([-1, 2**53, 1.5, "5", True, 10**30]):
        ev = b.buy(f"b{i}", 100, 1, ts=ts)
        assert (ev[0]["reason"], ev[0]["t"]) == ("BAD_ORDER", CLOCK), ts


def test_fills_carry_the_taker_commands_t() -> None:
    b = Book()
    b.sell("s1", 100, 1, ts=5)
    ev = b.buy("b1", 100, 1, ts=9)
    assert {e["t"] for e in ev} == {9}


def test_duplicate_order_id_is_rejected_never_applied_twice() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    ev = b.buy("b1", 101, 5, user="other")
    assert statuses(ev) == [("b1", "REJECTED", "DUPLICATE_ORDER_ID")]
    assert ev[0]["user_id"] == "other" and ev[0]["price"] == 101
    b.assert_depth(bids=[(100, 10)], asks=[])


def test_duplicate_order_id_across_symbols_and_after_close() -> None:
    eng = Engine(clock=lambda: 0)
    a, c = Book("AAA", eng), Book("BBB", eng)
    a.buy("x", 1, 1)
    assert statuses(c.buy("x", 1, 1)) == [("x", "REJECTED", "DUPLICATE_ORDER_ID")]
    a.cancel("x", "alice")
    assert statuses(a.buy("x", 1, 1)) == [("x", "REJECTED", "DUPLICATE_ORDER_ID")]


@pytest.mark.parametrize("n", range(1, 65))
def test_ids_of_every_length_are_copied_and_compared_exactly(n: int) -> None:
    """Ids of 1..64 bytes cross every size class of the C copy and compare (the router's are 30)."""
    b = Book()
    maker, twin = "m" * (n - 1) + "1", "m" * (n - 1) + "2"  # differ in the last byte only
    mid = "m" * (n // 2) + "x" + "m" * (n - n // 2 - 1)  # differs from maker in the middle
    user = ("u" * n)[:n]
    assert statuses(b.buy(maker, 100, 10, user=user)) == [(maker, "ACCEPTED", None)]
    assert statuses(b.buy(maker, 100, 1)) == [(maker, "REJECTED", "DUPLICATE_ORDER_ID")]
    b.buy(twin, 99, 1, user=user)
    if mid != maker:
        assert statuses(b.cancel(mid, user)) == [(mid, "REJECTED", "UNKNOWN_ORDER")]
    taker = "t" * n
    ev = b.sell(taker, 100, 4)
    assert fills(ev) == [(maker, taker, 100, 4)]
    assert [e["maker_user_id"] for e in ev if e["e"] == "fill"] == [user]
    assert statuses(b.cancel(maker, user)) == [(maker, "CANCELLED", None)]
    b.assert_depth(bids=[(99, 1)], asks=[])


#: Pairs of distinct ids with the same 32-bit hash under book.c's hash_bytes (found by a birthday
#: search), sharing their first 20 / 36 bytes: only the byte compare tells them apart.
COLLIDING_IDS = [
    ("ord_000000000000000091RSARFRK2", "ord_0000000000000000ZVKYCTH8ES"),
    ("ord_00000000000000000000000000000000KN6KTJC0B6N0", "ord_0000000000000000000000000000000088NWQKNJYDP8"),
    ("ord_00000000000000000000000000000000683WG5TABXKA8XEZJHD8B1G7XQD6",
     "ord_00000000000000000000000000000000QM2F8H6R59R1TZASDFNFA2GXP6KK"),
]


@pytest.mark.parametrize(("first", "second"), COLLIDING_IDS)
def test_ids_with_the_same_hash_are_told_apart_by_every_byte(first: str, second: str) -> None:
    b = Book()
    assert statuses(b.buy(first, 100, 1)) == [(first, "ACCEPTED", None)]
    assert statuses(b.buy(second, 99, 1)) == [(second, "ACCEPTED", None)]
    assert statuses(b.cancel(second, "alice")) == [(second, "CANCELLED", None)]
    b.assert_depth(bids=[(100, 1)], asks=[])


def test_ids_are_found_while_the_id_table_grows() -> None:
    """At 8,193 ids the table grows 4x incrementally (the old and new tables live together for
    ~2,000 ADDs, until ~10,240 ids); every id accepted so far must stay findable at every step
    of it, and after the old table is gone."""
    eng = Engine(clock=lambda: 0)
    b = Book("GROW", eng)
    cancelled: set[str] = set()
    for start in range(0, 11000, 50):
        b.send(*[cmd(action="ADD", symbol="GROW", order_id=f"id{i}", user_id="u", is_buy=True, price=1 + i % 50,
                     quantity=1) for i in range(start, start + 50)])
        old = f"id{(start * 7919) % (start + 50)}"  # an earlier id, anywhere in the table
        ev = b.send(cmd(action="ADD", symbol="GROW", order_id=old, user_id="v", is_buy=True, price=1, quantity=1),
                    cmd(action="CANCEL", symbol="GROW", order_id=old, user_id="u"))
        want = ("REJECTED", "UNKNOWN_ORDER") if old in cancelled else ("CANCELLED", None)
        assert statuses(ev) == [(old, "REJECTED", "DUPLICATE_ORDER_ID"), (old, *want)]
        cancelled.add(old)
    assert eng.open_orders() == 11000 - len(cancelled)


def test_ids_are_compared_after_unescaping() -> None:
    b = Book()
    b.send(
        b'{"action":"ADD","symbol":"TEST","order_id":"ab","user_id":"u","is_buy":true,"price":1,"quantity":1}'
    )
    ev = b.send(
        b'{"action":"ADD","symbol":"TEST","order_id":"\\u0061b","user_id":"u","is_buy":true,'
        b'"price":1,"quantity":1}'
    )
    assert statuses(ev) == [("ab", "REJECTED", "DUPLICATE_ORDER_ID")]


def test_bad_order_does_not_reserve_the_id_but_a_refused_fok_does() -> None:
    b = Book()
    assert statuses(b.buy("b1", 0, 1)) == [("b1", "REJECTED", "BAD_ORDER")]
    assert kinds(b.buy("b1", 1, 1)) == ["ACCEPTED"]
    assert statuses(b.sell("f1", 5, 1, tif="FOK")) == [("f1", "REJECTED", "FOK_UNFILLABLE")]
    assert statuses(b.sell("f1", 5, 1)) == [("f1", "REJECTED", "DUPLICATE_ORDER_ID")]
    assert statuses(b.sell("m1", None, 1, type="MARKET")) != []


def test_validation_comes_before_duplicate_check() -> None:
    b = Book()
    b.buy("b1", 100, 1)
    assert statuses(b.buy("b1", -5, 1)) == [("b1", "REJECTED", "BAD_ORDER")]


def test_rejected_status_fields_describe_the_command() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    ev = b.buy("b1", 77, 3)[0]
    assert (ev["filled"], ev["remaining"], ev["price"], ev["s"]) == (0, 0, 77, "TEST")
    ev = b.buy("b9", "7", 3)[0]
    assert (ev["reason"], ev["price"]) == ("BAD_ORDER", None)
    ev = b.buy("b8", -7, 3)[0]
    assert (ev["reason"], ev["price"]) == ("BAD_ORDER", -7)


def test_numbers_at_every_digit_count_are_written_exactly() -> None:
    """The event writer sizes each number before writing it: every digit-count boundary."""
    values = sorted(
        {1, 10**12} | {x for k in range(1, 13) for x in (10**k - 1, 10**k, 10**k + 1) if x <= 10**12}
    )
    eng = Engine(clock=lambda: 0)
    for i, v in enumerate(values):
        ts = (2**53 - 1) if i % 2 else v
        res = eng.process(
            [
                cmd(
                    action="ADD",
                    symbol="NUM",
                    order_id=f"s{i}",
                    user_id="u1",
                    is_buy=False,
                    price=v,
                    quantity=v,
                    ts=ts,
                ),
                cmd(
                    action="ADD",
                    symbol="NUM",
                    order_id=f"b{i}",
                    user_id="u2",
                    is_buy=True,
                    price=v,
                    quantity=v,
                    ts=ts,
                ),
            ]
        )
        (fill,) = [json.loads(f) for f in res.fills]
        assert (fill["p"], fill["q"], fill["t"]) == (v, v, ts)
        assert fill["trade_id"] == f"NUM-{fill['seq']:012d}"
        for st in map(json.loads, res.statuses):
            assert st["price"] == v and st["t"] == ts and st["filled"] + st["remaining"] in (v, 0, 2 * v)
    for p in (-(2**63), -1, 0, 2**63 - 1):
        (st,) = [
            json.loads(s)
            for s in eng.process(
                [cmd(action="ADD", symbol="NUM", order_id="x", user_id="u", is_buy=True, price=p, quantity=1)]
            ).statuses
        ]
        assert (st["reason"], st["price"]) == ("BAD_ORDER", p)


def test_ids_and_symbols_are_json_escaped_in_output() -> None:
    b = Book()
    weird = 'q"\\\n\t\x01é€😀'
    ev = b.buy(weird, 100, 1, user=weird)
    assert ev[0]["order_id"] == weird and ev[0]["user_id"] == weird
    res = b.engine.process([cmd(action="CANCEL", symbol="TEST", order_id=weird, user_id=weird)])
    assert res.status_users == [weird]
    raw = res.statuses[0]
    assert b'\\"' in raw and b"\\u0001" in raw and "é€😀".encode() in raw and b"\n" not in raw


def test_status_users_with_newline_free_fast_path() -> None:
    b = Book()
    res = b.engine.process(
        [
            cmd(
                action="ADD",
                symbol="TEST",
                order_id=f"o{i}",
                user_id=f"ü{i}",
                is_buy=True,
                price=1,
                quantity=1,
            )
            for i in range(3)
        ]
    )
    assert res.status_users == ["ü0", "ü1", "ü2"]


def test_events_interleave_across_symbols_in_global_order() -> None:
    eng = Engine(clock=lambda: 0)
    res = eng.process(
        [
            cmd(action="ADD", symbol="AAA", order_id="a1", user_id="u1", is_buy=False, price=1, quantity=1),
            cmd(action="ADD", symbol="BBB", order_id="b1", user_id="u1", is_buy=False, price=1, quantity=1),
            cmd(action="ADD", symbol="AAA", order_id="a2", user_id="u2", is_buy=True, price=1, quantity=1),
            cmd(action="ADD", symbol="BBB", order_id="b2", user_id="u2", is_buy=True, price=1, quantity=1),
        ]
    )
    trace = [(json.loads(e)["s"], json.loads(e)["e"]) for e in res.events]
    assert trace == [
        ("AAA", "order"),
        ("BBB", "order"),
        ("AAA", "order"),
        ("AAA", "fill"),
        ("AAA", "order"),
        ("AAA", "order"),
        ("BBB", "order"),
        ("BBB", "fill"),
        ("BBB", "order"),
        ("BBB", "order"),
    ]
    assert res.touched == {"AAA": 3, "BBB": 3}


def test_empty_batch() -> None:
    res = Engine().process([])
    assert (res.fills, res.statuses, res.events, res.touched, res.status_users) == ([], [], [], {}, [])



CROSS = [
    cmd(action="ADD", symbol="L", order_id="m", user_id="u1", is_buy=False, price=5, quantity=2),
    cmd(action="ADD", symbol="L", order_id="t", user_id="u2", is_buy=True, price=5, quantity=3),
]


def test_fills_and_statuses_are_real_lists_of_bytes() -> None:
    """SPEC section 10: "res.fills and res.statuses are lists of bytes" -- list type and methods
    too, not just list-like, though their items are split from the batch buffer only on use."""
    res = Engine(clock=lambda: CLOCK).process(CROSS)
    for events, n in ((res.fills, 1), (res.statuses, 4)):
        assert isinstance(events, list) and len(events) == n and bool(events)
        assert all(isinstance(e, bytes) and e.startswith(b'{"e":') for e in events)
        assert events.copy() == list(events) and type(events.copy()) is list
        events.append(b"x")
        assert len(events) == n + 1 and events[-1] == b"x" and events.pop() == b"x"
    assert isinstance(res.status_users, list) and res.status_users == ["u1", "u2", "u1", "u2"]


def test_unread_event_lists_behave_as_their_items_everywhere() -> None:
    """Operations implemented in C on the list storage (join, json, comparison or concatenation
    with the lazy list on either side) must see the events, not the still-empty storage."""
    def fresh():
        return Engine(clock=lambda: CLOCK).process(CROSS)

    expect = list(fresh().statuses)
    assert b"\n".join(fresh().statuses) == b"\n".join(expect)
    assert json.dumps(fresh().status_users) == json.dumps(list(fresh().status_users))
    assert fresh().statuses == expect and expect == fresh().statuses and not (expect != fresh().statuses)
    assert fresh().statuses == fresh().statuses
    assert fresh().statuses + fresh().fills == expect + list(fresh().fills)
    assert [b"a"] + fresh().statuses == [b"a", *expect]
    acc: list[bytes] = []
    acc += fresh().statuses
    assert acc == expect and tuple(fresh().statuses) == tuple(expect) and sorted(fresh().statuses) == sorted(expect)
    assert 2 * fresh().statuses == expect * 2 and list(reversed(fresh().statuses)) == expect[::-1]
    assert fresh().statuses[1:3] == expect[1:3] and expect[2] in fresh().statuses
    assert fresh().statuses.index(expect[1]) == 1 and fresh().statuses.count(expect[0]) == 1
    assert repr(fresh().statuses) == repr(expect)
    assert pickle.loads(pickle.dumps(fresh().statuses)) == expect and copy.deepcopy(fresh().fills) == list(fresh().fills)


def test_depth_of_more_levels_than_any_book_holds_is_the_whole_book() -> None:
    eng = Engine()
    eng.process([b'{"action":"ADD","symbol":"D","order_id":"o%d","user_id":"u","is_buy":true,"price":%d,"quantity":1}'
                 % (i, 100 + i) for i in range(3)])
    for levels in (3, 2**31, 2**64, 10**21):  # no buffer of 2 x levels, no overflow
        assert eng.depth("D", levels) == {"b": [[102, 1], [101, 1], [100, 1]], "a": []}
    assert eng.depth("D", 2) == {"b": [[102, 1], [101, 1]], "a": []}


def test_depth_of_unknown_symbol_is_empty() -> None:
    assert Engine().depth("NOPE") == {"b": [], "a": []}
    assert Engine().depth("bad symbol") == {"b": [], "a": []}


def test_default_clock_is_wall_time_ms() -> None:
    import time

    before = time.time() * 1000
    ev = json.loads(
        Engine().process([cmd(action="CANCEL", symbol="T", order_id="x", user_id="u")]).statuses[0]
    )
    assert before - 1000 <= ev["t"] <= time.time() * 1000 + 1000
