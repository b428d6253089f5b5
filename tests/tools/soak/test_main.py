"""The soak's anchor orders: one resting order per symbol that every books check compares."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tools.soak.__main__ import ANCHOR_USER, place_anchors
from tools.soak.stack import StackError


def _exchange(refuse: bool = False):
    """A stand-in REST API: records the orders; a depth shows an order from its second read on."""
    orders: list[tuple[str, dict]] = []
    reads: dict[str, int] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/admin/symbols":
            return httpx.Response(201, json={})
        if path == "/orders":
            if refuse:
                return httpx.Response(400, json={"code": "BAD_ORDER", "message": "no"})
            orders.append((request.headers["X-Test-User"], orjson.loads(request.content)))
            return httpx.Response(202, json={"order_id": f"id{len(orders)}"})
        sym = path.rsplit("/", 1)[1]
        reads[sym] = reads.get(sym, 0) + 1
        bids = [[o["price"], o["quantity"]] for _, o in orders if o["symbol"] == sym and reads[sym] > 1]
        return httpx.Response(200, json={"e": "d", "s": sym, "u": 1, "b": bids, "a": []})

    return orders, httpx.Client(base_url="http://rest", transport=httpx.MockTransport(handle))


def test_place_anchors_rests_one_order_per_symbol_below_every_taker_and_waits_for_its_depth():
    orders, http = _exchange()
    ids = place_anchors(http, ("TEST", "SOAK2"), 5000, "key")
    assert ids == ["id1", "id2"]
    assert [(u, o["symbol"], o["side"], o["price"], o["quantity"], o["tif"]) for u, o in orders] == [
        (ANCHOR_USER, "TEST", "BUY", 5000, 1, "GTC"), (ANCHOR_USER, "SOAK2", "BUY", 5000, 1, "GTC")]


def test_a_refused_anchor_stops_the_soak():
    _, http = _exchange(refuse=True)
    with pytest.raises(StackError, match="anchor order on TEST was refused"):
        place_anchors(http, ("TEST",), 5000, "key")
