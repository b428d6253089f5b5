"""WebSocket handlers on `app` through the real local gateway (tools/gateway.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import websocket

import app as app_module
from chalice_app import keys
from tests.waiting import wait_until
from tools.gateway import Gateway


@pytest.fixture
def gw(make_svc) -> Iterator[tuple[Gateway, object]]:
    gateway = Gateway(app_module.app, stage="api", port=0).start()
    services = make_svc(websocket_endpoint=gateway.endpoint_url)
    services.redis.sadd("active:symbols", "TEST", "AAA", "BBB")
    yield gateway, services
    gateway.stop()


def connect(gateway: Gateway, query: str = "") -> websocket.WebSocket:
    ws = websocket.create_connection(gateway.url + (f"/?{query}" if query else ""), timeout=20)
    return ws


def recv(ws: websocket.WebSocket) -> dict:
    return json.loads(ws.recv())


def ask(ws: websocket.WebSocket, msg) -> dict:
    ws.send(msg if isinstance(msg, str) else json.dumps(msg))
    return recv(ws)


def only_conn(cache, key: str) -> str:
    [conn] = cache.smembers(key)
    return conn


def test_connect_kinds_register(gw, cache, auth_server):
    gateway, _ = gw
    anon = connect(gateway)
    token = connect(gateway, f"token={auth_server.es256('u_jwt')}")
    test = connect(gateway, "testMode=true&userId=u_test")
    wait_until(lambda: cache.scard("connections:all") == 3)
    jwt_conn = only_conn(cache, "user:u_jwt:connections")
    test_conn = only_conn(cache, "user:u_test:connections")
    info = json.loads(cache.get(f"ws:{jwt_conn}"))
    assert info["userId"] == "u_jwt" and info["isLoggedIn"] is True and isinstance(info["connectedAt"], int)
    assert 0 < cache.ttl(f"ws:{jwt_conn}") <= 7800
    assert cache.smembers("realtime:connections") == {jwt_conn, test_conn}
    for ws in (anon, token, test):
        ws.close()
    wait_until(lambda: cache.scard("connections:all") == 0)
    assert cache.keys("ws:*") == [] and cache.keys("user:*") == []


def test_connect_refusals(gw, make_svc, auth_server):
    gateway, _ = gw
    for query in (f"token={auth_server.es256(aud='x')}", "token=garbage",
                  f"token={auth_server.hs256(secret='wrong-secret-but-long-enough-to-use')}",
                  "testMode=true&userId=bad%20id"):
        with pytest.raises(websocket.WebSocketBadStatusException) as exc:
            connect(gateway, query)
        assert exc.value.status_code in (400, 401)
    make_svc(websocket_endpoint=gateway.endpoint_url, allow_test_mode=False)
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        connect(gateway, "testMode=true&userId=u1")
    assert exc.value.status_code == 401  # no credentials where test mode is off (SPEC §5)


def test_subscribe_unsubscribe_ping(gw, cache):
    gateway, _ = gw
    cache.set(keys.depth("TEST"), json.dumps({"e": "d", "s": "TEST", "t": 1, "u": 2, "b": [[1, 1]], "a": []}))
    cache.set(keys.ticker("AAA"), json.dumps({"e": "t", "s": "AAA", "t": 1, "p": 5, "c": 0.0, "yc": 0.0}))
    ws = connect(gateway)
    assert ask(ws, {"action": "ping"})["e"] == "pong"
    reply = ask(ws, {"action": "subscribe", "main": "TEST", "sub": ["AAA", "BBB"]})
    assert reply == {"e": "subscribed", "main": "TEST", "sub": ["AAA", "BBB"]}
    # no snapshot from the handler (the streamer sends the state, once): the next answer is the pong
    assert ask(ws, {"action": "ping"})["e"] == "pong"
    conn = only_conn(cache, "connections:all")
    assert cache.smembers("symbol:{TEST}:main") == {conn}
    assert cache.smembers("subscribed:symbols") == {"TEST", "AAA", "BBB"}
    for sym in ("TEST", "AAA", "BBB"):  # what the streamer owes this connection
        assert cache.smembers(keys.symbol_fresh(sym)) == {conn} and 0 < cache.ttl(keys.symbol_fresh(sym)) <= 60
    assert ask(ws, {"action": "subscribe", "main": "AAA"})["main"] == "AAA"
    assert ask(ws, {"action": "ping"})["e"] == "pong"
    assert cache.smembers("symbol:{TEST}:main") == set() and "TEST" not in cache.smembers("subscribed:symbols")
    reply = ask(ws, {"action": "unsubscribe", "sub": ["BBB"]})
    assert reply == {"e": "unsubscribed", "main": "AAA", "sub": ["AAA"]}
    assert ask(ws, {"action": "unsubscribe"}) == {"e": "unsubscribed", "main": None, "sub": []}
    assert cache.smembers("subscribed:symbols") == set()
    ws.close()


def test_bad_messages_get_error_events(gw, cache):
    gateway, services = gw
    ws = connect(gateway)
    cases = [
        ("hello", "INVALID_JSON"),
        ("[1,2]", "INVALID_JSON"),
        ({"action": "dance"}, "UNKNOWN_ACTION"),
        ({"action": "subscribe", "main": "NOPE"}, "UNKNOWN_SYMBOL"),
        ({"action": "subscribe", "main": "TEST", "sub": ["AAA", "ZZZ"]}, "UNKNOWN_SYMBOL"),
        ({"action": "subscribe", "main": "X}:*"}, "INVALID_SYMBOL"),
        ({"action": "subscribe", "sub": [1]}, "INVALID_SYMBOL"),
        ({"action": "subscribe", "sub": {"a": 1}}, "BAD_REQUEST"),
        ({"action": "subscribe"}, "BAD_REQUEST"),
        ({"action": "subscribe", "sub": [f"S{i}" for i in range(21)]}, "TOO_MANY_SUBSCRIPTIONS"),
        ({"action": "ping", "pad": "x" * 5000}, "MESSAGE_TOO_LARGE"),
    ]
    for msg, code in cases:
        reply = ask(ws, msg)
        assert reply["e"] == "error" and reply["code"] == code and reply["message"], (msg, reply)
    assert cache.smembers("subscribed:symbols") == set(), "refused subscribes change nothing"
    # the cap counts what the connection already holds
    services.redis.sadd("active:symbols", *[f"S{i}" for i in range(21)])
    assert ask(ws, {"action": "subscribe", "sub": [f"S{i}" for i in range(20)]})["e"] == "subscribed"
    assert ask(ws, {"action": "subscribe", "sub": ["S20"]})["code"] == "TOO_MANY_SUBSCRIPTIONS"
    assert ask(ws, {"action": "ping"})["e"] == "pong", "the connection survives all of it"
    ws.close()


def _api_gateway_event(route_key: str, conn_id: str, body: str | None = None) -> dict:
    event = {"requestContext": {"routeKey": route_key, "connectionId": conn_id, "apiId": "abc123",
                                "domainName": "abc123.execute-api.ap-northeast-2.amazonaws.com", "stage": "api",
                                "eventType": {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route_key,
                                                                                                   "MESSAGE")},
             "isBase64Encoded": False}
    if body is not None:
        event["body"] = body
    return event


def test_handlers_run_without_a_region_variable(client, svc, cache, ws_server, monkeypatch):
    """SPEC §8: AWS_REGION defaults to ap-northeast-2. Chalice looks the region up before each
    WebSocket handler and raised ValueError when neither region variable was set."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(app_module.app.websocket_api, "_endpoint", None)  # as in a fresh Lambda
    ws_server.open_ids.add("c-noregion")
    cache.sadd("active:symbols", "TEST")
    assert client.lambda_.invoke("ws_connect", _api_gateway_event("$connect", "c-noregion")).payload == {
        "statusCode": 200}
    body = json.dumps({"action": "subscribe", "main": "TEST"})
    client.lambda_.invoke("ws_message", _api_gateway_event("$default", "c-noregion", body))
    assert ws_server.messages("c-noregion") == [{"e": "subscribed", "main": "TEST", "sub": []}]
    client.lambda_.invoke("ws_disconnect", _api_gateway_event("$disconnect", "c-noregion"))
    assert cache.smembers("connections:all") == set()


