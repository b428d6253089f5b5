"""The Kinesis handlers: fills → DynamoDB + `fill` events, statuses → `order` events."""

from __future__ import annotations

import json
import uuid

from boto3.dynamodb.conditions import Key

from chalice_app import connections as conns
from engine_pkg import Engine
from tests.chalice_app.helpers import add_symbol, post_json, read_stream


def fill(sym: str, seq: int, maker: str = "u_maker", taker: str = "u_taker", t: int = 1733896438267) -> bytes:
    return json.dumps({
        "e": "fill", "s": sym, "trade_id": f"{sym}-{seq:012d}", "p": 15000, "q": 30,
        "maker_order_id": f"m{seq}", "maker_user_id": maker, "taker_order_id": f"t{seq}", "taker_user_id": taker,
        "taker_side": "BUY", "t": t, "seq": seq,
    }).encode()


def status(user: str, order_id: str = "ord_1", st: str = "ACCEPTED") -> bytes:
    return json.dumps({"e": "order", "user_id": user, "order_id": order_id, "s": "TEST", "status": st,
                       "reason": None, "filled": 0, "remaining": 10, "price": 100, "t": 1, "seq": 1}).encode()


def kinesis_event(client, bodies, stream):
    return client.events.generate_kinesis_event(message_bodies=list(bodies), stream_name=stream)


def trades(svc, sym):
    table = svc.dynamodb.Table(svc.settings.trade_table)
    return table.query(KeyConditionExpression=Key("pk").eq(f"TRADE#{sym}"))["Items"]


def test_fills_are_stored_idempotently_and_sent_to_both_users(client, svc, cache, ws_server):
    sym = "F" + uuid.uuid4().hex[:8].upper()
    ws_server.open_ids.update({"m-phone", "m-laptop", "t-1"})
    conns.register_connection(cache, "m-phone", "u_maker", is_logged_in=True)
    conns.register_connection(cache, "m-laptop", "u_maker", is_logged_in=True)
    conns.register_connection(cache, "t-1", "u_taker", is_logged_in=True)
    conns.register_connection(cache, "t-gone", "u_taker", is_logged_in=True)  # closed without $disconnect
    conns.register_connection(cache, "other", "u_other", is_logged_in=True)
    ws_server.open_ids.add("other")
    bodies = [fill(sym, i) for i in range(1, 31)] + [b"not json", b'{"e":"fill","s":"x}"}', b"[]"]
    event = kinesis_event(client, bodies, svc.settings.fills_stream)
    report = client.lambda_.invoke("on_fills", event).payload
    assert report["records"] == 33 and report["bad"] == 3 and report["written"] == 30
    items = trades(svc, sym)
    assert len(items) == 30
    first = min(items, key=lambda i: i["sk"])
    assert first["sk"] == f"1733896438267#{sym}-000000000001"
    assert int(first["price"]) == 15000 and first["maker_user_id"] == "u_maker"
    for conn in ("m-phone", "m-laptop", "t-1"):
        msgs = ws_server.messages(conn)
        assert len(msgs) == 30 and all(m["e"] == "fill" and m["s"] == sym for m in msgs)
    # each side sees its own user id and the trade, never the counterparty's user id
    maker_view, taker_view = ws_server.messages("m-phone")[0], ws_server.messages("t-1")[0]
    assert (maker_view["maker_user_id"], maker_view["taker_user_id"]) == ("u_maker", None)
    assert (taker_view["maker_user_id"], taker_view["taker_user_id"]) == (None, "u_taker")
    for view in (maker_view, taker_view):
        assert {k: v for k, v in view.items() if not k.endswith("_user_id")} == {
            k: v for k, v in json.loads(fill(sym, 1)).items() if not k.endswith("_user_id")}
    assert ws_server.messages("other") == []
    assert cache.smembers("user:u_taker:connections") == {"t-1"}, "the gone connection was cleaned up"
    # redelivery of the same batch: no new items
    client.lambda_.invoke("on_fills", event)
    assert len(trades(svc, sym)) == 30


def test_early_timestamps_are_zero_padded(client, svc):
    sym = "F" + uuid.uuid4().hex[:8].upper()
    client.lambda_.invoke("on_fills", kinesis_event(client, [fill(sym, 7, t=12345)], svc.settings.fills_stream))
    assert [i["sk"] for i in trades(svc, sym)] == [f"0000000012345#{sym}-000000000007"]



