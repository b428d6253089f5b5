"""A lean stand-in for boto3's `apigatewaymanagementapi` client, for Chalice's `WebsocketAPI`.

Chalice's `WebsocketAPI.send` needs of its client only `post_to_connection(ConnectionId=,
Data=)` and `client.exceptions.GoneException` (which it maps to `WebsocketDisconnectedError`).
`LeanManagementClient` provides exactly that without botocore's per-call machinery: the
request is signed by `sigv4.Signer` (one per thread; byte-for-byte botocore's SigV4) and sent
on a per-thread `http.client` keep-alive connection. Errors are botocore's own: a non-2xx
answer raises the modeled `ClientError` subclass for its `x-amzn-ErrorType` (from a real
botocore client's `exceptions`, so `GoneException` is the class Chalice catches), a network
failure `EndpointConnectionError` / `ReadTimeoutError`. Every other method (`get_connection`,
`delete_connection`, ...) is delegated to the real botocore client.

Used by `ChaliceTransport(lean=True)` (`STREAMER_TRANSPORT=chalice-lean`): the streamer still
calls Chalice's `WebsocketAPI`, on sender threads.
"""

from __future__ import annotations

import http.client
import socket
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from streamer_pkg.sigv4 import Signer, host_of

OPERATION = "PostToConnection"


class LeanManagementClient:
    def __init__(self, endpoint: str, credentials: Any, region: str, botocore_client: Any, *,
                 timeout: float = 2.0) -> None:
        parts = urlsplit(endpoint.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self._tls = parts.scheme == "https"
        self._hostname = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._base_path = parts.path.rstrip("/")
        self._host = host_of(endpoint)
        self._credentials = credentials
        self._region = region
        self._timeout = timeout
        self._client = botocore_client
        self.exceptions = botocore_client.exceptions
        self.meta = botocore_client.meta
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:  # get_connection, delete_connection, ...
        return getattr(self._client, name)

    def _thread_state(self) -> tuple[http.client.HTTPConnection | None, Signer]:
        local = self._local
        signer = getattr(local, "signer", None)
        if signer is None:
            signer = local.signer = Signer(self._credentials, self._host, self._region)
            local.conn = None
        return local.conn, signer

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._tls else http.client.HTTPConnection
        conn = cls(self._hostname, self._port, timeout=self._timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._local.conn = conn
        return conn

    def post_to_connection(self, *, ConnectionId: str, Data: bytes | str) -> dict:  # noqa: N803  (boto3's names)
        data = Data.encode() if isinstance(Data, str) else Data
        conn, signer = self._thread_state()
        path = f"{self._base_path}/@connections/{quote(str(ConnectionId), safe='')}"
        amz_date, token, auth = signer.sign(path, data)
        headers = {"Host": self._host, "X-Amz-Date": amz_date, "Authorization": auth,
                   "Content-Length": str(len(data))}
        if token:
            headers["X-Amz-Security-Token"] = token
        for attempt in (0, 1):
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._connect()
                conn.request("POST", path, body=data, headers=headers)
                response = conn.getresponse()
                body = response.read()
                break
            except TimeoutError as exc:
                self._drop(conn)
                raise ReadTimeoutError(endpoint_url=self.endpoint, error=exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(conn)
                conn = None
                if reused and attempt == 0:  # the server closed an idle keep-alive connection
                    continue
                raise EndpointConnectionError(endpoint_url=self.endpoint, error=exc) from exc
        status = response.status
        if response.will_close:
            self._drop(conn)
        meta = {"HTTPStatusCode": status, "RequestId": response.getheader("x-amzn-RequestId", "")}
        if 200 <= status < 300:
            return {"ResponseMetadata": meta}
        code = (response.getheader("x-amzn-ErrorType") or "").split(":", 1)[0] or str(status)
        error = {"Error": {"Code": code, "Message": body.decode("utf-8", "replace")}, "ResponseMetadata": meta}
        raise self.exceptions.from_code(code)(error, OPERATION)

    def _drop(self, conn: http.client.HTTPConnection | None) -> None:
        if conn is not None:
            conn.close()
        self._local.conn = None
