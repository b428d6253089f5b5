"""The local WebSocket gateway alone, against a small Chalice app defined here.

Events reach `$connect` / `$default` / `$disconnect` with API Gateway's shapes; a refused
`$connect` refuses the handshake; the `@connections` API answers boto3's
`apigatewaymanagementapi` client and Chalice's `WebsocketAPI` (POST / GET / DELETE, 410
GoneException); the 128 KB limit and the idle timeout hold; counters count.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import websocket
from botocore.config import Config
from chalice import Chalice, Response
from chalice.app import WebsocketDisconnectedError

from tests.waiting import wait_until
from tools.gateway import Gateway

REGION = "ap-northeast-2"


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # the management API is not signature-checked, but botocore signs every request
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


class _PinnedSession:
    """A boto3 session whose clients always use the gateway's endpoint (as ws_send does)."""

    def __init__(self, endpoint: str) -> None:
        self._session = boto3.Session(region_name=REGION)
        self._endpoint = endpoint
        self.region_name = REGION

    def client(self, name: str, **kwargs: Any) -> Any:
        kwargs["endpoint_url"] = self._endpoint
        return self._session.client(name, **kwargs)


class Recorder:
    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, dict]] = queue.Queue()

    def next(self, kind: str, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got_kind, event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got_kind == kind:
                return event
        raise AssertionError(f"no {kind} event within {timeout}s")


def make_app(rec: Recorder) -> Chalice:
    app = Chalice(app_name="gwtest")

    @app.on_ws_connect()
    def connect(event):
        rec.events.put(("connect", event.to_dict()))
        query = event.to_dict().get("queryStringParameters") or {}
        if query.get("deny"):
            return Response(status_code=int(query["deny"]), body="refused")
        if query.get("boom"):
            raise RuntimeError("connect handler failed")
        return {"statusCode": 200}

    @app.on_ws_message()
    def message(event):
        rec.events.put(("message", event.to_dict()))
        body = event.body
        if body == "boom":
            raise RuntimeError("message handler failed")
        if body.startswith("echo:"):
            app.websocket_api.send(event.connection_id, body[5:])
        elif body == "info":
            info = app.websocket_api.info(event.connection_id)
            app.websocket_api.send(event.connection_id, json.dumps({"ip": info["Identity"]["SourceIp"]}))
        elif body == "bye":
            app.websocket_api.close(event.connection_id)

    @app.on_ws_disconnect()
    def disconnect(event):
        rec.events.put(("disconnect", event.to_dict()))

    return app


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def gateway(rec: Recorder) -> Iterator[Gateway]:
    app = make_app(rec)
    gw = Gateway(app, stage="api", port=0).start()
    app.websocket_api.session = _PinnedSession(gw.endpoint_url)
    app.websocket_api.configure(gw.domain_name, gw.stage)
    yield gw
    gw.stop()


def mgmt_client(gw: Gateway) -> Any:
    return boto3.client("apigatewaymanagementapi", endpoint_url=gw.endpoint_url, region_name=REGION,
                        config=Config(retries={"max_attempts": 1}))


def test_connect_message_disconnect_events_have_api_gateway_shapes(gateway: Gateway, rec: Recorder) -> None:
    ws = websocket.create_connection(gateway.url + "?testMode=true&userId=u1", header={"X-Custom": "yes"})
    connect = rec.next("connect")
    ctx = connect["requestContext"]
    conn_id = ctx["connectionId"]
    assert ctx["routeKey"] == "$connect" and ctx["eventType"] == "CONNECT"
    assert ctx["stage"] == "api" and ctx["apiId"] == gateway.api_id
    assert ctx["domainName"] == f"127.0.0.1:{gateway.port}"
    assert abs(ctx["requestTimeEpoch"] - time.time() * 1000) < 5000
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert connect["queryStringParameters"] == {"testMode": "true", "userId": "u1"}
    assert connect["headers"]["X-Custom"] == "yes"
    assert len(conn_id) == 16 and conn_id.endswith("=")

    ws.send('{"action":"ping"}')
    ws.send_binary(b"\x00\x01")
    msg = rec.next("message")
    assert msg["requestContext"]["routeKey"] == "$default"
    assert msg["requestContext"]["eventType"] == "MESSAGE"
    assert msg["requestContext"]["connectionId"] == conn_id
    assert msg["body"] == '{"action":"ping"}' and msg["isBase64Encoded"] is False
    binary = rec.next("message")
    assert binary["isBase64Encoded"] is True and binary["body"] == "AAE="

    ws.close()
    disc = rec.next("disconnect")
    assert disc["requestContext"]["routeKey"] == "$disconnect"
    assert disc["requestContext"]["eventType"] == "DISCONNECT"
    assert disc["requestContext"]["connectionId"] == conn_id
    assert disc["requestContext"]["disconnectStatusCode"] == 1000
    wait_until(lambda: gateway.stats().get("connections_closed") == 1, what="the close counted")
    stats = gateway.stats()
    assert stats["connections_opened"] == 1 and stats["messages_in"] == 2 and stats["bytes_in"] == 19


def test_connect_without_query_has_no_query_parameters(gateway: Gateway, rec: Recorder) -> None:
    ws = websocket.create_connection(gateway.url + "/")
    assert "queryStringParameters" not in rec.next("connect")
    ws.close()


@pytest.mark.parametrize(("query", "status"), [("deny=401", 401), ("deny=403", 403), ("boom=1", 500)])
def test_refused_connect_refuses_the_handshake(gateway: Gateway, rec: Recorder, query: str, status: int) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(f"{gateway.url}?{query}")
    assert err.value.status_code == status
    rec.next("connect")
    assert gateway.stats()["connections_refused"] == 1
    assert gateway.connection_ids() == []
    with pytest.raises(AssertionError):
        rec.next("disconnect", timeout=0.2)


def test_unknown_stage_and_plain_http_are_refused(gateway: Gateway) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(f"ws://127.0.0.1:{gateway.port}/prod")
    assert err.value.status_code == 403


def test_management_api_through_boto3(gateway: Gateway, rec: Recorder) -> None:
    ws = websocket.create_connection(gateway.url, timeout=5)
    conn_id = rec.next("connect")["requestContext"]["connectionId"]
    client = mgmt_client(gateway)

    client.post_to_connection(ConnectionId=conn_id, Data=b'{"e":"d","s":"TEST"}')
    assert json.loads(ws.recv()) == {"e": "d", "s": "TEST"}

    info = client.get_connection(ConnectionId=conn_id)
    assert info["Identity"]["SourceIp"] == "127.0.0.1"
    assert abs(info["ConnectedAt"].timestamp() - time.time()) < 10
    assert info["LastActiveAt"] >= info["ConnectedAt"]

    with pytest.raises(client.exceptions.PayloadTooLargeException):
        client.post_to_connection(ConnectionId=conn_id, Data=b"x" * (128 * 1024 + 1))
    client.post_to_connection(ConnectionId=conn_id, Data=b"y" * (128 * 1024))
    assert len(ws.recv()) == 128 * 1024

    client.delete_connection(ConnectionId=conn_id)
    disc = rec.next("disconnect")
    assert disc["requestContext"]["connectionId"] == conn_id
    opcode, frame = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(frame[:2], "big") == 1000

    for gone in (conn_id, "NoSuchConnId0A=", "x"):
        with pytest.raises(client.exceptions.GoneException):
            client.post_to_connection(ConnectionId=gone, Data=b"late")
        with pytest.raises(client.exceptions.GoneException):
            client.get_connection(ConnectionId=gone)
        with pytest.raises(client.exceptions.GoneException):
            client.delete_connection(ConnectionId=gone)
    stats = gateway.stats()
    assert stats["messages_out"] == 2 and stats["management_gone"] == 9 and stats["messages_out_too_large"] == 1


def test_management_api_through_chalice_websocket_api(gateway: Gateway, rec: Recorder) -> None:
    ws = websocket.create_connection(gateway.url, timeout=5)
    conn_id = rec.next("connect")["requestContext"]["connectionId"]
    ws.send("echo:hello")
    assert ws.recv() == "hello"
    ws.send("info")
    assert json.loads(ws.recv()) == {"ip": "127.0.0.1"}
    ws.send("bye")
    rec.next("disconnect")
    with pytest.raises(WebsocketDisconnectedError):
        gateway.app.websocket_api.send(conn_id, "after close")


def test_failing_message_handler_sends_api_gateway_error_and_keeps_the_socket(gateway: Gateway, rec: Recorder) -> None:
    ws = websocket.create_connection(gateway.url, timeout=5)
    conn_id = rec.next("connect")["requestContext"]["connectionId"]
    ws.send("boom")
    err = json.loads(ws.recv())
    assert err["message"] == "Internal server error" and err["connectionId"] == conn_id
    ws.send("echo:still here")
    assert ws.recv() == "still here"
    assert gateway.stats()["handler_errors"] == 1
    ws.close()


def test_oversize_client_message_closes_with_1009(gateway: Gateway, rec: Recorder) -> None:
    ws = websocket.create_connection(gateway.url, timeout=5)
    rec.next("connect")
    try:  # the server may close before the client has finished writing the frame
        ws.send("z" * (128 * 1024 + 1))
        opcode, frame = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame[:2], "big") == 1009
    except (ConnectionResetError, BrokenPipeError, websocket.WebSocketConnectionClosedException):
        pass
    disc = rec.next("disconnect")
    assert disc["requestContext"]["disconnectStatusCode"] == 1009
    assert gateway.stats().get("messages_in", 0) == 0
    assert gateway.stats()["messages_in_too_large"] == 1


