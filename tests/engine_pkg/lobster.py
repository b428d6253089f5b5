"""Drive the engine with LOBSTER's real NASDAQ order flow (AAPL sample in shared/data/lobster).

Each LOBSTER message becomes an order command: 1 (new limit order) an ADD, 3 (delete) a
CANCEL, 4 (execution of a visible order) an IOC taker of the other side at that price and
size, 5 (hidden execution) nothing.  The sample only records events inside the visible 10
levels, so before each message the book is re-seeded to the previous orderbook row with
synthetic "seed" orders (orders placed before the sample, or levels coming back into view).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from engine_pkg import Engine

SYMBOL = "AAPL"
REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "lobster"
MESSAGES = "AAPL_2012-06-21_34200000_57600000_message_10.head.csv"
BOOKS = "AAPL_2012-06-21_34200000_57600000_orderbook_10.head.csv"


def load() -> tuple[list[list[str]], list[list[int]]]:
    with open(DATA / MESSAGES, newline="") as fh:
        msgs = list(csv.reader(fh))
    with open(DATA / BOOKS, newline="") as fh:
        rows = [[int(x) for x in r] for r in csv.reader(fh)]
    return msgs, rows


def row_levels(row: list[int]) -> tuple[list[list[int]], list[list[int]]]:
    """(bids high->low, asks low->high) of one orderbook row; empty levels are left out."""
    asks = [[row[i], row[i + 1]] for i in range(0, len(row), 4) if row[i + 1] > 0 and row[i] < 9_999_999_999]
    bids = [[row[i + 2], row[i + 3]] for i in range(0, len(row), 4) if row[i + 3] > 0 and row[i + 2] > 0]
    return bids, asks


@dataclass
class LobsterReplay:
    engine: Engine = field(default_factory=lambda: Engine(clock=lambda: 0))
    n: int = 0
    remaining: dict[str, int] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)
    at: dict[tuple[bool, int], list[str]] = field(default_factory=lambda: defaultdict(list))  # level -> ids
    owner: dict[str, str] = field(default_factory=dict)
    fills: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def send(self, **cmd: object) -> list[dict]:
        cmd.setdefault("symbol", SYMBOL)
        events = [json.loads(e) for e in self.engine.process([json.dumps(cmd).encode()]).events]
        for e in events:
            if e["e"] == "fill":
                self.fills.append(e)
            elif e["status"] == "REJECTED":
                self.rejected.append(e)
            else:
                self.remaining[e["order_id"]] = e["remaining"]
                self.filled[e["order_id"]] = e["filled"]
        return events

    def level(self, is_buy: bool, price: int) -> int:
        d = self.engine.depth(SYMBOL, 1000)["b" if is_buy else "a"]
        return next((q for p, q in d if p == price), 0)

    def add(self, oid: str, user: str, is_buy: bool, price: int, qty: int) -> None:
        self.at[(is_buy, price)].append(oid)
        self.owner[oid] = user
        self.send(action="ADD", order_id=oid, user_id=user, is_buy=is_buy, price=price, quantity=qty)

    def add_seed(self, is_buy: bool, price: int, qty: int) -> None:
        self.n += 1
        self.add(f"seed-{self.n}", "seed", is_buy, price, qty)

    def reduce(self, is_buy: bool, price: int, qty: int) -> None:
        """Take `qty` off a level (an unrecorded cancel): newest orders first."""
        ids = self.at[(is_buy, price)]
        while qty > 0 and ids:
            oid = ids[-1]
            rem = self.remaining.get(oid, 0)
            if rem <= qty:
                if rem:
                    self.send(action="CANCEL", order_id=oid, user_id=self.owner[oid])
                ids.pop()
                qty -= rem
            else:
                self.send(
                    action="REPLACE",
                    order_id=oid,
                    user_id=self.owner[oid],
                    quantity=self.filled[oid] + rem - qty,
                )
                qty = 0

    def reseed(self, row: list[int]) -> int:
        """Make the visible book equal `row`; returns the number of levels adjusted."""
        bids, asks = row_levels(row)
        changes = 0
        for is_buy, levels in ((True, bids), (False, asks)):
            want = dict((p, q) for p, q in levels)
            lo, hi = min(want), max(want)
            have = dict((p, q) for p, q in self.engine.depth(SYMBOL, 1000)["b" if is_buy else "a"])
            for p in set(want) | {p for p in have if lo <= p <= hi}:
                diff = want.get(p, 0) - have.get(p, 0)
                if diff > 0:
                    self.add_seed(is_buy, p, diff)
                elif diff < 0:
                    self.reduce(is_buy, p, -diff)
                changes += diff != 0
        return changes

    def apply(self, msg: list[str]) -> None:
        typ, oid, size, price, direction = int(msg[1]), f"L{msg[2]}", int(msg[3]), int(msg[4]), int(msg[5])
        is_buy = direction == 1
        if typ == 1:
            self.add(oid, f"u{oid}", is_buy, price, size)
        elif typ == 3:
            if oid in self.remaining and self.remaining[oid] > 0:
                self.send(action="CANCEL", order_id=oid, user_id=f"u{oid}")
            else:
                self.reduce(is_buy, price, size)
        elif typ == 4:
            self.n += 1
            self.send(
                action="ADD",
                order_id=f"x-{self.n}",
                user_id="taker",
                is_buy=not is_buy,
                price=price,
                quantity=size,
                tif="IOC",
            )
