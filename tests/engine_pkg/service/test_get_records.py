"""The shard workers' GetRecords client (engine_pkg/service/get_records.py): same records, same
request and same errors as the boto3 client it replaces on the hot path."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator

import boto3
import orjson
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.httpsession import get_cert_path

from engine_pkg.service.get_records import GetRecordsClient, error_code
from tests.engine_pkg.service.helpers import StandInHandler, http_server


def _client(url: str, session: boto3.Session, read_timeout: float = 5.0) -> GetRecordsClient:
    return GetRecordsClient(url, session.region_name, session.get_credentials(), connect_timeout=1.0,
                            read_timeout=read_timeout)


def test_records_match_the_boto3_client_and_the_iterator_advances(aws, settings):
    kinesis = aws.client("kinesis")
    stream = settings.orders_stream
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    start = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                       ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    datas = [b'{"symbol":"\xc3\xa9"}', bytes(range(256)), b"x" * 3000]
    for d in datas:
        kinesis.put_record(StreamName=stream, Data=d, PartitionKey="k", ExplicitHashKey="0")
    ours = _client(kinesis.meta.endpoint_url, aws)
    try:
        got = ours.get_records(ShardIterator=start, Limit=2)
        ref = kinesis.get_records(ShardIterator=start, Limit=2)
        assert [r["Data"] for r in got["Records"]] == datas[:2]
        assert [r["SequenceNumber"] for r in got["Records"]] == [r["SequenceNumber"] for r in ref["Records"]]
        for r, b in zip(got["Records"], ref["Records"], strict=True):
            assert isinstance(r["ApproximateArrivalTimestamp"], float)
            assert r["ApproximateArrivalTimestamp"] == pytest.approx(b["ApproximateArrivalTimestamp"].timestamp())
            assert r["PartitionKey"] == "k"
        assert "MillisBehindLatest" in got
        ours._conn.sock.shutdown(socket.SHUT_RDWR)  # a kept-alive connection that died meanwhile
        rest = ours.get_records(ShardIterator=got["NextShardIterator"], Limit=10)  # reconnects once
        assert [r["Data"] for r in rest["Records"]] == datas[2:]
        empty = ours.get_records(ShardIterator=rest["NextShardIterator"], Limit=10)
        assert empty["Records"] == [] and empty["NextShardIterator"]
    finally:
        ours.close()


def test_error_responses_raise_the_same_client_error_codes_as_boto3(aws, settings):
    kinesis = aws.client("kinesis", config=Config(retries={"max_attempts": 1}))
    ours = _client(kinesis.meta.endpoint_url, aws)
    try:
        for bad in ("not-an-iterator", "AAAAAAAAAAGkNnVn3IXyf6wStuS8uTeE0Qxkc7aH5a7M8vxhnSb7nLQ="):
            with pytest.raises(ClientError) as ref:
                kinesis.get_records(ShardIterator=bad, Limit=10)
            with pytest.raises(ClientError) as got:
                ours.get_records(ShardIterator=bad, Limit=10)
            assert got.value.response["Error"]["Code"] == ref.value.response["Error"]["Code"]
            assert got.value.operation_name == "GetRecords"
    finally:
        ours.close()


def test_error_code_reads_the_json_1_1_error_type():
    body = b'{"__type":"com.amazonaws.kinesis.v20131202#ProvisionedThroughputExceededException","message":"slow"}'
    assert error_code(400, {}, body) == ("ProvisionedThroughputExceededException", "slow")
    assert error_code(400, {"x-amzn-ErrorType": "ExpiredIteratorException:http://x/"}, b"") == (
        "ExpiredIteratorException", "")
    assert error_code(503, {}, b"<html>") == ("503", "")


class _Capture(StandInHandler):
    seen: list[tuple[str, dict[str, str], bytes]] = []
    delay = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.delay.is_set():
            time.sleep(1.0)  # longer than the client's read timeout
        out = b'{"Records":[],"NextShardIterator":"next","MillisBehindLatest":0}'
        self.reply(200, out, {"Content-Type": "application/x-amz-json-1.1"})


@pytest.fixture
def capture() -> Iterator[str]:
    _Capture.seen.clear()
    _Capture.delay.clear()
    with http_server(_Capture) as url:
        yield url


def test_the_request_is_signed_like_botocore_signs_it(capture):
    session = boto3.Session(region_name="ap-northeast-2", aws_access_key_id="AKIDTEST",
                            aws_secret_access_key="secret", aws_session_token="tok")
    ref = session.client("kinesis", endpoint_url=capture)
    ref.get_records(ShardIterator="it-1", Limit=7)
    ours = _client(capture, session)
    assert ours.get_records(ShardIterator="it-1", Limit=7) == {"Records": [], "NextShardIterator": "next",
                                                                "MillisBehindLatest": 0}
    (p1, h1, b1), (p2, h2, b2) = _Capture.seen
    assert p1 == p2 == "/"
    assert orjson.loads(b1) == orjson.loads(b2) == {"ShardIterator": "it-1", "Limit": 7}
    for name in ("x-amz-target", "content-type", "x-amz-security-token", "host"):
        assert h2[name] == h1[name], name

    def scope(auth: str) -> list[str]:  # algorithm, credential scope and signed headers (not the signature)
        algo, rest = auth.split(" ", 1)
        parts = dict(p.strip().split("=", 1) for p in rest.split(","))
        return [algo, parts["Credential"].split("/", 1)[1], parts["SignedHeaders"]]

    assert scope(h2["authorization"]) == scope(h1["authorization"])
    assert h2["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")


def test_a_read_timeout_and_a_refused_connection_raise_botocore_errors(capture):
    session = boto3.Session(region_name="ap-northeast-2", aws_access_key_id="a", aws_secret_access_key="b")
    _Capture.delay.set()
    slow = _client(capture, session, read_timeout=0.2)
    with pytest.raises(ReadTimeoutError):
        slow.get_records(ShardIterator="it", Limit=1)
    slow.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    refused = _client(f"http://127.0.0.1:{port}", session)
    with pytest.raises(EndpointConnectionError) as exc:
        refused.get_records(ShardIterator="it", Limit=1)
    assert isinstance(exc.value, BotoCoreError)


def test_an_https_endpoint_verifies_certificates_with_botocores_ca_bundle(monkeypatch):
    cafiles: list[str] = []
    real = ssl.create_default_context

    def spy(*args, cafile=None, **kwargs):
        cafiles.append(cafile)
        return real(*args, cafile=cafile, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", spy)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    session = boto3.Session(region_name="ap-northeast-2", aws_access_key_id="a", aws_secret_access_key="b")
    tls = _client("https://kinesis.ap-northeast-2.amazonaws.com", session)._tls
    assert tls is not None and tls.verify_mode == ssl.CERT_REQUIRED and tls.check_hostname
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    _client("https://kinesis.ap-northeast-2.amazonaws.com", session)
    assert cafiles == [get_cert_path(True), "/etc/ssl/certs/ca-certificates.crt"]
    assert _client("http://127.0.0.1:1", session)._tls is None
