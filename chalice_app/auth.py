"""Who is calling: Supabase JWT verification, test mode, admin checks (SPEC §5).

A token is accepted when:

- its header `alg` is ES256 or RS256 and a key of the project's JWKS
  (`SUPABASE_URL/auth/v1/.well-known/jwks.json`, fetched once and cached, refetched at
  most every `JWKS_REFRESH_MIN_S` on an unknown `kid`) with the matching key type
  (EC P-256 / RSA) verifies it, with `algorithms` pinned to exactly that one; or
- its `alg` is HS256 and `SUPABASE_JWT_SECRET` is set and verifies it.

Then `exp` (required), `iss` = `SUPABASE_URL/auth/v1` (required when SUPABASE_URL is
set) and `aud` = `authenticated` are checked, and `sub` is the user id. `alg: none`,
any other algorithm, a header whose `alg` or `kid` is not a string (checked before either
is used: INVALID_TOKEN, never a 500), and HS256 signed with a public key (algorithm
confusion) are refused: an HS token is only ever checked against the shared secret, an
asymmetric one only against JWKS keys of its own type.

Errors (chalice_app.errors)::

    Unauthorized   UNAUTHORIZED (no credentials), INVALID_TOKEN, TOKEN_EXPIRED,
                   TEST_MODE_DISABLED (a test-mode user where test mode is off: no credentials)
    Forbidden      FORBIDDEN (not admin)
    BadRequest     INVALID_USER_ID (test-mode user id)
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK

from chalice_app.config import Settings
from chalice_app.errors import BadRequest, Forbidden, Unauthorized

log = logging.getLogger("supernoba.auth")

AUDIENCE = "authenticated"
ASYMMETRIC = {"ES256": "EC", "RS256": "RSA"}
#: every header `alg` verify_token looks at; anything else (or not a string) is INVALID_TOKEN
ACCEPTED_ALGS = frozenset((*ASYMMETRIC, "HS256"))
JWKS_TTL_S = 600.0
JWKS_REFRESH_MIN_S = 30.0
LEEWAY_S = 5
#: user ids accepted from test mode (JWT `sub` values are taken as they are, ≤ 64 bytes)
USER_ID_RE = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")


@dataclass(frozen=True)
class Principal:
    user_id: str
    is_admin: bool = False
    test_mode: bool = False
    claims: Mapping[str, Any] = field(default_factory=dict)


class JwksCache:
    """The project's JWKS: fetched lazily, cached `JWKS_TTL_S`, refetched on unknown kid."""

    def __init__(self, url: str, *, timeout: float = 3.0) -> None:
        self.url = url
        self.timeout = timeout
        self._keys: list[tuple[dict[str, Any], PyJWK]] = []
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def _fetch(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:  # noqa: S310
                doc = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            log.warning("event=jwks_fetch_failed url=%s error=%s", self.url, exc)
            self._fetched_at = time.monotonic()  # do not hammer a failing endpoint
            return
        keys = []
        for raw in doc.get("keys", []) if isinstance(doc, dict) else []:
            try:
                keys.append((raw, PyJWK(raw)))
            except (jwt.PyJWKError, jwt.InvalidKeyError, KeyError, ValueError, TypeError) as exc:
                log.warning("event=jwks_key_skipped kid=%s error=%s", raw.get("kid") if isinstance(raw, dict) else None, exc)
        self._keys = keys
        self._fetched_at = time.monotonic()
        log.info("event=jwks_fetched url=%s keys=%d", self.url, len(keys))

    def keys_for(self, kid: str | None, alg: str) -> list[PyJWK]:
        kty = ASYMMETRIC[alg]

        def matching() -> list[PyJWK]:
            out = []
            for raw, k in self._keys:
                if raw.get("kty") != kty or raw.get("alg") not in (None, alg):
                    continue
                if raw.get("use") not in (None, "sig"):
                    continue
                if kid is not None and raw.get("kid") != kid:
                    continue
                out.append(k)
            return out

        with self._lock:
            age = time.monotonic() - self._fetched_at
            if not self._fetched_at or age > JWKS_TTL_S:
                self._fetch()
            found = matching()
            if not found and age > JWKS_REFRESH_MIN_S:
                self._fetch()
                found = matching()
            return found


class Authenticator:
    def __init__(self, settings: Settings, jwks: JwksCache | None = None) -> None:
        self.settings = settings
        self.jwks = jwks or (JwksCache(settings.jwks_url) if settings.jwks_url else None)

    # ------------------------------------------------------------------ tokens
    def verify_token(self, token: str) -> Principal:
        """A verified Supabase JWT → Principal; Unauthorized otherwise."""
        if not token or len(token) > 8192:
            raise Unauthorized("missing or oversized token", "INVALID_TOKEN")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("malformed token", "INVALID_TOKEN") from exc
        alg, kid = _header_fields(header)
        options = {"require": ["exp", "sub"]}
        kwargs: dict[str, Any] = {"audience": AUDIENCE, "leeway": LEEWAY_S, "options": options}
        if self.settings.jwt_issuer:
            kwargs["issuer"] = self.settings.jwt_issuer
            options["require"].append("iss")
        try:
            if alg in ASYMMETRIC:
                if self.jwks is None:
                    raise Unauthorized(f"{alg} tokens are not accepted (no JWKS configured)", "INVALID_TOKEN")
                candidates = self.jwks.keys_for(kid, alg)
                if not candidates:
                    raise Unauthorized("no matching signing key", "INVALID_TOKEN")
                claims = None
                last: jwt.PyJWTError | None = None
                for key in candidates:
                    try:
                        claims = jwt.decode(token, key.key, algorithms=[alg], **kwargs)
                        break
                    except jwt.InvalidSignatureError as exc:
                        last = exc
                if claims is None:
                    raise last or jwt.InvalidSignatureError("signature verification failed")
            else:  # HS256, the one other accepted alg
                if not self.settings.supabase_jwt_secret:
                    raise Unauthorized("HS256 tokens are not accepted", "INVALID_TOKEN")
                claims = jwt.decode(token, self.settings.supabase_jwt_secret, algorithms=["HS256"], **kwargs)
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired", "TOKEN_EXPIRED") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthorized("wrong token audience", "INVALID_TOKEN") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthorized("wrong token issuer", "INVALID_TOKEN") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}", "INVALID_TOKEN") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub.encode()) > 64:
            raise Unauthorized("token has no usable subject", "INVALID_TOKEN")
        return Principal(user_id=sub, is_admin=_claims_admin(claims), claims=claims)

    def test_user(self, user_id: str | None) -> Principal:
        if not self.settings.allow_test_mode:
            # SPEC §5 "401 without auth": a test-mode user id is no credential on this stage
            raise Unauthorized("test mode is disabled on this stage; send Authorization: Bearer <JWT>",
                               "TEST_MODE_DISABLED")
        if not user_id or not USER_ID_RE.fullmatch(user_id):
            raise BadRequest("test-mode user id must match [A-Za-z0-9_.@:-]{1,64}", "INVALID_USER_ID")
        return Principal(user_id=user_id, test_mode=True)

    # ------------------------------------------------------------------ requests
    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller of a REST request (headers are case-insensitive in Chalice)."""
        auth = _header(headers, "authorization")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("Authorization must be 'Bearer <token>'", "INVALID_TOKEN")
            return self.verify_token(token.strip())
        test_user = _header(headers, "x-test-user")
        if test_user is not None:
            return self.test_user(test_user)
        raise Unauthorized("authentication required")

    def is_admin_key(self, headers: Mapping[str, str]) -> bool:
        given = _header(headers, "x-admin-key")
        expected = self.settings.admin_api_key
        return bool(expected and given and hmac.compare_digest(given.encode(), expected.encode()))

    def require_admin(self, headers: Mapping[str, str]) -> Principal:
        """An admin caller. With no ADMIN_API_KEY on the stage an `X-Admin-Key` header is
        ignored: the request is judged on its other credentials (401 without any)."""
        if self.is_admin_key(headers):
            return Principal(user_id="admin-key", is_admin=True)
        if (self.settings.admin_api_key and _header(headers, "x-admin-key") is not None
                and not _header(headers, "authorization")):
            raise Forbidden("wrong admin key")
        principal = self.authenticate(headers)
        if not principal.is_admin:
            raise Forbidden("admin role required")
        return principal


def _header_fields(header: Mapping[str, Any]) -> tuple[str, str | None]:
    """The header's `alg` (one we accept) and `kid` (a string or absent), checked for type
    before either is used: a list or object there is a malformed token, never a crash."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ACCEPTED_ALGS:
        shown = repr(alg[:32]) if isinstance(alg, str) else f"of type {type(alg).__name__}"
        raise Unauthorized(f"algorithm {shown} is not accepted", "INVALID_TOKEN")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Unauthorized("token header kid must be a string", "INVALID_TOKEN")
    return alg, kid


def _claims_admin(claims: Mapping[str, Any]) -> bool:
    meta = claims.get("app_metadata")
    if isinstance(meta, Mapping) and meta.get("role") == "admin":
        return True
    return claims.get("role") == "admin"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    if value is None:
        lower = {k.lower(): v for k, v in headers.items()}
        value = lower.get(name)
    return value