def test_idle_connections_are_closed_and_pings_keep_them_alive(rec: Recorder) -> None:
    app = make_app(rec)
    with Gateway(app, stage="api", idle_timeout=0.6) as gw:
        idle = websocket.create_connection(gw.url, timeout=5)
        idle_id = rec.next("connect")["requestContext"]["connectionId"]
        busy = websocket.create_connection(gw.url, timeout=5)
        busy_id = rec.next("connect")["requestContext"]["connectionId"]
        stop = threading.Event()

        def pinger() -> None:
            while not stop.wait(0.15):
                busy.ping()

        t = threading.Thread(target=pinger)
        t.start()
        try:
            disc = rec.next("disconnect", timeout=5)
            assert disc["requestContext"]["connectionId"] == idle_id
            assert disc["requestContext"]["disconnectReason"] == "Idle timeout"
            time.sleep(0.8)
            assert gw.connection_ids() == [busy_id]
        finally:
            stop.set()
            t.join()
        assert gw.stats()["idle_closed"] == 1
        idle.close()
        busy.close()


def test_stop_disconnects_every_client(rec: Recorder) -> None:
    app = make_app(rec)
    gw = Gateway(app, stage="api").start()
    clients = [websocket.create_connection(gw.url, timeout=5) for _ in range(3)]
    ids = {rec.next("connect")["requestContext"]["connectionId"] for _ in clients}
    gw.stop()
    got = {rec.next("disconnect")["requestContext"]["connectionId"] for _ in clients}
    assert got == ids
    for c in clients:
        c.close()


