"""POST/DELETE/PATCH /orders: the order router against Valkey and kinesalite."""

from __future__ import annotations

import json
import threading
import time

import pytest

from chalice_app import keys
from chalice_app import orders as orders_mod
from chalice_app.models import MAX_BODY_BYTES
from chalice_app.orders import OrderIdGenerator
from tests.chalice_app.helpers import ADMIN_HEADERS, add_symbol, post_json, read_stream

U1 = {"X-Test-User": "u1"}


@pytest.fixture
def sym(client):
    add_symbol(client, "TEST")
    return "TEST"


def records(svc, n=0, timeout=2.0):
    return read_stream(svc.kinesis, svc.settings.orders_stream, n, timeout=timeout)


def test_limit_order_is_one_record_in_spec_format(client, svc, sym):
    resp = post_json(client, "/orders", {"symbol": "TEST", "side": "BUY", "price": 15000, "quantity": 100}, U1)
    assert resp.status_code == 202
    body = resp.json_body
    assert body["status"] == "QUEUED" and body["order_id"].startswith("ord_")
    [(pkey, rec)] = records(svc, 1)
    assert pkey == "TEST"
    assert list(rec) == ["action", "symbol", "order_id", "user_id", "is_buy", "price", "quantity", "type", "tif", "ts"]
    assert rec["action"] == "ADD" and rec["symbol"] == "TEST" and rec["order_id"] == body["order_id"]
    assert rec["user_id"] == "u1" and rec["is_buy"] is True and rec["price"] == 15000 and rec["quantity"] == 100
    assert rec["type"] == "LIMIT" and rec["tif"] == "GTC" and isinstance(rec["ts"], int)



def test_null_fields_count_as_absent(client, svc, sym):
    body = {"symbol": "TEST", "side": "SELL", "price": 200, "quantity": 3, "type": None, "tif": None,
            "client_order_id": None}
    resp = post_json(client, "/orders", body, U1)
    assert resp.status_code == 202, resp.body
    [(_, rec)] = records(svc, 1)
    assert (rec["type"], rec["tif"], rec["is_buy"]) == ("LIMIT", "GTC", False)
    resp = post_json(client, "/orders", {"symbol": "TEST", "side": "BUY", "price": 100, "quantity": None}, U1)
    assert resp.status_code == 400 and "quantity" in resp.json_body["message"]

def test_order_ids_are_sortable_and_unique():
    gen = OrderIdGenerator()
    ids = [gen() for _ in range(2000)] + [gen(now_ms=1) for _ in range(3)]
    assert len(set(ids)) == len(ids)
    assert ids[:2000] == sorted(ids[:2000])
    assert all(len(i) == 30 for i in ids)
    assert OrderIdGenerator()(now_ms=10**12) < OrderIdGenerator()(now_ms=10**12 + 1)


def test_client_order_id_is_idempotent(client, svc, sym):
    body = {"symbol": "TEST", "side": "SELL", "price": 101, "quantity": 5, "client_order_id": "c-1"}
    first = post_json(client, "/orders", body, U1)
    again = post_json(client, "/orders", body, U1)
    assert first.status_code == again.status_code == 202
    assert first.json_body["order_id"] == again.json_body["order_id"]
    other_user = post_json(client, "/orders", body, {"X-Test-User": "u2"})
    assert other_user.json_body["order_id"] != first.json_body["order_id"]
    changed = post_json(client, "/orders", {**body, "quantity": 6}, U1)
    assert changed.status_code == 409 and changed.json_body["code"] == "IDEMPOTENCY_CONFLICT"
    recs = records(svc, 2)
    assert sorted(r["user_id"] for _, r in recs) == ["u1", "u2"]


