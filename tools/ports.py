"""Default ports and URLs of the local stack (`make dev`, tools/dev.py) — the one place that
spells them. The tools that talk to a local stack (load, simulator, console, OpenAPI servers)
take their default URLs from here. Only light imports: the engine and streamer ports are the
`Settings` defaults (chalice_app/config.py)."""

from __future__ import annotations

from chalice_app.config import Settings

#: listen address of every local part
LOCAL_HOST = "127.0.0.1"
#: part -> port; 0 on the command line of tools/dev.py means any free port
DEFAULT_PORTS: dict[str, int] = {
    "rest": 8000,
    "ws": 8001,
    "console": 8080,
    "engine": Settings.engine_http_port,
    "streamer": Settings.streamer_http_port,
}
#: API Gateway stage (path prefix of the WebSocket API) when .chalice/config.json names none
DEFAULT_API_STAGE = "api"


def rest_url(host: str = LOCAL_HOST, port: int = DEFAULT_PORTS["rest"]) -> str:
    return f"http://{host}:{port}"


def ws_url(host: str = LOCAL_HOST, port: int = DEFAULT_PORTS["ws"], stage: str = DEFAULT_API_STAGE) -> str:
    return f"ws://{host}:{port}/{stage}"


#: the local stack's default REST base URL and WebSocket URL
REST_URL = rest_url()
WS_URL = ws_url()
