"""How the streamer's messages reach API Gateway: PostToConnection, three interchangeable ways.

- `FastTransport` (default, `STREAMER_TRANSPORT=fast`): the request signed by `sigv4.Signer`
  (SigV4 with the signing key derived once a day; tested byte for byte against botocore's
  `SigV4Auth`) and sent by `wire.WireClient` (a lean HTTP/1.1 keep-alive pool on the event
  loop). ~10× less CPU per send than botocore (docs/streamer.md has the measurements); on
  410 it runs the shared cleanup `chalice_app.connections.remove_connection`.
- `ChaliceTransport` (the reference, `STREAMER_TRANSPORT=chalice`): `chalice_app.ws_send.WsSender`,
  i.e. Chalice's `WebsocketAPI.send` → boto3 `apigatewaymanagementapi.post_to_connection`.
  ONE botocore client (thread-safe) shared by a pool of sender threads; its config is tuned
  for a hot loop (`max_pool_connections` = threads, `parameter_validation=False`, no botocore
  retries — the fan-out retries with its own backoff), and the per-call event handlers that
  do nothing useful for PostToConnection from a long-running EC2 process are unregistered
  (`trim_client`, see docs/streamer.md for the profile behind it). On 410 `WsSender` runs the
  shared cleanup `chalice_app.connections.remove_connection`.
- `ChaliceTransport(lean=True)` (`STREAMER_TRANSPORT=chalice-lean`): the same Chalice
  `WebsocketAPI` path, but the session wrapper hands it a `lean_client.LeanManagementClient`
  (the same signer, per-thread `http.client` keep-alive connections, botocore's exceptions).
- `AiohttpTransport` (optional, `STREAMER_TRANSPORT=aiohttp`): the same wire request built
  with botocore's own `AWSRequest` and signed by botocore's own `SigV4Auth` (service
  `execute-api`, the boto3 session's refreshable credentials), sent with an `aiohttp`
  keep-alive pool on the streamer's event loop — no thread hops, no urllib3. On 410 it runs
  the same `remove_connection` (on a small thread pool: redis-py is synchronous).

Errors (raised by `post`; the fan-out decides what to do with each)::

    TransportError                 kind = a short label used in metrics
    ├── ConnectionGone             410 GoneException: cleaned up, never retried
    ├── RetryableError             timeout, connection reset, 429, 5xx: retry with backoff
    └── PermanentError             other 4xx (403 forbidden, 413 payload too large, ...)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import boto3
import redis
from botocore import handlers as botocore_handlers
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError
from yarl import URL

from chalice_app.connections import remove_connection
from chalice_app.ws_send import SendResult, WsSender, WsSendError
from streamer_pkg.lean_client import LeanManagementClient
from streamer_pkg.sigv4 import Signer, host_of
from streamer_pkg.wire import WireClient, WireError

log = logging.getLogger("supernoba.streamer.transport")

SERVICE = "apigatewaymanagementapi"
TRANSPORTS = ("fast", "chalice", "chalice-lean", "aiohttp")
#: Fan-out workers (= requests in flight) when STREAMER_CONCURRENCY is not set. An in-flight
#: request costs a socket and a coroutine on the event-loop transports, so they keep many in
#: flight (the round trip, not the CPU, bounds a worker); the Chalice transport needs a thread
#: per worker, and more than ~32 only add GIL contention (docs/streamer.md).
DEFAULT_CONCURRENCY = {"fast": 128, "chalice": 32, "chalice-lean": 32, "aiohttp": 128}


class TransportError(Exception):
    kind = "error"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class ConnectionGone(TransportError):
    kind = "gone"


class RetryableError(TransportError):
    kind = "retryable"


class PermanentError(TransportError):
    kind = "permanent"


class Transport(Protocol):
    async def post(self, conn_id: str, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


def _classify(status: int, error_type: str) -> TransportError:
    if status == 429 or status >= 500:
        return RetryableError(f"HTTP {status} {error_type}", "throttled" if status == 429 else "http_5xx")
    return PermanentError(f"HTTP {status} {error_type}", f"http_{status}")


# --------------------------------------------------------------------------- Chalice transport
#: Per-call handlers botocore runs for every PostToConnection that do no work this process
#: needs (measured in docs/streamer.md). Signing, endpoint resolution, response parsing and
#: error mapping are untouched. (event name as registered, handler)
_TRIMMED_HANDLERS = (
    # walks the input shape for idempotency-token members; PostToConnection has none
    ("before-parameter-build", botocore_handlers.generate_idempotent_uuid),
    # X-Amzn-Trace-Id from a Lambda environment; the streamer runs on EC2
    ("before-call", botocore_handlers.add_recursion_detection_header),
    # amz-sdk-invocation-id / amz-sdk-request: informational headers for SDK retries (disabled)
    ("request-created", botocore_handlers.add_retry_headers),
)


def trim_client(client: Any) -> list[str]:
    """Unregister `_TRIMMED_HANDLERS` from a botocore client's own event emitter (botocore's
    public `unregister`; the client's emitter is its own copy, other clients are unaffected),
    plus the per-call User-Agent rebuild (the User-Agent built with the client stays)."""
    events = client.meta.events
    removed = []
    for event, handler in _TRIMMED_HANDLERS:
        events.unregister(event, handler)
        removed.append(f"{event}:{handler.__name__}")
    ua = getattr(client, "_user_agent_creator", None)
    if ua is not None:
        service_id = client.meta.service_model.service_id.hyphenize()
        events.unregister(f"request-created.{service_id}", ua.rebuild_and_replace_user_agent_handler)
        removed.append("request-created:rebuild_and_replace_user_agent_handler")
    return removed


class _TunedSession:
    """boto3 session stand-in for `WsSender`: every client it builds gets the hot-loop config,
    and is cached per (service, endpoint) and returned again (one shared, thread-safe client)."""

    def __init__(self, session: boto3.Session, config: Config, trim: bool, lean: bool = False) -> None:
        self._session = session
        self._config = config
        self._trim = trim
        self._lean = lean  # apigatewaymanagementapi clients are LeanManagementClient wrappers
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str | None], Any] = {}

    @property
    def region_name(self) -> str | None:
        return self._session.region_name

    def client(self, service_name: str, **kwargs: Any) -> Any:
        key = (service_name, kwargs.get("endpoint_url"))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                config = kwargs.get("config")
                kwargs["config"] = config.merge(self._config) if config is not None else self._config
                client = self._session.client(service_name, **kwargs)
                if self._trim and service_name == SERVICE:
                    log.debug("event=botocore_trimmed handlers=%s", ",".join(trim_client(client)))
                if self._lean and service_name == SERVICE and kwargs.get("endpoint_url"):
                    client = LeanManagementClient(
                        kwargs["endpoint_url"], self._session.get_credentials(),
                        self._session.region_name or client.meta.region_name, client,
                        timeout=self._config.read_timeout or 2.0)
                self._clients[key] = client
            return client


class ChaliceTransport:
    """PostToConnection through Chalice's `WebsocketAPI` (chalice_app.ws_send) on `threads` threads."""

    def __init__(
        self,
        endpoint: str,
        redis_client: redis.Redis | None,
        *,
        region: str,
        session: boto3.Session | None = None,
        timeout: float = 2.0,
        threads: int = 32,
        trim: bool = True,
        lean: bool = False,
    ) -> None:
        config = Config(
            max_pool_connections=threads, parameter_validation=False, retries={"max_attempts": 0},
            connect_timeout=timeout, read_timeout=timeout, tcp_keepalive=True,
        )
        self._session = _TunedSession(session or boto3.Session(region_name=region), config, trim, lean)
        self.sender = WsSender(endpoint, redis_client, region=region, session=self._session,  # type: ignore[arg-type]
                               timeout=timeout)
        # build the one shared client now (not racing on the first sends); WsSender's own
        # call to session.client(...) gets this same object
        self.client = self._session.client(SERVICE, endpoint_url=self.sender.endpoint)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ws-send")

    async def post(self, conn_id: str, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, self.sender.send, conn_id, data)
        except WsSendError as exc:
            raise self._map(exc) from exc
        except RuntimeError as exc:  # the pool was shut down under us (stopping)
            raise RetryableError(f"sender stopped: {exc}", "connection") from exc
        if result is SendResult.GONE:
            raise ConnectionGone(conn_id)

    @staticmethod
    def _map(exc: WsSendError) -> TransportError:
        cause = exc.__cause__
        if isinstance(cause, ClientError):
            meta = cause.response.get("ResponseMetadata", {})
            status = int(meta.get("HTTPStatusCode") or 0)
            code = str(cause.response.get("Error", {}).get("Code", ""))
            if status:
                return _classify(status, code)
        if isinstance(cause, ConnectTimeoutError | ReadTimeoutError):
            return RetryableError(str(exc), "timeout")
        if isinstance(cause, BotoCoreError):
            return RetryableError(str(exc), "connection")
        return RetryableError(str(exc), "connection")

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------- aiohttp transport
class GoneCleanup:
    """The shared connection cleanup (`remove_connection`) for a 410, run off the event loop on a
    small thread pool (redis-py is synchronous); a cache error is logged, never raised."""

    def __init__(self, redis_client: redis.Redis | None) -> None:
        self.redis = redis_client
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="ws-cleanup")

    async def remove(self, conn_id: str) -> None:
        if self.redis is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._pool, remove_connection, self.redis, conn_id)
        except redis.RedisError:
            log.exception("event=cleanup_failed conn=%s", conn_id)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False)


