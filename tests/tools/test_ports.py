"""tools.ports: the local stack's default ports and URLs, spelled once and used by the tools."""

from __future__ import annotations

from chalice_app.config import Settings
from tools import ports
from tools.load.model import LoadConfig


def test_default_urls_follow_the_default_ports() -> None:
    assert ports.REST_URL == f"http://{ports.LOCAL_HOST}:{ports.DEFAULT_PORTS['rest']}"
    assert ports.WS_URL == f"ws://{ports.LOCAL_HOST}:{ports.DEFAULT_PORTS['ws']}/{ports.DEFAULT_API_STAGE}"


def test_engine_and_streamer_ports_are_the_settings_defaults() -> None:
    s = Settings.from_env({})
    assert (ports.DEFAULT_PORTS["engine"], ports.DEFAULT_PORTS["streamer"]) == (s.engine_http_port, s.streamer_http_port)


def test_tools_default_to_the_local_stack(monkeypatch) -> None:
    from chalice_app.config import ENV
    from tools.load.__main__ import parse_args

    monkeypatch.delenv(ENV.SUPERNOBA_REST_URL, raising=False)
    monkeypatch.delenv(ENV.SUPERNOBA_WS_URL, raising=False)
    assert (LoadConfig().rest_url, LoadConfig().ws_url) == (ports.REST_URL, ports.WS_URL)
    args = parse_args([])
    assert (args.rest, args.ws) == (ports.REST_URL, ports.WS_URL)
