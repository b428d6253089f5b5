"""The foundation fixtures give real, provisioned services that behave like AWS's."""

from __future__ import annotations

import time

import orjson
import pytest

from chalice_app import keys
from tools import services
from tools.provision import provision
from tools.services import ValkeyService, port_open


def _read_shard(kinesis, stream: str, shard_id: str) -> list[dict]:
    it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    out: list[dict] = []
    for _ in range(10):
        resp = kinesis.get_records(ShardIterator=it, Limit=1000)
        out += resp["Records"]
        it = resp["NextShardIterator"]
        if resp.get("MillisBehindLatest", 0) == 0 and not resp["Records"]:
            break
    return out


def test_kinesis_records_come_back_in_order_per_shard_across_four_shards(settings, aws):
    kinesis = aws.client("kinesis")
    shards = kinesis.list_shards(StreamName=settings.orders_stream)["Shards"]
    assert len(shards) == 4
    sent = {f"SYM{i}": [] for i in range(8)}
    for n in range(40):
        sym = f"SYM{n % 8}"
        data = orjson.dumps({"symbol": sym, "n": n})
        kinesis.put_record(StreamName=settings.orders_stream, Data=data, PartitionKey=sym)
        sent[sym].append(n)
    got: dict[str, list[int]] = {s: [] for s in sent}
    used_shards = 0
    for shard in shards:
        records = _read_shard(kinesis, settings.orders_stream, shard["ShardId"])
        used_shards += bool(records)
        seqs = [int(r["SequenceNumber"]) for r in records]
        assert seqs == sorted(seqs)
        for r in records:
            body = orjson.loads(r["Data"])
            assert r["PartitionKey"] == body["symbol"]
            got[body["symbol"]].append(body["n"])
    assert got == sent
    assert used_shards >= 2


def test_dynamodb_item_round_trips(settings, aws):
    ddb = aws.client("dynamodb")
    item = {"pk": {"S": "TRADE#TEST"}, "sk": {"S": "1733896438267#TEST-000000000001"}, "p": {"N": "15000"}}
    ddb.put_item(TableName=settings.trade_table, Item=item)
    got = ddb.get_item(TableName=settings.trade_table, Key={"pk": item["pk"], "sk": item["sk"]}, ConsistentRead=True)
    assert got["Item"] == item


def test_s3_object_round_trips(settings, aws):
    s3 = aws.client("s3")
    key = "candles/TEST/1m/2025/12/16/1420.jsonl"
    s3.put_object(Bucket=settings.backup_bucket, Key=key, Body=b'{"o":1}\n')
    assert s3.get_object(Bucket=settings.backup_bucket, Key=key)["Body"].read() == b'{"o":1}\n'


def test_lua_script_runs_on_valkey_with_hash_tagged_keys(depth_cache):
    script = depth_cache.register_script(
        "redis.call('HSET', KEYS[1], 'c', ARGV[1]); return redis.call('HGET', KEYS[1], 'c')"
    )
    assert script(keys=[keys.candle("TEST")], args=[1234]) == "1234"
    assert depth_cache.hgetall("candle:1m:{TEST}") == {"c": "1234"}


def test_depth_and_backup_caches_are_separate(depth_cache, backup_cache):
    depth_cache.set("x", "depth")
    assert backup_cache.get("x") is None


def test_provision_is_idempotent(settings):
    lines = provision(settings)
    assert all("exists" in line for line in lines), lines


def test_provision_dry_run_creates_nothing(service_env, aws):
    from chalice_app.config import Settings

    s = Settings.from_env({**service_env, "KINESIS_ORDERS_STREAM": "never-created", "BACKUP_BUCKET": "never-bucket"})
    lines = provision(s, dry_run=True)
    assert any(line.startswith("stream never-created: would create") for line in lines)
    names = aws.client("kinesis").list_streams()["StreamNames"]
    assert "never-created" not in names


def test_stop_ends_the_process_it_started(tmp_path):
    svc = ValkeyService(data_dir=tmp_path / "v").start()
    port = svc.port
    assert port_open(port)
    svc.stop()
    deadline = time.monotonic() + 5
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not port_open(port)


def test_symbol_keys_refuse_strings_that_reach_other_keys():
    assert keys.depth("TEST") == "depth:{TEST}"
    for bad in ("TEST}:x", "*", "test", "", "A" * 17, "TEST\n"):
        with pytest.raises(ValueError):
            keys.depth(bad)


def test_a_missing_npm_emulator_is_a_clear_error_naming_make_setup(monkeypatch, tmp_path):
    monkeypatch.setattr(services, "NODE_DIR", tmp_path)  # a clone where `npm ci` never ran
    with pytest.raises(services.ServiceStartError, match=r"kinesalite is not installed .*make setup"):
        services.KinesisService().start()


def test_a_start_interrupted_while_waiting_for_the_service_stops_its_process(monkeypatch):
    spawned = []

    def interrupted(self):  # Ctrl-C, or a benchmark's SIGTERM, while start() waits for the answer
        spawned.append(self.proc)
        raise KeyboardInterrupt

    monkeypatch.setattr(ValkeyService, "ready", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            ValkeyService().start()
        assert spawned and spawned[0].wait(timeout=10) is not None
    finally:
        for proc in spawned:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_cluster_start_interrupted_after_its_first_node_stops_that_node(monkeypatch):
    real_start = ValkeyService.start
    spawned = []

    def start(self):
        if spawned:
            raise KeyboardInterrupt  # while the second node starts
        node = real_start(self)
        spawned.append(node.proc)
        return node

    monkeypatch.setattr(ValkeyService, "start", start)
    try:
        with pytest.raises(KeyboardInterrupt):
            services.ValkeyClusterService().start()
        assert spawned[0].wait(timeout=10) is not None
    finally:
        for proc in spawned:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
