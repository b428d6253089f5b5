"""Hostile WebSocket input through the real gateway and the app's handlers.

Each bad frame gets an `error` event and the connection keeps working (a `ping` after it
gets its `pong`); an oversize frame closes only its own connection (1009, API Gateway's
limit); thousands of subscriptions are refused or capped and the registry stays within its
limits; no hostile symbol becomes part of a key; other clients never notice.
"""

from __future__ import annotations

import json
import time

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chalice_app import keys
from chalice_app.connections import MAX_SUB_SYMBOLS
from tests.reliability.hostile import KEY_SHAPED_SYMBOLS, ws_bad_frames

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")


def _open(rel, query: str = "?testMode=true&userId=ws-rel-1") -> ClientConnection:
    return connect(rel.ws_url + query, open_timeout=5, max_size=8 * 1024 * 1024, proxy=None)  # noqa: SIM115


def _next_event(ws: ClientConnection, kinds: tuple[str, ...], timeout: float = 3.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kinds} event within {timeout}s")
        ev = orjson.loads(ws.recv(timeout=left))
        if ev.get("e") in kinds:
            return ev


def _ping_ok(ws: ClientConnection) -> None:
    ws.send(json.dumps({"action": "ping"}))
    _next_event(ws, ("pong",))


@pytest.fixture
def client(rel):
    ws = _open(rel)
    yield ws
    ws.close()


@pytest.mark.parametrize("name, frame", ws_bad_frames(), ids=[n for n, _ in ws_bad_frames()])
def test_bad_frames_get_an_error_event_and_the_connection_lives_on(rel, client, name, frame):
    client.send(frame)
    ev = _next_event(client, ("error",))
    assert isinstance(ev.get("code"), str) and ev["code"].isupper(), ev
    assert isinstance(ev.get("message"), str) and ev["message"], ev
    _ping_ok(client)


@pytest.mark.parametrize("symbol", [s for s in KEY_SHAPED_SYMBOLS if s], ids=repr)
def test_key_shaped_subscriptions_are_refused_and_touch_no_key(rel, client, symbol):
    before = rel.cache_keys()
    client.send(json.dumps({"action": "subscribe", "main": symbol}))
    _next_event(client, ("error",))
    client.send(json.dumps({"action": "subscribe", "sub": [symbol]}))
    _next_event(client, ("error",))
    _ping_ok(client)
    assert rel.cache_keys() - before == set()
    assert symbol not in rel.cache.smembers(keys.SUBSCRIBED_SYMBOLS)


def test_unsubscribe_of_what_was_never_subscribed_is_harmless(rel, client):
    client.send(json.dumps({"action": "unsubscribe", "main": "ZZZ"}))
    _ping_ok(client)
    client.send(json.dumps({"action": "unsubscribe", "sub": ["TEST", "ZZZ"]}))
    _ping_ok(client)


def test_thousands_of_subscriptions_are_capped(rel, client):
    """5,000 sub symbols in one message are refused; 500 subscribe messages in a burst are all
    answered, the connection holds one main symbol, and its sub set never passes the cap."""
    active = [f"R{i}" for i in range(MAX_SUB_SYMBOLS + 5)]
    for sym in active:
        rel.cache.sadd(keys.ACTIVE_SYMBOLS, sym)
    client.send(json.dumps({"action": "subscribe", "sub": active}))
    _next_event(client, ("error",))
    for i in range(500):
        client.send(json.dumps({"action": "subscribe", "main": "TEST", "sub": [active[i % len(active)]]}))
    _ping_ok_after_burst(client, timeout=60)
    conn_ids = rel.gateway.connection_ids()
    sizes = [rel.cache.scard(keys.conn_subs(c)) for c in conn_ids]
    assert max(sizes) <= MAX_SUB_SYMBOLS, sizes
    mains = [rel.cache.get(keys.conn_main(c)) for c in conn_ids]
    assert "TEST" in mains
    assert all(m in (None, "TEST") for m in mains)


def _ping_ok_after_burst(ws: ClientConnection, timeout: float) -> None:
    ws.send(json.dumps({"action": "ping"}))
    _next_event(ws, ("pong",), timeout=timeout)


def test_oversize_frame_closes_only_that_connection(rel, client):
    bystander = _open(rel, "?testMode=true&userId=ws-rel-2")
    try:
        big = json.dumps({"action": "subscribe", "main": "TEST", "pad": "x" * (200 * 1024)})
        client.send(big)
        with pytest.raises(ConnectionClosed) as info:
            for _ in range(20):
                client.recv(timeout=3)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        _ping_ok(bystander)
        again = _open(rel)  # the gateway still accepts clients
        _ping_ok(again)
        again.close()
    finally:
        bystander.close()


def test_hundreds_of_connections_open_and_close_cleanly(rel):
    """Many clients at once (anonymous and test mode), then all gone: the registry is empty again."""
    base = len(rel.gateway.connection_ids())
    clients = []
    try:
        for i in range(200):
            q = "" if i % 2 else f"?testMode=true&userId=many-{i}"
            clients.append(_open(rel, q))
        assert len(rel.gateway.connection_ids()) >= base + 200
        _ping_ok(clients[-1])
    finally:
        for ws in clients:
            ws.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and rel.cache.scard(keys.ALL_CONNECTIONS) > base:
        time.sleep(0.1)
    assert rel.cache.scard(keys.ALL_CONNECTIONS) <= base


def test_clients_that_drop_without_a_close_frame_are_forgotten(rel):
    ws = _open(rel, "?testMode=true&userId=ws-drop")
    ws.send(json.dumps({"action": "subscribe", "main": "TEST"}))
    time.sleep(0.3)
    assert rel.cache.smembers(keys.user_connections("ws-drop"))
    ws.socket.close()  # TCP gone, no close frame
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and rel.cache.smembers(keys.user_connections("ws-drop")):
        time.sleep(0.1)
    assert not rel.cache.smembers(keys.user_connections("ws-drop"))
    ok = _open(rel)
    _ping_ok(ok)
    ok.close()


def test_bad_test_mode_user_ids_are_refused_at_connect(rel):
    for query in ("?testMode=true&userId=", "?testMode=true&userId=a%20b", "?testMode=true&userId=" + "u" * 65,
                  "?testMode=true&userId=%7BX%7D%3A*"):
        with pytest.raises(Exception) as info:
            ws = _open(rel, query)
            ws.close()
        assert "400" in str(info.value) or "401" in str(info.value) or "403" in str(info.value), info.value
