"""Hostile REST input: each gets a clear 4xx JSON {code, message}, and nothing else moves.

"Nothing else" = no record reaches the orders stream, no key appears in the depth cache
(a symbol like `X}:*` must never become part of a key), the server keeps answering, and a
good order placed afterwards is queued as usual.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import orjson
import pytest

from tests.reliability.conftest import ADMIN_KEY
from tests.reliability.hostile import KEY_SHAPED_SYMBOLS, RestCase, rest_order_corpus, rest_replace_corpus

USER = {"X-Test-User": "rel-user-1"}
CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def assert_clear_error(resp, statuses: tuple[int, ...], what: str) -> dict:
    assert resp.status_code in statuses, f"{what}: HTTP {resp.status_code} {resp.text[:300]}"
    assert resp.headers.get("content-type", "").startswith("application/json"), f"{what}: {resp.headers}"
    body = orjson.loads(resp.content)
    assert isinstance(body, dict) and CODE_RE.match(str(body.get("code"))), f"{what}: {body}"
    assert isinstance(body.get("message"), str) and body["message"], f"{what}: {body}"
    return body


@pytest.fixture(scope="module")
def baseline(rel):
    """The state that hostile input must not change."""
    return {"orders": len(rel.stream_records(rel.settings.orders_stream)), "keys": rel.cache_keys()}


@pytest.mark.parametrize("case", rest_order_corpus(), ids=lambda c: c.name)
def test_hostile_order_bodies_get_a_clear_4xx(rel, baseline, case: RestCase):
    resp = rel.http.post("/orders", content=case.body, headers={**USER, "Content-Type": case.content_type})
    assert_clear_error(resp, case.statuses, case.name)


@pytest.mark.parametrize("case", rest_replace_corpus(), ids=lambda c: c.name)
def test_hostile_replace_bodies_get_a_clear_4xx(rel, baseline, case: RestCase):
    resp = rel.http.patch("/orders/ord_0000000000000001", content=case.body,
                          headers={**USER, "Content-Type": case.content_type})
    assert_clear_error(resp, case.statuses, case.name)


@pytest.mark.parametrize("symbol", KEY_SHAPED_SYMBOLS, ids=repr)
def test_key_shaped_symbols_never_reach_a_key(rel, baseline, symbol: str):
    q = quote(symbol, safe="")
    assert_clear_error(rel.http.delete(f"/orders/ord_1?symbol={q}", headers=USER), (400, 404), f"cancel {symbol!r}")
    if symbol:  # an empty path segment is another route
        resp = rel.http.get(f"/depth/{q}")
        assert_clear_error(resp, (400, 403, 404), f"depth {symbol!r}")
    assert_clear_error(rel.http.get(f"/chart?symbol={q}&interval=1m"), (400, 404), f"chart {symbol!r}")
    assert_clear_error(rel.http.post("/admin/symbols", content=orjson.dumps({"symbol": symbol}),
                                     headers={"X-Admin-Key": ADMIN_KEY}), (400,), f"admin add {symbol!r}")
    assert_clear_error(rel.http.delete(f"/admin/symbols?symbol={q}", headers={"X-Admin-Key": ADMIN_KEY}),
                       (400, 404), f"admin remove {symbol!r}")


@pytest.mark.parametrize("order_id", ["x" * 65, "ord\u202e1", "../../admin", "a b", "주문", "%00", "{TEST}"])
def test_hostile_order_ids_on_cancel_and_replace(rel, baseline, order_id: str):
    q = quote(order_id, safe="")
    assert_clear_error(rel.http.delete(f"/orders/{q}?symbol=TEST", headers=USER), (400,), f"cancel id {order_id!r}")
    assert_clear_error(rel.http.patch(f"/orders/{q}", json={"symbol": "TEST", "quantity": 1}, headers=USER),
                       (400,), f"replace id {order_id!r}")


@pytest.mark.parametrize(
    "params",
    ["symbol=TEST&interval=7m", "symbol=TEST&limit=-1", "symbol=TEST&limit=abc",
     "symbol=TEST&limit=100000", "symbol=TEST&limit=1e3", "symbol=TEST&limit=99999999999999999999999", "",
     "symbol=TEST&interval=1m%00"],
)
def test_hostile_chart_parameters(rel, baseline, params: str):
    assert_clear_error(rel.http.get(f"/chart?{params}"), (400,), f"chart {params}")


@pytest.mark.parametrize(
    "headers, statuses",
    [
        ({}, (401,)),
        ({"X-Test-User": ""}, (400, 401)),
        ({"X-Test-User": "a b"}, (400,)),
        ({"X-Test-User": "u" * 65}, (400,)),
        ({"X-Test-User": "u}:*"}, (400,)),
        ({"X-Test-User": b"\xc3\xa9t\xc3\xa9"}, (400,)),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, (401,)),
        ({"Authorization": "Bearer"}, (401,)),
        ({"Authorization": "Bearer " + "x" * 9000}, (401,)),
    ],
    ids=["none", "empty test user", "space", "65 chars", "key-shaped", "utf-8 bytes", "basic auth", "bearer empty",
         "bearer 9000"],
)
def test_bad_credentials_are_refused(rel, baseline, headers, statuses):
    resp = rel.http.post("/orders", content=orjson.dumps({"symbol": "TEST", "side": "BUY", "price": 1, "quantity": 1}),
                         headers={"Content-Type": "application/json", **headers})
    assert_clear_error(resp, statuses, f"credentials {headers}")


def test_admin_routes_refuse_non_admins(rel, baseline):
    for headers in ({}, USER, {"X-Admin-Key": "wrong"}, {"X-Admin-Key": ADMIN_KEY + "x"}, {"X-Admin-Key": ADMIN_KEY[:-1]}):
        assert_clear_error(rel.http.get("/admin/symbols", headers=headers), (401, 403), f"admin list {headers}")
        assert_clear_error(rel.http.post("/admin/symbols", json={"symbol": "EVIL"}, headers=headers), (401, 403),
                           f"admin add {headers}")
    assert not rel.services.symbols.is_active("EVIL")


def test_unknown_symbol_and_wrong_method_are_clear(rel, baseline):
    body = assert_clear_error(rel.http.post("/orders", json={"symbol": "NOPE", "side": "BUY", "price": 1, "quantity": 1},
                                            headers=USER), (404,), "unknown symbol")
    assert body["code"] == "UNKNOWN_SYMBOL"
    assert rel.http.put("/orders", json={}).status_code < 500
    assert rel.http.get("/no/such/route").status_code < 500


def test_nothing_else_was_disturbed_and_a_good_order_still_flows(rel, baseline):
    """Runs last in this module: after the whole corpus the stream and the cache are as before."""
    assert len(rel.stream_records(rel.settings.orders_stream)) == baseline["orders"], "hostile input reached Kinesis"
    new_keys = rel.cache_keys() - baseline["keys"]
    assert not new_keys, f"hostile input created cache keys: {sorted(new_keys)[:10]}"
    assert rel.http.get("/health").status_code in (200, 503)
    resp = rel.http.post("/orders", json={"symbol": "TEST", "side": "BUY", "price": 100, "quantity": 3}, headers=USER)
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "QUEUED"
    records = [orjson.loads(r) for r in rel.stream_records(rel.settings.orders_stream)]
    assert len(records) == baseline["orders"] + 1
    assert records[-1]["user_id"] == "rel-user-1" and records[-1]["symbol"] == "TEST"
