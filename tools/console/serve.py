"""Serve the test console: the page, its ES modules, Lightweight Charts and the config.

    GET /                       index.html
    GET /js/*.js, /style.css    the page's modules and styles (this folder)
    GET /vendor/lightweight-charts.mjs
                                the standalone ES build from tools/node_modules (no CDN)
    GET /console-config.json    generated: {"restUrl", "wsUrl", "stage", "adminKey"}
    *   /rest/...               (proxy mode, the default) forwarded to the REST API, so the
                                browser needs no CORS from it; `--no-proxy` makes the page
                                call the REST URL directly

`serve(host, port, rest_url, ws_url, admin_key=None)` starts the server on a background
thread and returns a running `ConsoleServer` (port 0 picks a free port; `.url`, `.stop()`,
context manager). `python -m tools.console.serve --help` runs it in the foreground;
`--export DIR` (`export(...)`) writes the same files as a static site for a deployed stage.

Errors:

    ConsoleServeError          the console could not be served
     └── MissingAsset          a file the page needs is not installed (run `make setup`)

A proxied request whose upstream cannot be reached is answered 502 with
`{"code":"UPSTREAM_UNREACHABLE","message":…}`; unknown paths are 404 JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import mimetypes
import shutil
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from chalice_app.logs import setup_logging
from tools.ports import DEFAULT_PORTS, LOCAL_HOST, REST_URL, WS_URL

log = logging.getLogger("supernoba.console")

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
LWC_DIST = REPO_ROOT / "tools" / "node_modules" / "lightweight-charts" / "dist"
LWC_FILE = "lightweight-charts.standalone.production.mjs"
VENDOR_PATH = "/vendor/lightweight-charts.mjs"
PROXY_PREFIX = "/rest"
#: headers passed through the REST proxy, both ways
FORWARD_REQUEST_HEADERS = ("content-type", "accept", "authorization", "x-test-user", "x-admin-key")
FORWARD_RESPONSE_HEADERS = ("content-type", "retry-after")
MAX_PROXY_BODY = 1 << 20
PROXY_TIMEOUT_S = 15.0
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
         ".json": "application/json", ".png": "image/png", ".svg": "image/svg+xml"}


class ConsoleServeError(RuntimeError):
    """The console could not be served."""


class MissingAsset(ConsoleServeError):
    """A file the page needs is missing (Lightweight Charts comes from `make setup`'s npm install)."""


def console_config(rest_url: str, ws_url: str, admin_key: str | None, *, proxy: bool, stage: str) -> dict[str, Any]:
    return {
        "restUrl": PROXY_PREFIX if proxy else rest_url.rstrip("/"),
        "upstreamRestUrl": rest_url.rstrip("/"),
        "wsUrl": ws_url,
        "stage": stage,
        "adminKey": admin_key or "",
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two sends: no delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http client=%s %s", self.address_string(), format % args)

    # --- responses -------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, code: str, message: str) -> None:
        log.info("console_error status=%s code=%s path=%s", status, code, self.path)
        self._json(status, {"code": code, "message": message})

    # --- routing ---------------------------------------------------------------------
    def _route(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if self.server.proxy and (path == PROXY_PREFIX or path.startswith(PROXY_PREFIX + "/")):
            self._proxy()
            return
        if self.command not in ("GET", "HEAD"):
            self._error(405, "METHOD_NOT_ALLOWED", f"{self.command} is not served here")
            return
        if path == "/console-config.json":
            self._json(200, self.server.config)
            return
        if path == VENDOR_PATH:
            self._file(LWC_DIST / LWC_FILE)
            return
        if path in ("/", "/index.html"):
            self._file(HERE / "index.html")
            return
        target = (HERE / path.lstrip("/")).resolve()
        allowed = target.suffix in (".js", ".css", ".png", ".svg") and target.is_relative_to(HERE)
        if not allowed or not target.is_file():
            self._error(404, "NOT_FOUND", f"no such file: {path}")
            return
        self._file(target)

    do_GET = do_HEAD = do_POST = do_PATCH = do_DELETE = do_PUT = do_OPTIONS = _route

    def _file(self, file: Path) -> None:
        try:
            data = file.read_bytes()
        except OSError as exc:
            self._error(404, "NOT_FOUND", f"cannot read {file.name}: {exc.strerror}")
            return
        ctype = TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        self._send(200, data, ctype)

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_PROXY_BODY:
            self._error(413, "BODY_TOO_LARGE", f"request body over {MAX_PROXY_BODY} bytes")
            return
        body = self.rfile.read(length) if length else None
        rest = self.path[len(PROXY_PREFIX):] or "/"
        url = self.server.rest_url + rest
        headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARD_REQUEST_HEADERS}
        req = urllib.request.Request(url, data=body, method=self.command, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=PROXY_TIMEOUT_S) as res:
                status, data, res_headers = res.status, res.read(), res.headers
        except urllib.error.HTTPError as exc:
            status, data, res_headers = exc.code, exc.read(), exc.headers
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            self._error(502, "UPSTREAM_UNREACHABLE", f"REST API at {self.server.rest_url} unreachable: {reason}")
            return
        extra = {k: v for k, v in res_headers.items() if k.lower() in FORWARD_RESPONSE_HEADERS[1:]}
        log.debug("proxy method=%s path=%s status=%s", self.command, rest, status)
        self._send(status, data, res_headers.get("Content-Type", "application/json"), extra)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], rest_url: str, config: dict[str, Any], proxy: bool) -> None:
        super().__init__(addr, _Handler)
        self.rest_url = rest_url.rstrip("/")
        self.config = config
        self.proxy = proxy