def test_client_order_ids_of_users_whose_ids_hold_a_colon_never_collide(client, svc, sym):
    """User `alice:x` with id `c` and user `alice` with id `x:c` once shared `idem:alice:x:c`."""
    body = {"symbol": "TEST", "side": "BUY", "price": 100, "quantity": 5}
    first = post_json(client, "/orders", {**body, "client_order_id": "c"}, {"X-Test-User": "alice:x"})
    second = post_json(client, "/orders", {**body, "client_order_id": "x:c"}, {"X-Test-User": "alice"})
    assert first.status_code == second.status_code == 202, (first.body, second.body)
    assert first.json_body["order_id"] != second.json_body["order_id"]
    recs = records(svc, 2)
    assert sorted((r["user_id"], r["order_id"]) for _, r in recs) == sorted(
        [("alice:x", first.json_body["order_id"]), ("alice", second.json_body["order_id"])])
    again = post_json(client, "/orders", {**body, "client_order_id": "x:c"}, {"X-Test-User": "alice"})
    assert again.status_code == 202 and again.json_body["order_id"] == second.json_body["order_id"]


def test_market_order_without_liquidity_is_refused(client, svc, sym, cache):
    resp = post_json(client, "/orders", {"symbol": "TEST", "side": "BUY", "quantity": 5, "type": "MARKET"}, U1)
    assert resp.status_code == 409 and resp.json_body["code"] == "NO_LIQUIDITY"
    cache.set(keys.depth("TEST"), json.dumps({"e": "d", "s": "TEST", "t": 1, "u": 3, "b": [[99, 5]], "a": []}))
    resp = post_json(client, "/orders", {"symbol": "TEST", "side": "BUY", "quantity": 5, "type": "MARKET"}, U1)
    assert resp.status_code == 409, "bids do not help a market buy"
    assert records(svc, 0, timeout=0) == []
    cache.set(keys.depth("TEST"), json.dumps({"e": "d", "s": "TEST", "t": 1, "u": 3, "b": [], "a": [[101, 5]]}))
    resp = post_json(client, "/orders", {"symbol": "TEST", "side": "BUY", "quantity": 5, "type": "MARKET",
                                         "tif": "GTC", "price": 7}, U1)
    assert resp.status_code == 202
    resp = post_json(client, "/orders", {"symbol": "TEST", "side": "BUY", "quantity": 5, "type": "MARKET",
                                         "tif": "FOK"}, U1)
    assert resp.status_code == 202
    for junk in (0, -5, "zzz", 10**13, 1.5):  # SPEC §2/§3a: ignored for MARKET, whatever it holds
        resp = post_json(client, "/orders", {"symbol": "TEST", "side": "BUY", "quantity": 5, "type": "MARKET",
                                             "price": junk}, U1)
        assert resp.status_code == 202, (junk, resp.json_body)
    recs = [r for _, r in records(svc, 7)]
    assert sorted(r["tif"] for r in recs) == ["FOK"] + ["IOC"] * 6
    assert all("price" not in r and r["type"] == "MARKET" for r in recs)
    resp = post_json(client, "/orders", {"symbol": "TEST", "side": "BUY", "quantity": 5, "price": "zzz"}, U1)
    assert resp.status_code == 400 and resp.json_body["code"] == "VALIDATION_ERROR", "a LIMIT price still counts"


def test_tick_size_and_price_band(client, svc, cache):
    add_symbol(client, "TICK", tick_size=5, price_band_pct=10, min_price=50, max_price=100000)
    def place(price):
        return post_json(client, "/orders", {"symbol": "TICK", "side": "BUY", "price": price, "quantity": 1}, U1)
    assert place(12).json_body["code"] == "INVALID_TICK"
    assert place(45).json_body["code"] == "PRICE_OUT_OF_BAND"
    assert place(100005).json_body["code"] == "PRICE_OUT_OF_BAND"
    assert place(5000).status_code == 202, "no last price yet: the band does not apply"
    cache.set(keys.ticker("TICK"), json.dumps({"e": "t", "s": "TICK", "t": 1, "p": 1000, "c": 0, "yc": 0}))
    assert place(1200).status_code == 400 and place(1200).json_body["code"] == "PRICE_OUT_OF_BAND"
    assert place(900).status_code == 202 and place(1100).status_code == 202
    assert len(records(svc, 3)) == 3


