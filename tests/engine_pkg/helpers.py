"""Feed-then-assert helpers for the engine tests, in the style of Liquibook's test suite.

``Book`` wraps an ``Engine`` with a fixed clock and one symbol; ``add``/``cancel``/``replace``
send one command and return the decoded events it caused, and ``assert_depth`` checks the book
level by level.
"""

from __future__ import annotations

import json
from typing import Any

from engine_pkg import Engine

CLOCK = 1_700_000_000_000


def cmd(**fields: Any) -> bytes:
    """One JSON order command (fields with value ... are left out)."""
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


class Book:
    """One symbol's book driven through the public Engine API."""

    def __init__(self, symbol: str = "TEST", engine: Engine | None = None) -> None:
        self.symbol = symbol
        self.engine = engine or Engine(clock=lambda: CLOCK)
        self.last: list[dict[str, Any]] = []

    def send(self, *records: bytes) -> list[dict[str, Any]]:
        res = self.engine.process(list(records))
        assert len(res.events) == len(res.fills) + len(res.statuses)
        self.last = [json.loads(e) for e in res.events]
        return self.last

    def add(
        self, oid: str, user: str, side: str, price: int | None, qty: int, **extra: Any
    ) -> list[dict[str, Any]]:
        fields: dict[str, Any] = {
            "action": "ADD",
            "symbol": self.symbol,
            "order_id": oid,
            "user_id": user,
            "is_buy": side == "BUY",
            "quantity": qty,
        }
        if price is not None:
            fields["price"] = price
        fields.update(extra)
        return self.send(cmd(**fields))

    def buy(
        self, oid: str, price: int | None, qty: int, user: str = "alice", **extra: Any
    ) -> list[dict[str, Any]]:
        return self.add(oid, user, "BUY", price, qty, **extra)

    def sell(
        self, oid: str, price: int | None, qty: int, user: str = "bob", **extra: Any
    ) -> list[dict[str, Any]]:
        return self.add(oid, user, "SELL", price, qty, **extra)

    def cancel(self, oid: str, user: str, **extra: Any) -> list[dict[str, Any]]:
        return self.send(cmd(action="CANCEL", symbol=self.symbol, order_id=oid, user_id=user, **extra))

    def replace(
        self, oid: str, user: str, price: int | None = None, qty: int | None = None, **extra: Any
    ) -> list[dict[str, Any]]:
        fields: dict[str, Any] = {
            "action": "REPLACE",
            "symbol": self.symbol,
            "order_id": oid,
            "user_id": user,
        }
        if price is not None:
            fields["price"] = price
        if qty is not None:
            fields["quantity"] = qty
        fields.update(extra)
        return self.send(cmd(**fields))

    def depth(self, levels: int = 10) -> dict[str, list[list[int]]]:
        return self.engine.depth(self.symbol, levels)

    def assert_depth(self, bids: list[tuple[int, int]], asks: list[tuple[int, int]]) -> None:
        d = self.depth(50)
        assert d["b"] == [list(x) for x in bids], f"bids {d['b']} != {bids}"
        assert d["a"] == [list(x) for x in asks], f"asks {d['a']} != {asks}"


def statuses(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """(order_id, status, reason) of each status event."""
    return [(e["order_id"], e["status"], e["reason"]) for e in events if e["e"] == "order"]


def fills(events: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    """(maker_order_id, taker_order_id, price, quantity) of each fill."""
    return [(e["maker_order_id"], e["taker_order_id"], e["p"], e["q"]) for e in events if e["e"] == "fill"]


def kinds(events: list[dict[str, Any]]) -> list[str]:
    """A compact trace: 'fill' or the status name, in order."""
    return ["fill" if e["e"] == "fill" else e["status"] for e in events]
