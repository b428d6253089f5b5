"""chalice_app.messages.STATUSES / REASONS are the names the C engine writes (book.c ST_NAME /
R_NAME): commands that cause every status and every reason are driven through Engine.process,
and the statuses and reasons seen must be exactly the Python tuples."""

from __future__ import annotations

import json

from chalice_app import messages
from engine_pkg import Engine
from tests.engine_pkg.helpers import CLOCK, cmd


def _add(oid: str, user: str, side: str, price: int | None, qty: int, symbol: str = "TEST", **extra: object) -> bytes:
    fields: dict[str, object] = {"action": "ADD", "symbol": symbol, "order_id": oid, "user_id": user,
                                 "is_buy": side == "BUY", "quantity": qty, **extra}
    if price is not None:
        fields["price"] = price
    return cmd(**fields)


SCENARIO = [
    _add("a1", "alice", "BUY", 100, 5),  # ACCEPTED
    _add("x1", "alice", "BUY", 100, 5, symbol="NOPE"),  # REJECTED UNKNOWN_SYMBOL
    _add("b1", "alice", "BUY", 100, 0),  # REJECTED BAD_ORDER
    _add("a1", "alice", "BUY", 100, 5),  # REJECTED DUPLICATE_ORDER_ID
    cmd(action="CANCEL", symbol="TEST", order_id="ghost", user_id="alice"),  # UNKNOWN_ORDER
    cmd(action="CANCEL", symbol="TEST", order_id="a1", user_id="bob"),  # NOT_OWNER
    _add("m1", "bob", "BUY", None, 5, type="MARKET"),  # NO_LIQUIDITY (no asks)
    _add("s1", "alice", "SELL", 100, 1),  # SELF_TRADE (crosses alice's own bid)
    _add("r1", "carol", "BUY", 90, 5),
    cmd(action="REPLACE", symbol="TEST", order_id="r1", user_id="carol", price=91, quantity=5),  # REPLACED
    _add("f1", "dave", "SELL", 91, 10, tif="FOK"),  # FOK_UNFILLABLE (5 at 91)
    _add("p1", "erin", "SELL", 91, 2),  # FILLED (taker) + PARTIALLY_FILLED (r1)
    _add("i1", "erin", "SELL", 91, 10, tif="IOC"),  # EXPIRED (remainder after 3)
    _add("c1", "frank", "BUY", 50, 1),
    cmd(action="CANCEL", symbol="TEST", order_id="c1", user_id="frank"),  # CANCELLED
]


def _statuses() -> list[dict]:
    engine = Engine(clock=lambda: CLOCK, active_symbols=["TEST"])
    res = engine.process(SCENARIO)
    return [json.loads(s) for s in res.statuses]


def test_every_status_the_engine_writes_is_in_messages_statuses_and_every_one_is_written() -> None:
    assert {s["status"] for s in _statuses()} == set(messages.STATUSES)
    assert len(set(messages.STATUSES)) == len(messages.STATUSES)


def test_every_reason_the_engine_writes_is_in_messages_reasons_and_every_one_is_written() -> None:
    assert {s["reason"] for s in _statuses() if s["reason"] is not None} == set(messages.REASONS)
    assert len(set(messages.REASONS)) == len(messages.REASONS)


def test_final_and_open_statuses_split_statuses() -> None:
    assert set(messages.FINAL_STATUSES) | set(messages.OPEN_STATUSES) == set(messages.STATUSES)
    assert not set(messages.FINAL_STATUSES) & set(messages.OPEN_STATUSES)


def test_rejected_needle_matches_the_engines_bytes() -> None:
    engine = Engine(clock=lambda: CLOCK, active_symbols=["TEST"])
    res = engine.process([_add("x1", "alice", "BUY", 100, 5, symbol="NOPE"), _add("a1", "alice", "BUY", 100, 5)])
    assert [messages.REJECTED_NEEDLE in s for s in res.statuses] == [True, False]
