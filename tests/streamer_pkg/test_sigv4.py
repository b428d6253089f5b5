"""The streamer's SigV4 signer against botocore's `SigV4Auth`: same inputs → same Authorization."""

from __future__ import annotations

import datetime
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials

from streamer_pkg.sigv4 import Signer, host_of

T0 = 1_764_104_399.25  # 2025-11-25T21:39:59Z, one second before a new second; a day change below


def _botocore(creds: Credentials, url: str, body: bytes, at: float, region: str = "ap-northeast-2") -> AWSRequest:
    request = AWSRequest(method="POST", url=url, data=body)
    when = datetime.datetime.fromtimestamp(int(at), datetime.UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        SigV4Auth(creds, "execute-api", region).add_auth(request)
    return request


@pytest.mark.parametrize("url", [
    "https://abc.execute-api.ap-northeast-2.amazonaws.com/production/@connections/L0SM9cOFvHcCIhw%3D",
    "http://127.0.0.1:8001/api/@connections/a%2Fb%2Bc",
    "https://abc.execute-api.ap-northeast-2.amazonaws.com:443/prod/@connections/..",
    "http://localhost/@connections/x%20y",
])
@pytest.mark.parametrize("token", [None, "TOKEN with  spaces"])
def test_same_authorization_as_botocore(url, token):
    creds = Credentials("AKID", "SECRET/key+", token)
    body = b'{"e":"d","s":"TEST","b":[[1,2]]}'
    clock = iter([T0, T0 + 0.5, T0 + 86_400 * 3]).__next__
    signer = Signer(creds, host_of(url), "ap-northeast-2", clock=clock)
    path = url.split("/", 3)[3]
    for at in (T0, T0 + 0.5, T0 + 86_400 * 3):  # same second twice (cached date), then another day (new key)
        ref = _botocore(creds, url, body, at)
        amz_date, sent_token, auth = signer.sign("/" + path, body)
        assert auth == ref.headers["Authorization"]
        assert amz_date == ref.headers["X-Amz-Date"]
        assert sent_token == (token or "")
        if token:
            assert ref.headers["X-Amz-Security-Token"] == token


def test_empty_body_and_host_header():
    creds = Credentials("AKID", "SECRET", None)
    url = "https://h.example.com/s/@connections/abc"
    signer = Signer(creds, host_of(url), "us-east-1", clock=lambda: T0)
    assert signer.sign("/s/@connections/abc", b"")[2] == _botocore(creds, url, b"", T0, "us-east-1").headers["Authorization"]
    assert host_of("http://127.0.0.1:80/x") == "127.0.0.1"
    assert host_of("http://127.0.0.1:8001/x") == "127.0.0.1:8001"
    assert host_of("https://[::1]:8443/x") == "[::1]:8443"


def test_refreshed_credentials_are_picked_up():
    """An instance-role rotation: the signer re-reads the frozen credentials (at most every
    `refresh_every` seconds) and signs with the new key and token."""
    now = [T0]
    current = {"access_key": "OLD", "secret_key": "S1", "token": "T1",
               "expiry_time": "2099-01-01T00:00:00Z"}
    creds = RefreshableCredentials.create_from_metadata(current, lambda: dict(current), "test")
    url = "https://h.example.com/s/@connections/abc"
    signer = Signer(creds, host_of(url), "ap-northeast-2", refresh_every=1.0, clock=lambda: now[0])
    assert "Credential=OLD/" in signer.sign("/s/@connections/abc", b"x")[2]
    creds._protected_refresh(is_mandatory=True)  # noqa: SLF001  (what botocore does near expiry)
    current.update(access_key="NEW", secret_key="S2", token="T2")
    creds._protected_refresh(is_mandatory=True)  # noqa: SLF001
    now[0] += 1.5
    _, token, auth = signer.sign("/s/@connections/abc", b"x")
    assert token == "T2"
    assert auth == _botocore(Credentials("NEW", "S2", "T2"), url, b"x", now[0]).headers["Authorization"]


def test_no_credentials_is_an_error():
    with pytest.raises(ValueError):
        Signer(None, "h", "ap-northeast-2")
