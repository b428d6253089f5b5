"""SigV4 for PostToConnection, cheap per request: the headers botocore's `SigV4Auth` would add.

botocore's `SigV4Auth.add_auth` re-derives the signing key (4 HMACs), builds an `HTTPHeaders`
map, sorts and re-joins the headers and formats the date on every call (~45 % of the aiohttp
transport's per-send CPU, docs/streamer.md). PostToConnection requests all have the same shape
(`POST {stage}/@connections/{id}`, headers `host`, `x-amz-date` and, with session credentials,
`x-amz-security-token`), so `Signer` keeps:

- the signing key, derived once per (UTC day, secret key) — region and service are fixed;
- the frozen credentials, re-read from the (refreshable) botocore credentials at most every
  `refresh_every` seconds, so an instance-role rotation is picked up;
- the `X-Amz-Date` string, formatted once per second;

and per request computes only sha256(body), sha256(canonical request) and one HMAC.
`tests/streamer_pkg/test_sigv4.py` checks the result byte for byte against `SigV4Auth` (same
credentials, time, URL and body → same `Authorization` header).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.utils import normalize_url_path

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.digest(key, msg.encode(), "sha256")


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    k = _hmac(f"AWS4{secret_key}".encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def canonical_path(path: str) -> str:
    """The path as SigV4Auth puts it in the canonical request (dot segments removed, encoded again)."""
    return quote(normalize_url_path(path), safe="/~")


class Signer:
    """Signs `POST` requests without query string for one host, region and service.

    `credentials` is a botocore `Credentials` (or `RefreshableCredentials`) object, as
    `boto3.Session().get_credentials()` returns; `clock` returns epoch seconds (tests pin it).
    Not thread-safe by design: the streamer signs on its event loop only.
    """

    def __init__(self, credentials: Any, host: str, region: str, service: str = "execute-api", *,
                 refresh_every: float = 1.0, clock: Any = time.time) -> None:
        if credentials is None:
            raise ValueError("no AWS credentials found (the management API needs signed requests)")
        self._credentials = credentials
        self.host = host
        self.region = region
        self.service = service
        self.refresh_every = refresh_every
        self.clock = clock
        self._creds_at = -1e18
        self._access_key = self._secret = self._token = ""
        self._second = -1
        self._amz_date = ""
        self._key_for: tuple[str, str] = ("", "")
        self._key = b""
        self._scope = ""
        self._auth_prefix = ""
        self._signed = ""
        self._canon_headers_tail = ""
        self._paths: dict[str, str] = {}  # wire path -> canonical path (one per connection id)

    def _refresh(self, now: float) -> None:
        self._creds_at = now
        frozen = self._credentials.get_frozen_credentials()
        self._access_key, self._secret, self._token = frozen.access_key, frozen.secret_key, frozen.token or ""
        self._signed = "host;x-amz-date;x-amz-security-token" if self._token else "host;x-amz-date"
        self._canon_headers_tail = f"x-amz-security-token:{' '.join(self._token.split())}\n" if self._token else ""
        self._key_for = ("", "")  # the secret may have changed: derive the key again

    def sign(self, path: str, body: bytes) -> tuple[str, str, str]:
        """(X-Amz-Date, X-Amz-Security-Token or "", Authorization) for `POST {path}` with `body`.
        `path` is the request path as sent on the wire (already percent-encoded)."""
        now = self.clock()
        if now - self._creds_at >= self.refresh_every:
            self._refresh(now)
        second = int(now)
        if second != self._second:
            self._second = second
            self._amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        amz_date = self._amz_date
        day = amz_date[:8]
        if self._key_for != (day, self._secret):
            self._key_for = (day, self._secret)
            self._key = signing_key(self._secret, day, self.region, self.service)
            self._scope = f"{day}/{self.region}/{self.service}/aws4_request"
            self._auth_prefix = f"{ALGORITHM} Credential={self._access_key}/{self._scope}, SignedHeaders={self._signed}, Signature="
        cpath = self._paths.get(path)
        if cpath is None:
            if len(self._paths) > 100_000:
                self._paths.clear()
            cpath = self._paths[path] = canonical_path(path)
        canonical = (
            f"POST\n{cpath}\n\nhost:{self.host}\nx-amz-date:{amz_date}\n"
            f"{self._canon_headers_tail}\n{self._signed}\n{hashlib.sha256(body).hexdigest()}"
        )
        to_sign = f"{ALGORITHM}\n{amz_date}\n{self._scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        return amz_date, self._token, self._auth_prefix + hmac.digest(self._key, to_sign.encode(), "sha256").hex()


def host_of(url: str) -> str:
    """The `host` header SigV4Auth signs for `url` (port kept unless it is the scheme's default)."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return host if parts.port is None or parts.port == default else f"{host}:{parts.port}"