BAD_INPUT = [
    ({"symbol": "TEST", "side": "BUY", "price": 1.5, "quantity": 1}, "VALIDATION_ERROR"),
    ({"symbol": "TEST", "side": "BUY", "price": "100", "quantity": 1}, "VALIDATION_ERROR"),
    ({"symbol": "TEST", "side": "BUY", "price": True, "quantity": 1}, "VALIDATION_ERROR"),
    ({"symbol": "TEST", "side": "BUY", "price": 100, "quantity": 0}, "VALIDATION_ERROR"),
    ({"symbol": "TEST", "side": "BUY", "price": 100, "quantity": 10**12 + 1}, "VALIDATION_ERROR"),
    ({"symbol": "TEST", "side": "BUY", "price": -1, "quantity": 1}, "VALIDATION_ERROR"),
    ({"symbol": "TEST", "side": "buy", "price": 100, "quantity": 1}, "VALIDATION_ERROR"),
    ({"symbol": "TEST", "side": "BUY", "quantity": 1}, "PRICE_REQUIRED"),
    ({"symbol": "TEST", "side": "BUY", "price": 100, "quantity": 1, "tif": "DAY"}, "VALIDATION_ERROR"),
    ({"symbol": "TEST", "side": "BUY", "price": 100, "quantity": 1, "client_order_id": "a b"}, "VALIDATION_ERROR"),
    ({"symbol": "X}:*", "side": "BUY", "price": 100, "quantity": 1}, "INVALID_SYMBOL"),
    ({"symbol": "TEST\n", "side": "BUY", "price": 100, "quantity": 1}, "INVALID_SYMBOL"),
    ({"symbol": "{TEST}", "side": "BUY", "price": 100, "quantity": 1}, "INVALID_SYMBOL"),
    ({"symbol": "test", "side": "BUY", "price": 100, "quantity": 1}, "INVALID_SYMBOL"),
    ([1, 2], "INVALID_JSON"),
    (b"{not json", "INVALID_JSON"),
    (b"", "INVALID_JSON"),
]


def test_bad_input_is_400_with_code(client, svc, sym):
    for body, code in BAD_INPUT:
        resp = post_json(client, "/orders", body, U1)
        assert resp.status_code == 400, (body, resp.body)
        assert resp.json_body["code"] == code and resp.json_body["message"], (body, resp.body)
    assert records(svc, 0, timeout=0) == []


def test_unknown_symbol_is_404_and_other_keys_are_not_touched(client, svc, cache):
    cache.set("depth:{OTHER}", "x")
    resp = post_json(client, "/orders", {"symbol": "NOPE", "side": "BUY", "price": 1, "quantity": 1}, U1)
    assert resp.status_code == 404 and resp.json_body["code"] == "UNKNOWN_SYMBOL"
    resp = client.http.delete("/orders/ord_1?symbol=" + "%2A", headers=U1)
    assert resp.status_code == 400 and resp.json_body["code"] == "INVALID_SYMBOL"
    assert cache.get("depth:{OTHER}") == "x"


def test_oversize_body_is_413(client, svc, sym):
    body = json.dumps({"symbol": "TEST", "side": "BUY", "price": 1, "quantity": 1, "pad": "x" * MAX_BODY_BYTES})
    resp = post_json(client, "/orders", body.encode(), U1)
    assert resp.status_code == 413 and resp.json_body["code"] == "PAYLOAD_TOO_LARGE"


