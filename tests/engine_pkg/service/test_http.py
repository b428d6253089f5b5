"""The engine's operations endpoint on its own (engine_pkg.service.http), with a stand-in
service: request validation that needs no Kinesis or Valkey."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from engine_pkg.service.http import MAX_BOOK_LEVELS, EngineHTTPServer


@pytest.fixture(scope="module")
def server() -> Iterator[EngineHTTPServer]:
    svc = SimpleNamespace(worker_for=lambda symbol: None)  # no symbol is matched here
    srv = EngineHTTPServer(svc, 0, "127.0.0.1")  # type: ignore[arg-type]
    srv.start()
    yield srv
    srv.stop()


def _get(srv: EngineHTTPServer, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("levels", [
    "%C2%B2",          # "²": str.isdigit() is true, int() refuses it
    "%D9%A1",          # "١" (Arabic-Indic one): int() would take it, but it is not an ASCII number
    "%EF%BC%95",       # "５" (fullwidth five)
    "x", "%20", "-1", "0", "1.5", str(MAX_BOOK_LEVELS + 1),
])
def test_levels_that_are_not_an_ascii_whole_number_in_range_are_400_bad_levels(server, levels):
    status, body = _get(server, f"/book/TEST?levels={levels}")
    assert (status, body["code"]) == (400, "BAD_LEVELS")


def test_good_levels_reach_the_symbol_lookup(server):
    for path in ("/book/TEST", "/book/TEST?levels=", "/book/TEST?levels=1",
                 f"/book/TEST?levels={MAX_BOOK_LEVELS}"):
        status, body = _get(server, path)
        assert (status, body["code"]) == (404, "UNKNOWN_SYMBOL"), path
