"""Fixtures for the Chalice app tests: a local Supabase-like JWKS server, token signing,
an `@connections` server, and the app wired to the real services of tests/conftest.py."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest
import redis
from chalice.test import Client
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import app as app_module
from chalice_app.config import Settings
from chalice_app.services import Services, build
from tests.jwks import JwksServer, public_jwks
from tests.mgmt_server import MgmtServer

HS_SECRET = "test-hs256-secret-that-is-long-enough-for-hmac"
ADMIN_KEY = "local-admin-key"


class AuthServer(JwksServer):
    """Serves `/auth/v1/.well-known/jwks.json` with one EC P-256 and one RSA key, and signs tokens."""

    def __init__(self) -> None:
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        super().__init__(public_jwks(self.ec_key, self.rsa_key))

    def claims(self, sub: str = "u_alice", **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"sub": sub, "aud": "authenticated", "iss": self.issuer, "iat": now, "exp": now + 600,
                "role": "authenticated", **extra}

    def es256(self, sub: str = "u_alice", *, key: Any = None, kid: str = "ec-1", **extra: Any) -> str:
        return jwt.encode(self.claims(sub, **extra), key or self.ec_key, algorithm="ES256", headers={"kid": kid})

    def rs256(self, sub: str = "u_alice", **extra: Any) -> str:
        return jwt.encode(self.claims(sub, **extra), self.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})

    def hs256(self, sub: str = "u_alice", *, secret: str = HS_SECRET, **extra: Any) -> str:
        return jwt.encode(self.claims(sub, **extra), secret, algorithm="HS256")

@pytest.fixture(scope="session")
def auth_server() -> Iterator[AuthServer]:
    server = AuthServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _ws_server_session() -> Iterator[MgmtServer]:
    server = MgmtServer(open_ids=()).start()  # only the ids a test opens are connected
    yield server
    server.stop()


@pytest.fixture
def ws_server(_ws_server_session: MgmtServer) -> MgmtServer:
    """The `@connections` server, with no open connection and nothing received."""
    _ws_server_session.reset()
    return _ws_server_session


@pytest.fixture(scope="session")
def kinesis_client(boto_session: boto3.Session) -> Any:
    return boto_session.client("kinesis")


@pytest.fixture
def app_settings(service_env: dict[str, str], kinesis_client: Any, auth_server: AuthServer,
                 ws_server: MgmtServer) -> Iterator[Settings]:
    """Settings for one test: fresh streams (made directly — quicker than a full provision;
    tables and bucket were provisioned once by `service_env`), empty caches, auth on the
    local JWKS server, test mode on, an admin key, WebSocket sends to `ws_server`."""
    suffix = uuid.uuid4().hex[:8]
    base = Settings.from_env()
    s = dataclasses.replace(
        base,
        orders_stream=f"{base.orders_stream}-{suffix}",
        fills_stream=f"{base.fills_stream}-{suffix}",
        status_stream=f"{base.status_stream}-{suffix}",
        supabase_url=auth_server.url,
        supabase_jwt_secret=HS_SECRET,
        allow_test_mode=True,
        admin_api_key=ADMIN_KEY,
        websocket_endpoint=ws_server.endpoint,
    )
    streams = {s.orders_stream: 4, s.fills_stream: 1, s.status_stream: 1}
    for name, shards in streams.items():
        kinesis_client.create_stream(StreamName=name, ShardCount=shards)
    for name in streams:
        while kinesis_client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
                "StreamStatus"] != "ACTIVE":
            time.sleep(0.02)
    for url in {s.depth_cache_url, s.backup_cache_url}:
        redis.Redis.from_url(url).flushdb()
    yield s
    for name in streams:
        kinesis_client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


@pytest.fixture
def cache(app_settings: Settings) -> Iterator[redis.Redis]:
    """The depth cache (decoded strings) of `app_settings`."""
    client = redis.Redis.from_url(app_settings.depth_cache_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def boto_session(service_env: dict[str, str]) -> boto3.Session:
    """One boto3 session for every test (client creation from a warm session is fast)."""
    return boto3.Session(region_name=service_env["AWS_REGION"])


@pytest.fixture
def svc(app_settings: Settings, monkeypatch: pytest.MonkeyPatch, boto_session: boto3.Session) -> Services:
    services = build(app_settings, session=boto_session)
    monkeypatch.setattr(app_module, "services", services)
    return services


@pytest.fixture
def client(svc: Services) -> Iterator[Client]:
    with Client(app_module.app) as c:
        yield c


@pytest.fixture
def make_svc(monkeypatch: pytest.MonkeyPatch, app_settings: Settings, boto_session: boto3.Session):
    """Rebuild the app's services with some settings changed."""

    def make(**changes: Any) -> Services:
        services = build(dataclasses.replace(app_settings, **changes), session=boto_session)
        monkeypatch.setattr(app_module, "services", services)
        return services

    return make
