"""The engine's operations endpoint (`ENGINE_HTTP_PORT`, default 9100).

    GET /health             200 {"status":"ok", engine, uptime, shards:{id:{state,checkpoint,...}}}
                            503 when the depth cache does not answer
    GET /metrics            Prometheus text (metrics.py)
    GET /book/{SYM}?levels=N full-depth book of a symbol matched here (default 1000 levels, max 100000):
                            {"e":"d","s","u","b","a"}; 400 bad symbol/levels, 404 not matched here
Errors are JSON `{"code","message"}`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import redis

from chalice_app import keys

if TYPE_CHECKING:
    from engine_pkg.service.main import EngineService

log = logging.getLogger("supernoba.engine.http")

DEFAULT_BOOK_LEVELS = 1000
MAX_BOOK_LEVELS = 100_000


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two sends: no delayed-ACK stall

    def log_message(self, fmt: str, *args) -> None:  # route http.server's access log to logging
        log.debug("event=http " + fmt, *args)

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode())

    def _error(self, status: int, code: str, message: str) -> None:
        log.info("event=http_error path=%s status=%d code=%s", self.path, status, code)
        self._json(status, {"code": code, "message": message})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        svc = self.server.svc
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        if path == "/health":
            self._health(svc)
        elif path == "/metrics":
            self._send(200, svc.metrics.render().encode(), "text/plain; version=0.0.4")
        elif path.startswith("/book/"):
            self._book(svc, path[len("/book/"):], parse_qs(url.query))
        else:
            self._error(404, "NOT_FOUND", f"no route {path}")

    def _health(self, svc: EngineService) -> None:
        try:
            svc.depth_cache.ping()
            valkey = "ok"
        except redis.RedisError as exc:
            valkey = f"error: {exc}"
        shards = {
            sid: {"state": w.state.value, "checkpoint": w.checkpoint, "millis_behind_latest": w.millis_behind,
                  "records_since_snapshot": w.records_since_snapshot}
            for sid, w in sorted(list(svc.workers.items()))
        }
        body = {"status": "ok" if valkey == "ok" else "degraded", "engine": svc.engine_id,
                "stream": svc.settings.orders_stream, "uptime_s": round(time.time() - svc.started_at, 1),
                "engines_alive": svc.live_engines, "valkey": valkey, "shards": shards}
        self._json(200 if valkey == "ok" else 503, body)

    def _book(self, svc: EngineService, symbol: str, query: dict) -> None:
        if not keys.is_valid_symbol(symbol):
            return self._error(400, "BAD_SYMBOL", f"symbol must match {keys.SYMBOL_PATTERN}")
        raw = (query.get("levels") or [str(DEFAULT_BOOK_LEVELS)])[0]
        # ASCII digits only: str.isdigit() also accepts "²" or "١", which int() then refuses
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_BOOK_LEVELS:
            return self._error(400, "BAD_LEVELS", f"levels must be an integer from 1 to {MAX_BOOK_LEVELS}")
        worker = svc.worker_for(symbol)
        book = worker.book(symbol, int(raw)) if worker else None
        if book is None:
            return self._error(404, "UNKNOWN_SYMBOL", f"{symbol} has no book on this engine")
        self._json(200, book)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], svc: EngineService) -> None:
        self.svc = svc
        super().__init__(addr, _Handler)


class EngineHTTPServer:
    """Serves the endpoint on a background thread; port 0 picks a free one."""

    def __init__(self, svc: EngineService, port: int, host: str = "0.0.0.0") -> None:
        self.svc = svc
        self.host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    def start(self) -> None:
        self._server = _Server((self.host, self._port), self.svc)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