def test_cancel_and_replace(client, svc, sym):
    resp = client.http.delete("/orders/ord_abc?symbol=TEST", headers=U1)
    assert resp.status_code == 202 and resp.json_body == {"order_id": "ord_abc", "status": "QUEUED"}
    resp = post_json(client, "/orders/ord_abc", {"symbol": "TEST", "quantity": 7}, U1, method="patch")
    assert resp.status_code == 202
    resp = post_json(client, "/orders/ord_abc", {"symbol": "TEST", "price": 120, "quantity": 3}, U1, method="patch")
    assert resp.status_code == 202
    recs = [r for _, r in records(svc, 3)]
    by_action = sorted(recs, key=lambda r: (r["action"], r.get("price", 0)))
    cancel, rep_q, rep_pq = by_action
    assert {k: v for k, v in cancel.items() if k != "ts"} == {
        "action": "CANCEL", "symbol": "TEST", "order_id": "ord_abc", "user_id": "u1"}
    assert rep_q["action"] == "REPLACE" and rep_q["quantity"] == 7 and "price" not in rep_q
    assert rep_pq["price"] == 120 and rep_pq["quantity"] == 3


def test_cancel_replace_errors(client, svc, sym):
    assert client.http.delete("/orders/ord_abc", headers=U1).json_body["code"] == "INVALID_SYMBOL"
    assert client.http.delete("/orders/ord_abc?symbol=ZZZ", headers=U1).status_code == 404
    assert client.http.delete("/orders/ord_abc?symbol=TEST").status_code == 401
    resp = post_json(client, "/orders/ord_abc", {"symbol": "TEST"}, U1, method="patch")
    assert resp.status_code == 400 and resp.json_body["code"] == "VALIDATION_ERROR"
    resp = post_json(client, "/orders/" + "x" * 65, {"symbol": "TEST", "quantity": 1}, U1, method="patch")
    assert resp.status_code == 400 and resp.json_body["code"] == "INVALID_ORDER_ID"
    assert records(svc, 0, timeout=0) == []


def test_kinesis_outage_is_503_and_the_retry_resends_the_same_order_id(client, svc, sym, make_svc):
    """A failed PutRecord may still have reached the stream (a read timeout): the retry must
    send the same order_id, so that the engine applies it at most once (DUPLICATE_ORDER_ID)."""
    broken = make_svc(orders_stream="no-such-stream")
    body = {"symbol": "TEST", "side": "BUY", "price": 1, "quantity": 1, "client_order_id": "retry-me"}
    resp = post_json(client, "/orders", body, U1)
    assert resp.status_code == 503 and resp.json_body["code"] == "ORDER_STREAM_UNAVAILABLE"
    claim = json.loads(broken.redis.get(keys.idempotency("u1", "retry-me")))
    assert claim["st"] == "F"
    make_svc()  # the stream is back
    resp = post_json(client, "/orders", body, U1)
    assert resp.status_code == 202 and resp.json_body["order_id"] == claim["id"]
    assert post_json(client, "/orders", body, U1).json_body["order_id"] == claim["id"]
    assert [r["order_id"] for _, r in records(svc, 1)] == [claim["id"]], "sent once by the retry"


def test_client_order_id_of_a_dead_attempt_is_resent_once(client, svc, sym, cache):
    """A claim left pending by a Lambda that died before PutRecord: the retry sends it."""
    body = {"symbol": "TEST", "side": "BUY", "price": 100, "quantity": 1, "client_order_id": "dead-1"}
    first = post_json(client, "/orders", body, U1).json_body["order_id"]
    rec = json.loads(cache.get(keys.idempotency("u1", "dead-1")))
    assert rec["id"] == first and rec["st"] == "S"
    cache.set(keys.idempotency("u1", "dead-1"), json.dumps({**rec, "st": "P", "at": rec["at"] - 60_000}))
    assert post_json(client, "/orders", body, U1).json_body["order_id"] == first
    assert post_json(client, "/orders", body, U1).json_body["order_id"] == first
    ids = [r["order_id"] for _, r in records(svc, 2)]
    assert ids == [first, first], "resent exactly once, with the same order_id"


def _pending_claim(client, svc, cache, coid: str) -> tuple[dict, str, dict]:
    """A first request's claim put back to pending-in-flight (its PutRecord not yet confirmed)."""
    body = {"symbol": "TEST", "side": "BUY", "price": 100, "quantity": 1, "client_order_id": coid}
    first = post_json(client, "/orders", body, U1).json_body["order_id"]
    key = keys.idempotency("u1", coid)
    rec = json.loads(cache.get(key))
    cache.set(key, json.dumps({**rec, "st": "P", "at": int(time.time() * 1000)}))
    return body, first, rec


