"""Builds every Valkey client of Supernoba: the one place that decides single node or cluster.

    r = cache.client(settings.depth_cache_url, settings.cache_cluster_mode, socket_timeout=5)
    ar = cache.async_client(settings.depth_cache_url, settings.cache_cluster_mode)  # streamer
    lazy = cache.lazy_client(url, mode, ...)  # Chalice app: no network until the first command

`CACHE_CLUSTER_MODE` (`Settings.cache_cluster_mode`) picks the client class:

    off   redis.Redis / redis.asyncio.Redis, from the URL (its `/db` is honoured)
    on    redis.cluster.RedisCluster / redis.asyncio.cluster.RedisCluster, seeded with the URL's
          node (they discover the others with CLUSTER SLOTS and follow MOVED / ASK)
    auto  one `INFO cluster` on the URL's node decides (`cluster_enabled:1` = on); when the node
          does not answer, `client`/`async_client` fall back to off with a warning (the process's
          first command then fails as it would have) and `lazy_client` tries again on next use

A cluster has one logical database, so a cache URL naming a database other than 0 with cluster
mode on (or found by `auto`) raises `CacheConfigError` instead of silently writing to db 0.

The few operations that differ on a cluster client (redis-py refuses MGET, PUBLISH, EVALSHA
and multi-key DEL inside a cluster pipeline) go through the helpers below, so the callers
stay one code path: `is_cluster`, `execute_and_publish`, `queue_script`. And a cluster that no
node of answers raises redis.ConnectionError here (`ClusterClient`, `AsyncClusterClient`), as a
single node does, where redis-py raises its RedisClusterException, which is not a RedisError;
CLUSTERDOWN / TRYAGAIN during a failover become redis.ConnectionError too, so they are retried.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio as aredis
import redis.asyncio.cluster as acluster
import redis.cluster as scluster
from redis.commands.core import Script
from redis.connection import parse_url

log = logging.getLogger("supernoba.cache")

PROBE_TIMEOUT_S = 2.0

_CLUSTER_TYPES = (scluster.RedisCluster, scluster.ClusterPipeline, acluster.RedisCluster, acluster.ClusterPipeline)


class CacheConfigError(ValueError):
    """A cache URL that cannot work in the chosen mode (a logical DB other than 0 on a cluster)."""


def as_str(value: Any) -> str:
    """A Valkey reply as text: bytes are decoded (UTF-8), anything else goes through str()
    (clients built with decode_responses=True already answer str)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def url_db(url: str) -> int:
    """The logical database a `redis://host:port/db` URL names (0 when it names none)."""
    return int(parse_url(url).get("db") or 0)


def _without_db(url: str) -> str:
    """`url` without its `/db` path and `db=` query parameter (a cluster node refuses SELECT)."""
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "db"])
    return urlunsplit((parts.scheme, parts.netloc, "", query, ""))


