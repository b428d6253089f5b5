"""Fixtures of the bad-input corpus: the real Chalice app over real HTTP and the real gateway.

Module-scoped, so each corpus module gets fresh Kinesis streams and flushed caches:

- `jwt_keys`  — the project's ES256/RS256 keys (served as a JWKS on a loopback port), an
                attacker's key, and the legacy HS256 secret
- `rel`       — `Rel`: settings (test mode on, an admin key, SUPABASE_URL = the JWKS server),
                the app's services rebuilt on them, `TEST` active, the REST API served by
                Chalice's own local server on a free port, and the WebSocket gateway
                (tools/gateway.py) in front of the same app object

Nothing here writes to `os.environ`; the app module's `services` global is restored after.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
import redis

from chalice_app.config import Settings
from chalice_app.models import SymbolSpec
from chalice_app.services import build
from tests.jwks import JwksServer
from tests.reliability.hostile import Keys
from tools.provision import provision

ADMIN_KEY = "reliability-admin-key"


@pytest.fixture(scope="module")
def jwt_keys() -> Iterator[tuple[Keys, str]]:
    placeholder = Keys.generate("")
    server = JwksServer(placeholder.jwks())
    keys = Keys(placeholder.ec_private, placeholder.rsa_private, placeholder.attacker_ec, placeholder.hs_secret,
                issuer=f"{server.url}/auth/v1")
    yield keys, server.url
    server.stop()


@dataclass
class Rel:
    settings: Settings
    services: Any
    rest_url: str
    ws_url: str
    http: httpx.Client
    cache: redis.Redis
    kinesis: Any
    keys: Keys
    gateway: Any

    def stream_records(self, stream: str) -> list[bytes]:
        out: list[bytes] = []
        for shard in self.kinesis.list_shards(StreamName=stream)["Shards"]:
            it = self.kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                                 ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            for _ in range(50):
                resp = self.kinesis.get_records(ShardIterator=it, Limit=10_000)
                out += [r["Data"] for r in resp["Records"]]
                it = resp["NextShardIterator"]
                if not resp["Records"]:
                    break
        return out

    def cache_keys(self) -> set[str]:
        return {k.decode(errors="replace") if isinstance(k, bytes) else k for k in self.cache.scan_iter(count=1000)}


def _local_server(app_obj: Any, port: int):
    """Chalice's own dev server for `app_obj` (chalice.local), on a free loopback port."""
    from chalice.config import Config
    from chalice.local import LocalChalice, LocalDevServer, create_local_server

    config = Config.create(chalice_stage="local", app_name="supernoba", chalice_app=app_obj)
    if isinstance(app_obj, LocalChalice):  # already wrapped by an earlier server in this process
        return LocalDevServer(app_obj, config, "127.0.0.1", port)
    return create_local_server(app_obj, config, "127.0.0.1", port)


@pytest.fixture(scope="module")
def rel(service_env: dict[str, str], jwt_keys: tuple[Keys, str]) -> Iterator[Rel]:
    import app as app_module
    from tools.gateway import Gateway
    from tools.services import free_port

    keys, jwks_url = jwt_keys
    suffix = uuid.uuid4().hex[:8]
    gateway = Gateway(app_module.app, stage="api", port=0).start()
    env = {
        **os.environ,
        "KINESIS_ORDERS_STREAM": f"rel-orders-{suffix}",
        "KINESIS_FILLS_STREAM": f"rel-fills-{suffix}",
        "KINESIS_STATUS_STREAM": f"rel-status-{suffix}",
        "ALLOW_TEST_MODE": "true",
        "ADMIN_API_KEY": ADMIN_KEY,
        "SUPABASE_URL": jwks_url,
        "SUPABASE_JWT_SECRET": keys.hs_secret,
        "WEBSOCKET_ENDPOINT": gateway.endpoint_url,
    }
    settings = Settings.from_env(env)
    provision(settings)
    for url in (settings.depth_cache_url, settings.backup_cache_url):
        redis.Redis.from_url(url).flushdb()
    saved = app_module.services
    services = build(settings)
    services.symbols.add(SymbolSpec(symbol="TEST"))
    app_module.services = services
    port = free_port()
    server = _local_server(app_module.app, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0, trust_env=False)
    cache = redis.Redis.from_url(settings.depth_cache_url, decode_responses=True)
    kinesis = boto3.Session(region_name=settings.aws_region).client("kinesis")
    try:
        yield Rel(settings, services, f"http://127.0.0.1:{port}", gateway.url, http, cache, kinesis, keys, gateway)
    finally:
        http.close()
        server.shutdown()
        server.server.server_close()
        gateway.stop()
        cache.close()
        app_module.services = saved
        for stream in (settings.orders_stream, settings.fills_stream, settings.status_stream):
            try:  # kinesalite allows 100 shards in all
                kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)
            except kinesis.exceptions.ResourceNotFoundException:
                pass
