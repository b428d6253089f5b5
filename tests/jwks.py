"""A Supabase-like JWKS endpoint on a loopback port, shared by the Chalice-app fixtures
(tests/chalice_app/conftest.py) and the bad-input corpus (tests/reliability/conftest.py).

`public_jwks(ec_private, rsa_private)` is the key set the project signs with (`ec-1` ES256,
`rsa-1` RS256); `JwksServer(jwks)` serves it at `/auth/v1/.well-known/jwks.json` and counts
the fetches, so a test can check that the app caches it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jwt.algorithms import ECAlgorithm, RSAAlgorithm

JWKS_PATH = "/auth/v1/.well-known/jwks.json"


def public_jwks(ec_private: Any, rsa_private: Any) -> dict[str, Any]:
    """The public half of the project's two signing keys, as a JWKS document."""
    ec_jwk = json.loads(ECAlgorithm.to_jwk(ec_private.public_key()))
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_private.public_key()))
    return {"keys": [{**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
                     {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"}]}


class JwksServer:
    """Serves `self.jwks` at `JWKS_PATH` (404 elsewhere) until `stop()`; `fetches` counts the GETs."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path != JWKS_PATH:
                    self.send_response(404)
                    self.end_headers()
                    return
                outer.fetches += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def issuer(self) -> str:
        return self.url + "/auth/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
