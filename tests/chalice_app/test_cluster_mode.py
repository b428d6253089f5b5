"""The Chalice app on a cluster-mode Valkey (CACHE_CLUSTER_MODE=on, 3 primaries): orders and
depth read the depth cache of symbols on three nodes; a WebSocket subscribe (its sets and
the markers of what the streamer owes the connection), the stale-connection job and the trades backup (SCAN over every primary) work there too."""

from __future__ import annotations

import json

import pytest

from chalice_app import cache, keys
from tests.chalice_app.helpers import add_symbol, post_json, read_stream
from tests.chalice_app.test_schedules import closed, invoke
from tests.cluster import CLUSTER_SYMBOLS

SYMBOLS = CLUSTER_SYMBOLS  # one per primary (asserted by the `cluster` fixture)
U1 = {"X-Test-User": "u1"}


@pytest.fixture
def on_cluster(make_svc, cluster_url, cluster):
    svc = make_svc(depth_cache_url=cluster_url, backup_cache_url=cluster_url, cache_cluster_mode="on")
    assert cache.is_cluster(svc.redis)
    return svc


def _book(s: str, i: int) -> dict:
    return {"e": "d", "s": s, "t": 5, "u": 9, "b": [[100 + i, 2]], "a": [[101 + i, 3]]}


def test_orders_and_depth_on_a_cluster(client, on_cluster, cluster):
    for i, s in enumerate(SYMBOLS):
        add_symbol(client, s)
        cluster.set(keys.depth(s), json.dumps(_book(s, i)))
        cluster.set(keys.ticker(s), json.dumps({"e": "t", "s": s, "t": 1, "p": 100 + i, "c": 0.0, "yc": 0.0}))
    assert cluster.smembers(keys.ACTIVE_SYMBOLS) == set(SYMBOLS)
    for i, s in enumerate(SYMBOLS):
        assert client.http.get(f"/depth/{s}").json_body == _book(s, i)
        market = post_json(client, "/orders", {"symbol": s, "side": "BUY", "quantity": 1, "type": "MARKET"}, U1)
        assert market.status_code == 202, market.body  # needs the asks of depth:{s}
        limit = {"symbol": s, "side": "SELL", "price": 100 + i, "quantity": 1, "client_order_id": f"c-{s}"}
        first = post_json(client, "/orders", limit, U1)
        again = post_json(client, "/orders", limit, U1)
        assert first.status_code == 202 and again.json_body["order_id"] == first.json_body["order_id"]
    recs = read_stream(on_cluster.kinesis, on_cluster.settings.orders_stream, 6)
    assert sorted(k for k, _ in recs) == sorted(SYMBOLS * 2)


def test_ws_subscribe_stale_cleanup_and_backup_on_a_cluster(client, on_cluster, cluster):
    cluster.sadd(keys.ACTIVE_SYMBOLS, *SYMBOLS)
    ws = on_cluster.ws
    ws.connect("c1", {"testMode": "true", "userId": "u1"})
    raw = ws.message("c1", json.dumps({"action": "subscribe", "main": "TEST", "sub": ["X", "AAPL"]}))
    [reply] = raw  # the ack only: the state comes from the streamer
    assert isinstance(reply, dict) and reply["e"] == "subscribed" and sorted(reply["sub"]) == ["AAPL", "X"]
    # one pipeline wrote the markers of three nodes (what the streamer owes the connection)
    assert all(cluster.smembers(keys.symbol_fresh(s)) == {"c1"} for s in SYMBOLS)
    assert cluster.smembers(keys.SUBSCRIBED_SYMBOLS) == set(SYMBOLS)
    cluster.delete(keys.ws_conn("c1"))  # its TTL ran out: $disconnect never came
    assert invoke(client, "stale_connection_cleanup") == {"removed": 1}
    assert cluster.smembers(keys.SUBSCRIBED_SYMBOLS) == set() and cluster.smembers(keys.REALTIME_CONNECTIONS) == set()
    assert not any(cluster.exists(k) for k in (keys.conn_main("c1"), keys.conn_subs("c1"), keys.conn_user("c1")))
    for s in SYMBOLS:  # closed candles on three nodes: the backup's SCAN must visit every primary
        cluster.rpush(keys.candle_closed(s), closed(s, 0))
    report = invoke(client, "trades_backup")
    assert report["candles"] == 3 and report["failed"] == []
    assert not any(cluster.llen(keys.candle_closed(s)) for s in SYMBOLS)
