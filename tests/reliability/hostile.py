"""The hostile-input corpus (issue 10): REST bodies, WebSocket frames, JWTs, Kinesis records.

Each entry names what it tries and what a well-behaved exchange answers. The tests in this
folder feed them to the running stack and then check that nothing else was disturbed.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.jwks import public_jwks

GOOD_ORDER = {"symbol": "TEST", "side": "BUY", "price": 100, "quantity": 1}

# Symbols shaped like other keys, globs, hash tags, paths and injection.
KEY_SHAPED_SYMBOLS = [
    "X}:*", "{TEST}", "TEST}:main", "TEST}", "*", "active:symbols", "realtime:connections",
    "user:u1:connections", "ws:abc", "depth:{TEST}", "../etc", "TEST\n", "TEST\r\nFLUSHALL", "TEST ",
    " TEST", "test", "TEST*", "TE ST", "", "A" * 17, "TEST\x00", "TÉST", "ТЕСТ", "TEST\u202e", "🚀",
    "-TEST", ".TEST", "TEST;DROP", "$(id)", "%7BTEST%7D",
]


@dataclass(frozen=True)
class RestCase:
    name: str
    body: bytes
    statuses: tuple[int, ...] = (400,)
    content_type: str = "application/json"


def _j(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _order(**changes: Any) -> bytes:
    body = dict(GOOD_ORDER)
    for k, v in changes.items():
        if v is ...:
            body.pop(k, None)
        else:
            body[k] = v
    return _j(body)


def rest_order_corpus() -> list[RestCase]:
    """Bodies for POST /orders, each to be refused with a 4xx JSON {code, message}."""
    cases = [
        RestCase("empty body", b""),
        RestCase("whitespace body", b"   \n"),
        RestCase("truncated JSON", b'{"symbol": "TEST", "side": '),
        RestCase("trailing garbage", _order() + b"}}"),
        RestCase("single quotes", b"{'symbol': 'TEST'}"),
        RestCase("NaN literal", b'{"symbol":"TEST","side":"BUY","price":NaN,"quantity":1}'),
        RestCase("Infinity literal", b'{"symbol":"TEST","side":"BUY","price":Infinity,"quantity":1}'),
        RestCase("JSON array", b"[1,2,3]"),
        RestCase("JSON string", b'"order"'),
        RestCase("JSON number", b"42"),
        RestCase("JSON null", b"null"),
        RestCase("invalid UTF-8", b'{"symbol":"\xff\xfe","side":"BUY","price":1,"quantity":1}'),
        RestCase("lone surrogate escape", b'{"symbol":"\\ud800","side":"BUY","price":1,"quantity":1}'),
        RestCase("nested 5000 deep", b"[" * 5000 + b"]" * 5000),
        RestCase("object nested 2000 deep", b'{"a":' * 2000 + b"1" + b"}" * 2000),
        RestCase("price as string", _order(price="100")),
        RestCase("price as float", _order(price=100.5)),
        RestCase("price as 1e2", b'{"symbol":"TEST","side":"BUY","price":1e2,"quantity":1}'),
        RestCase("price as bool", _order(price=True)),
        RestCase("price as list", _order(price=[100])),
        RestCase("price as object", _order(price={"$gt": 0})),
        RestCase("quantity as string", _order(quantity="1")),
        RestCase("quantity as float", _order(quantity=1.0)),
        RestCase("quantity null", _order(quantity=None)),
        RestCase("quantity missing", _order(quantity=...)),
        RestCase("side missing", _order(side=...)),
        RestCase("side lowercase", _order(side="buy")),
        RestCase("side bool", _order(side=True)),
        RestCase("side unknown", _order(side="SHORT")),
        RestCase("type unknown", _order(type="STOP")),
        RestCase("tif unknown", _order(tif="DAY")),
        RestCase("tif lowercase", _order(tif="ioc")),
        RestCase("limit without price", _order(price=...)),
        RestCase("price zero", _order(price=0)),
        RestCase("price negative", _order(price=-1)),
        RestCase("quantity zero", _order(quantity=0)),
        RestCase("quantity negative", _order(quantity=-5)),
        RestCase("price 10^12+1", _order(price=10**12 + 1)),
        RestCase("quantity 10^12+1", _order(quantity=10**12 + 1)),
        RestCase("price 2^63", _order(price=2**63)),
        RestCase("quantity 2^64", _order(quantity=2**64)),
        RestCase("price 10^400", b'{"symbol":"TEST","side":"BUY","price":1' + b"0" * 400 + b',"quantity":1}'),
        RestCase("quantity 1e309", b'{"symbol":"TEST","side":"BUY","price":1,"quantity":1e309}'),
        RestCase("price -0", b'{"symbol":"TEST","side":"BUY","price":-0,"quantity":1}'),
        RestCase("unknown field", _order(quantitiy=5)),
        RestCase("user_id in body", _order(user_id="someone-else")),
        RestCase("order_id in body", _order(order_id="ord_forged")),
        RestCase("symbol missing", _order(symbol=...)),
        RestCase("symbol number", _order(symbol=123)),
        RestCase("symbol null", _order(symbol=None)),
        RestCase("client_order_id with control chars", _order(client_order_id="a\x00b\x1b[2J")),
        RestCase("client_order_id 65 chars", _order(client_order_id="c" * 65)),
        RestCase("client_order_id unicode", _order(client_order_id="주문-1")),
        RestCase("client_order_id empty", _order(client_order_id="")),
        RestCase("client_order_id number", _order(client_order_id=7)),
        RestCase("body 17 KB", _order(client_order_id="x" * (17 * 1024)), (400, 413)),
        RestCase("body 1 MB", b'{"pad":"' + b"x" * (1024 * 1024) + b'"}', (413,)),
        RestCase("body 5 MB of spaces", b" " * (5 * 1024 * 1024) + _order(), (413,)),
        RestCase("text/plain content type", _order(), (400, 415), "text/plain"),
    ]
    for sym in KEY_SHAPED_SYMBOLS:
        cases.append(RestCase(f"symbol {sym!r}", _order(symbol=sym)))
    return cases


def rest_replace_corpus() -> list[RestCase]:
    return [
        RestCase("replace not JSON", b"{{"),
        RestCase("replace quantity string", _j({"symbol": "TEST", "quantity": "3"})),
        RestCase("replace price float", _j({"symbol": "TEST", "price": 1.5})),
        RestCase("replace quantity 0", _j({"symbol": "TEST", "quantity": 0})),
        RestCase("replace huge", _j({"symbol": "TEST", "quantity": 10**19})),
        RestCase("replace symbol key-shaped", _j({"symbol": "X}:*", "quantity": 3})),
        RestCase("replace unknown field", _j({"symbol": "TEST", "side": "SELL"})),
    ]


# ---------------------------------------------------------------------------- WebSocket

def ws_bad_frames() -> list[tuple[str, str | bytes]]:
    """Frames a client may send; each must get an `error` event (or be ignored), never a crash."""
    return [
        ("not JSON", "hello"),
        ("truncated JSON", '{"action":"subscribe","main":'),
        ("JSON array", "[1,2]"),
        ("JSON number", "42"),
        ("JSON null", "null"),
        ("empty object", "{}"),
        ("action number", '{"action": 5}'),
        ("unknown action", '{"action":"explode"}'),
        ("action with NUL", '{"action":"subscribe\\u0000"}'),
        ("subscribe main key-shaped", '{"action":"subscribe","main":"X}:*"}'),
        ("subscribe main number", '{"action":"subscribe","main":7}'),
        ("subscribe main unknown symbol", '{"action":"subscribe","main":"NOPE9"}'),
        ("subscribe sub a number", '{"action":"subscribe","sub":7}'),
        ("subscribe sub with objects", '{"action":"subscribe","sub":[{"a":1}]}'),
        ("subscribe 5000 sub symbols", json.dumps({"action": "subscribe", "sub": [f"S{i}" for i in range(5000)]})),
        ("deeply nested", "[" * 3000 + "]" * 3000),
        ("control characters", '{"action":"\\u001b[2J"}'),
        ("binary frame", b"\x00\xff\xfe\x01garbage"),
    ]


# ---------------------------------------------------------------------------- JWTs

@dataclass
class Keys:
    """Signing keys for tests: the project's (served in its JWKS) and an attacker's."""

    ec_private: ec.EllipticCurvePrivateKey
    rsa_private: rsa.RSAPrivateKey
    attacker_ec: ec.EllipticCurvePrivateKey
    hs_secret: str
    issuer: str

    @classmethod
    def generate(cls, issuer: str, hs_secret: str = "reliability-test-secret-at-least-32-bytes!") -> Keys:
        return cls(ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048),
                   ec.generate_private_key(ec.SECP256R1()), hs_secret, issuer)

    def jwks(self) -> dict[str, Any]:
        return public_jwks(self.ec_private, self.rsa_private)

    def claims(self, sub: str = "jwt-user-1", **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"sub": sub, "aud": "authenticated", "iss": self.issuer, "iat": now, "exp": now + 600, **extra}

    def valid(self, sub: str = "jwt-user-1") -> str:
        return jwt.encode(self.claims(sub), self.ec_private, algorithm="ES256", headers={"kid": "ec-1"})

    def hostile(self) -> dict[str, str]:
        """name → token that must be refused with 401."""
        now = int(time.time())
        rsa_pub_pem = self.rsa_private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        ec_pub_pem = self.ec_private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

        def unsigned(header: dict[str, Any], claims: dict[str, Any], sig: bytes = b"") -> str:
            enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
            return ".".join([enc(json.dumps(header).encode()), enc(json.dumps(claims).encode()), enc(sig)])

        def hs_with(secret: bytes, kid: str) -> str:
            import hashlib
            import hmac

            enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
            signing = enc(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + "." + enc(
                json.dumps(self.claims("confused")).encode())
            sig = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
            return signing + "." + enc(sig)

        return {
            "expired": jwt.encode(self.claims(exp=now - 3600, iat=now - 7200), self.ec_private, algorithm="ES256",
                                  headers={"kid": "ec-1"}),
            "forged (attacker key, project kid)": jwt.encode(self.claims("victim"), self.attacker_ec,
                                                             algorithm="ES256", headers={"kid": "ec-1"}),
            "forged HS256 (wrong secret)": jwt.encode(self.claims("victim"), "not-the-secret-but-long-enough-xx",
                                                      algorithm="HS256"),
            "alg none": unsigned({"alg": "none", "typ": "JWT"}, self.claims("victim")),
            "alg None": unsigned({"alg": "None", "typ": "JWT"}, self.claims("victim")),
            "alg none with signature": unsigned({"alg": "none"}, self.claims("victim"), b"sig"),
            "key confusion HS256 with RSA public key": hs_with(rsa_pub_pem, "rsa-1"),
            "key confusion HS256 with EC public key": hs_with(ec_pub_pem, "ec-1"),
            "RS256 header on an ES256 signature": unsigned(
                {"alg": "RS256", "kid": "rsa-1"}, self.claims("victim"), b"\x00" * 256),
            "HS512": jwt.encode(self.claims("victim"), self.hs_secret + "x" * 40, algorithm="HS512"),
            "wrong audience": jwt.encode(self.claims(aud="anon"), self.ec_private, algorithm="ES256",
                                         headers={"kid": "ec-1"}),
            "wrong issuer": jwt.encode(self.claims(iss="https://evil.example/auth/v1"), self.ec_private,
                                       algorithm="ES256", headers={"kid": "ec-1"}),
            "no exp": jwt.encode({k: v for k, v in self.claims().items() if k != "exp"}, self.ec_private,
                                 algorithm="ES256", headers={"kid": "ec-1"}),
            "tampered payload": _tamper(jwt.encode(self.claims("someone"), self.ec_private, algorithm="ES256",
                                                   headers={"kid": "ec-1"})),
            "garbage": "not.a.jwt",
            "two parts": "abc.def",
            "empty parts": "..",
            "huge": "a" * 20000,
        }


def _tamper(token: str) -> str:
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin"
    claims["app_metadata"] = {"role": "admin"}
    new = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{new}.{sig}"


# ---------------------------------------------------------------------------- Kinesis

def poison_order_records() -> list[tuple[str, bytes, bool]]:
    """(name, record, whether a REJECTED status must come back: ids readable) for `supernoba-orders`."""
    def cmd(**fields: Any) -> bytes:
        base = {"action": "ADD", "symbol": "TEST", "is_buy": True, "price": 100, "quantity": 1, "ts": 1}
        base.update(fields)
        return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()

    return [
        ("not JSON", b"\x00\x01garbage\xff", False),
        ("JSON array", b"[1,2,3]", False),
        ("empty", b"{}", False),
        ("truncated", b'{"action":"ADD","symbol":"TEST"', False),
        ("no ids", cmd(order_id=..., user_id=...), False),
        ("bad action", cmd(action="DELETE_ALL", order_id="p-act", user_id="poison"), True),
        ("quantity string", cmd(order_id="p-qs", user_id="poison", quantity="1"), True),
        ("quantity float", cmd(order_id="p-qf", user_id="poison", quantity=1.5), True),
        ("price 2^64", cmd(order_id="p-big", user_id="poison", price=2**64), True),
        ("price 10^40", cmd(order_id="p-huge", user_id="poison", price=10**40), True),
        ("quantity negative", cmd(order_id="p-neg", user_id="poison", quantity=-1), True),
        ("is_buy string", cmd(order_id="p-side", user_id="poison", is_buy="true"), True),
        ("symbol key-shaped", cmd(order_id="p-sym", user_id="poison", symbol="X}:*"), True),
        ("symbol with newline", cmd(order_id="p-nl", user_id="poison", symbol="TEST\n"), True),
        ("ts string", cmd(order_id="p-ts", user_id="poison", ts="now"), True),
        ("order_id 65 bytes", cmd(order_id="o" * 65, user_id="poison"), False),
        ("tif unknown", cmd(order_id="p-tif", user_id="poison", tif="DAY"), True),
        ("deep nesting", b'{"a":' * 5000 + b"1" + b"}" * 5000, False),
        ("cancel unknown order", json.dumps({"action": "CANCEL", "symbol": "TEST", "order_id": "p-never",
                                             "user_id": "poison", "ts": 1}).encode(), True),
    ]
