"""chalice_app.cache: the one Valkey client factory picks a single-node or a cluster client
(CACHE_CLUSTER_MODE), refuses a logical DB on a cluster, and its cluster helpers work against
the real 3-primary cluster of tests/conftest.py."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aredis
import redis.asyncio.cluster as acluster
from redis.cluster import RedisCluster

from chalice_app import cache, keys
from chalice_app.config import Settings
from tools.services import ValkeyClusterService, free_port


def test_cluster_mode_setting_defaults_to_auto_and_rejects_unknown_words():
    assert Settings.from_env({}).cache_cluster_mode == "auto"
    assert Settings.from_env({"CACHE_CLUSTER_MODE": "ON"}).cache_cluster_mode == "on"
    assert Settings.from_env({"CACHE_CLUSTER_MODE": "true"}).cache_cluster_mode == "on"
    assert Settings.from_env({"CACHE_CLUSTER_MODE": "off"}).cache_cluster_mode == "off"
    with pytest.raises(ValueError, match="CACHE_CLUSTER_MODE"):
        Settings.from_env({"CACHE_CLUSTER_MODE": "sometimes"})


def test_off_builds_a_single_node_client_and_keeps_the_db():
    r = cache.client("redis://127.0.0.1:1/3", "off")
    assert type(r) is redis.Redis and r.connection_pool.connection_kwargs["db"] == 3
    ar = cache.async_client("redis://127.0.0.1:1/3", "off")
    assert type(ar) is aredis.Redis
    assert not cache.is_cluster(r) and not cache.is_cluster(r.pipeline())


def test_a_logical_db_with_cluster_mode_is_a_clear_error(valkey_cluster):
    with pytest.raises(cache.CacheConfigError, match="logical database 1.*cluster"):
        cache.client("redis://127.0.0.1:1/1", "on")  # refused before any connection
    with pytest.raises(cache.CacheConfigError, match="logical database 2"):
        cache.async_client("redis://127.0.0.1:1?db=2", "on")
    seed = valkey_cluster.url.removesuffix("/0")
    with pytest.raises(cache.CacheConfigError):  # auto finds the cluster, then refuses db 1
        cache.client(f"{seed}/1", "auto")


def test_auto_probes_the_node(valkey_cluster, service_env):
    plain = cache.client(service_env["DEPTH_CACHE_URL"], "auto")
    assert type(plain) is redis.Redis
    clustered = cache.client(valkey_cluster.url, "auto", decode_responses=True)
    assert isinstance(clustered, RedisCluster) and len(clustered.get_primaries()) == 3
    assert cache.is_cluster(clustered) and cache.is_cluster(clustered.pipeline(transaction=False))
    clustered.close()
    aclustered = cache.async_client(valkey_cluster.url, "auto")
    assert isinstance(aclustered, acluster.RedisCluster) and cache.is_cluster(aclustered)
    asyncio.run(aclustered.aclose())


def test_auto_falls_back_to_a_single_node_client_when_nothing_answers():
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert type(cache.client(url, "auto", socket_connect_timeout=0.2)) is redis.Redis


def test_lazy_client_connects_on_first_use_and_retries_a_failed_build(valkey_cluster):
    port = free_port()
    lazy = cache.lazy_client(f"redis://127.0.0.1:{port}/0", "on", socket_connect_timeout=0.2)
    with pytest.raises(redis.ConnectionError):  # what the app maps to 503 CACHE_UNAVAILABLE
        lazy.get("x")
    lazy = cache.lazy_client(valkey_cluster.url, "on", decode_responses=True)
    assert "built=False" in repr(lazy)
    lazy.set(keys.depth("TEST"), "1")
    assert lazy.get(keys.depth("TEST")) == "1" and cache.is_cluster(lazy)


def test_cluster_helpers_publish_after_the_pipeline_and_run_scripts_on_every_node(valkey_cluster, cluster_url):
    r = cache.client(cluster_url, "on", decode_responses=True)
    symbols = ("TEST", "X", "AAPL")
    assert {valkey_cluster.node_of(keys.depth(s)) for s in symbols} == {0, 1, 2}
    listener = redis.Redis(port=valkey_cluster.ports[2], decode_responses=True).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.CONNECTIONS_CHANGED_CHANNEL)
    script = r.register_script("redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]")
    cache.load_script(r, script)
    pipe = r.pipeline(transaction=False)
    for s in symbols:
        cache.queue_script(pipe, script, [keys.depth(s)], [s.lower()])
    assert cache.execute_and_publish(r, pipe, keys.CONNECTIONS_CHANGED_CHANNEL, "c1") == ["test", "x", "aapl"]
    assert r.mget_nonatomic([keys.depth(s) for s in symbols]) == ["test", "x", "aapl"]
    msg = None
    for _ in range(20):
        msg = msg or listener.get_message(timeout=0.1)
    assert msg is not None and msg["data"] == "c1"  # published through another node, heard here
    listener.close()
    r.close()


def test_a_cluster_nobody_answers_is_a_connection_error(tmp_path):
    """What every caller handles (engine retry, streamer tick retry, app 503), not redis-py's
    RedisClusterException."""
    own = ValkeyClusterService(data_dir=tmp_path / "cluster").start()
    url = own.url
    try:
        sync = cache.client(own.url, "on", socket_connect_timeout=0.5)
        aclient = cache.async_client(own.url, "on", socket_connect_timeout=0.5)
        lazy = cache.lazy_client(own.url, "on", socket_connect_timeout=0.5)
        sync.set(keys.depth("TEST"), "1")
        assert lazy.get(keys.depth("TEST")) == b"1"

        async def use_async() -> None:
            await aclient.get(keys.depth("TEST"))
            own.stop()
            with pytest.raises(redis.ConnectionError):
                await aclient.get(keys.depth("TEST"))
            pipe = aclient.pipeline(transaction=False)
            pipe.get(keys.depth("X"))
            with pytest.raises(redis.ConnectionError):
                await pipe.execute()
            await aclient.aclose()

        asyncio.run(use_async())
        for fn in (lambda: sync.get(keys.depth("TEST")), lambda: lazy.get(keys.depth("TEST")),
                   lambda: sync.pipeline(transaction=False).get(keys.depth("X")).execute(),
                   lambda: cache.client(url, "on")):
            with pytest.raises(redis.ConnectionError):
                fn()
    finally:
        own.stop()


@pytest.mark.parametrize("error", [redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
                                   redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"),
                                   redis.exceptions.TryAgainError("TRYAGAIN Multiple keys request during rehashing")])
def test_a_failover_in_progress_is_a_connection_error_so_callers_retry(error):
    """After redis-py's own retries, CLUSTERDOWN / TRYAGAIN are ResponseErrors, which the engine
    would treat as final; the factory's clients turn them into redis.ConnectionError."""
    def failing() -> None:
        raise error

    with pytest.raises(redis.ConnectionError) as caught:
        cache._translating(failing)()
    assert caught.value.__cause__ is error
    ok = redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    def wrong_type() -> None:
        raise ok

    with pytest.raises(redis.exceptions.ResponseError) as caught_other:
        cache._translating(wrong_type)()
    assert not isinstance(caught_other.value, redis.ConnectionError)


def test_as_str_decodes_bytes_and_stringifies_the_rest() -> None:
    from chalice_app.cache import as_str

    assert [as_str(b"BTC"), as_str("BTC"), as_str(12), as_str("é".encode())] == ["BTC", "BTC", "12", "é"]
