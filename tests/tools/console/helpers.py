"""Browser and fake-backend helpers for the console tests.

- `launch_chromium(playwright)`: Debian's Chromium, headless, sandbox off (never `playwright install`).
- `PageWatch`: collects console errors / page errors / failed requests of one page, saves screenshots.
- `FakeBackend`: a tiny REST + WebSocket stand-in for page-only behaviour (ladder rendering,
  aggregation, reconnect, refused handshakes). The console's real behaviour is tested against
  the local stack.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

REPO_ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO_ROOT / "artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 900}


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


class PageWatch:
    """Console errors, page errors and failed requests of one page."""

    def __init__(self, page: Any, ignore: tuple[str, ...] = ()) -> None:
        self.page = page
        self.ignore = ignore
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("request", lambda req: self.requests.append(f"{req.method} {req.url}"))

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and not any(s in msg.text for s in self.ignore):
            self.errors.append(f"console.error: {msg.text}")

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


class FakeBackend:
    """REST + WebSocket stand-in: canned answers, records what the page sent, pushes events."""

    def __init__(self) -> None:
        self.depth: dict[str, dict] = {}
        self.charts: dict[tuple[str, str], list[dict]] = {}
        self.admin_symbols: list[str] = ["TEST"]
        self.rest_calls: list[tuple[str, str, dict[str, str], Any]] = []
        self.ws_received: list[dict] = []
        self.ws_paths: list[str] = []
        self.refuse_users: set[str] = set()  # test-mode user ids whose handshake is refused (403)
        self.active_symbols: set[str] | None = None  # None: every well-formed symbol is listed
        self.max_subs = 20
        self.order_refused_symbols: set[str] = set()  # POST /orders answers 400 INVALID_SYMBOL
        self.refused_paths: list[str] = []
        self._clients: set[ServerConnection] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run_ws, daemon=True)
        self._stop: asyncio.Future | None = None
        self.ws_port = 0
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    # --- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> FakeBackend:
        self._thread.start()
        self._ready.wait(10)
        self._http_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(5)

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/api"

    # --- WebSocket -----------------------------------------------------------------------
    def _run_ws(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = self._loop.create_future()
        async with serve(self._ws_handler, "127.0.0.1", 0, process_request=self._process_request) as server:
            self.ws_port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop

    def _process_request(self, conn: ServerConnection, request: Any) -> Any:
        """Refuse the handshake of a user in `refuse_users`, like the gateway refuses a bad $connect."""
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.path).query))
        if query.get("userId") in self.refuse_users:
            self.refused_paths.append(request.path)
            return conn.respond(403, "test mode refused\n")
        return None

    async def _ws_handler(self, ws: ServerConnection) -> None:
        self.ws_paths.append(ws.request.path)
        self._clients.add(ws)
        state: dict[str, Any] = {"main": None, "subs": set()}
        try:
            async for raw in ws:
                msg = json.loads(raw)
                self.ws_received.append(msg)
                reply = self._answer(msg, state)
                if reply is not None:
                    await ws.send(json.dumps(reply))
        finally:
            self._clients.discard(ws)

    def _answer(self, msg: dict, state: dict[str, Any]) -> dict | None:
        """What chalice_app/ws_handlers.py answers a subscribe / unsubscribe / ping (SPEC §6), a
        subscribe all-or-nothing."""
        def error(code: str, message: str) -> dict:
            return {"e": "error", "code": code, "message": message}

        action = msg.get("action")
        if action == "ping":
            return {"e": "pong", "t": 0}
        if action == "unsubscribe":
            state["subs"] -= set(msg.get("sub") or [])
            return {"e": "unsubscribed", "main": state["main"], "sub": sorted(state["subs"])}
        if action != "subscribe":
            return None
        main, subs = msg.get("main"), list(msg.get("sub") or [])
        if len(subs) > self.max_subs:
            return error("TOO_MANY_SUBSCRIPTIONS", f"at most {self.max_subs} sub symbols per connection")
        for s in ([main] if main is not None else []) + subs:
            if not isinstance(s, str) or not re.fullmatch(r"[A-Z0-9][A-Z0-9._-]{0,15}", s):
                return error("INVALID_SYMBOL", f"invalid symbol {str(s)[:40]!r}")
        unknown = [s for s in ([main] if main else []) + subs
                   if self.active_symbols is not None and s not in self.active_symbols]
        if unknown:
            return error("UNKNOWN_SYMBOL", f"unknown symbol(s): {', '.join(unknown)}")
        if len(state["subs"] | set(subs)) > self.max_subs:
            return error("TOO_MANY_SUBSCRIPTIONS", f"at most {self.max_subs} sub symbols per connection")
        state["main"] = main if main is not None else state["main"]
        state["subs"] |= set(subs)
        return {"e": "subscribed", "main": state["main"], "sub": sorted(state["subs"])}

    def push(self, msg: dict) -> None:
        async def send() -> None:
            for ws in list(self._clients):
                await ws.send(json.dumps(msg))

        asyncio.run_coroutine_threadsafe(send(), self._loop).result(5)

    def drop_clients(self) -> None:
        async def close() -> None:
            for ws in list(self._clients):
                await ws.close(1011, "test drop")

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def subscribes(self) -> list[dict]:
        return [m for m in self.ws_received if m.get("action") == "subscribe"]

    # --- REST ------------------------------------------------------------------------------
    def calls(self, method: str, path_prefix: str) -> list[tuple[str, str, dict[str, str], Any]]:
        return [c for c in self.rest_calls if c[0] == method and c[1].startswith(path_prefix)]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, obj: Any) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Access-Control-Allow-Origin", "*")  # like the Chalice app's CORS
                self.end_headers()
                self.wfile.write(body)

            def do_OPTIONS(self) -> None:  # CORS preflight
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Methods", "GET,POST,PATCH,DELETE")
                self.send_header("Access-Control-Allow-Headers", "Content-Type,Authorization,X-Test-User,X-Admin-Key")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _handle(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                backend.rest_calls.append((self.command, url.path, {**query, **headers}, body))
                self._route(url.path, query, headers, body)

            def _route(self, path: str, query: dict, headers: dict, body: Any) -> None:
                if self.command == "GET" and path.startswith("/depth/"):
                    sym = path.rsplit("/", 1)[1]
                    snap = backend.depth.get(sym, {"e": "d", "s": sym, "t": 0, "u": 0, "b": [], "a": []})
                    return self._reply(200, snap)
                if self.command == "GET" and path == "/chart":
                    data = backend.charts.get((query["symbol"], query["interval"]), [])
                    limit = int(query.get("limit", 100))
                    return self._reply(200, {"symbol": query["symbol"], "interval": query["interval"], "data": data[-limit:]})
                if path == "/orders" and self.command == "POST":
                    if not (headers.get("x-test-user") or headers.get("authorization")):
                        return self._reply(401, {"code": "UNAUTHORIZED", "message": "log in"})
                    if body.get("symbol") in backend.order_refused_symbols:
                        return self._reply(400, {"code": "INVALID_SYMBOL", "message": "symbol not tradable",
                                                 "field": "symbol"})
                    if not isinstance(body.get("price"), int) and body.get("type") != "MARKET":
                        return self._reply(400, {"code": "BAD_PRICE", "message": "price must be a positive integer",
                                                 "field": "price"})
                    return self._reply(202, {"order_id": f"ord_{len(backend.rest_calls):04d}", "status": "QUEUED"})
                if path.startswith("/orders/") and self.command in ("DELETE", "PATCH"):
                    return self._reply(202, {"order_id": path.rsplit("/", 1)[1], "status": "QUEUED"})
                if path == "/admin/symbols":
                    if headers.get("x-admin-key") != "k3y":
                        return self._reply(403, {"code": "FORBIDDEN", "message": "admin only"})
                    if self.command == "POST" and not re.fullmatch(r"[A-Z0-9][A-Z0-9._-]{0,15}", body["symbol"]):
                        return self._reply(400, {"code": "INVALID_SYMBOL", "message": "invalid symbol"})
                    if self.command == "POST":
                        backend.admin_symbols.append(body["symbol"])
                    if self.command == "DELETE":
                        backend.admin_symbols.remove(query.get("symbol") or body["symbol"])
                    return self._reply(200, {"symbols": sorted(backend.admin_symbols)})
                return self._reply(404, {"code": "NOT_FOUND", "message": path})

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

        return Handler


class DevStack:
    """`python -m tools.dev` (what `make dev` runs) in a subprocess on free ports, in a fresh data
    folder (`tools.dev.DevProcess`, which the end-to-end test uses too), required to report every
    part healthy; `.urls`, `.admin_key` from its `run/stack.json`."""

    def __init__(self, data_dir: Path, timeout: float = 150.0) -> None:
        self.data_dir = data_dir
        self.timeout = timeout
        self.dev: Any = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> DevStack:
        from tools.dev import DevProcess

        self.dev = DevProcess(self.data_dir, "--no-schedules", timeout=self.timeout).start()
        self.info = self.dev.info
        unhealthy = [s for s in self.info.get("status", []) if not s.get("healthy")]
        if not self.info.get("status") or unhealthy:
            self.__exit__()
            raise RuntimeError(f"local stack not healthy: {unhealthy}\n{self.dev.output()[-4000:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.dev is not None:
            self.dev.stop()

    @property
    def urls(self) -> dict[str, str]:
        return self.info["urls"]

    @property
    def admin_key(self) -> str:
        return self.info["admin_api_key"]

    # --- REST helpers ----------------------------------------------------------------------
    def rest(self, method: str, path: str, body: Any = None, user: str | None = None,
             admin: bool = False) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if user:
            headers["X-Test-User"] = user
        if admin:
            headers["X-Admin-Key"] = self.admin_key
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.urls["rest"] + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                raw = res.read()
                return res.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def add_symbol(self, symbol: str) -> None:
        status, body = self.rest("POST", "/admin/symbols", {"symbol": symbol}, admin=True)
        assert status in (200, 201), body

    def order(self, user: str, symbol: str, side: str, price: int, quantity: int) -> str:
        status, body = self.rest("POST", "/orders", {"symbol": symbol, "side": side, "price": price,
                                                     "quantity": quantity}, user=user)
        assert status == 202, body
        return body["order_id"]
