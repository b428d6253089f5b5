"""A lean HTTP/1.1 keep-alive client for the `@connections` API, on the streamer's event loop.

Each PostToConnection is one small `POST` whose answer is a status line, a few headers and an
(almost always empty) body. `WireClient.post` writes the whole request with one
`transport.write` on an idle keep-alive connection (asyncio `Protocol`, TCP_NODELAY), and the
protocol parses the answer straight from the socket buffer: status, `Content-Length` /
chunked body, `Connection: close`, `x-amzn-ErrorType`. Many requests are in flight at once,
one per connection (no pipelining: API Gateway does not promise it); connections are reused
LIFO so the pool stays as small as the concurrency needs and grows on demand. Timeouts are
checked by one sweeper every `timeout / 4` (no timer per request). A request that fails on a
reused connection before any byte of the answer arrived (the server closed an idle
connection) is written once more on a fresh one, as urllib3 does.

Why not aiohttp / urllib3 / h11: measured per request on this machine (docs/streamer.md),
aiohttp's client ≈ 200 µs, botocore's urllib3 path ≈ 500 µs, h11 alone ≈ 90 µs for one
request + answer; this module ≈ 30–40 µs of Python per send.

Errors: `WireError(kind)` — kind `timeout` or `connection` (refused, reset, closed, bad answer).
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_mod
import time
from collections import deque

log = logging.getLogger("supernoba.streamer.wire")

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024


class WireError(Exception):
    def __init__(self, message: str, kind: str = "connection") -> None:
        super().__init__(message)
        self.kind = kind


class Response:
    __slots__ = ("status", "error_type", "body")

    def __init__(self, status: int, error_type: str, body: bytes) -> None:
        self.status = status
        self.error_type = error_type  # x-amzn-ErrorType up to its first ':' ("" when absent)
        self.body = body


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    __slots__ = ("transport", "buf", "waiter", "deadline", "closed", "used", "got_bytes", "_need",
                 "_status", "_error", "_keep", "_chunked", "_head_done")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.deadline = 0.0
        self.closed = False
        self.used = 0  # requests completed on this connection
        self.got_bytes = False
        self._reset()

    def _reset(self) -> None:
        self._head_done = False
        self._need = -1  # body bytes expected; -1 = read to close
        self._status = 0
        self._error = ""
        self._keep = True
        self._chunked = False

    # -- asyncio.Protocol -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing asked: a protocol error, the connection is unusable
            self.abort(WireError("unexpected bytes from server"))
            return
        self.got_bytes = True
        buf = self.buf
        buf += data
        try:
            self._parse()
        except (ValueError, IndexError) as exc:
            self.abort(WireError(f"bad HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self._head_done and self._need == -1 and not self._chunked:  # body ends at close
                self._finish(bytes(self.buf))
            else:
                waiter.set_exception(WireError(f"connection closed: {exc!r}" if exc else "connection closed"))
        self.waiter = None

    # -- parsing -----------------------------------------------------------------
    def _parse(self) -> None:
        buf = self.buf
        if not self._head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ValueError("header block too large")
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            status_line, _, rest = head.partition(b"\r\n")
            status = int(status_line.split(b" ", 2)[1])
            if 100 <= status < 200:  # interim answer (100 Continue): the real one follows
                if buf:
                    self._parse()
                return
            self._status = status
            self._head_done = True
            keep = status_line.startswith(b"HTTP/1.1")
            need = 0 if status in (204, 304) else -1
            for line in rest.split(b"\r\n"):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    need = int(value)
                elif name == b"transfer-encoding":
                    self._chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    v = value.strip().lower()
                    keep = False if v == b"close" else (True if v == b"keep-alive" else keep)
                elif name == b"x-amzn-errortype":
                    self._error = value.strip().split(b":", 1)[0].decode("latin-1")
            if need > MAX_BODY:
                raise ValueError("body too large")
            self._need = need
            self._keep = keep and (need >= 0 or self._chunked)
        if self._chunked:
            self._parse_chunked()
        elif self._need >= 0 and len(buf) >= self._need:
            body = bytes(buf[: self._need])
            del buf[: self._need]
            if buf:  # bytes nobody asked for: this answer stands, the connection is not reused
                self._keep = False
            self._finish(body)

    def _parse_chunked(self) -> None:
        buf = self.buf
        body = bytearray()
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)  # trailers (usually none) end with an empty line
                if end < 0:
                    return
                del buf[: end + 4]
                if buf:
                    self._keep = False
                self._finish(bytes(body))
                return
            if len(buf) < eol + 2 + size + 2:
                return
            body += buf[eol + 2 : eol + 2 + size]
            if len(body) > MAX_BODY:
                raise ValueError("body too large")
            pos = eol + 2 + size + 2

    def _finish(self, body: bytes) -> None:
        waiter, self.waiter = self.waiter, None
        response = Response(self._status, self._error, body)
        keep = self._keep
        self._reset()
        self.used += 1
        if not keep:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    # -- control -------------------------------------------------------------------
    def send(self, data: bytes, waiter: asyncio.Future[Response], deadline: float) -> None:
        self.waiter = waiter
        self.deadline = deadline
        self.got_bytes = False
        self.buf.clear()
        self.transport.write(data)  # type: ignore[union-attr]

    def abort(self, error: WireError) -> None:
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()


class WireClient:
    """Keep-alive pool to one `host:port`; `post(path, headers, body)` → `Response`."""

    def __init__(self, host: str, port: int, *, tls: bool = False, server_hostname: str | None = None,
                 timeout: float = 2.0, max_idle: int = 256, ssl_context: ssl_mod.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_idle = max_idle
        self._ssl: ssl_mod.SSLContext | None = (ssl_context or ssl_mod.create_default_context()) if tls else None
        self._server_hostname = server_hostname if tls else None
        self._idle: deque[_Conn] = deque()
        self._busy: set[_Conn] = set()
        self._sweeper: asyncio.Task | None = None
        self.opened = 0  # connections opened (tests, metrics)
        self.resent = 0  # requests written again after a stale keep-alive connection

    async def _open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Conn, self.host, self.port, ssl=self._ssl,
                                       server_hostname=self._server_hostname),
                self.timeout,
            )
        except TimeoutError as exc:
            raise WireError(f"connect to {self.host}:{self.port} timed out", "timeout") from exc
        except OSError as exc:
            raise WireError(f"connect to {self.host}:{self.port} failed: {exc!r}") from exc
        self.opened += 1
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="wire-sweeper")
        return conn

    async def post(self, request: bytes) -> Response:
        """Send one complete request (head + body) and return its answer."""
        idle = self._idle
        conn = None
        while idle:
            conn = idle.pop()
            if not conn.closed:
                break
            conn = None
        if conn is None:
            conn = await self._open()
        try:
            return await self._exchange(conn, request)
        except WireError as exc:
            if conn.used == 0 or conn.got_bytes or exc.kind == "timeout":
                raise
            self.resent += 1  # a stale keep-alive connection: once more on a new one
            return await self._exchange(await self._open(), request)

    async def _exchange(self, conn: _Conn, request: bytes) -> Response:
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        busy = self._busy
        busy.add(conn)
        try:
            conn.send(request, waiter, time.monotonic() + self.timeout)
            response = await waiter
        except asyncio.CancelledError:
            conn.close()  # the answer would arrive with nobody waiting for it
            raise
        finally:
            busy.discard(conn)
        if not conn.closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        elif not conn.closed:
            conn.close()
        return response

    async def _sweep(self) -> None:
        period = max(0.01, self.timeout / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in [c for c in self._busy if c.waiter is not None and c.deadline < now]:
                conn.abort(WireError(f"no answer within {self.timeout}s", "timeout"))
            if not self._busy and not self._idle:
                return

    def connections(self) -> int:
        return len(self._idle) + len(self._busy)

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._idle) + list(self._busy):
            conn.abort(WireError("client closed"))
        self._idle.clear()
