"""Unit tests of the streamer's pure parts: SigV4 signing, roll-up folding, bucket starts."""

from __future__ import annotations

import datetime as dt

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from streamer_pkg.rollups import Rollup, bucket_start, fold
from streamer_pkg.transport import SigV4Signer, conn_path


@pytest.mark.parametrize("token", ["TOKEN", None])
@pytest.mark.parametrize("conn_id", ["L0SM9cOFvHcCIhw=", "abc", "a/b+c"])
def test_sigv4_matches_botocore(token, conn_id):
    creds = Credentials("AKID", "SECRET", token)
    host = "abc.execute-api.ap-northeast-2.amazonaws.com"
    path = conn_path("/production", conn_id)
    body = b'{"e":"d","s":"TEST"}'
    req = AWSRequest(method="POST", url=f"https://{host}{path}", data=body)
    SigV4Auth(creds, "execute-api", "ap-northeast-2").add_auth(req)
    now = dt.datetime.strptime(req.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    mine = SigV4Signer("ap-northeast-2", lambda: creds).headers("POST", host, path, body, now)
    assert mine["Authorization"] == req.headers["Authorization"]
    assert mine.get("X-Amz-Security-Token") == token


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
