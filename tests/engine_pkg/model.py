"""Pure-Python reference model of the matching engine (a test oracle, never used in production).

Written from SPEC sections 2, 3 and 3a for clarity, not speed: dicts of price -> FIFO list,
``json.loads`` with the strictness of the C reader.  ``Model.process`` returns the same event
bytes as ``Engine.process`` (compact JSON, keys in SPEC order, ``ensure_ascii=False``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MAXQ = 10**12
TS_LIMIT = 2**53
SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,15}")
INT64 = range(-(2**63), 2**63)


class Unreadable(Exception):
    """The line is not a JSON object the engine can read."""


def _refuse_constant(name: str) -> Any:
    raise Unreadable(name)


def _check_strings(v: Any, depth: int = 0) -> None:
    """Refuse lone surrogates anywhere (keys and values), as the C reader does."""
    if isinstance(v, str):
        v.encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate
    elif isinstance(v, dict):
        for k, x in v.items():
            k.encode("utf-8")
            _check_strings(x, depth + 1)
    elif isinstance(v, list):
        for x in v:
            _check_strings(x, depth + 1)


def parse(record: bytes) -> dict[str, Any] | None:
    """The command object, or None when the line is unreadable."""
    try:
        text = record.decode("utf-8")
        obj = json.loads(text, parse_constant=_refuse_constant)
        _check_strings(obj)
    except (UnicodeError, ValueError, Unreadable, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def is_int(v: Any) -> bool:
    return type(v) is int


def pos_int(v: Any) -> bool:
    return is_int(v) and 0 < v <= MAXQ


def id_ok(v: Any) -> bool:
    return isinstance(v, str) and 1 <= len(v.encode("utf-8")) <= 64


def dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass
class MOrder:
    order_id: str
    user_id: str
    is_buy: bool
    price: int
    rem: int
    filled: int = 0


@dataclass
class MBook:
    symbol: str
    seq: int = 0
    bids: dict[int, list[MOrder]] = field(default_factory=dict)
    asks: dict[int, list[MOrder]] = field(default_factory=dict)

    def side(self, is_buy: bool) -> dict[int, list[MOrder]]:
        return self.bids if is_buy else self.asks

    def best_prices(self, is_buy: bool) -> list[int]:
        """Prices of a side from best to worst."""
        return sorted(self.side(is_buy), reverse=is_buy)

    def depth(self, levels: int) -> dict[str, list[list[int]]]:
        def agg(is_buy: bool) -> list[list[int]]:
            side = self.side(is_buy)
            return [[p, sum(o.rem for o in side[p])] for p in self.best_prices(is_buy)[:levels]]

        return {"b": agg(True), "a": agg(False)}


@dataclass
class Batch:
    events: list[bytes]
    dropped: list[tuple[int, int]]  # (record index, 1 unreadable / 2 ids unreadable)
    touched: dict[str, int]


class Model:
    """Reference engine: same inputs, same output bytes as the C engine."""

    def __init__(self, active: set[str] | None = None) -> None:
        self.books: dict[str, MBook] = {}
        self.ids: dict[str, MOrder | None] = {}  # every validated ADD id -> open order or None
        self.where: dict[str, str] = {}  # open order id -> symbol
        self.active = active
        self.out: list[bytes] = []

    # -- events ------------------------------------------------------------------------
    def _status(
        self,
        user: str,
        oid: str,
        sym: str | None,
        status: str,
        reason: str | None,
        filled: int,
        remaining: int,
        price: int | None,
        t: int,
        seq: int | None,
    ) -> None:
        self.out.append(
            dumps(
                {
                    "e": "order",
                    "user_id": user,
                    "order_id": oid,
                    "s": sym,
                    "status": status,
                    "reason": reason,
                    "filled": filled,
                    "remaining": remaining,
                    "price": price,
                    "t": t,
                    "seq": seq,
                }
            )
        )

    def _order_status(self, b: MBook, o: MOrder, status: str, reason: str | None, t: int, seq: int) -> None:
        self._status(o.user_id, o.order_id, b.symbol, status, reason, o.filled, o.rem, o.price, t, seq)

    # -- processing --------------------------------------------------------------------
    def process(self, records: list[bytes], now: int = 0) -> Batch:
        self.out = []
        dropped: list[tuple[int, int]] = []
        touched: dict[str, int] = {}
        for i, rec in enumerate(records):
            cmd = parse(rec)
            if cmd is None:
                dropped.append((i, 1))
                continue
            why = self._run(cmd, now, touched)
            if why:
                dropped.append((i, why))
        for s in touched:
            touched[s] = self.books[s].seq
        return Batch(self.out, dropped, touched)

    def _run(self, c: dict[str, Any], now: int, touched: dict[str, int]) -> int:
        bad = False
        t = now
        ts = c.get("ts")
        if ts is not None:
            if is_int(ts) and 0 <= ts < TS_LIMIT:
                t = ts
            else:
                bad = True
        sv = c.get("symbol")
        book: MBook | None = None
        inactive = False
        if isinstance(sv, str) and SYMBOL_RE.fullmatch(sv):
            if self.active is None or sv in self.active:
                book = self.books.setdefault(sv, MBook(sv))
                book.seq += 1
                touched[sv] = 0
            else:
                inactive = True
        else:
            bad = True
        oid, uid = c.get("order_id"), c.get("user_id")
        if not (isinstance(oid, str) and oid and isinstance(uid, str) and uid):
            return 2
        if not id_ok(oid) or not id_ok(uid):
            bad = True
        action = c.get("action")
        price, qty = c.get("price"), c.get("quantity")
        market = False
        tif = "GTC"
        is_buy = False
        new_price: int | None = None
        new_qty: int | None = None
        if action == "ADD":
            typ = c.get("type")
            if typ == "MARKET":
                market = True
            elif typ not in (None, "LIMIT"):
                bad = True
            tif = c.get("tif") if c.get("tif") is not None else "GTC"
            if tif not in ("GTC", "IOC", "FOK"):
                bad = True
            if market and tif == "GTC":
                tif = "IOC"
            b = c.get("is_buy")
            if b is True or b is False:
                is_buy = b
            else:
                bad = True
            if not pos_int(qty):
                bad = True
            if not market and not pos_int(price):
                bad = True
        elif action == "CANCEL":
            pass
        elif action == "REPLACE":
            if price is not None:
                if pos_int(price):
                    new_price = price
                else:
                    bad = True
            if qty is not None:
                if pos_int(qty):
                    new_qty = qty
                else:
                    bad = True
            if new_price is None and new_qty is None:
                bad = True
        else:
            bad = True
        rprice = price if (is_int(price) and price in INT64 and not (action == "ADD" and market)) else None
        if bad or inactive:
            self._status(
                uid,
                oid,
                sv if isinstance(sv, str) else None,
                "REJECTED",
                "BAD_ORDER" if bad else "UNKNOWN_SYMBOL",
                0,
                0,
                rprice,
                t,
                book.seq if book else None,
            )
            return 0
        assert book is not None
        if action == "ADD":
            self._add(book, oid, uid, is_buy, price if not market else None, qty, tif, market, t)
        elif action == "CANCEL":
            self._cancel(book, oid, uid, rprice, t)
        else:
            self._replace(book, oid, uid, new_price, new_qty, rprice, t)
        return 0

    # -- matching ----------------------------------------------------------------------
    def _match(
        self,
        b: MBook,
        taker_id: str,
        taker_user: str,
        is_buy: bool,
        limit: int | None,
        rem: int,
        t: int,
        seq: int,
    ) -> tuple[int, int]:
        """Returns (rest, filled)."""
        opp = b.side(not is_buy)
        filled = 0
        for p in b.best_prices(not is_buy):
            if rem == 0:
                break
            if limit is not None and (p > limit if is_buy else p < limit):
                break
            level = opp[p]
            while level and rem:
                o = level[0]
                if o.user_id == taker_user:
                    level.pop(0)
                    o.rem = 0
                    self._order_status(b, o, "CANCELLED", "SELF_TRADE", t, seq)
                    self.ids[o.order_id] = None
                    continue
                q = min(o.rem, rem)
                b.seq += 1
                self.out.append(
                    dumps(
                        {
                            "e": "fill",
                            "s": b.symbol,
                            "trade_id": f"{b.symbol}-{b.seq:012d}",
                            "p": p,
                            "q": q,
                            "maker_order_id": o.order_id,
                            "maker_user_id": o.user_id,
                            "taker_order_id": taker_id,
                            "taker_user_id": taker_user,
                            "taker_side": "BUY" if is_buy else "SELL",
                            "t": t,
                            "seq": b.seq,
                        }
                    )
                )
                o.rem -= q
                o.filled += q
                rem -= q
                filled += q
                if o.rem == 0:
                    level.pop(0)
                    self._order_status(b, o, "FILLED", None, t, b.seq)
                    self.ids[o.order_id] = None
                else:
                    self._order_status(b, o, "PARTIALLY_FILLED", None, t, b.seq)
            if not level:
                del opp[p]
        return rem, filled

    def _fok_ok(self, b: MBook, user: str, is_buy: bool, limit: int | None, need: int) -> bool:
        opp = b.side(not is_buy)
        for p in b.best_prices(not is_buy):
            if limit is not None and (p > limit if is_buy else p < limit):
                return False
            need -= sum(o.rem for o in opp[p] if o.user_id != user)
            if need <= 0:
                return True
        return False

    def _add(
        self,
        b: MBook,
        oid: str,
        uid: str,
        is_buy: bool,
        price: int | None,
        qty: int,
        tif: str,
        market: bool,
        t: int,
    ) -> None:
        seq = b.seq
        if oid in self.ids:
            self._status(uid, oid, b.symbol, "REJECTED", "DUPLICATE_ORDER_ID", 0, 0, price, t, seq)
            return
        self.ids[oid] = None
        if market and not b.side(not is_buy):
            self._status(uid, oid, b.symbol, "REJECTED", "NO_LIQUIDITY", 0, 0, None, t, seq)
            return
        if tif == "FOK" and not self._fok_ok(b, uid, is_buy, price, qty):
            self._status(uid, oid, b.symbol, "REJECTED", "FOK_UNFILLABLE", 0, 0, price, t, seq)
            return
        self._status(uid, oid, b.symbol, "ACCEPTED", None, 0, qty, price, t, seq)
        rem, filled = self._match(b, oid, uid, is_buy, price, qty, t, seq)
        if rem == 0:
            self._status(uid, oid, b.symbol, "FILLED", None, filled, 0, price, t, seq)
        elif market or tif != "GTC":
            self._status(uid, oid, b.symbol, "EXPIRED", None, filled, 0, price, t, seq)
        else:
            assert price is not None
            o = MOrder(oid, uid, is_buy, price, rem, filled)
            b.side(is_buy).setdefault(price, []).append(o)
            self.ids[oid] = o
            self.where[oid] = b.symbol
            if filled:
                self._status(uid, oid, b.symbol, "PARTIALLY_FILLED", None, filled, rem, price, t, seq)

    def _find_own(self, b: MBook, oid: str, uid: str, rprice: int | None, t: int) -> MOrder | None:
        o = self.ids.get(oid)
        if o is None or self.where.get(oid) != b.symbol:
            self._status(uid, oid, b.symbol, "REJECTED", "UNKNOWN_ORDER", 0, 0, rprice, t, b.seq)
            return None
        if o.user_id != uid:
            self._status(uid, oid, b.symbol, "REJECTED", "NOT_OWNER", 0, 0, rprice, t, b.seq)
            return None
        return o

    def _unlink(self, b: MBook, o: MOrder) -> None:
        side = b.side(o.is_buy)
        side[o.price].remove(o)
        if not side[o.price]:
            del side[o.price]

    def _cancel(self, b: MBook, oid: str, uid: str, rprice: int | None, t: int) -> None:
        o = self._find_own(b, oid, uid, rprice, t)
        if o is None:
            return
        self._unlink(b, o)
        o.rem = 0
        self._order_status(b, o, "CANCELLED", None, t, b.seq)
        self.ids[oid] = None

    def _replace(
        self,
        b: MBook,
        oid: str,
        uid: str,
        new_price: int | None,
        new_qty: int | None,
        rprice: int | None,
        t: int,
    ) -> None:
        seq = b.seq
        o = self._find_own(b, oid, uid, rprice, t)
        if o is None:
            return
        total = o.filled + o.rem
        np = o.price if new_price is None else new_price
        nq = total if new_qty is None else new_qty
        if nq <= o.filled:
            self._unlink(b, o)
            o.rem = 0
            self._order_status(b, o, "CANCELLED", None, t, seq)
            self.ids[oid] = None
            return
        nrem = nq - o.filled
        if np == o.price and nq <= total:
            o.rem = nrem
            self._order_status(b, o, "REPLACED", None, t, seq)
            return
        self._unlink(b, o)
        o.price, o.rem = np, nrem
        self._order_status(b, o, "REPLACED", None, t, seq)
        rem, filled = self._match(b, oid, uid, o.is_buy, np, nrem, t, seq)
        o.filled += filled
        o.rem = rem
        if rem == 0:
            self._order_status(b, o, "FILLED", None, t, seq)
            self.ids[oid] = None
            return
        b.side(o.is_buy).setdefault(np, []).append(o)
        if filled:
            self._order_status(b, o, "PARTIALLY_FILLED", None, t, seq)

    # -- reading -----------------------------------------------------------------------
    def depth(self, symbol: str, levels: int = 10) -> dict[str, list[list[int]]]:
        b = self.books.get(symbol)
        return b.depth(levels) if b else {"b": [], "a": []}

    def open_orders(self) -> int:
        return sum(len(lv) for b in self.books.values() for side in (b.bids, b.asks) for lv in side.values())
