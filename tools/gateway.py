"""A local API Gateway WebSocket API in front of a Chalice app (SPEC §11).

One aiohttp server on one port speaks both halves of API Gateway's WebSocket protocol:

- clients connect to `ws://HOST:PORT/<stage>` (or `/<stage>/`); each gets a connection id,
  and the SAME Chalice app object's `$connect` / `$default` / `$disconnect` handlers are
  called with API Gateway-shaped Lambda events (requestContext with routeKey, eventType,
  connectionId, apiId, domainName, stage, requestTimeEpoch, ...; `queryStringParameters`
  on connect, `body` on messages). A `$connect` that answers non-2xx refuses the
  handshake with that status; one that raises refuses it with 500.
- the `@connections` management API at `http://HOST:PORT/<stage>/@connections/{id}`:
  `POST` sends the body to the client, `GET` returns its info, `DELETE` closes it, and an
  unknown or closed id gets `410` with `x-amzn-ErrorType: GoneException` — so boto3's
  `apigatewaymanagementapi` client and Chalice's `WebsocketAPI` work unchanged (requests
  are not signature-checked).

API Gateway's limits that matter are enforced: 128 KB per message in both directions
(a larger client message closes the socket with 1009, a larger POST gets 413
`PayloadTooLargeException`), an idle timeout (default 10 min, reset by client frames
including pings) and a maximum connection age (default 2 h); both close with 1001.
Everything relayed is counted (`Gateway.stats()`, or `GET /@local/stats`).

The websockets package was not used because its server only accepts GET handshakes, so
the management API (POST/DELETE) could not share the port as it does on API Gateway.

PostToConnection is the hot path (thousands a second from the streamer): every accepted
connection starts on `_Front`, which answers plain `POST /{stage}/@connections/{id}`
requests itself and writes the frame straight to the client's socket (~75 µs per POST +
frame instead of ~230 µs through aiohttp's server, docs/benchmarks.md); at the first other
request the connection is handed to aiohttp for good. A client more than 64 KB behind gets
its frames through aiohttp's WebSocket writer, which holds the POST until it reads.

Handlers are synchronous Lambda functions: they run on a thread pool, never on the event
loop, so a handler may itself call the management API of this gateway. One connection's
events are delivered in order ($connect, then each message, then $disconnect).

Usage, from `tools/dev.py` or a test::

    gw = Gateway(app, stage="api", port=0).start()   # background thread, own event loop
    gw.url              # ws://127.0.0.1:PORT/api
    gw.endpoint_url     # http://127.0.0.1:PORT/api  (WEBSOCKET_ENDPOINT)
    gw.stop()

Errors::

    GatewayError            the server could not be started (port busy, ...)
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import logging
import secrets
import string
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import WSCloseCode, WSMsgType, web

from chalice_app.logs import setup_logging

log = logging.getLogger("supernoba.gateway")

MAX_MESSAGE_BYTES = 128 * 1024
IDLE_TIMEOUT_SECONDS = 600.0
MAX_CONNECTION_SECONDS = 7200.0
_ID_ALPHABET = string.ascii_letters + string.digits


class GatewayError(RuntimeError):
    """The gateway could not be started."""


class ConnState(enum.Enum):
    CONNECTING = "connecting"  # $connect is running; not yet reachable through @connections
    OPEN = "open"
    CLOSING = "closing"  # a close was requested (DELETE, idle, limit); no more sends
    CLOSED = "closed"


@dataclass
class _Connection:
    conn_id: str
    source_ip: str
    user_agent: str
    connected_at_ms: int
    headers: dict[str, str]
    ws: web.WebSocketResponse | None = None
    transport: asyncio.Transport | None = None  # the client's socket (lean PostToConnection path)
    state: ConnState = ConnState.CONNECTING
    last_active: float = field(default_factory=time.monotonic)
    last_active_ms: int = 0
    opened_at: float = field(default_factory=time.monotonic)
    close_reason: str = ""


def _snapshot(d: dict) -> dict:
    """A copy of a dict the event-loop thread may be changing (called from other threads)."""
    for _ in range(100):
        try:
            return dict(d)
        except RuntimeError:  # changed size during iteration: try again
            continue
    return {}


def new_connection_id() -> str:
    """An id shaped like API Gateway's (16 characters ending in `=`)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15)) + "="


