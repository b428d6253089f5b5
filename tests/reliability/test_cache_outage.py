"""Regression (found by `make soak`, valkey-restart): while Valkey restarts, REST answers a clear
503 `CACHE_UNAVAILABLE`, not a 500 `INTERNAL_ERROR`, and works again once Valkey is back."""

from __future__ import annotations

import dataclasses

import pytest
from chalice.test import Client

from chalice_app.models import SymbolSpec
from chalice_app.services import build
from tools.services import ValkeyService

USER = {"X-Test-User": "outage-user", "Content-Type": "application/json"}
ORDER = '{"symbol":"TEST","side":"BUY","price":100,"quantity":1}'


@pytest.fixture
def app_on_own_valkey(settings, tmp_path):
    import app as app_module

    valkey = ValkeyService(data_dir=tmp_path / "valkey", appendonly=True).start()
    own = dataclasses.replace(settings, depth_cache_url=f"{valkey.url}/0", backup_cache_url=f"{valkey.url}/1",
                              allow_test_mode=True)
    saved = app_module.services
    app_module.services = build(own)
    app_module.services.symbols.add(SymbolSpec(symbol="TEST"))
    try:
        yield app_module, valkey
    finally:
        app_module.services = saved
        valkey.stop()


def test_rest_answers_503_while_valkey_is_down_and_recovers(app_on_own_valkey):
    app_module, valkey = app_on_own_valkey
    with Client(app_module.app) as client:
        assert client.http.post("/orders", headers=USER, body=ORDER).status_code == 202
        valkey.stop()
        for path, method in (("/orders", "post"), ("/depth/TEST", "get")):
            resp = getattr(client.http, method)(path, headers=USER, body=ORDER if method == "post" else None)
            assert resp.status_code == 503, (path, resp.status_code, resp.body)
            assert resp.json_body["code"] == "CACHE_UNAVAILABLE", resp.json_body
        valkey.start()  # same port, data kept by the append-only file
        resp = client.http.post("/orders", headers=USER, body=ORDER)
        assert resp.status_code == 202, resp.body