def test_a_fill_twice_in_one_batch_is_stored_and_sent_once(client, svc, cache, ws_server):
    sym = "F" + uuid.uuid4().hex[:8].upper()
    ws_server.open_ids.add("dup-1")
    conns.register_connection(cache, "dup-1", "u_taker", is_logged_in=True)
    bodies = [fill(sym, 1), fill(sym, 2), fill(sym, 1)]
    report = client.lambda_.invoke("on_fills", kinesis_event(client, bodies, svc.settings.fills_stream)).payload
    assert (report["written"], report["duplicates"], report["bad"]) == (2, 1, 0)
    assert len(trades(svc, sym)) == 2
    assert [m["trade_id"] for m in ws_server.messages("dup-1")] == [f"{sym}-000000000001", f"{sym}-000000000002"]


def test_fills_the_engine_could_not_write_are_skipped_not_fatal(client, svc):
    """A late `t` (any ts below 2^53 is valid) is stored; an oversize or malformed field is a bad
    record, never a DynamoDB item-size failure that would block the whole batch."""
    sym = "F" + uuid.uuid4().hex[:8].upper()
    late = fill(sym, 1, t=2**53 - 1)
    huge = json.loads(fill(sym, 2))
    huge["taker_side"] = "B" * 500_000
    long_id = json.loads(fill(sym, 3))
    long_id["maker_order_id"] = "m" * 65
    bodies = [late, json.dumps(huge).encode(), json.dumps(long_id).encode(), fill(sym, 4)]
    report = client.lambda_.invoke("on_fills", kinesis_event(client, bodies, svc.settings.fills_stream)).payload
    assert (report["written"], report["bad"]) == (2, 2)
    assert sorted(i["sk"] for i in trades(svc, sym)) == [f"1733896438267#{sym}-000000000004",
                                                         f"{2**53 - 1}#{sym}-000000000001"]

def test_order_status_goes_to_all_owner_connections(client, svc, cache, ws_server):
    ws_server.open_ids.update({"a1", "a2", "b1"})
    for conn, user in (("a1", "u_a"), ("a2", "u_a"), ("b1", "u_b"), ("a3", "u_a")):
        conns.register_connection(cache, conn, user, is_logged_in=True)
    conns.subscribe(cache, "a3", "TEST")
    event = kinesis_event(client, [status("u_a"), b"\xff\xfe", status("u_b", "ord_2", "FILLED"),
                                   b'{"e":"order"}'], svc.settings.status_stream)
    report = client.lambda_.invoke("on_order_status", event).payload
    assert report == {"records": 4, "bad": 2, "written": 0, "sent": 3, "gone": 1, "failed": 0, "duplicates": 0}
    assert [m["order_id"] for m in ws_server.messages("a1")] == ["ord_1"]
    assert [m["order_id"] for m in ws_server.messages("a2")] == ["ord_1"]
    assert [m["status"] for m in ws_server.messages("b1")] == ["FILLED"]
    assert cache.smembers("user:u_a:connections") == {"a1", "a2"}
    assert cache.smembers("subscribed:symbols") == set()


def test_cancel_of_another_users_order_is_rejected_not_owner(client, svc, cache, ws_server):
    """End to end through the real engine: the REST cancel by u2 reaches u2 as NOT_OWNER."""
    add_symbol(client, "OWN")
    ws_server.open_ids.update({"c-u1", "c-u2"})
    conns.register_connection(cache, "c-u1", "u1", is_logged_in=True)
    conns.register_connection(cache, "c-u2", "u2", is_logged_in=True)
    placed = post_json(client, "/orders", {"symbol": "OWN", "side": "SELL", "price": 100, "quantity": 5},
                       {"X-Test-User": "u1"}).json_body
    resp = client.http.delete(f"/orders/{placed['order_id']}?symbol=OWN", headers={"X-Test-User": "u2"})
    assert resp.status_code == 202
    commands = read_stream(svc.kinesis, svc.settings.orders_stream, 2)
    commands.sort(key=lambda r: r[1]["ts"])
    result = Engine().process([json.dumps(c).encode() for _, c in commands])
    client.lambda_.invoke("on_order_status", kinesis_event(client, result.statuses, svc.settings.status_stream))
    [rejected] = ws_server.messages("c-u2")
    assert rejected["status"] == "REJECTED" and rejected["reason"] == "NOT_OWNER"
    assert rejected["order_id"] == placed["order_id"]
    assert [m["status"] for m in ws_server.messages("c-u1")] == ["ACCEPTED"]