def _now_ms() -> int:
    return int(time.time() * 1000)


def _request_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response(
        {"message": message}, status=status,
        headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": str(uuid.uuid4())},
    )


#: Above this many unsent bytes to a client, a POST waits for it through aiohttp's writer.
SLOW_CLIENT_BUFFER = 64 * 1024
_RAW_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def _raw_error(status: int, reason: str, error_type: str, message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"x-amzn-ErrorType: {error_type}\r\nx-amzn-RequestId: {uuid.uuid4()}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class _Front(asyncio.Protocol):
    """First protocol of every accepted TCP connection.

    A connection whose requests are plain `POST /{stage}/@connections/{id}` (HTTP/1.1,
    Content-Length body: what PostToConnection sends, hundreds a second per keep-alive
    connection from the streamer) is served here with a few lines of parsing — aiohttp's
    server costs ~0.2 ms per such request (request object, router, response object), more
    than the streamer now spends per send. At the first request that is anything else
    (a WebSocket handshake, GET/DELETE, chunked, `Expect`, `Connection: close`, HTTP/1.0,
    an oversized head) the connection is handed to aiohttp's own protocol for the rest of
    its life, with the bytes not yet handled, so aiohttp answers it exactly as before.
    Answers go out in request order: while a slow POST waits for its client, later bytes wait.
    """

    MAX_HEAD = 8192

    def __init__(self, gateway: Gateway, aiohttp_protocol: Any, prefix: bytes) -> None:
        self.gateway = gateway
        self.aiohttp_protocol = aiohttp_protocol
        self.prefix = prefix
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiting: asyncio.Task | None = None  # a slow POST in progress

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.gateway._fronts.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gateway._fronts.discard(self)
        if self.waiting is not None:
            self.waiting.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiting is None:
            self._serve()

    def _serve(self) -> None:
        buf, prefix, gateway = self.buf, self.prefix, self.gateway
        transport = self.transport
        assert transport is not None
        while buf:
            if not buf.startswith(prefix):
                if len(buf) < len(prefix) and prefix.startswith(buf):
                    return  # too short to tell yet
                self._hand_over()
                return
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.MAX_HEAD:
                    self._hand_over()
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            target, _, version = lines[0][5:].partition(b" ")
            length = -1
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value) if value.strip().isdigit() else -2
                elif name in (b"transfer-encoding", b"expect") or (
                        name == b"connection" and value.strip().lower() == b"close"):
                    length = -2
            if version != b"HTTP/1.1" or length < 0 or length > gateway.max_message_bytes \
                    or b"?" in target or b"/" in target[len(prefix) - 5 :] or len(target) <= len(prefix) - 5:
                self._hand_over()
                return
            if len(buf) < end + 4 + length:
                return
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            raw_id = target[len(prefix) - 5 :]
            conn_id = gateway.wire_ids.get(raw_id)
            if conn_id is None:  # percent-decoded once per id (a real id ends in "%3D")
                if len(gateway.wire_ids) > 100_000:
                    gateway.wire_ids.clear()
                conn_id = gateway.wire_ids[raw_id] = unquote(raw_id.decode("latin-1"))
            answer = gateway.post_now(conn_id, body)
            if answer is None:
                self.waiting = asyncio.get_running_loop().create_task(self._slow(conn_id, body))
                return
            transport.write(answer)

    async def _slow(self, conn_id: str, body: bytes) -> None:
        answer = await self.gateway.post_slow(conn_id, body)
        self.waiting = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)
            self._serve()

    def _hand_over(self) -> None:
        """From now on aiohttp's protocol serves this connection (starting with the unhandled bytes)."""
        transport = self.transport
        assert transport is not None
        self.gateway._fronts.discard(self)
        protocol = self.aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        pending, self.buf = bytes(self.buf), bytearray()
        if pending:
            protocol.data_received(pending)


