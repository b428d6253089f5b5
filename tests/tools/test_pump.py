"""The local event pump against kinesalite, with small Chalice apps defined here.

Records reach `on_kinesis_record` handlers in shard order with Lambda's event shape; a
failing handler gets the same batch again; positions survive a restart; schedules fire
on their own and through `invoke`.
"""

from __future__ import annotations

import base64
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice import Chalice, Cron, Rate

from chalice_app.config import Settings
from tools.pump import CronSpec, Pump, Schedule, UnknownHandler, UnsupportedSchedule


class Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[dict[str, Any]] = []

    def add(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.batches.append(event)

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for b in self.batches for r in b["Records"]]

    def wait_records(self, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.records()
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(f"only {len(self.records())} of {n} records arrived")


def put(kinesis: Any, stream: str, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [kinesis.put_record(StreamName=stream, PartitionKey=pk, Data=data.encode()) for pk, data in items]


@pytest.fixture
def kinesis(aws: boto3.Session) -> Any:
    return aws.client("kinesis")


def test_records_reach_the_handler_in_shard_order_with_lambda_shape(settings: Settings, kinesis: Any) -> None:
    app = Chalice(app_name="pumptest")
    seen = Seen()

    @app.on_kinesis_record(stream=settings.orders_stream, batch_size=5, starting_position="TRIM_HORIZON")
    def on_orders(event):
        seen.add(event.to_dict())
        for record in event:  # Chalice's own KinesisRecord must parse what we send
            assert record.data.startswith(b"msg-")

    items = [(f"SYM{i % 7}", f"msg-{i:03d}") for i in range(60)]
    acks = put(kinesis, settings.orders_stream, items)
    with Pump(app, data_dir=None):
        got = seen.wait_records(60)
    assert len(got) == 60
    assert sorted(base64.b64decode(r["kinesis"]["data"]).decode() for r in got) == sorted(d for _, d in items)
    assert all(len(b["Records"]) <= 5 for b in seen.batches)
    # per shard: delivered in sequence order, each exactly once, matching what PutRecord said
    by_shard: dict[str, list[int]] = {}
    for r in got:
        shard = r["eventID"].split(":")[0]
        by_shard.setdefault(shard, []).append(int(r["kinesis"]["sequenceNumber"]))
    assert len(by_shard) > 1
    for seqs in by_shard.values():
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    expected = {}
    for ack in acks:
        expected.setdefault(ack["ShardId"], []).append(int(ack["SequenceNumber"]))
    assert {k: sorted(v) for k, v in expected.items()} == by_shard
    r = got[0]
    assert r["eventSource"] == "aws:kinesis" and r["eventName"] == "aws:kinesis:record"
    assert r["eventSourceARN"].endswith(f":stream/{settings.orders_stream}")
    assert r["kinesis"]["kinesisSchemaVersion"] == "1.0"
    assert r["kinesis"]["partitionKey"].startswith("SYM")
    assert abs(r["kinesis"]["approximateArrivalTimestamp"] - time.time()) < 60


def test_a_failing_handler_gets_the_same_batch_again(settings: Settings, kinesis: Any) -> None:
    app = Chalice(app_name="pumptest")
    seen = Seen()
    failures = {"left": 2}

    @app.on_kinesis_record(stream=settings.fills_stream, batch_size=3, starting_position="TRIM_HORIZON")
    def on_fills(event):
        seen.add(event.to_dict())
        data = [r.data for r in event]
        if b"poison" in data and failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("downstream unavailable")

    put(kinesis, settings.fills_stream, [("TEST", f"r{i}") if i != 4 else ("TEST", "poison") for i in range(9)])
    with Pump(app, data_dir=None, initial_backoff=0.02) as pump:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(seen.batches) < 5:
            time.sleep(0.02)
        stats = pump.stats()
    seqs = [[r["kinesis"]["sequenceNumber"] for r in b["Records"]] for b in seen.batches]
    poison = [s for s, b in zip(seqs, seen.batches, strict=True)
              if any(base64.b64decode(r["kinesis"]["data"]) == b"poison" for r in b["Records"])]
    assert len(poison) == 3 and poison[0] == poison[1] == poison[2]  # 2 failures, then success
    delivered = [base64.b64decode(r["kinesis"]["data"]).decode() for b in seen.batches for r in b["Records"]]
    # after the retries, every record arrived once more in order; none after the poison batch was skipped
    assert sorted(set(delivered)) == sorted({f"r{i}" for i in range(9) if i != 4} | {"poison"})
    assert stats["on_fills.errors"] == 2 and stats["on_fills.records"] == 9


def test_positions_survive_a_restart_and_latest_skips_old_records(
    settings: Settings, kinesis: Any, tmp_path: Path
) -> None:
    def make(seen: Seen, position: str) -> Chalice:
        app = Chalice(app_name="pumptest")

        @app.on_kinesis_record(stream=settings.status_stream, batch_size=100, starting_position=position)
        def on_status(event):
            seen.add(event.to_dict())

        return app

    put(kinesis, settings.status_stream, [("u1", "before-first-start")])
    first = Seen()
    with Pump(make(first, "LATEST"), data_dir=tmp_path):
        put(kinesis, settings.status_stream, [(f"u{i}", f"a{i}") for i in range(10)])
        first.wait_records(10)
        time.sleep(0.2)
    assert sorted(base64.b64decode(r["kinesis"]["data"]).decode() for r in first.records()) == \
        sorted(f"a{i}" for i in range(10))
    assert (tmp_path / "pump" / "checkpoints.json").exists()

    put(kinesis, settings.status_stream, [(f"u{i}", f"b{i}") for i in range(5)])  # while the pump is down
    second = Seen()
    with Pump(make(second, "LATEST"), data_dir=tmp_path):
        second.wait_records(5)
        time.sleep(0.3)
    assert sorted(base64.b64decode(r["kinesis"]["data"]).decode() for r in second.records()) == \
        sorted(f"b{i}" for i in range(5))


def test_schedules_fire_at_their_rate_and_on_invoke() -> None:
    app = Chalice(app_name="pumptest")
    fired: list[dict[str, Any]] = []

    @app.schedule(Rate(1, unit=Rate.MINUTES))
    def every_minute(event):
        fired.append(event.to_dict())
        return {"moved": len(fired)}

    @app.schedule("cron(0/5 * * * ? *)")
    def cleanup(event):
        return None

    pump = Pump(app, data_dir=None, region="ap-northeast-2")
    assert pump.schedules["every_minute"].period == 60
    assert pump.invoke("every_minute") == {"moved": 1}
    event = fired[0]
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["resources"] == ["arn:aws:events:ap-northeast-2:000000000000:rule/every_minute"]
    with pytest.raises(UnknownHandler):
        pump.invoke("nope")

    pump.schedules["every_minute"].period = 0.1  # the loop itself, at a testable pace
    with pump:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(fired) < 4:
            time.sleep(0.02)
    assert len(fired) >= 4
    assert pump.stats()["every_minute.fired"] >= 4


def test_schedule_expressions() -> None:
    assert Schedule.from_expression("a", Rate(5, unit=Rate.MINUTES)).period == 300
    assert Schedule.from_expression("b", "rate(2 hours)").period == 7200
    assert Schedule.from_expression("c", "rate(1 day)").period == 86400
    cron = Schedule.from_expression("d", Cron("0/15", "*", "?", "*", "MON-FRI", "*"))
    sat = datetime(2025, 1, 4, 10, 7, tzinfo=UTC)  # a Saturday
    assert datetime.fromtimestamp(cron.next_fire(sat.timestamp()), tz=UTC) == datetime(2025, 1, 6, 0, 0, tzinfo=UTC)
    mon = datetime(2025, 1, 6, 10, 7, tzinfo=UTC)
    assert datetime.fromtimestamp(cron.next_fire(mon.timestamp()), tz=UTC) == datetime(2025, 1, 6, 10, 15, tzinfo=UTC)
    daily = CronSpec.parse("30 2 * * ? *".split())
    assert daily.next_after(datetime(2025, 1, 31, 3, 0, tzinfo=UTC)) == datetime(2025, 2, 1, 2, 30, tzinfo=UTC)
    sunday = CronSpec.parse("0 12 ? * 1 *".split())  # AWS: 1 = Sunday
    assert sunday.next_after(datetime(2025, 1, 1, tzinfo=UTC)) == datetime(2025, 1, 5, 12, 0, tzinfo=UTC)
    for bad in ("cron(0 12 L * ? *)", "cron(0 12 * *)", "every minute"):
        with pytest.raises(UnsupportedSchedule):
            Schedule.from_expression("x", bad)
