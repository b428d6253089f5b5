"""Send messages to WebSocket connections from any process (SPEC §6, §8).

Chalice only configures `app.websocket_api` inside WebSocket handlers, and only for
`https://{api-id}.execute-api...` endpoints. Kinesis handlers, schedules and the
streamer need to send too, to `WEBSOCKET_ENDPOINT` — which locally is a plain
`http://127.0.0.1:8001/api`. So this module builds its own `chalice.WebsocketAPI`
through its public surface: `configure()` marks it configured, and its `session` is a
thin wrapper around a boto3 session whose `client("apigatewaymanagementapi", ...)`
always passes `endpoint_url=WEBSOCKET_ENDPOINT`.

A 410 `GoneException` (Chalice's `WebsocketDisconnectedError`) means the client is
gone: the connection is removed from every registry set through
`connections.remove_connection`, and `send` returns `SendResult.GONE`.

Errors::

    WsSendError                 not configured, or any non-410 failure of one send
      (botocore ClientError / EndpointConnectionError are chained as __cause__)
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import boto3
import orjson
import redis
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import WebsocketAPI, WebsocketDisconnectedError

from chalice_app.config import Settings
from chalice_app.connections import remove_connection

log = logging.getLogger("supernoba.ws_send")


class WsSendError(Exception):
    """A send failed for a reason other than the connection being gone."""


class SendResult(enum.Enum):
    SENT = "sent"
    GONE = "gone"  # 410: the connection was removed from the registry
    FAILED = "failed"  # any other error (only from send_many; send raises)


class _EndpointSession:
    """A boto3 session stand-in that pins `endpoint_url` (and timeouts) on the client."""

    def __init__(self, session: boto3.Session, endpoint_url: str, config: Config) -> None:
        self._session = session
        self._endpoint_url = endpoint_url
        self._config = config

    @property
    def region_name(self) -> str | None:
        return self._session.region_name

    def client(self, service_name: str, **kwargs: Any) -> Any:
        kwargs["endpoint_url"] = self._endpoint_url
        kwargs.setdefault("config", self._config)
        return self._session.client(service_name, **kwargs)


def _encode(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode()
    return orjson.dumps(message)


class WsSender:
    """Sends to connections through the `@connections` API at one endpoint.

    `redis_client` is the depth cache (for cleanup of gone connections); pass None to skip
    cleanup. The boto3 client is built lazily on first send and reused (thread-safe).
    """

    def __init__(
        self,
        endpoint: str,
        redis_client: redis.Redis | None,
        *,
        region: str = Settings.aws_region,
        session: boto3.Session | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.redis = redis_client
        self.api = WebsocketAPI(env={"AWS_REGION": region})
        self._pool: ThreadPoolExecutor | None = None
        if self.endpoint:
            parts = urlsplit(self.endpoint)
            session = session or boto3.Session(region_name=region)
            config = Config(
                connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"}
            )
            self.api.session = _EndpointSession(session, self.endpoint, config)
            self.api.configure(parts.netloc, parts.path.strip("/"))

    @classmethod
    def from_settings(cls, settings: Settings, redis_client: redis.Redis | None) -> WsSender:
        return cls(settings.websocket_endpoint, redis_client, region=settings.aws_region)

    def warm(self) -> None:
        """Load the management API's service model now (e.g. in a Lambda's init phase), so
        the first send does not pay for it; the client built by the first send reuses it."""
        if self.configured:
            self.api.session.client("apigatewaymanagementapi")

    @property
    def configured(self) -> bool:
        return bool(self.endpoint)

    def send(self, conn_id: str, message: Any) -> SendResult:
        """Send one message (dict → JSON, str, or bytes). GONE cleans the connection up."""
        if not self.configured:
            raise WsSendError("WEBSOCKET_ENDPOINT is not set")
        data = _encode(message)
        try:
            self.api.send(conn_id, data)  # type: ignore[arg-type]  # botocore takes bytes
        except WebsocketDisconnectedError:
            log.info("event=ws_gone conn=%s", conn_id)
            if self.redis is not None:
                remove_connection(self.redis, conn_id)
            return SendResult.GONE
        except (ClientError, BotoCoreError) as exc:
            raise WsSendError(f"send to {conn_id} failed: {exc}") from exc
        return SendResult.SENT

    def send_many(self, conn_ids: Iterable[str], message: Any) -> dict[str, SendResult]:
        """Send one message to many connections; a failing one never stops the others."""
        data = _encode(message)
        results: dict[str, SendResult] = {}
        for conn_id in conn_ids:
            try:
                results[conn_id] = self.send(conn_id, data)
            except WsSendError as exc:
                log.warning("event=ws_send_failed conn=%s error=%s", conn_id, exc)
                results[conn_id] = SendResult.FAILED
        return results

    PARALLEL_MIN_CONNECTIONS = 4
    MAX_WORKERS = 16

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.MAX_WORKERS, thread_name_prefix="ws-send")
        return self._pool

    def send_batch(self, pairs: Sequence[tuple[str, Any]]) -> list[SendResult]:
        """Send many (conn_id, message) pairs, connections in parallel once there are a few
        (boto3 clients are thread-safe); results in the order given. Messages to one
        connection keep their relative order; after a GONE the rest to it are skipped."""
        if not pairs:
            return []
        by_conn: dict[str, list[int]] = {}
        for i, (conn_id, _) in enumerate(pairs):
            by_conn.setdefault(conn_id, []).append(i)
        results: list[SendResult] = [SendResult.FAILED] * len(pairs)

        def run(conn_id: str) -> None:
            gone = False
            for i in by_conn[conn_id]:
                if gone:  # the connection is gone: do not knock again for each message
                    results[i] = SendResult.GONE
                    continue
                results[i] = self.send_many([conn_id], pairs[i][1])[conn_id]
                gone = results[i] is SendResult.GONE

        if len(by_conn) < self.PARALLEL_MIN_CONNECTIONS:
            for conn_id in by_conn:
                run(conn_id)
        else:
            list(self._executor().map(run, by_conn))
        return results

    def close(self, conn_id: str) -> SendResult:
        """Close a connection from the server side (DELETE @connections/{id})."""
        if not self.configured:
            raise WsSendError("WEBSOCKET_ENDPOINT is not set")
        try:
            self.api.close(conn_id)
        except WebsocketDisconnectedError:
            result = SendResult.GONE
        except (ClientError, BotoCoreError) as exc:
            raise WsSendError(f"close of {conn_id} failed: {exc}") from exc
        else:
            result = SendResult.SENT
        if self.redis is not None:
            remove_connection(self.redis, conn_id)
        return result
