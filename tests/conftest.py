"""Shared pytest fixtures: real backing services for every test that needs them.

- `local_services` (session): valkey-server, kinesalite, dynalite and moto's S3 server on
  free loopback ports (tools/services.py), provisioned once; stopped at the end.
- `service_env` (session): their SPEC §8 environment, also applied to `os.environ`.
- `settings` (function): a `Settings` whose Kinesis streams are fresh, uniquely named
  copies (so tests never read each other's records) and whose caches were flushed.
- `depth_cache` / `backup_cache` (function): redis clients on the two logical caches.
- `valkey_cluster` (session) / `cluster_url` (function, flushed): a 3-primary cluster-mode
  Valkey for the CACHE_CLUSTER_MODE tests, started on first use only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import boto3
import pytest
import redis

from chalice_app import cache, keys
from chalice_app.config import Settings
from tests.cluster import CLUSTER_SYMBOLS
from tools.provision import provision
from tools.services import LocalServices, ValkeyClusterService


@pytest.fixture(scope="session")
def local_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    services = LocalServices(log_dir=tmp_path_factory.mktemp("service-logs"))
    with services:
        yield services


@pytest.fixture(scope="session")
def service_env(local_services: LocalServices) -> Iterator[dict[str, str]]:
    env = local_services.env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    provision(Settings.from_env())
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def settings(service_env: dict[str, str]) -> Iterator[Settings]:
    """Fresh streams (orders 4 shards, fills 2, status 2) and empty caches for one test.
    The streams are deleted afterwards (kinesalite allows 100 shards in all)."""
    suffix = uuid.uuid4().hex[:8]
    base = Settings.from_env()
    fresh = Settings.from_env({
        **os.environ,
        "KINESIS_ORDERS_STREAM": f"{base.orders_stream}-{suffix}",
        "KINESIS_FILLS_STREAM": f"{base.fills_stream}-{suffix}",
        "KINESIS_STATUS_STREAM": f"{base.status_stream}-{suffix}",
    })
    provision(fresh)
    for url in (fresh.depth_cache_url, fresh.backup_cache_url):
        redis.Redis.from_url(url).flushdb()
    yield fresh
    kinesis = boto3.client("kinesis", region_name=fresh.aws_region)
    for stream in (fresh.orders_stream, fresh.fills_stream, fresh.status_stream):
        try:
            kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)
        except kinesis.exceptions.ResourceNotFoundException:
            pass


@pytest.fixture
def depth_cache(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.depth_cache_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def backup_cache(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.backup_cache_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def aws(service_env: dict[str, str]) -> boto3.Session:
    """A boto3 session pointed (through AWS_ENDPOINT_URL_*) at the local emulators."""
    return boto3.Session(region_name=service_env["AWS_REGION"])


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyClusterService]:
    with ValkeyClusterService(log_dir=tmp_path_factory.mktemp("cluster-logs")) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(valkey_cluster: ValkeyClusterService) -> str:
    """The cluster's seed URL (`redis://127.0.0.1:PORT/0`), every primary flushed."""
    valkey_cluster.flush()
    return valkey_cluster.url


@pytest.fixture
def cluster(valkey_cluster: ValkeyClusterService, cluster_url: str) -> Iterator[redis.cluster.RedisCluster]:
    """A cluster client (`chalice_app.cache`, mode on, str replies) on the flushed cluster; checks
    that `CLUSTER_SYMBOLS` live on three different nodes, so a test cannot pass on one node."""
    assert sorted(valkey_cluster.node_of(keys.depth(s)) for s in CLUSTER_SYMBOLS) == [0, 1, 2]
    client = cache.client(cluster_url, "on", decode_responses=True)
    yield client
    client.close()
