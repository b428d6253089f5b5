"""Property-based fuzz of the REST API from its OpenAPI description (schemathesis).

`docs/openapi.yaml` is generated from the app's pydantic models (`python -m tools.openapi`);
it must be up to date. Schemathesis generates valid and invalid requests for every
operation; every answer must be a non-5xx, and every error a JSON `{code, message}`.
Bounded: a few dozen examples per operation, no shrinking beyond hypothesis's defaults.
"""

from __future__ import annotations

import re

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck

from tests.reliability.conftest import ADMIN_KEY
from tools.openapi import DEFAULT_OUT, render

SCHEMA = schemathesis.openapi.from_path(str(DEFAULT_OUT))
CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
HEADERS = {"X-Test-User": "fuzz-user-1", "X-Admin-Key": ADMIN_KEY}
_calls = {"n": 0}
#: methods Chalice's local server hands to the app (TRACE, QUERY, ... never reach it)
ROUTED_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def test_openapi_description_is_up_to_date():
    assert DEFAULT_OUT.read_text() == render(), "run `python -m tools.openapi` to regenerate docs/openapi.yaml"


@pytest.fixture
def base_url(rel) -> str:
    return rel.rest_url


@pytest.fixture(scope="module", autouse=True)
def _count_calls(record_testsuite_property):
    yield
    record_testsuite_property("fuzz_examples", _calls["n"])


@SCHEMA.parametrize()
@hypothesis.settings(max_examples=10, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case, base_url, record_property):
    if case.method.upper() not in ROUTED_METHODS:
        return  # Python's http.server under `chalice local` answers 501 itself; API Gateway answers 403
    resp = case.call(base_url=base_url, headers=HEADERS, timeout=15)
    _calls["n"] += 1
    record_property("fuzz_examples", 1)
    assert resp.status_code < 500, f"{case.method} {case.formatted_path} -> {resp.status_code}: {resp.text[:300]}"
    if resp.status_code >= 400:
        body = resp.json()
        assert isinstance(body, dict) and CODE_RE.match(str(body.get("code"))), body
        assert isinstance(body.get("message"), str), body