class ConsoleServer:
    """A running console server (background thread)."""

    def __init__(self, httpd: _Server) -> None:
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="console-http", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def config(self) -> dict[str, Any]:
        return self._httpd.config

    def wait(self) -> None:
        self._thread.join()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ConsoleServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str,
    port: int,
    rest_url: str,
    ws_url: str,
    admin_key: str | None = None,
    *,
    proxy: bool = True,
    stage: str = "local",
) -> ConsoleServer:
    """Start serving the console on `host:port` (0 = a free port); returns the running server."""
    if not (LWC_DIST / LWC_FILE).is_file():
        raise MissingAsset(f"{LWC_DIST / LWC_FILE} not found: run `make setup` (npm install in tools/)")
    config = console_config(rest_url, ws_url, admin_key, proxy=proxy, stage=stage)
    try:
        httpd = _Server((host, port), rest_url, config, proxy)
    except OSError as exc:
        raise ConsoleServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    server = ConsoleServer(httpd)
    log.info("console_serving url=%s rest=%s ws=%s proxy=%s", server.url, rest_url, ws_url, proxy)
    return server


def export(out_dir: Path, rest_url: str, ws_url: str, admin_key: str | None = None, *, stage: str = "local") -> Path:
    """Write the page as plain static files (for S3 or any web server), pointed at a stage.

    The REST URL is called directly from the browser (no proxy), so the API must allow
    CORS from where the files are hosted (the Chalice app allows `*`).
    """
    if not (LWC_DIST / LWC_FILE).is_file():
        raise MissingAsset(f"{LWC_DIST / LWC_FILE} not found: run `make setup` (npm install in tools/)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "js").mkdir(exist_ok=True)
    (out_dir / "vendor").mkdir(exist_ok=True)
    for name in ("index.html", "style.css"):
        shutil.copyfile(HERE / name, out_dir / name)
    for js in sorted((HERE / "js").glob("*.js")):
        shutil.copyfile(js, out_dir / "js" / js.name)
    shutil.copyfile(LWC_DIST / LWC_FILE, out_dir / VENDOR_PATH.lstrip("/"))
    config = console_config(rest_url, ws_url, admin_key, proxy=False, stage=stage)
    (out_dir / "console-config.json").write_text(json.dumps(config, indent=2) + "\n")
    log.info("console_exported dir=%s rest=%s ws=%s", out_dir, rest_url, ws_url)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.console.serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=LOCAL_HOST, help="listen address (default %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORTS["console"],
                   help="listen port, 0 = any free port (default %(default)s)")
    p.add_argument("--rest", default=REST_URL, help="REST API base URL (default %(default)s)")
    p.add_argument("--ws", default=WS_URL, help="WebSocket URL (default %(default)s)")
    p.add_argument("--admin-key", default=None, help="X-Admin-Key the page sends (shows the admin panel)")
    p.add_argument("--stage", default="local", help="stage name shown by the page (default local)")
    p.add_argument("--no-proxy", action="store_true",
                   help="let the browser call --rest directly (needs CORS) instead of through /rest")
    p.add_argument("--export", type=Path, metavar="DIR",
                   help="write the page as static files into DIR (for S3 or any web server) and exit")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    if args.export:
        try:
            out = export(args.export, args.rest, args.ws, args.admin_key, stage=args.stage)
        except (ConsoleServeError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"console written to {out} (REST {args.rest}, WS {args.ws})", flush=True)
        return 0
    try:
        server = serve(args.host, args.port, args.rest, args.ws, args.admin_key, proxy=not args.no_proxy,
                       stage=args.stage)
    except ConsoleServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"console: {server.url}  (REST {args.rest}, WS {args.ws})", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
