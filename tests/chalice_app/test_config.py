"""chalice_app.config: the one place every setting is read; engine defaults that depend on
whether Kinesis is an emulator (a laptop) or AWS."""

from __future__ import annotations

from chalice_app.config import Settings

LOCAL = {"AWS_ENDPOINT_URL_KINESIS": "http://127.0.0.1:4567"}


def test_engine_http_binds_loopback_next_to_an_emulator_and_every_interface_on_aws():
    assert Settings.from_env(LOCAL).engine_http_host == "127.0.0.1"
    assert Settings.from_env({}).engine_http_host == "0.0.0.0"
    assert Settings.from_env({**LOCAL, "ENGINE_HTTP_HOST": "0.0.0.0"}).engine_http_host == "0.0.0.0"


def test_engine_poll_floor_is_10_ms_locally_and_200_ms_on_aws():
    assert Settings.from_env(LOCAL).engine_poll_floor_ms == 10
    assert Settings.from_env({}).engine_poll_floor_ms == 200
    assert Settings.from_env({"ENGINE_POLL_FLOOR_MS": "50"}).engine_poll_floor_ms == 50
