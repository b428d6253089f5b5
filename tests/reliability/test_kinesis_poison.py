"""Kinesis poison records: the engine and the Lambda handlers skip them with a clear outcome.

- On `supernoba-orders`, with `python -m engine_pkg` running as its own process: each poison
  record whose ids can be read comes back as a `REJECTED` status (`BAD_ORDER`, or
  `UNKNOWN_ORDER` for a cancel of nothing), the others are logged and counted; the engine
  stays up, and a good order put after them is accepted and shows in the book.
- On `supernoba-fills` / `supernoba-order-status`, through the app's own `on_fills` /
  `on_order_status` handlers with a Kinesis-shaped event: the batch does not fail (a
  raise would make the event source retry the same batch forever), and the good fill in
  the same batch is stored in `trade_history`.
"""

from __future__ import annotations

import base64
import time
import uuid

import boto3
import orjson
import pytest

from chalice_app import keys
from tests.engine_pkg.service.helpers import EngineProcess, fast_env
from tests.reliability.hostile import poison_order_records


def _put(kinesis, stream: str, data: bytes, key: str = "TEST") -> None:
    kinesis.put_record(StreamName=stream, Data=data, PartitionKey=key)


def _statuses(rel) -> list[dict]:
    return [orjson.loads(r) for r in rel.stream_records(rel.settings.status_stream)]


@pytest.fixture(scope="module")
def engine(rel, tmp_path_factory):
    proc = EngineProcess(fast_env(rel.settings), log_path=tmp_path_factory.mktemp("engine") / "engine.log")
    yield proc
    proc.close()


def test_poison_orders_are_rejected_or_counted_and_the_engine_carries_on(rel, engine):
    poison = poison_order_records()
    for _, data, _ in poison:
        _put(rel.kinesis, rel.settings.orders_stream, data)
    good_id = f"good-{uuid.uuid4().hex[:8]}"
    good = {"action": "ADD", "symbol": "TEST", "order_id": good_id, "user_id": "poison-after", "is_buy": True,
            "price": 777, "quantity": 3, "type": "LIMIT", "tif": "GTC", "ts": int(time.time() * 1000)}
    _put(rel.kinesis, rel.settings.orders_stream, orjson.dumps(good))

    # statuses are partitioned by user over the status stream's shards, read one after the
    # other: wait for every expected one, not just the good order's
    expected = {good_id} | {orjson.loads(data)["order_id"] for _, data, readable in poison if readable}
    deadline = time.monotonic() + 60
    statuses: list[dict] = []
    while time.monotonic() < deadline:
        statuses = _statuses(rel)
        if expected <= {s.get("order_id") for s in statuses}:
            break
        assert engine.proc.poll() is None, "the engine died on a poison record"
        time.sleep(0.2)
    by_id = {s.get("order_id"): s for s in statuses}
    assert by_id.get(good_id, {}).get("status") == "ACCEPTED", "the good order after the poison was not accepted"
    for name, data, readable in poison:
        if not readable:
            continue
        oid = orjson.loads(data)["order_id"]
        st = by_id.get(oid)
        assert st is not None, f"{name}: no status for a command whose ids are readable"
        assert st["status"] == "REJECTED", f"{name}: {st}"
        assert st["reason"] in ("BAD_ORDER", "UNKNOWN_ORDER"), f"{name}: {st}"
    assert engine.proc.poll() is None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        raw = rel.cache.get(keys.depth("TEST"))
        if raw and [777, 3] in orjson.loads(raw)["b"]:
            break
        time.sleep(0.1)
    assert raw and [777, 3] in orjson.loads(raw)["b"], raw
    assert not any("}:*" in k or "\n" in k for k in rel.cache_keys()), "a poison symbol became a key"


def _kinesis_event(stream: str, records: list[bytes]) -> dict:
    arn = f"arn:aws:kinesis:ap-northeast-2:123456789012:stream/{stream}"
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "TEST", "sequenceNumber": str(10**20 + i),
                    "data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": time.time()},
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"shardId-000000000000:{10**20 + i}",
        "eventName": "aws:kinesis:record", "awsRegion": "ap-northeast-2", "eventSourceARN": arn,
    } for i, data in enumerate(records)]}


POISON_EVENTS = [b"\x00garbage", b"[]", b"{}", b'{"e":"fill","trade_id":5}', b'{"e":"fill","s":"X}:*"}',
                 b'{"e":"order","user_id":{"$ne":1}}', b'{"e":"fill","trade_id":"T-1","p":"NaN","q":1e999}',
                 b"{" * 3000, b'"just a string"']


def test_poison_fill_and_status_records_do_not_fail_the_batch(rel):
    import app as app_module

    tid = f"TEST-{uuid.uuid4().int % 10**12:012d}"
    good = {"e": "fill", "s": "TEST", "trade_id": tid, "p": 101, "q": 2, "maker_order_id": "m1",
            "maker_user_id": "mu", "taker_order_id": "t1", "taker_user_id": "tu", "taker_side": "BUY",
            "t": int(time.time() * 1000), "seq": 42}
    fills_event = _kinesis_event(rel.settings.fills_stream, [*POISON_EVENTS, orjson.dumps(good)])
    out = app_module.on_fills(fills_event, None)  # must not raise: a raise loops the batch
    assert isinstance(out, dict)
    status_event = _kinesis_event(rel.settings.status_stream, [*POISON_EVENTS, orjson.dumps(
        {"e": "order", "user_id": "nobody-online", "order_id": "o1", "s": "TEST", "status": "ACCEPTED",
         "reason": None, "filled": 0, "remaining": 1, "price": 1, "t": 1, "seq": 1})])
    assert isinstance(app_module.on_order_status(status_event, None), dict)
    table = boto3.Session(region_name=rel.settings.aws_region).resource("dynamodb").Table(rel.settings.trade_table)
    items = table.query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": "TRADE#TEST"})["Items"]
    assert [i for i in items if i["sk"].endswith(tid)], "the good fill of a batch with poison was not stored"
