"""Hypothesis strategies shared by the engine property tests: random order-command records.

`command()` draws one ADD / CANCEL / REPLACE command over a few symbols, users and order ids
(some with quotes, escapes and non-ASCII), with about 1 in 9 having one field missing or of a
wrong type; `junk=True` also draws unreadable records. `router_order=True` writes the record
as the router does (`router_json`: its key order, compact, UTF-8 kept — the JSON reader's
fast path); otherwise as plain `json.dumps`, ASCII-escaped or not.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

SYMBOLS = ["AAA", "BBB"]
USERS = ["u1", "u2", "u3", 'q"\\é']
IDS = [f"o{i}" for i in range(14)] + ["ü\n1"]
#: the router's key order (chalice_app.messages.order_command)
FIELDS = ["action", "symbol", "order_id", "user_id", "is_buy", "price", "quantity", "type", "tif", "ts"]
JUNK_VALUES = [0, -1, "x", 1.5, None, True, 10**13, 2**70, [], {"k": 1}, ""]
JUNK_RECORDS = [b"", b"{", b"[1]", b"nope", b'{"action":"ADD"}', b'{"a":NaN}']


def router_json(d: dict[str, Any]) -> bytes:
    """The router's shape (orjson: compact, UTF-8 kept); json.dumps also takes > 64-bit ints."""
    return json.dumps({k: d[k] for k in FIELDS if k in d}, separators=(",", ":"), ensure_ascii=False).encode()


@st.composite
def command(draw: st.DrawFn, *, junk: bool = False, router_order: bool = False) -> bytes:
    kind = draw(st.sampled_from(["ADD"] * 6 + ["CANCEL"] * 2 + ["REPLACE"] * 2 + (["JUNK"] if junk else [])))
    if kind == "JUNK":
        return draw(st.sampled_from(JUNK_RECORDS))
    d: dict[str, Any] = {
        "action": kind,
        "symbol": draw(st.sampled_from(SYMBOLS)),
        "order_id": draw(st.sampled_from(IDS)),
        "user_id": draw(st.sampled_from(USERS)),
    }
    if kind == "ADD":
        d["is_buy"] = draw(st.booleans())
        d["quantity"] = draw(st.integers(1, 20))
        typ = draw(st.sampled_from(["LIMIT", "LIMIT", "LIMIT", "MARKET", None]))
        if typ is not None:
            d["type"] = typ
        if typ != "MARKET" or draw(st.booleans()):
            d["price"] = draw(st.integers(95, 105))
        tif = draw(st.sampled_from([None, "GTC", "GTC", "IOC", "FOK"]))
        if tif is not None:
            d["tif"] = tif
    elif kind == "REPLACE":
        if draw(st.booleans()):
            d["price"] = draw(st.integers(95, 105))
        if draw(st.booleans()):
            d["quantity"] = draw(st.integers(1, 25))
    if draw(st.integers(0, 2)) == 0:
        d["ts"] = draw(st.integers(0, 10**6))
    if draw(st.integers(0, 8)) == 0:  # corrupt one field
        f = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            d.pop(f, None)
        else:
            d[f] = draw(st.sampled_from(JUNK_VALUES))
    if router_order:
        return router_json(d)
    return json.dumps(d, ensure_ascii=draw(st.booleans())).encode()
