"""The streamer against the real local API Gateway stand-in (tools/gateway.py) and real
WebSocket clients, with the default transport (Chalice `WebsocketAPI`) and the aiohttp one.

The Chalice app here is a minimal one: `$connect` registers the connection with the shared
registry (`chalice_app.connections`) — logged in when `?user=` is given — and subscribes it
to `?main=`; `$disconnect` deliberately does NOT clean up, so a client that went away is
found by the streamer's 410 GoneException path."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from chalice import Chalice

from chalice_app import connections, keys
from tests.streamer_pkg.helpers import RunningStreamer, write_depth
from tests.waiting import wait_until
from tests.ws_client import WsClient
from tools.gateway import Gateway


@pytest.fixture
def gateway(depth_cache: redis.Redis) -> Iterator[Gateway]:
    app = Chalice(app_name="streamer-gw-test")
    r = depth_cache

    @app.on_ws_connect()
    def connect(event):
        q = event.to_dict().get("queryStringParameters") or {}
        user = q.get("user")
        connections.register_connection(r, event.connection_id, user, is_logged_in=bool(user))
        if q.get("main"):
            connections.subscribe(r, event.connection_id, main=q["main"])
        return {"statusCode": 200}

    @app.on_ws_message()
    def message(event):
        return {"statusCode": 200}

    @app.on_ws_disconnect()
    def disconnect(event):
        return {"statusCode": 200}  # no cleanup: the streamer's 410 path must do it

    with Gateway(app, stage="api", port=0) as gw:
        yield gw


@pytest.mark.parametrize("transport", ["fast", "chalice", "chalice-lean", "aiohttp"])
def test_depth_over_the_gateway_to_real_clients_and_gone_cleanup(settings, depth_cache, gateway, transport):
    r = depth_cache
    a = WsClient(gateway.url + "?user=ua&main=TEST")
    b = WsClient(gateway.url + "?user=ub&main=OTHER")
    anon = WsClient(gateway.url + "?main=TEST")
    leaver = WsClient(gateway.url + "?user=ul&main=TEST")
    wait_until(lambda: len(r.smembers(keys.symbol_main("TEST"))) == 3, what="registrations")
    (leaver_id,) = set(r.smembers(keys.user_connections("ul")))
    clients = [a, b, anon]
    try:
        with RunningStreamer(settings, gateway.endpoint_url, transport=transport, anon_interval=0.1) as s:
            write_depth(r, "TEST", u=1)
            wait_until(lambda: a.depth("TEST") and anon.depth("TEST") and leaver.depth("TEST"),
                       what="TEST depth at its subscribers")
            leaver.close()
            wait_until(lambda: leaver_id not in gateway.connection_ids(), what="leaver closed")
            write_depth(r, "TEST", u=2)
            wait_until(lambda: [m for m in a.depth("TEST") if m["u"] == 2], what="u=2 at a")
            wait_until(lambda: not r.exists(keys.ws_conn(leaver_id)), what="cleanup of the gone connection")
            wait_until(lambda: s.metrics.errors["gone"] >= 1, what="gone counted")
            time.sleep(0.2)
        assert [m["u"] for m in a.depth("TEST")] == [1, 2]
        assert b.depth("TEST") == [] and a.depth("OTHER") == []
        assert leaver_id not in r.smembers(keys.symbol_main("TEST")) | r.smembers(keys.REALTIME_CONNECTIONS)
        assert leaver_id not in r.smembers(keys.ALL_CONNECTIONS)
    finally:
        for c in clients:
            c.close()
