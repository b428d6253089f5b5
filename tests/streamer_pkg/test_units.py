"""Unit tests of the streamer's pure parts: the transports' requests, roll-up folding, bucket starts."""

from __future__ import annotations

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from streamer_pkg.rollups import Rollup, bucket_start, fold
from streamer_pkg.transport import AiohttpTransport, ChaliceTransport

ENDPOINT = "https://abc.execute-api.ap-northeast-2.amazonaws.com/production"


class _Raw:
    def stream(self, **_: object):
        yield b""


def _captured_request(client, conn_id: str, body: bytes, **extra: object):
    """What the botocore client puts on the wire for post_to_connection (short-circuited)."""
    seen = []

    def before_send(request, **_: object) -> AWSResponse:
        seen.append(request)
        return AWSResponse(request.url, 200, {}, _Raw())

    client.meta.events.register("before-send.apigatewaymanagementapi.PostToConnection", before_send)
    client.post_to_connection(ConnectionId=conn_id, Data=body, **extra)
    client.meta.events.unregister("before-send.apigatewaymanagementapi.PostToConnection", before_send)
    return seen[0]


@pytest.fixture
def session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="AKID", aws_secret_access_key="SECRET", aws_session_token="TOKEN",
                         region_name="ap-northeast-2")


@pytest.mark.parametrize("conn_id", ["L0SM9cOFvHcCIhw=", "abc", "a/b+c"])
def test_aiohttp_transport_signs_the_request_botocore_sends(session, conn_id):
    """Same URL (id encoded as a URI label), same credential scope and signed headers as the
    boto3 client's own PostToConnection request."""
    body = b'{"e":"d","s":"TEST"}'
    ref = _captured_request(session.client("apigatewaymanagementapi", endpoint_url=ENDPOINT), conn_id, body)
    mine = AiohttpTransport(ENDPOINT, None, region="ap-northeast-2", session=session)
    url = mine.url(conn_id)
    headers = mine.sign(url, body)
    assert url == ref.url
    want, got = ref.headers["Authorization"].decode(), headers["Authorization"]
    assert got.split("Signature=")[0] == want.split("Signature=")[0]  # credential scope + signed headers
    assert headers["X-Amz-Security-Token"] == "TOKEN"
    assert len(got.split("Signature=")[1]) == 64


def test_chalice_transport_shares_one_trimmed_client(session):
    t = ChaliceTransport(ENDPOINT, None, region="ap-northeast-2", session=session, threads=4)
    assert t.sender.api._get_client() is t.client  # WebsocketAPI uses the one shared client
    cfg = t.client.meta.config
    assert cfg.max_pool_connections == 4 and cfg.retries["total_max_attempts"] == 1  # no SDK retries
    req = _captured_request(t.client, "abc=", b"x")
    assert _captured_request(t.client, 123, b"x").url.endswith("/123")  # not validated (an int id)
    assert req.headers["Authorization"].startswith(b"AWS4-HMAC-SHA256 Credential=AKID/")  # still signed
    assert "amz-sdk-invocation-id" not in req.headers  # a trimmed per-call handler


@pytest.mark.parametrize(("t", "interval", "want"), [
    ("202512161423", "3m", "202512161421"), ("202512161423", "5m", "202512161420"),
    ("202512161459", "15m", "202512161445"), ("202512161430", "30m", "202512161430"),
    ("202512161459", "1h", "202512161400"), ("202512160000", "5m", "202512160000"),
])
def test_bucket_start(t, interval, want):
    assert bucket_start(t, interval) == want


def m(t, o, h, low, c, v):
    return {"t": t, "o": str(o), "h": str(h), "l": str(low), "c": str(c), "v": str(v)}


def test_fold_across_minutes_and_buckets():
    r = fold(None, "5m", m("202501010001", 10, 12, 9, 11, 5))
    assert (r.t, r.o, r.h, r.l, r.c, r.v) == ("202501010000", 10, 12, 9, 11, 5)
    r = fold(r, "5m", m("202501010001", 10, 15, 9, 14, 8))  # same minute, updated
    assert (r.h, r.c, r.v) == (15, 14, 8)
    # minute 0001 closed with a final trade we did not see (h 16, v 9); minute 0002 opens
    r = fold(r, "5m", m("202501010002", 14, 14, 7, 7, 2), closed={"t": "202501010001", "h": 16, "l": 9, "v": 9})
    assert (r.o, r.h, r.l, r.c, r.v, r.m) == (10, 16, 7, 7, 11, "202501010002")
    r = fold(r, "5m", m("202501010003", 7, 8, 7, 8, 1))  # no closed candle: last seen values of 0002
    assert (r.h, r.l, r.v) == (16, 7, 12)
    r = fold(r, "5m", m("202501010005", 8, 8, 8, 8, 10**20))  # next bucket, huge volume stays exact
    assert (r.t, r.o, r.v) == ("202501010005", 8, 10**20)
    assert Rollup.from_hash(r.to_hash()) == r


def test_options_come_from_the_streamer_settings_and_bad_numbers_name_the_variable():
    from chalice_app.config import Settings
    from streamer_pkg.tiers import StreamerOptions

    default = StreamerOptions.from_settings(Settings.from_env({}))
    assert (default.realtime_interval, default.anon_interval, default.transport) == (0.05, 0.5, "fast")
    assert (default.concurrency, default.membership_every) == (0, 1.0)
    tuned = StreamerOptions.from_settings(Settings.from_env({
        "STREAMER_REALTIME_MS": "20", "STREAMER_ANON_MS": "1000", "STREAMER_TRANSPORT": "chalice-lean",
        "STREAMER_CONCURRENCY": "64", "STREAMER_RETRIES": "5", "STREAMER_SEND_TIMEOUT": "0.5",
        "STREAMER_MEMBERSHIP_MS": "250", "STREAMER_HTTP_PORT": "9999"}))
    assert (tuned.realtime_interval, tuned.anon_interval, tuned.transport) == (0.02, 1.0, "chalice-lean")
    assert (tuned.concurrency, tuned.retries, tuned.send_timeout) == (64, 5, 0.5)
    assert (tuned.membership_every, tuned.http_port) == (0.25, 9999)
    with pytest.raises(ValueError, match="STREAMER_ANON_MS must be a number"):
        Settings.from_env({"STREAMER_ANON_MS": "fast"})


def test_settings_that_cannot_run_exit_with_code_2(monkeypatch: pytest.MonkeyPatch):
    from chalice_app.config import Settings
    from streamer_pkg.__main__ import main
    from streamer_pkg.tiers import StreamerOptions

    with pytest.raises(ValueError, match="STREAMER_REALTIME_MS must be positive"):
        StreamerOptions.from_settings(Settings.from_env({"STREAMER_REALTIME_MS": "0"}))
    monkeypatch.setenv("STREAMER_REALTIME_MS", "abc")
    assert main([]) == 2
    monkeypatch.setenv("STREAMER_REALTIME_MS", "0")
    monkeypatch.setenv("WEBSOCKET_ENDPOINT", "http://127.0.0.1:9/api")
    assert main([]) == 2
