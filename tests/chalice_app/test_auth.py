"""JWT verification, test mode and admin checks through the real REST routes."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chalice_app.errors import Unauthorized
from tests.chalice_app.helpers import ADMIN_HEADERS, add_symbol, post_json, read_stream

ORDER = {"symbol": "AUTH", "side": "BUY", "price": 100, "quantity": 1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict, claims: dict, sign) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


@pytest.fixture
def symbol(client):
    add_symbol(client, "AUTH")
    return "AUTH"


def order(client, token=None, headers=None):
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return post_json(client, "/orders", ORDER, h)


@pytest.mark.parametrize("kind", ["es256", "rs256", "hs256"])
def test_valid_tokens_place_order_as_sub(client, svc, symbol, auth_server, kind):
    token = getattr(auth_server, kind)(sub=f"u_{kind}")
    resp = order(client, token)
    assert resp.status_code == 202, resp.body
    records = read_stream(svc.kinesis, svc.settings.orders_stream, 1)
    assert [r["user_id"] for _, r in records] == [f"u_{kind}"]


def test_jwks_is_cached(client, symbol, auth_server):
    before = auth_server.fetches
    for _ in range(3):
        assert order(client, auth_server.es256()).status_code == 202
    assert auth_server.fetches - before <= 1


def test_user_id_in_body_is_refused(client, symbol, auth_server):
    resp = post_json(client, "/orders", {**ORDER, "user_id": "u_mallory"},
                     {"Authorization": f"Bearer {auth_server.es256()}"})
    assert resp.status_code == 400
    assert resp.json_body["code"] == "VALIDATION_ERROR"


def _refused(client, svc, token, code="INVALID_TOKEN"):
    resp = order(client, token)
    assert resp.status_code == 401, resp.body
    assert resp.json_body["code"] == code
    assert resp.headers.get("WWW-Authenticate")
    assert read_stream(svc.kinesis, svc.settings.orders_stream, 0, timeout=0) == []


def test_expired_token(client, svc, symbol, auth_server):
    _refused(client, svc, auth_server.es256(exp=int(time.time()) - 60), "TOKEN_EXPIRED")


def test_wrong_audience(client, svc, symbol, auth_server):
    _refused(client, svc, auth_server.es256(aud="anon"))


def test_wrong_issuer(client, svc, symbol, auth_server):
    _refused(client, svc, auth_server.es256(iss="https://evil.example/auth/v1"))


def test_missing_exp(client, svc, symbol, auth_server):
    claims = auth_server.claims()
    del claims["exp"]
    _refused(client, svc, jwt.encode(claims, auth_server.ec_key, algorithm="ES256", headers={"kid": "ec-1"}))


def test_wrong_key_same_kid(client, svc, symbol, auth_server):
    other = ec.generate_private_key(ec.SECP256R1())
    _refused(client, svc, auth_server.es256(key=other))


def test_unknown_kid(client, svc, symbol, auth_server):
    _refused(client, svc, auth_server.es256(kid="nope"))


def test_wrong_hs_secret(client, svc, symbol, auth_server):
    _refused(client, svc, auth_server.hs256(secret="another-secret-of-sufficient-length-xx"))


def test_alg_none(client, svc, symbol, auth_server):
    token = _forge({"alg": "none", "typ": "JWT"}, auth_server.claims(), lambda _: b"")
    _refused(client, svc, token)
    _refused(client, svc, token.rstrip("."))


MALFORMED_HEADERS = [
    {"alg": ["ES256"]}, {"alg": {"ES256": 1}}, {"alg": 256}, {"alg": None}, {"alg": True}, {"typ": "JWT"},
    {"alg": "ES512"}, {"alg": "es256"}, {"alg": "ES256", "kid": ["ec-1"]}, {"alg": "ES256", "kid": {"k": 1}},
    {"alg": "RS256", "kid": 1}, {"alg": "HS256", "kid": ["x"]},
]


@pytest.mark.parametrize("header", MALFORMED_HEADERS, ids=json.dumps)
def test_malformed_header_fields_are_401_never_500(client, svc, symbol, auth_server, header):
    """A list/object/number `alg` or `kid` once raised TypeError (unhashable) → 500."""
    _, payload, sig = auth_server.es256().split(".")
    token = f"{_b64(json.dumps(header).encode())}.{payload}.{sig}"
    _refused(client, svc, token)
    bearer = {"Authorization": f"Bearer {token}"}
    for resp in (client.http.get("/admin/symbols", headers=bearer),
                 client.http.delete("/orders/ord_x?symbol=AUTH", headers=bearer)):
        assert resp.status_code == 401 and resp.json_body["code"] == "INVALID_TOKEN", resp.body
    with pytest.raises(Unauthorized) as exc:  # the WebSocket $connect `?token=` path
        svc.auth.verify_token(token)
    assert exc.value.code == "INVALID_TOKEN"


def test_hs256_signed_with_public_key_is_refused(client, svc, symbol, auth_server):
    """Algorithm confusion: an HS256 token whose HMAC key is the RSA/EC public key."""
    import hashlib
    import hmac

    for pub in (auth_server.rsa_key.public_key(), auth_server.ec_key.public_key()):
        pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        for kid in ("rsa-1", "ec-1"):
            token = _forge({"alg": "HS256", "typ": "JWT", "kid": kid}, auth_server.claims(),
                           lambda m, k=pem: hmac.new(k, m, hashlib.sha256).digest())
            _refused(client, svc, token)


def test_rs256_header_with_ec_key_is_refused(client, svc, symbol, auth_server):
    """An ES256 signature presented as RS256 (or the EC kid under RS256) never verifies."""
    good = auth_server.es256()
    header, payload, sig = good.split(".")
    forged = f"{_b64(json.dumps({'alg': 'RS256', 'kid': 'ec-1'}).encode())}.{payload}.{sig}"
    _refused(client, svc, forged)


def test_hs256_without_configured_secret(client, svc, make_svc, symbol, auth_server):
    make_svc(supabase_jwt_secret="")
    _refused(client, svc, auth_server.hs256())


def test_garbage_and_missing_credentials(client, svc, symbol):
    _refused(client, svc, "not.a.token")
    resp = post_json(client, "/orders", ORDER, {"Authorization": "Basic dXNlcjpwYXNz"})
    assert resp.status_code == 401
    resp = post_json(client, "/orders", ORDER)
    assert resp.status_code == 401 and resp.json_body["code"] == "UNAUTHORIZED"


def test_test_mode_header(client, svc, make_svc, symbol):
    resp = order(client, headers={"X-Test-User": "u_test"})
    assert resp.status_code == 202
    assert read_stream(svc.kinesis, svc.settings.orders_stream, 1)[0][1]["user_id"] == "u_test"
    resp = order(client, headers={"X-Test-User": "bad user\n"})
    assert resp.status_code == 400 and resp.json_body["code"] == "INVALID_USER_ID"
    make_svc(allow_test_mode=False)
    resp = order(client, headers={"X-Test-User": "u_test"})
    assert resp.status_code == 401 and resp.json_body["code"] == "TEST_MODE_DISABLED"


def test_admin_routes_need_admin(client, make_svc, auth_server):
    ok = client.http.get("/admin/symbols", headers={"X-Admin-Key": "local-admin-key"})
    assert ok.status_code == 200
    user = client.http.get("/admin/symbols", headers={"Authorization": f"Bearer {auth_server.es256()}"})
    assert user.status_code == 403 and user.json_body["code"] == "FORBIDDEN"
    wrong = client.http.get("/admin/symbols", headers={"X-Admin-Key": "guess"})
    assert wrong.status_code == 403
    none = client.http.get("/admin/symbols")
    assert none.status_code == 401
    for claims in ({"app_metadata": {"role": "admin"}}, {"role": "admin"}):
        admin = client.http.get("/admin/symbols",
                                headers={"Authorization": f"Bearer {auth_server.es256(**claims)}"})
        assert admin.status_code == 200, admin.body
    test_user = client.http.get("/admin/symbols", headers={"X-Test-User": "admin"})
    assert test_user.status_code == 403
    # with no ADMIN_API_KEY on the stage, the header grants nothing and is ignored: the same 401
    # as a request without it (not 403 "wrong admin key", which would say a key is configured)
    make_svc(admin_api_key="")
    for resp in (post_json(client, "/admin/symbols", {"symbol": "NOPE"}, ADMIN_HEADERS),
                 client.http.get("/admin/symbols", headers={"X-Admin-Key": "anything"}),
                 client.http.get("/admin/symbols")):
        assert resp.status_code == 401 and resp.json_body["code"] == "UNAUTHORIZED", resp.body
    user = client.http.get("/admin/symbols", headers={"X-Admin-Key": "anything", "X-Test-User": "u1"})
    assert user.status_code == 403 and user.json_body["code"] == "FORBIDDEN"
    assert user.json_body["message"] == "admin role required"