def probe_cluster(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the node at `url` runs with cluster mode enabled (`INFO cluster`).
    Raises redis.ConnectionError / TimeoutError when it does not answer."""
    probe = redis.Redis.from_url(_without_db(url), socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return int(probe.info("cluster").get("cluster_enabled", 0)) == 1
    finally:
        probe.close()


def use_cluster(url: str, mode: str, *, fallback: bool = True) -> bool:
    """Whether `url` needs a cluster client under CACHE_CLUSTER_MODE `mode`; checks the URL.

    `auto` probes the node once; when the probe fails, `fallback` answers False (single node,
    logged), otherwise the redis error is raised."""
    if mode == "off":
        return False
    if mode == "on":
        cluster = True
    elif mode == "auto":
        try:
            cluster = probe_cluster(url)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not fallback:
                raise
            log.warning("event=cache_probe_failed url=%s mode=auto assumed=off error=%s", _redact(url), exc)
            return False
    else:
        raise CacheConfigError(f"CACHE_CLUSTER_MODE must be auto, on or off, not {mode!r}")
    if cluster and url_db(url) != 0:
        raise CacheConfigError(
            f"cache URL {_redact(url)} names logical database {url_db(url)}, but the cache runs in cluster "
            "mode, which has only database 0: use /0 and a separate cluster (or endpoint) per cache")
    return cluster


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{host}{port}", parts.path, "", ""))


@contextmanager
def _unreachable_as_connection_error() -> Iterator[None]:
    """redis-py's cluster clients raise RedisClusterException (not a RedisError) when no node
    answers; every caller handles an unreachable cache as redis.ConnectionError (retry, 503)."""
    try:
        yield
    except (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError) as exc:
        # A failover in progress, after redis-py's own retries: the callers' reconnect-and-retry
        # path is the right one (these are ResponseErrors, which callers treat as final).
        raise redis.ConnectionError(str(exc)) from exc
    except scluster.RedisClusterException as exc:
        if isinstance(exc.__cause__, redis.TimeoutError):
            raise redis.TimeoutError(str(exc)) from exc
        if isinstance(exc.__cause__, redis.ConnectionError | OSError):
            raise redis.ConnectionError(str(exc)) from exc
        raise


def _translating(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _unreachable_as_connection_error():
            return fn(*args, **kwargs)
    return run


def _translating_async(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        with _unreachable_as_connection_error():
            return await fn(*args, **kwargs)
    return run


class ClusterClient(scluster.RedisCluster):
    """RedisCluster whose "no node answers" is a redis.ConnectionError, like a single node's."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with _unreachable_as_connection_error():
            return super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        pipe.execute = _translating(pipe.execute)
        return pipe


class AsyncClusterClient(acluster.RedisCluster):
    """redis.asyncio's RedisCluster, with the same error translation as ClusterClient."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with _unreachable_as_connection_error():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: bool | None = None, shard_hint: str | None = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        pipe.execute = _translating_async(pipe.execute)
        return pipe


def _decoding(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A decoding client replaces bytes that are not UTF-8 instead of raising: one bad value in
    the cache must reach the caller as bad data (logged, skipped), never as a UnicodeDecodeError
    out of a whole pipeline or pub/sub read."""
    if kwargs.get("decode_responses"):
        kwargs.setdefault("encoding_errors", "replace")
    return kwargs


def client(url: str, mode: str, **kwargs: Any) -> redis.Redis | scluster.RedisCluster:
    """A synchronous client (`kwargs` go to the connections: socket_timeout, decode_responses…).
    A RedisCluster connects here (it reads the slot map); a redis.Redis on first use."""
    kwargs = _decoding(kwargs)
    if use_cluster(url, mode):
        with _unreachable_as_connection_error():
            cluster = ClusterClient.from_url(_without_db(url), **kwargs)
        log.info("event=cache_client kind=cluster url=%s nodes=%d", _redact(url), len(cluster.get_primaries()))
        return cluster
    return redis.Redis.from_url(url, **kwargs)


def async_client(url: str, mode: str, **kwargs: Any) -> aredis.Redis | acluster.RedisCluster:
    """An asyncio client (the streamer's); connects on first use. `auto` probes synchronously."""
    kwargs = _decoding(kwargs)
    if use_cluster(url, mode):
        log.info("event=cache_client kind=async_cluster url=%s", _redact(url))
        return AsyncClusterClient.from_url(_without_db(url), **kwargs)
    return aredis.Redis.from_url(url, **kwargs)


class LazyClient:
    """Stands for `client(url, mode, **kwargs)`, built on the first attribute used (thread-safe).

    The Chalice app builds its services at import, where no cache may be reachable (`chalice
    package`), and a RedisCluster connects when built. A failed build raises
    redis.ConnectionError (the app answers 503 CACHE_UNAVAILABLE) and is tried again next time.
    """

    def __init__(self, url: str, mode: str, **kwargs: Any) -> None:
        self._url, self._mode, self._kwargs = url, mode, kwargs
        self._client: redis.Redis | scluster.RedisCluster | None = None
        self._lock = threading.Lock()

    def resolve(self) -> redis.Redis | scluster.RedisCluster:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    cluster = use_cluster(self._url, self._mode, fallback=False)
                    with _unreachable_as_connection_error():
                        self._client = (ClusterClient.from_url(_without_db(self._url), **self._kwargs) if cluster
                                        else redis.Redis.from_url(self._url, **self._kwargs))
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.resolve(), name)

    def __repr__(self) -> str:
        return f"LazyClient({_redact(self._url)}, mode={self._mode}, built={self._client is not None})"


def lazy_client(url: str, mode: str, **kwargs: Any) -> LazyClient:
    return LazyClient(url, mode, **kwargs)


def is_cluster(obj: Any) -> bool:
    """True for a cluster client or cluster pipeline (sync or asyncio, or a LazyClient of one)."""
    if isinstance(obj, LazyClient):
        obj = obj.resolve()
    return isinstance(obj, _CLUSTER_TYPES)


def execute_and_publish(client: Any, pipe: Any, channel: str, message: str | bytes) -> list[Any]:
    """Run `pipe`, then PUBLISH `message` on `channel`; the pipeline's replies.

    Single node: the PUBLISH rides in the same round trip. Cluster: redis-py refuses PUBLISH in
    a cluster pipeline, so it follows as one command (classic pub/sub reaches every node)."""
    if is_cluster(pipe):
        out = pipe.execute()
        client.publish(channel, message)
        return out
    pipe.publish(channel, message)
    return pipe.execute()[:-1]


def queue_script(pipe: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Queue one EVALSHA of a registered Lua script on `pipe`.

    Nothing is loaded here: redis-py's own loading (a SCRIPT EXISTS round trip before every
    pipeline that holds a script) is refused in a cluster pipeline and costs a round trip per
    batch on a single node. The caller runs the pipeline and, on NoScriptError (first use, a
    restart, a failover), calls `load_script` and re-runs it — its script must be idempotent."""
    if is_cluster(pipe):
        # the node named here: without it redis-py 8 asks the server for an EVALSHA's keys
        # (COMMAND GETKEYS), one round trip per call (measured: 100 calls 43 ms -> see docs/scaling.md)
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args,
                             target_nodes=pipe.get_node_from_key(keys[0]))
    else:
        pipe.evalsha(script.sha, len(keys), *keys, *args)


def load_script(client: Any, script: Script) -> None:
    """SCRIPT LOAD on the node, or on every primary of a cluster."""
    client.script_load(script.script)