def _raw_post(sock, path: str, body: bytes, extra: str = "") -> None:  # noqa: ANN001
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body)


class _Answers:
    """HTTP answers read from a raw socket, in order (several may arrive in one recv)."""

    def __init__(self, sock) -> None:  # noqa: ANN001
        self.sock, self.buf = sock, b""

    def next(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buf = rest[length:]
        return int(head.split(b" ")[1]), head


def test_lean_post_path_then_hand_over_to_aiohttp_on_the_same_connection(gateway: Gateway, rec: Recorder) -> None:
    """Plain PostToConnection requests are answered by the lean path; the first other request on
    the same keep-alive connection (here a GET) is served by aiohttp, and so is everything after."""
    import socket

    ws = websocket.create_connection(gateway.url, timeout=5)
    conn_id = rec.next("connect")["requestContext"]["connectionId"]
    quoted = conn_id.replace("=", "%3D")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        answers = _Answers(s)
        for i in range(3):
            _raw_post(s, f"/api/@connections/{quoted}", f"m{i}".encode())
        assert [answers.next()[0] for _ in range(3)] == [200, 200, 200]  # three pipelined, in order
        assert [ws.recv() for _ in range(3)] == ["m0", "m1", "m2"]
        _raw_post(s, "/api/@connections/NoSuchConnId0A=", b"x")
        status, head = answers.next()
        assert status == 410 and b"x-amzn-ErrorType: GoneException" in head
        _raw_post(s, f"/api/@connections/{quoted}", b"\xff\xfe")  # not UTF-8: a binary frame
        assert answers.next()[0] == 200
        assert ws.recv() == b"\xff\xfe"
        s.sendall(f"GET /api/@connections/{quoted} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, head = answers.next()
        assert status == 200 and b"aiohttp" in head  # answered by aiohttp now
        _raw_post(s, f"/api/@connections/{quoted}", b"after")
        status, head = answers.next()
        assert status == 200 and b"aiohttp" in head and ws.recv() == "after"
    assert gateway.stats()["messages_out"] == 5


def test_post_to_a_client_that_does_not_read_waits_for_it(gateway: Gateway, rec: Recorder) -> None:
    """Once a client's socket buffer is full, a POST is answered only when the client reads
    (aiohttp's WebSocket writer waits for it), as API Gateway answers slowly for such a client."""
    import socket

    ws = websocket.create_connection(gateway.url, timeout=10)
    conn_id = rec.next("connect")["requestContext"]["connectionId"]
    chunk = b"z" * (100 * 1024)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        answers = _Answers(s)
        s.settimeout(0.3)
        blocked = False
        for _ in range(400):  # the client never reads: kernel buffers fill, then the gateway's
            _raw_post(s, f"/api/@connections/{conn_id}", chunk)
            try:
                assert answers.next()[0] == 200
            except TimeoutError:
                blocked = True
                break
        assert blocked, "a POST to a client that does not read was never held back"
        s.settimeout(10)
        received = 0
        while True:  # the client reads: the held POST is answered
            received += len(ws.recv())
            try:
                s.settimeout(0.01)
                status, _ = answers.next()
                break
            except TimeoutError:
                continue
        assert status == 200 and received > 0
