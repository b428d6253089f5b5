"""The streamer's operator endpoints on `STREAMER_HTTP_PORT` (asyncio, no framework).

    GET /health    200 {"status":"ok",...} while both tiers tick and Valkey answers;
                   503 {"status":"degraded",...} otherwise
    GET /metrics   Prometheus text (streamer_pkg.metrics)
    anything else  404 {"code":"NOT_FOUND","message":...}
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson

log = logging.getLogger("supernoba.streamer.http")


def _response(status: int, reason: str, body: bytes, ctype: str) -> bytes:
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


class OpsServer:
    def __init__(self, port: int, health: Callable[[], tuple[bool, dict]], metrics: Callable[[], str],
                 host: str = "0.0.0.0") -> None:
        self.host = host
        self.port = port
        self._health = health
        self._metrics = metrics
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("event=http_listen port=%d", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            method, path = (parts[0], parts[1].split(b"?")[0]) if len(parts) >= 2 else (b"", b"")
            if method != b"GET":
                body = orjson.dumps({"code": "METHOD_NOT_ALLOWED", "message": "only GET is served"})
                writer.write(_response(405, "Method Not Allowed", body, "application/json"))
            elif path == b"/health":
                ok, detail = self._health()
                body = orjson.dumps({"status": "ok" if ok else "degraded", **detail})
                writer.write(_response(200 if ok else 503, "OK" if ok else "Service Unavailable", body,
                                       "application/json"))
            elif path == b"/metrics":
                writer.write(_response(200, "OK", self._metrics().encode(), "text/plain; version=0.0.4"))
            else:
                body = orjson.dumps({"code": "NOT_FOUND", "message": f"no route {path.decode(errors='replace')}"})
                writer.write(_response(404, "Not Found", body, "application/json"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