class LambdaContext:
    """What a handler may read from `context` (a subset of the Lambda runtime's object)."""

    def __init__(self, function_name: str, timeout_ms: int = 30_000) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self.memory_limit_in_mb = 128
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class Gateway:
    """The WebSocket + `@connections` server for one Chalice app and one stage."""

    def __init__(
        self,
        app: Any,
        *,
        stage: str = "api",
        host: str = "127.0.0.1",
        port: int = 0,
        api_id: str = "local",
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        max_connection_seconds: float = MAX_CONNECTION_SECONDS,
        handler_threads: int = 32,
    ) -> None:
        self.app = app
        self.stage = stage.strip("/")
        self.host = host
        self.port = port
        self.api_id = api_id
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.max_connection_seconds = max_connection_seconds
        self._pool = ThreadPoolExecutor(max_workers=handler_threads, thread_name_prefix="gw-handler")
        self._conns: dict[str, _Connection] = {}
        self._counters: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self._fronts: set[_Front] = set()  # keep-alive connections served by the lean POST path
        self.wire_ids: dict[bytes, str] = {}  # id as in a request path -> connection id

    # ----------------------------------------------------------------- public surface
    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/{self.stage}"

    @property
    def endpoint_url(self) -> str:
        """The `@connections` base URL (what `WEBSOCKET_ENDPOINT` must be set to)."""
        return f"http://{self.host}:{self.port}/{self.stage}"

    @property
    def domain_name(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Gateway:
        """Serve in a background thread; returns once the port is bound."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=f"gateway-{self.stage}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise GatewayError(f"gateway did not start within {timeout}s")
        if self._start_error is not None:
            self._thread = None
            raise GatewayError(f"gateway could not listen on {self.host}:{self.port}: {self._start_error}") \
                from self._start_error
        log.info("event=gateway_started url=%s endpoint=%s", self.url, self.endpoint_url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection (their $disconnect runs), then stop the server."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._stopping is not None:
            loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout)
        self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        log.info("event=gateway_stopped counters=%s", dict(self._counters))

    def stats(self) -> dict[str, int]:
        """Counters: connections opened/refused/closed, messages and bytes each way, ..."""
        out = _snapshot(self._counters)
        out["connections_current"] = len(self.connection_ids())
        return out

    def connection_ids(self) -> list[str]:
        return [c.conn_id for c in _snapshot(self._conns).values() if c.state is ConnState.OPEN]

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- server thread
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._started.set()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=self.max_message_bytes * 4)
        app.router.add_get("/@local/stats", self._handle_stats)
        app.router.add_get("/@local/health", self._handle_health)
        app.router.add_route("*", "/{stage}/@connections/{conn_id}", self._handle_management)
        app.router.add_get("/{stage}", self._handle_ws)
        app.router.add_get("/{stage}/", self._handle_ws)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        aiohttp_protocol = runner.server
        assert aiohttp_protocol is not None
        prefix = f"POST /{self.stage}/@connections/".encode()
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: _Front(self, aiohttp_protocol, prefix), self.host, self.port, reuse_address=True)
        except OSError as exc:
            self._start_error = exc
            await runner.cleanup()
            self._started.set()
            return
        self._runner = runner
        self.port = server.sockets[0].getsockname()[1]
        reaper = asyncio.create_task(self._reap_idle())
        self._started.set()
        await self._stopping.wait()
        reaper.cancel()
        closing = []
        for conn in list(self._conns.values()):
            if conn.ws is not None and conn.state is ConnState.OPEN:
                conn.state = ConnState.CLOSING
                conn.close_reason = "Gateway shutting down"
                closing.append(conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"Going away"))
        await asyncio.gather(*closing, return_exceptions=True)  # concurrently: a dead client waits 5 s
        # give the handlers' finally blocks ($disconnect) a moment to run
        deadline = time.monotonic() + 5
        while self._conns and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        server.close()
        for front in list(self._fronts):
            front.close()
        await runner.cleanup()

    # ----------------------------------------------------------------- handlers
    def _handler_for(self, route_key: str) -> Any | None:
        config = getattr(self.app, "websocket_handlers", {}).get(route_key)
        if config is None:
            return None
        return self.app.handler_map.get(config.name)

    def _invoke_sync(self, route_key: str, event: dict[str, Any]) -> dict[str, Any] | None:
        handler = self._handler_for(route_key)
        if handler is None:
            return None
        context = LambdaContext(getattr(self.app, "app_name", "app") + "-websocket_handler")
        result = handler(event, context)
        return result if isinstance(result, dict) else {"statusCode": 200}

    async def _invoke(self, route_key: str, event: dict[str, Any]) -> tuple[dict[str, Any] | None, BaseException | None]:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, self._invoke_sync, route_key, event)
        except Exception as exc:  # the Lambda function failed: API Gateway reports it, never crashes
            self._counters["handler_errors"] += 1
            log.exception("event=handler_error route=%s conn=%s",
                          route_key, event["requestContext"].get("connectionId"))
            return None, exc
        return result, None

    def _request_context(self, conn: _Connection, route_key: str, event_type: str) -> dict[str, Any]:
        now = _now_ms()
        return {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": uuid.uuid4().hex[:16] + "=",
            "requestTime": _request_time(now),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": conn.connected_at_ms,
            "requestTimeEpoch": now,
            "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
            "requestId": uuid.uuid4().hex[:16] + "=",
            "domainName": self.domain_name,
            "connectionId": conn.conn_id,
            "apiId": self.api_id,
        }

    # ----------------------------------------------------------------- WebSocket clients
    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["stage"] != self.stage:
            return _error(403, "ForbiddenException", "Forbidden")
        if not web.WebSocketResponse().can_prepare(request).ok:
            return web.json_response({"message": "Upgrade Required"}, status=426)
        peer = request.remote or "127.0.0.1"
        conn = _Connection(
            conn_id=new_connection_id(), source_ip=peer, user_agent=request.headers.get("User-Agent", ""),
            connected_at_ms=_now_ms(), headers=dict(request.headers),
        )
        conn.last_active_ms = conn.connected_at_ms
        event: dict[str, Any] = {
            "headers": dict(request.headers),
            "multiValueHeaders": {k: request.headers.getall(k) for k in request.headers.keys()},
            "requestContext": self._request_context(conn, "$connect", "CONNECT"),
            "isBase64Encoded": False,
        }
        if request.query:
            event["queryStringParameters"] = {k: request.query.getone(k) for k in request.query.keys()}
            event["multiValueQueryStringParameters"] = {k: request.query.getall(k) for k in request.query.keys()}
        self._conns[conn.conn_id] = conn
        result, exc = await self._invoke("$connect", event)
        status = 500 if exc is not None else int((result or {}).get("statusCode", 200))
        if not 200 <= status < 300:
            self._conns.pop(conn.conn_id, None)
            self._counters["connections_refused"] += 1
            log.info("event=ws_refused conn=%s status=%d ip=%s", conn.conn_id, status, peer)
            body = (result or {}).get("body") or ("Internal server error" if exc else "")
            return web.Response(status=status, text=body if isinstance(body, str) else json.dumps(body))
        # API Gateway answers with a subprotocol only when $connect returned one
        chosen = ((result or {}).get("headers") or {}).get("Sec-WebSocket-Protocol")
        ws = web.WebSocketResponse(
            max_msg_size=self.max_message_bytes, autoping=False, compress=False, timeout=5.0,
            protocols=(chosen,) if chosen else (),
        )
        try:
            await ws.prepare(request)
        except ConnectionError:
            self._conns.pop(conn.conn_id, None)
            return ws
        conn.ws = ws
        conn.transport = request.transport
        conn.state = ConnState.OPEN
        self._counters["connections_opened"] += 1
        log.info("event=ws_open conn=%s ip=%s query=%s", conn.conn_id, peer, sorted(request.query.keys()))
        error_code: int | None = None
        try:
            async for msg in ws:
                conn.last_active = time.monotonic()
                conn.last_active_ms = _now_ms()
                if msg.type is WSMsgType.PING:
                    await ws.pong(msg.data)
                    continue
                if msg.type is WSMsgType.PONG:
                    continue
                if msg.type is WSMsgType.ERROR:
                    exc = ws.exception()
                    error_code = getattr(exc, "code", None)
                    if error_code == WSCloseCode.MESSAGE_TOO_BIG:
                        self._counters["messages_in_too_large"] += 1
                    else:
                        self._counters["frame_errors"] += 1
                    log.warning("event=ws_frame_error conn=%s error=%s", conn.conn_id, exc)
                    break
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_message(conn, msg.type, msg.data)
        finally:
            client_code = int(error_code) if error_code is not None else ws.close_code
            if conn.state is not ConnState.CLOSING:
                conn.close_reason = f"Client-side close frame status code '{client_code}' and reason ''"
            conn.state = ConnState.CLOSED
            if not ws.closed:
                await ws.close()
            await self._disconnect(conn, client_code if client_code is not None else 1006)
        return ws

    async def _on_message(self, conn: _Connection, kind: WSMsgType, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self._counters["messages_in"] += 1
        self._counters["bytes_in"] += len(raw)
        ctx = self._request_context(conn, "$default", "MESSAGE")
        ctx["messageId"] = uuid.uuid4().hex[:16] + "="
        if kind is WSMsgType.TEXT:
            event = {"requestContext": ctx, "body": data, "isBase64Encoded": False}
        else:
            event = {"requestContext": ctx, "body": base64.b64encode(raw).decode(), "isBase64Encoded": True}
        if self._handler_for("$default") is None:
            await self._send_error(conn, "Forbidden", ctx)
            return
        result, exc = await self._invoke("$default", event)
        if exc is not None:
            await self._send_error(conn, "Internal server error", ctx)
        elif result is not None and not 200 <= int(result.get("statusCode", 200)) < 300:
            log.info("event=ws_message_status conn=%s status=%s", conn.conn_id, result.get("statusCode"))

    async def _send_error(self, conn: _Connection, message: str, ctx: dict[str, Any]) -> None:
        """What API Gateway itself sends a client when the route's integration failed."""
        if conn.ws is not None and conn.state is ConnState.OPEN:
            payload = {"message": message, "connectionId": conn.conn_id, "requestId": ctx["requestId"]}
            try:
                await conn.ws.send_str(json.dumps(payload))
            except ConnectionError:
                pass

    async def _disconnect(self, conn: _Connection, code: int) -> None:
        self._counters["connections_closed"] += 1
        ctx = self._request_context(conn, "$disconnect", "DISCONNECT")
        ctx["disconnectStatusCode"] = code
        ctx["disconnectReason"] = conn.close_reason
        event = {
            "headers": {"Host": self.domain_name, "x-api-key": "", "x-restapi": ""},
            "multiValueHeaders": {"Host": [self.domain_name], "x-api-key": [""], "x-restapi": [""]},
            "requestContext": ctx,
            "isBase64Encoded": False,
        }
        log.info("event=ws_close conn=%s code=%s reason=%r", conn.conn_id, code, conn.close_reason)
        try:
            await self._invoke("$disconnect", event)
        finally:
            self._conns.pop(conn.conn_id, None)

    async def _reap_idle(self) -> None:
        period = max(0.05, min(1.0, self.idle_timeout / 4, self.max_connection_seconds / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self._conns.values()):
                if conn.state is not ConnState.OPEN or conn.ws is None:
                    continue
                if now - conn.last_active >= self.idle_timeout:
                    reason, counter = "Idle timeout", "idle_closed"
                elif now - conn.opened_at >= self.max_connection_seconds:
                    reason, counter = "Connection duration limit", "duration_closed"
                else:
                    continue
                self._counters[counter] += 1
                conn.state = ConnState.CLOSING
                conn.close_reason = reason
                log.info("event=ws_expire conn=%s reason=%r", conn.conn_id, reason)
                asyncio.create_task(conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"Going away"))

    # ----------------------------------------------------------------- @connections API
    async def _handle_management(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["stage"] != self.stage:
            return _error(403, "ForbiddenException", "Forbidden")
        conn_id = request.match_info["conn_id"]
        method = request.method
        if method not in ("POST", "GET", "DELETE"):
            return _error(405, "MethodNotAllowedException", f"method {method} is not supported")
        conn = self._conns.get(conn_id)
        if conn is None or conn.ws is None or conn.state is not ConnState.OPEN:
            self._counters["management_gone"] += 1
            return _error(410, "GoneException", "")
        if method == "GET":
            self._counters["management_get"] += 1
            return web.json_response({
                "connectedAt": _iso(conn.connected_at_ms),
                "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
                "lastActiveAt": _iso(conn.last_active_ms),
            })
        if method == "DELETE":
            self._counters["management_delete"] += 1
            conn.state = ConnState.CLOSING
            conn.close_reason = "Connection deleted by the @connections API"
            asyncio.create_task(conn.ws.close(code=WSCloseCode.OK, message=b""))
            return web.Response(status=204)
        # POST: send
        if request.content_length is not None and request.content_length > self.max_message_bytes:
            self._counters["messages_out_too_large"] += 1
            return _error(413, "PayloadTooLargeException", f"Message too long. Max {self.max_message_bytes} bytes")
        data = await request.read()
        if len(data) > self.max_message_bytes:
            self._counters["messages_out_too_large"] += 1
            return _error(413, "PayloadTooLargeException", f"Message too long. Max {self.max_message_bytes} bytes")
        if not await self._send_frame(conn, data):
            return _error(410, "GoneException", "")
        return web.Response(status=200)

    async def _send_frame(self, conn: _Connection, data: bytes) -> bool:
        """`data` to the client through aiohttp's WebSocket writer (a text frame when it is UTF-8,
        as API Gateway does), counted; False when the client is gone."""
        try:
            try:
                await conn.ws.send_str(data.decode("utf-8"))
            except UnicodeDecodeError:
                await conn.ws.send_bytes(data)
        except ConnectionError:
            self._counters["management_gone"] += 1
            return False
        self._counters["messages_out"] += 1
        self._counters["bytes_out"] += len(data)
        return True

    def post_now(self, conn_id: str, data: bytes) -> bytes | None:
        """PostToConnection without aiohttp's request machinery (the `_Front` fast path): the
        frame is written straight to the client's socket. Returns the HTTP answer, or None when
        the client's socket buffer is over its high-water mark — then `post_slow` sends through
        aiohttp's WebSocket writer, which waits for the client to drain (a slow answer, like API
        Gateway's to a client that does not read)."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.ws is None or conn.state is not ConnState.OPEN or conn.ws.closed:
            self._counters["management_gone"] += 1
            return _raw_error(410, "Gone", "GoneException", "")
        if len(data) > self.max_message_bytes:
            self._counters["messages_out_too_large"] += 1
            return _raw_error(413, "Payload Too Large", "PayloadTooLargeException",
                              f"Message too long. Max {self.max_message_bytes} bytes")
        transport = conn.transport
        if transport is None or transport.is_closing():
            self._counters["management_gone"] += 1
            return _raw_error(410, "Gone", "GoneException", "")
        if transport.get_write_buffer_size() > SLOW_CLIENT_BUFFER:
            return None
        try:
            data.decode("utf-8")
            opcode = 0x81  # FIN + text
        except UnicodeDecodeError:
            opcode = 0x82  # FIN + binary
        n = len(data)
        if n < 126:
            header = bytes((opcode, n))
        elif n < 65536:
            header = bytes((opcode, 126)) + n.to_bytes(2, "big")
        else:
            header = bytes((opcode, 127)) + n.to_bytes(8, "big")
        transport.write(header + data)
        counters = self._counters
        counters["messages_out"] += 1
        counters["bytes_out"] += n
        return _RAW_OK

    async def post_slow(self, conn_id: str, data: bytes) -> bytes:
        """PostToConnection through aiohttp's WebSocket writer (waits while the client is slow)."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.ws is None or conn.state is not ConnState.OPEN:
            self._counters["management_gone"] += 1
            return _raw_error(410, "Gone", "GoneException", "")
        if not await self._send_frame(conn, data):
            return _raw_error(410, "Gone", "GoneException", "")
        return _RAW_OK

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "stage": self.stage, "connections": len(self.connection_ids())})

    async def _handle_unknown(self, request: web.Request) -> web.Response:
        return _error(403, "ForbiddenException", "Forbidden")


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.gateway`: serve the repo's Chalice app alone (mostly for debugging)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--stage", default="api", help="API Gateway stage in the URL (default api)")
    parser.add_argument("--chalice-stage", default="local", help="Chalice config stage whose env applies")
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_SECONDS)
    args = parser.parse_args(argv)
    setup_logging(logging.INFO)
    from tools.dev import load_app

    app = load_app(args.chalice_stage)
    gw = Gateway(app, stage=args.stage, host=args.host, port=args.port, idle_timeout=args.idle_timeout).start()
    print(f"WebSocket {gw.url}  @connections {gw.endpoint_url}/@connections/{{id}}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        gw.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