class AiohttpTransport:
    """PostToConnection with botocore's SigV4 signer and an aiohttp keep-alive pool."""

    def __init__(
        self,
        endpoint: str,
        redis_client: redis.Redis | None,
        *,
        region: str,
        session: boto3.Session | None = None,
        timeout: float = 2.0,
        max_connections: int = 64,
    ) -> None:
        parts = urlsplit(endpoint.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"WEBSOCKET_ENDPOINT must be an http(s) URL, got {endpoint!r}")
        self.base = endpoint.rstrip("/")
        self.region = region
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_connections = max_connections
        self._credentials = (session or boto3.Session(region_name=region)).get_credentials()
        self._http: aiohttp.ClientSession | None = None
        self._cleanup = GoneCleanup(redis_client)

    def url(self, conn_id: str) -> str:
        """`{endpoint}/@connections/{id}`, the id percent-encoded as botocore encodes a URI label."""
        return f"{self.base}/@connections/{quote(conn_id, safe='')}"

    def sign(self, url: str, data: bytes) -> dict[str, str]:
        """Headers of the signed request (botocore's SigV4Auth, service execute-api)."""
        request = AWSRequest(method="POST", url=url, data=data)
        if self._credentials is not None:
            creds = self._credentials.get_frozen_credentials()
            SigV4Auth(creds, "execute-api", self.region).add_auth(request)
        return dict(request.headers.items())

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=60, ttl_dns_cache=300)
            self._http = aiohttp.ClientSession(connector=connector, timeout=self.timeout, auto_decompress=False,
                                               skip_auto_headers=("User-Agent", "Content-Type"))
        return self._http

    async def post(self, conn_id: str, data: bytes) -> None:
        url = self.url(conn_id)
        headers = self.sign(url, data)
        try:
            async with self._session().post(URL(url, encoded=True), data=data, headers=headers) as resp:
                status = resp.status
                error_type = resp.headers.get("x-amzn-ErrorType", "").split(":", 1)[0]
                await resp.read()
        except TimeoutError as exc:
            raise RetryableError(f"timeout after {self.timeout.total}s", "timeout") from exc
        except aiohttp.ClientError as exc:
            raise RetryableError(f"connection error: {exc!r}", "connection") from exc
        if 200 <= status < 300:
            return
        if status == 410 or error_type == "GoneException":
            await self._cleanup.remove(conn_id)
            raise ConnectionGone(conn_id)
        raise _classify(status, error_type)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._cleanup.shutdown()