def test_a_binary_frame_is_read_as_the_message(gw, cache):
    """API Gateway hands a binary frame over base64-encoded (`isBase64Encoded`): the handler
    reads the bytes the client sent, not the base64 text (which answered INVALID_JSON)."""
    gateway, _ = gw
    ws = connect(gateway)
    ws.send_binary(json.dumps({"action": "subscribe", "main": "TEST"}).encode())
    assert recv(ws) == {"e": "subscribed", "main": "TEST", "sub": []}
    ws.send_binary(b"\xff not json")
    assert recv(ws)["code"] == "INVALID_JSON"
    ws.close()


def test_an_unexpected_failure_is_an_error_event(gw, cache):
    """Every problem is an `error` event (SPEC §6), also one the handler did not foresee (here
    a registry key of the wrong type): not API Gateway's bare "Internal server error"."""
    gateway, _ = gw
    ws = connect(gateway)
    wait_until(lambda: cache.scard("connections:all") == 1)
    conn = only_conn(cache, "connections:all")
    cache.set(keys.conn_subs(conn), "not a set")
    reply = ask(ws, {"action": "subscribe", "sub": ["AAA"]})
    assert reply == {"e": "error", "code": "INTERNAL_ERROR", "message": "internal error"}
    assert ask(ws, {"action": "ping"})["e"] == "pong"
    ws.close()