def test_retry_during_an_in_flight_first_attempt_waits_for_it_to_be_sent(client, svc, sym, cache):
    body, first, rec = _pending_claim(client, svc, cache, "inflight-ok")
    key = keys.idempotency("u1", "inflight-ok")
    timer = threading.Timer(0.3, lambda: cache.set(key, json.dumps({**rec, "st": "S"})))
    timer.start()
    resp = post_json(client, "/orders", body, U1)
    timer.join()
    assert resp.status_code == 202 and resp.json_body["order_id"] == first
    assert [r["order_id"] for _, r in records(svc, 1)] == [first], "the retry sent nothing"


def test_retry_after_the_in_flight_first_attempt_failed_resends_its_order_id(client, svc, sym, cache):
    body, first, rec = _pending_claim(client, svc, cache, "inflight-failed")
    key = keys.idempotency("u1", "inflight-failed")
    timer = threading.Timer(0.3, lambda: cache.set(key, json.dumps({**rec, "st": "F"})))  # its PutRecord failed
    timer.start()
    resp = post_json(client, "/orders", body, U1)
    timer.join()
    assert resp.status_code == 202 and resp.json_body["order_id"] == first
    # the first copy did reach the stream here: the engine refuses the second as a duplicate
    assert [r["order_id"] for _, r in records(svc, 2)] == [first, first]


def test_retry_while_the_first_attempt_stays_undecided_is_503_not_202(client, svc, sym, cache, monkeypatch):
    monkeypatch.setattr(orders_mod, "PENDING_WAIT_S", 0.3)
    body, first, _ = _pending_claim(client, svc, cache, "inflight-stuck")
    resp = post_json(client, "/orders", body, U1)
    assert resp.status_code == 503 and resp.json_body["code"] == "ORDER_STREAM_UNAVAILABLE"
    assert "still being queued" in resp.json_body["message"]
    assert [r["order_id"] for _, r in records(svc, 1)] == [first]


def test_orders_of_a_removed_symbol_stay_cancellable_but_not_tradable(client, svc, sym, cache):
    placed = post_json(client, "/orders", {"symbol": "TEST", "side": "BUY", "price": 100, "quantity": 1}, U1)
    order_id = placed.json_body["order_id"]
    assert client.http.delete("/admin/symbols?symbol=TEST", headers=ADMIN_HEADERS).status_code == 200
    resp = post_json(client, "/orders", {"symbol": "TEST", "side": "BUY", "price": 100, "quantity": 1}, U1)
    assert resp.status_code == 404 and resp.json_body["code"] == "UNKNOWN_SYMBOL"
    resp = post_json(client, f"/orders/{order_id}", {"symbol": "TEST", "quantity": 2}, U1, method="patch")
    assert resp.status_code == 404, "a replace would trade on: refused"
    resp = client.http.delete(f"/orders/{order_id}?symbol=TEST", headers=U1)
    assert resp.status_code == 202 and resp.json_body["order_id"] == order_id
    assert [(r["action"], r["order_id"]) for _, r in records(svc, 2)] == [("ADD", order_id), ("CANCEL", order_id)]
    resp = client.http.delete(f"/orders/{order_id}?symbol=NEVER", headers=U1)
    assert resp.status_code == 404 and resp.json_body["code"] == "UNKNOWN_SYMBOL", "never listed: still unknown"
    add_symbol(client, "TEST")
    assert cache.smembers(keys.REMOVED_SYMBOLS) == set()


