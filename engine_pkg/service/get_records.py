"""GetRecords for one shard worker: botocore's signer and http.client, without botocore's per-call machinery.

Why not the boto3 client: GetRecords is the engine's hot call (every shard, every poll floor),
and a boto3 `get_records` on an empty shard costs ≈ 1.8 ms of engine CPU and 2.8 ms wall
against kinesalite (event hooks, endpoint-ruleset resolution, http.client header parsing
through `email`, response-shape walking), while kinesalite itself answers in ≈ 0.8 ms. This
client sends the same wire request — the JSON 1.1 protocol, `X-Amz-Target:
Kinesis_20131202.GetRecords`, signed by botocore's own `SigV4Auth` with the boto3 session's
(refreshable) credentials, to the endpoint botocore resolved — over one keep-alive
`http.client` connection per worker (TLS verified against botocore's CA bundle for https):
≈ 0.6 ms CPU and 1.2 ms wall per call (docs/benchmarks.md, issue 4). A worker is one thread,
so no connection pool is needed; with urllib3's (botocore's transport) the call cost 0.22 ms
more CPU (0.79 vs 0.57 ms, measured interleaved). Not supported, unlike botocore: an HTTP(S)
proxy; the engine talks to Kinesis directly.

The response is shaped like boto3's with the engine's timestamp parser: `Records[*].Data` as
bytes, `ApproximateArrivalTimestamp` as epoch seconds (float). Errors are botocore's, so the
shard loop handles both clients alike:

    ClientError            an error response (code from `__type`, e.g. ExpiredIteratorException)
    ReadTimeoutError       no response within the read timeout (the worker halves its Limit)
    EndpointConnectionError / ConnectionClosedError   connect failure / connection dropped
"""

from __future__ import annotations

import binascii
import http.client
import os
import ssl
from typing import Any
from urllib.parse import urlsplit

import botocore
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.httpsession import get_cert_path

TARGET = "Kinesis_20131202.GetRecords"
CONTENT_TYPE = "application/x-amz-json-1.1"
USER_AGENT = f"supernoba-engine Botocore/{botocore.__version__}"


def error_code(status: int, headers: Any, body: bytes) -> tuple[str, str]:
    """(code, message) of a JSON 1.1 error response, as botocore's parser reads them: the
    `__type` of the body (after any `#`), else the `x-amzn-ErrorType` header, else the status."""
    try:
        doc = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    code = str(doc.get("__type") or headers.get("x-amzn-ErrorType") or status)
    code = code.rsplit("#", 1)[-1].split(":", 1)[0]
    return code, str(doc.get("message") or doc.get("Message") or "")


class GetRecordsClient:
    """`get_records(ShardIterator=..., Limit=...)` over one keep-alive connection; one per thread."""

    def __init__(
        self, endpoint_url: str, region: str, credentials: Any, *, connect_timeout: float, read_timeout: float
    ) -> None:
        self.url = endpoint_url.rstrip("/") + "/"
        self.region = region
        self.credentials = credentials  # botocore (refreshable) credentials of the boto3 session
        parts = urlsplit(self.url)
        self._host, self._port = parts.hostname or "", parts.port
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            # botocore's default: the AWS_CA_BUNDLE file when set, else its bundled CA certificates
            self._tls = ssl.create_default_context(
                cafile=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
            )
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._tls is not None:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._connect_timeout, context=self._tls
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
            try:
                conn.connect()  # TCP (+ TLS): refused, unreachable, DNS, connect timeout, handshake
            except OSError as exc:
                conn.close()
                raise EndpointConnectionError(endpoint_url=self.url, error=exc) from exc
            conn.sock.settimeout(self._read_timeout)
            self._conn = conn
        return self._conn

    def _signed_headers(self, body: bytes) -> dict[str, str]:
        if self.credentials is None:
            raise NoCredentialsError()
        req = AWSRequest(
            "POST",
            self.url,
            data=body,
            headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET, "User-Agent": USER_AGENT},
        )
        SigV4Auth(self.credentials.get_frozen_credentials(), "kinesis", self.region).add_auth(req)
        return dict(req.headers.items())

    def get_records(self, *, ShardIterator: str, Limit: int) -> dict:  # noqa: N803 (boto3's names)
        body = orjson.dumps({"ShardIterator": ShardIterator, "Limit": Limit})
        status, headers, data = self._send(body)
        if status != 200:
            code, message = error_code(status, headers, data)
            raise ClientError(
                {
                    "Error": {"Code": code, "Message": message},
                    "ResponseMetadata": {
                        "HTTPStatusCode": status,
                        "RequestId": headers.get("x-amzn-RequestId", ""),
                    },
                },
                "GetRecords",
            )
        out = orjson.loads(data)
        for rec in out.get("Records") or ():
            rec["Data"] = binascii.a2b_base64(rec["Data"])
        return out

    def _send(self, body: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        headers = self._signed_headers(body)
        # one immediate second try when the kept-alive connection turns out to be closed by the
        # server (GetRecords with the same iterator is idempotent)
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request("POST", "/", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except TimeoutError as exc:
                self.close()
                raise ReadTimeoutError(endpoint_url=self.url, error=exc) from exc
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt:
                    raise ConnectionClosedError(endpoint_url=self.url) from exc
                continue
            if resp.will_close:
                self.close()
            return resp.status, resp.headers, data
        raise AssertionError("unreachable")
