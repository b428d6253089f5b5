"""Hostile JWTs on REST (`Authorization: Bearer`) and on the WebSocket (`?token=`).

Expired, forged (an attacker's key under the project's kid, a wrong HS256 secret), `alg:
none` in its spellings, key confusion (HS256 signed with the project's RSA or EC public key),
wrong audience or issuer, a missing `exp`, a tampered payload and plain garbage: every one is
refused with 401 and a clear code, nothing is queued, and a valid token still works.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import jwt
import orjson
import pytest
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.sync.client import connect

from chalice_app import keys
from tests.reliability.hostile import Keys
from tests.reliability.test_rest_corpus import assert_clear_error

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")

ORDER = {"symbol": "TEST", "side": "SELL", "price": 105, "quantity": 2}
HOSTILE_NAMES = list(Keys.generate("x").hostile())


@pytest.fixture(scope="module")
def hostile(rel) -> dict[str, str]:
    return rel.keys.hostile()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_token_is_refused_on_rest(rel, hostile, name):
    before = len(rel.stream_records(rel.settings.orders_stream))
    resp = rel.http.post("/orders", json=ORDER, headers={"Authorization": f"Bearer {hostile[name]}"})
    body = assert_clear_error(resp, (401,), name)
    assert body["code"] in ("INVALID_TOKEN", "TOKEN_EXPIRED", "UNAUTHORIZED"), body
    if name == "expired":
        assert body["code"] == "TOKEN_EXPIRED"
    assert len(rel.stream_records(rel.settings.orders_stream)) == before
    admin = rel.http.get("/admin/symbols", headers={"Authorization": f"Bearer {hostile[name]}"})
    assert_clear_error(admin, (401, 403), f"admin {name}")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_token_is_refused_on_websocket_connect(rel, hostile, name):
    conns_before = rel.cache.scard(keys.REALTIME_CONNECTIONS)
    url = f"{rel.ws_url}?token={quote(hostile[name], safe='')}"
    if len(url) > 8000:  # over the HTTP server's request-line limit: refused before any handler
        with pytest.raises((InvalidStatus, InvalidMessage)):
            connect(url, open_timeout=5, proxy=None).close()
    else:
        with pytest.raises(InvalidStatus) as info:
            connect(url, open_timeout=5, proxy=None).close()
        assert info.value.response.status_code in (401, 403), info.value
    assert rel.cache.scard(keys.REALTIME_CONNECTIONS) == conns_before
    ok = connect(rel.ws_url, open_timeout=5, proxy=None)  # the gateway keeps accepting clients
    ok.close()


def test_valid_tokens_still_work_es256_rs256_and_legacy_hs256(rel):
    k = rel.keys
    now = int(time.time())
    tokens = {
        "ES256": k.valid("jwt-ok-ec"),
        "RS256": jwt.encode(k.claims("jwt-ok-rsa"), k.rsa_private, algorithm="RS256", headers={"kid": "rsa-1"}),
        "HS256": jwt.encode({**k.claims("jwt-ok-hs"), "exp": now + 60}, k.hs_secret, algorithm="HS256"),
    }
    before = len(rel.stream_records(rel.settings.orders_stream))
    for alg, token in tokens.items():
        resp = rel.http.post("/orders", json=ORDER, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 202, f"{alg}: {resp.text}"
    records = [orjson.loads(r) for r in rel.stream_records(rel.settings.orders_stream)]
    assert len(records) == before + 3
    assert {r["user_id"] for r in records[-3:]} == {"jwt-ok-ec", "jwt-ok-rsa", "jwt-ok-hs"}
    ws = connect(f"{rel.ws_url}?token={tokens['ES256']}", open_timeout=5, proxy=None)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not rel.cache.smembers(keys.user_connections("jwt-ok-ec")):
            time.sleep(0.05)
        assert rel.cache.smembers(keys.user_connections("jwt-ok-ec"))
    finally:
        ws.close()


def test_user_id_in_the_body_never_overrides_the_token(rel):
    resp = rel.http.post("/orders", json={**ORDER, "user_id": "victim"},
                         headers={"Authorization": f"Bearer {rel.keys.valid('jwt-attacker')}"})
    assert_clear_error(resp, (400,), "user_id in body")