def test_a_market_retry_after_a_failed_put_is_answered_from_its_claim(client, svc, sym, cache, make_svc):
    """The first copy may have reached the stream and traded the book away: the retry must not
    be refused NO_LIQUIDITY by the pre-check for an order that executed; it resends the id."""
    cache.set(keys.depth("TEST"), json.dumps({"e": "d", "s": "TEST", "t": 1, "u": 3, "b": [], "a": [[101, 5]]}))
    body = {"symbol": "TEST", "side": "BUY", "quantity": 5, "type": "MARKET", "client_order_id": "mkt-1"}
    make_svc(orders_stream="no-such-stream")
    assert post_json(client, "/orders", body, U1).status_code == 503
    first = json.loads(cache.get(keys.idempotency("u1", "mkt-1")))["id"]
    make_svc()
    cache.set(keys.depth("TEST"), json.dumps({"e": "d", "s": "TEST", "t": 2, "u": 5, "b": [], "a": []}))
    resp = post_json(client, "/orders", body, U1)
    assert resp.status_code == 202 and resp.json_body["order_id"] == first
    new = {**body, "client_order_id": "mkt-2"}
    assert post_json(client, "/orders", new, U1).status_code == 409, "a new MARKET order is still checked"


def test_a_retry_that_lost_the_takeover_race_never_overwrites_the_winners_claim(svc, sym, cache, monkeypatch):
    router = svc.orders
    key = keys.idempotency("u1", "race-1")
    failed = json.dumps({"id": "ord_A", "fp": "f" * 16, "st": "F", "at": 1})
    cache.set(key, failed)
    real_get = router.r.get

    def stale_get(k):  # this retry read the failed claim, then the winner resent and confirmed it
        value = real_get(k)
        cache.set(key, json.dumps({"id": "ord_A", "fp": "f" * 16, "st": "S", "at": 2}))
        return value

    monkeypatch.setattr(router.r, "get", stale_get)
    assert router._previous(key, "f" * 16, "race-1") == ("ord_A", "pending")
    monkeypatch.undo()
    assert json.loads(cache.get(key))["st"] == "S", "the loser left the winner's claim alone"
    assert router._previous(key, "f" * 16, "race-1") == ("ord_A", "sent")


def test_a_new_client_order_id_refused_by_the_market_checks_leaves_no_claim(client, svc, sym, cache):
    body = {"symbol": "TEST", "side": "BUY", "quantity": 5, "type": "MARKET", "client_order_id": "mkt-fresh"}
    resp = post_json(client, "/orders", body, U1)
    assert resp.status_code == 409 and resp.json_body["code"] == "NO_LIQUIDITY"
    assert not cache.exists(keys.idempotency("u1", "mkt-fresh")), "nothing was sent: the id is free"
    cache.set(keys.depth("TEST"), json.dumps({"e": "d", "s": "TEST", "t": 1, "u": 3, "b": [], "a": [[101, 5]]}))
    resp = post_json(client, "/orders", body, U1)
    assert resp.status_code == 202, "checked again, now with liquidity"
    assert [r["order_id"] for _, r in records(svc, 1)] == [resp.json_body["order_id"]]


def test_a_cache_error_in_the_market_checks_releases_the_fresh_claim(client, svc, sym, cache, monkeypatch):
    """503 CACHE_UNAVAILABLE while checking: nothing was sent, so the retry is a fresh, checked
    request — not a 30-second wait on a stuck claim, then an unchecked resend."""
    import redis

    router = svc.orders
    real = router._opposite_side_empty
    calls = []

    def flaky(symbol, is_buy):
        calls.append(symbol)
        if len(calls) == 1:
            raise redis.exceptions.TimeoutError("Valkey read timed out")
        return real(symbol, is_buy)

    monkeypatch.setattr(router, "_opposite_side_empty", flaky)
    body = {"symbol": "TEST", "side": "BUY", "quantity": 5, "type": "MARKET", "client_order_id": "mkt-flaky"}
    resp = post_json(client, "/orders", body, U1)
    assert resp.status_code == 503 and resp.json_body["code"] == "CACHE_UNAVAILABLE"
    assert not cache.exists(keys.idempotency("u1", "mkt-flaky"))
    resp = post_json(client, "/orders", body, U1)
    assert resp.status_code == 409 and resp.json_body["code"] == "NO_LIQUIDITY", "checked again at once"
