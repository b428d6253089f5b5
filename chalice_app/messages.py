"""Shapes of every record and message that crosses a process boundary (SPEC §2, §3, §6).

One module builds them so the router, engine service, Lambda handlers, streamer and
console agree byte for byte. The C engine writes fills and statuses itself; the
constants here name the same fields and codes for everyone else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

# Order command (SPEC §2)
ACTIONS = ("ADD", "CANCEL", "REPLACE")
ORDER_TYPES = ("LIMIT", "MARKET")
TIFS = ("GTC", "IOC", "FOK")
MAX_QTY = 10**12
MAX_PRICE = 10**12
MAX_ID_BYTES = 64

# Order status (SPEC §3): the names the C engine writes (engine_pkg/csrc/book.c ST_NAME / R_NAME;
# tests/engine_pkg/test_status_codes.py checks they agree).
STATUSES = ("ACCEPTED", "REJECTED", "PARTIALLY_FILLED", "FILLED", "CANCELLED", "REPLACED", "EXPIRED")
ACCEPTED, REJECTED, PARTIALLY_FILLED, FILLED, CANCELLED, REPLACED, EXPIRED = STATUSES
FINAL_STATUSES = (REJECTED, FILLED, CANCELLED, EXPIRED)
#: statuses after which an order is still open on the book
OPEN_STATUSES = tuple(s for s in STATUSES if s not in FINAL_STATUSES)
#: bytes that an engine status event holds iff it is a rejection (a fast `in` test on the raw event)
REJECTED_NEEDLE = b'"status":"' + REJECTED.encode() + b'"'
REASONS = (
    "UNKNOWN_SYMBOL",
    "BAD_ORDER",
    "DUPLICATE_ORDER_ID",
    "UNKNOWN_ORDER",
    "NOT_OWNER",
    "NO_LIQUIDITY",
    "SELF_TRADE",
    "FOK_UNFILLABLE",
)

# Server -> client WebSocket events (SPEC §6)
E_DEPTH = "d"
E_TICKER = "t"
E_CANDLE = "candle"
E_CANDLE_CLOSE = "candle_close"
E_ORDER = "order"
E_FILL = "fill"
E_ERROR = "error"
E_PONG = "pong"


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def order_command(
    action: str,
    symbol: str,
    order_id: str,
    user_id: str,
    *,
    ts: int,
    is_buy: bool | None = None,
    price: int | None = None,
    quantity: int | None = None,
    type: str | None = None,
    tif: str | None = None,
) -> dict[str, Any]:
    """An order command record for `supernoba-orders`; absent optional fields are left out."""
    cmd: dict[str, Any] = {"action": action, "symbol": symbol, "order_id": order_id, "user_id": user_id}
    for name, value in (("is_buy", is_buy), ("price", price), ("quantity", quantity), ("type", type), ("tif", tif)):
        if value is not None:
            cmd[name] = value
    cmd["ts"] = ts
    return cmd


#: levels a side in a depth message (SPEC §4: `"b":[[p,q]…≤10]`)
DEPTH_LEVELS = 10


def depth_message(symbol: str, t: int, u: int, bids: Sequence[Sequence[int]], asks: Sequence[Sequence[int]]) -> dict:
    """At most DEPTH_LEVELS levels a side, whatever the cache held."""
    return {"e": E_DEPTH, "s": symbol, "t": t, "u": u, "b": [list(x) for x in bids[:DEPTH_LEVELS]],
            "a": [list(x) for x in asks[:DEPTH_LEVELS]]}


def ticker_message(symbol: str, t: int, last: int | None, change_pct: float | None, prev_change_pct: float | None) -> dict:
    return {"e": E_TICKER, "s": symbol, "t": t, "p": last, "c": change_pct, "yc": prev_change_pct}


def candle_message(symbol: str, candle: Mapping[str, Any], *, closed: bool = False) -> dict:
    """`candle` / `candle_close` event: o h l c v t as strings, t = `YYYYMMDDHHMM` (SPEC §6)."""
    msg = {"e": E_CANDLE_CLOSE if closed else E_CANDLE, "s": symbol}
    for f in ("o", "h", "l", "c", "v", "t"):
        v = candle.get(f)
        msg[f] = v.decode() if isinstance(v, bytes) else str(v)
    return msg


def error_message(code: str, message: str) -> dict:
    return {"e": E_ERROR, "code": code, "message": message}
