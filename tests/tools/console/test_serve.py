"""tools/console/serve.py without a browser: files, generated config, REST proxy, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.tools.console.helpers import REPO_ROOT, FakeBackend
from tools.console.serve import serve


def fetch(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as res:
            return res.status, dict(res.headers), res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    with FakeBackend() as fb:
        yield fb


def test_serves_page_modules_library_and_config(backend: FakeBackend) -> None:
    with serve("127.0.0.1", 0, backend.rest_url + "/", backend.ws_url, "k3y") as srv:
        status, headers, body = fetch(srv.url)
        assert status == 200 and headers["Content-Type"] == "text/html" and b'src="js/main.js"' in body
        status, headers, body = fetch(srv.url + "js/chart.js")
        assert status == 200 and headers["Content-Type"] == "text/javascript"
        status, headers, body = fetch(srv.url + "vendor/lightweight-charts.mjs")
        assert status == 200 and headers["Content-Type"] == "text/javascript" and b"createChart" in body
        status, _, body = fetch(srv.url + "console-config.json")
        assert status == 200
        assert json.loads(body) == {"restUrl": "/rest", "upstreamRestUrl": backend.rest_url, "wsUrl": backend.ws_url,
                                    "stage": "local", "adminKey": "k3y"}
    with serve("127.0.0.1", 0, backend.rest_url, backend.ws_url, proxy=False) as srv:
        assert json.loads(fetch(srv.url + "console-config.json")[2])["restUrl"] == backend.rest_url
        assert fetch(srv.url + "rest/depth/TEST")[0] == 404  # no proxy: nothing under /rest


@pytest.mark.parametrize("path", ["serve.py", "../../pyproject.toml", "js/../../../README.md", "nope.js", "%2e%2e/app.py"])
def test_only_the_console_files_are_served(backend: FakeBackend, path: str) -> None:
    with serve("127.0.0.1", 0, backend.rest_url, backend.ws_url) as srv:
        status, headers, body = fetch(srv.url + path)
        assert status == 404
        assert json.loads(body)["code"] == "NOT_FOUND"


def test_rest_proxy_forwards_method_body_auth_headers_and_errors(backend: FakeBackend) -> None:
    with serve("127.0.0.1", 0, backend.rest_url, backend.ws_url) as srv:
        status, _, body = fetch(srv.url + "rest/orders", "POST", {"symbol": "TEST", "side": "BUY", "price": 5, "quantity": 1},
                                {"Content-Type": "application/json", "X-Test-User": "u1", "Cookie": "secret=1"})
        assert status == 202 and json.loads(body)["status"] == "QUEUED"
        method, path, headers, sent = backend.rest_calls[-1]
        assert (method, path, headers["x-test-user"], sent["price"]) == ("POST", "/orders", "u1", 5)
        assert "cookie" not in headers
        status, _, body = fetch(srv.url + "rest/orders", "POST", {"symbol": "TEST", "side": "BUY", "price": "x",
                                                                   "quantity": 1}, {"X-Test-User": "u1"})
        assert status == 400 and json.loads(body)["code"] == "BAD_PRICE"
        status, _, _ = fetch(srv.url + "rest/orders/ord_1?symbol=TEST", "DELETE", headers={"X-Test-User": "u1"})
        assert status == 202 and backend.calls("DELETE", "/orders/ord_1")[-1][2]["symbol"] == "TEST"
    with serve("127.0.0.1", 0, "http://127.0.0.1:9", backend.ws_url) as srv:  # nothing listens on port 9
        status, _, body = fetch(srv.url + "rest/health")
        assert status == 502 and json.loads(body)["code"] == "UPSTREAM_UNREACHABLE"


def test_cli_help() -> None:
    out = subprocess.run([sys.executable, "-m", "tools.console.serve", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert "--rest" in out and "--ws" in out and "--no-proxy" in out
