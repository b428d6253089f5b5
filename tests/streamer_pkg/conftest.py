"""Streamer test fixtures: the streamer needs Valkey only, so these override the project-wide
`settings` / `depth_cache` (which also provision fresh Kinesis streams, seconds per test) with
one real valkey-server for this directory's tests, flushed before each test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from chalice_app.config import Settings
from tools.services import ValkeyService, free_port


@pytest.fixture(scope="session")
def streamer_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyService]:
    svc = ValkeyService(port=free_port(), log_dir=tmp_path_factory.mktemp("streamer-valkey"))
    with svc:
        yield svc


@pytest.fixture
def settings(streamer_valkey: ValkeyService, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local"),
                        ("AWS_REGION", "ap-northeast-2")):
        if not os.environ.get(name):
            monkeypatch.setenv(name, value)
    redis.Redis.from_url(streamer_valkey.depth_url).flushdb()
    return Settings.from_env({**os.environ, "DEPTH_CACHE_URL": streamer_valkey.depth_url,
                              "BACKUP_CACHE_URL": streamer_valkey.backup_url})


@pytest.fixture
def depth_cache(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.depth_cache_url, decode_responses=True)
    yield client
    client.close()