# --------------------------------------------------------------------------- fast transport
class FastTransport:
    """PostToConnection with the streamer's own SigV4 signer (`sigv4.Signer`, checked byte for
    byte against botocore's) over a lean keep-alive HTTP/1.1 pool on the event loop (`wire`)."""

    def __init__(
        self,
        endpoint: str,
        redis_client: redis.Redis | None,
        *,
        region: str,
        session: boto3.Session | None = None,
        timeout: float = 2.0,
    ) -> None:
        parts = urlsplit(endpoint.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"WEBSOCKET_ENDPOINT must be an http(s) URL, got {endpoint!r}")
        tls = parts.scheme == "https"
        self.base_path = parts.path.rstrip("/")
        self.host = host_of(endpoint)
        self.region = region
        self.timeout = timeout
        credentials = (session or boto3.Session(region_name=region)).get_credentials()
        self.signer = Signer(credentials, self.host, region)
        self.client = WireClient(parts.hostname, parts.port or (443 if tls else 80), tls=tls,
                                 server_hostname=parts.hostname, timeout=timeout)
        self._paths: dict[str, str] = {}
        self._cleanup = GoneCleanup(redis_client)

    def path(self, conn_id: str) -> str:
        """`{stage path}/@connections/{id}`, the id percent-encoded as botocore encodes a URI label."""
        path = self._paths.get(conn_id)
        if path is None:
            if len(self._paths) > 100_000:
                self._paths.clear()
            path = self._paths[conn_id] = f"{self.base_path}/@connections/{quote(conn_id, safe='')}"
        return path

    def request(self, conn_id: str, data: bytes) -> bytes:
        """The whole signed request as written on the socket."""
        path = self.path(conn_id)
        amz_date, token, auth = self.signer.sign(path, data)
        token_line = f"X-Amz-Security-Token: {token}\r\n" if token else ""
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nX-Amz-Date: {amz_date}\r\n{token_line}"
                f"Authorization: {auth}\r\nContent-Length: {len(data)}\r\n\r\n")
        return head.encode() + data

    async def post(self, conn_id: str, data: bytes) -> None:
        try:
            response = await self.client.post(self.request(conn_id, data))
        except WireError as exc:
            raise RetryableError(str(exc), exc.kind) from exc
        status = response.status
        if 200 <= status < 300:
            return
        if status == 410 or response.error_type == "GoneException":
            await self._cleanup.remove(conn_id)
            raise ConnectionGone(conn_id)
        raise _classify(status, response.error_type)

    async def aclose(self) -> None:
        await self.client.aclose()
        self._cleanup.shutdown()


def build_transport(kind: str, endpoint: str, redis_client: redis.Redis | None, *, region: str,
                    timeout: float, threads: int, max_connections: int) -> Transport:
    if kind in ("chalice", "chalice-lean"):
        return ChaliceTransport(endpoint, redis_client, region=region, timeout=timeout, threads=threads,
                                lean=kind == "chalice-lean")
    if kind == "fast":
        return FastTransport(endpoint, redis_client, region=region, timeout=timeout)
    if kind == "aiohttp":
        return AiohttpTransport(endpoint, redis_client, region=region, timeout=timeout,
                                max_connections=max_connections)
    raise ValueError(f"unknown STREAMER_TRANSPORT {kind!r} (use {' or '.join(TRANSPORTS)})")
