"""The engine service's parts against real Valkey / kinesalite: the candle Lua script,
the publisher's partial-failure retries, ticker day roll, fenced snapshots, `--dev`."""

from __future__ import annotations

import json
import threading
from collections import deque

import orjson
import pytest
import redis
from botocore.exceptions import ClientError

from chalice_app import keys
from engine_pkg.service.depth_writer import DepthWriter, SymbolUpdate
from engine_pkg.service.errors import LeaseLost
from engine_pkg.service.leases import LeaseManager
from engine_pkg.service.publisher import Publisher, safe_key
from engine_pkg.service.snapshots import Snapshot, SnapshotStore
from engine_pkg.service.ticker import TickerBook
from tests.engine_pkg.service.helpers import fast, put_orders, read_stream, running_service
from tests.waiting import wait_until

M1, M2, M3 = "202512161420", "202512161421", "202512161422"


def _apply(writer: DepthWriter, u: int, trades, depth=b'{"u":%d}', ticker=b'{"e":"t"}') -> None:
    writer.write([SymbolUpdate("TEST", u, depth % u if b"%d" in depth else depth, ticker, trades)])


def test_candle_script_folds_closes_and_ignores_replayed_trades(depth_cache, settings):
    writer = DepthWriter(redis.Redis.from_url(settings.depth_cache_url))
    _apply(writer, 3, [(1, M1, 100, 5), (2, M1, 110, 1), (3, M1, 90, 2)])
    _apply(writer, 5, [(4, M2, 95, 3), (5, M1, 120, 1)])  # seq 5 is a late trade of minute M1
    h = depth_cache.hgetall(keys.candle("TEST"))
    assert h == {"seq": "5", "t": M2, "o": "95", "h": "120", "l": "95", "c": "120", "v": "4"}
    closed = [json.loads(x) for x in depth_cache.lrange(keys.candle_closed("TEST"), 0, -1)]
    assert closed == [{"s": "TEST", "o": 100, "h": 110, "l": 90, "c": 90, "v": 8, "t": M1}]
    # a replay of seqs 2..5 (after a crash) changes nothing, and cannot move depth backwards
    depth_cache.delete(keys.ticker("TEST"))
    _apply(writer, 3, [(2, M1, 110, 1), (3, M1, 90, 2), (4, M2, 95, 3), (5, M1, 120, 1)])
    assert depth_cache.hgetall(keys.candle("TEST")) == h
    assert depth_cache.llen(keys.candle_closed("TEST")) == 1
    assert json.loads(depth_cache.get(keys.depth("TEST"))) == {"u": 5}
    assert depth_cache.get(keys.ticker("TEST")) is None  # no new trade: ticker untouched
    # the next minute closes M2; volumes stay exact past 2^53
    depth_cache.hset(keys.candle("TEST"), "v", "99999999999999999999")
    _apply(writer, 7, [(6, M2, 95, 1), (7, M3, 96, 10**12)])
    last = json.loads(depth_cache.lrange(keys.candle_closed("TEST"), -1, -1)[0])
    assert last == {"s": "TEST", "o": 95, "h": 120, "l": 95, "c": 95, "v": 100000000000000000000, "t": M2}
    assert depth_cache.hget(keys.candle("TEST"), "v") == str(10**12)
    assert json.loads(depth_cache.get(keys.depth("TEST"))) == {"u": 7}
    assert depth_cache.get(keys.ticker("TEST")) == '{"e":"t"}'


class _Flaky:
    """A kinesis client whose put_records fails every third record on the first try of each call."""

    def __init__(self, real) -> None:
        self.real = real
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def put_records(self, StreamName, Records):  # noqa: N803 - boto3's names
        with self.lock:
            self.calls.append(len(Records))
            first = len(self.calls) % 2 == 1
        if not first:
            return self.real.put_records(StreamName=StreamName, Records=Records)
        keep = [r for i, r in enumerate(Records) if i % 3 != 1]
        self.real.put_records(StreamName=StreamName, Records=keep)
        results = [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}
            if i % 3 == 1
            else {"SequenceNumber": "1", "ShardId": "x"}
            for i in range(len(Records))
        ]
        return {"FailedRecordCount": sum("ErrorCode" in r for r in results), "Records": results}


def test_depth_changed_never_precedes_the_data_even_when_the_script_is_not_loaded(depth_cache, settings):
    """The first batch (script never loaded) and a batch after the node lost its scripts: each
    notification's symbol already has its depth when a subscriber hears it."""
    depth_cache.script_flush()
    writer = DepthWriter(redis.Redis.from_url(settings.depth_cache_url))
    sub = depth_cache.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(keys.DEPTH_CHANGED_CHANNEL)
    sub.get_message(timeout=1)
    for u in (1, 2):
        if u == 2:
            depth_cache.script_flush()  # a restart / failover of the node
            depth_cache.delete(keys.depth("TEST"))
        _apply(writer, u, [])
        msg = sub.get_message(timeout=2)
        assert msg is not None and orjson.loads(msg["data"]) == ["TEST"]
        if u == 1:
            assert json.loads(depth_cache.get(keys.depth("TEST"))) == {"u": 1}
    assert json.loads(depth_cache.get(keys.depth("TEST"))) == {"u": 2}
    sub.close()


def test_publisher_chunks_by_500_and_retries_only_failed_records(settings, aws):
    flaky = _Flaky(aws.client("kinesis"))
    pub = Publisher(flaky, settings.fills_stream, base_delay=0.001)
    items = [(orjson.dumps({"k": f"K{i % 4}", "n": i}), f"K{i % 4}") for i in range(1200)]
    pub.put(items)
    assert max(flaky.calls) == 500 and flaky.calls[:2] == [500, 167]  # 500, then its 1/3 that failed
    got = read_stream(aws.client("kinesis"), settings.fills_stream)
    assert sorted(r["n"] for r in got) == list(range(1200))  # each record exactly once
    assert pub.metrics.counters["publish_retries_total"] == 167 + 167 + 67
    assert pub.metrics.counters["publish_reordered_total"] > 0  # counted, see the module docstring
    # the failed records are retried in order before the next chunk starts
    for key in ("K0", "K1", "K2", "K3"):
        ns = [r["n"] for r in got if r["_key"] == key]
        chunks_seen = [n // 500 for n in ns]
        assert chunks_seen == sorted(chunks_seen)



def test_records_kinesis_can_never_accept_do_not_block_the_publisher(settings, aws):
    """A status keyed by a 300-character user id (or an empty one) gets a digest key and still
    goes out; a record over 1 MiB is dropped and counted; the rest arrive in order."""
    kinesis = aws.client("kinesis")
    long_user = "u" * 300
    items = [(orjson.dumps({"n": 0}), "u1"), (orjson.dumps({"n": 1, "user": long_user}), long_user),
             (b"x" * (1024 * 1024), "u1"), (orjson.dumps({"n": 2}), "")]
    pub = Publisher(kinesis, settings.status_stream, base_delay=0.001)
    done = threading.Event()
    threading.Thread(target=lambda: (pub.put(items), done.set()), daemon=True).start()
    assert done.wait(20), "the publisher is stuck on a record Kinesis refuses"
    got = read_stream(kinesis, settings.status_stream)
    assert [r["n"] for r in got] == [0, 1, 2]
    assert got[1]["_key"] == safe_key(long_user) and len(got[1]["_key"]) <= 256
    assert got[0]["_key"] == "u1" and got[2]["_key"] == safe_key("")
    assert pub.metrics.counters["publish_dropped_total"] == 1


class _RefusesOne:
    """Refuses (ValidationException, the whole call) every PutRecords holding record n == 3."""

    def __init__(self, kinesis) -> None:
        self.kinesis = kinesis

    def put_records(self, StreamName, Records):  # noqa: N803 (boto3's names)
        if any(orjson.loads(r["Data"]).get("n") == 3 for r in Records):
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "no"}}, "PutRecords")
        return self.kinesis.put_records(StreamName=StreamName, Records=Records)


def test_a_call_refused_as_a_whole_is_halved_down_to_the_record_at_fault(settings, aws):
    pub = Publisher(_RefusesOne(aws.client("kinesis")), settings.fills_stream, base_delay=0.001)
    pub.put([(orjson.dumps({"n": i}), "K") for i in range(8)])
    assert [r["n"] for r in read_stream(aws.client("kinesis"), settings.fills_stream)] == [0, 1, 2, 4, 5, 6, 7]
    assert pub.metrics.counters["publish_dropped_total"] == 1

def test_ticker_rolls_the_day_in_market_tz_and_keeps_yc():
    prev = {"s": "TEST", "d": "20251215", "o": 100, "h": 120, "l": 90, "c": 110, "v": 7, "pct": 10.0}
    book = TickerBook("Asia/Seoul", lambda s: prev if s == "TEST" else None)
    day1 = 1765810800000 + 3600_000  # 2025-12-16 01:00 KST (= 2025-12-15 16:00 UTC)
    assert book.fold("TEST", [(day1, 200, 1), (day1 + 1000, 210, 2)]) == []
    assert book.message("TEST", day1)["c"] == 5.0 and book.message("TEST", day1)["yc"] == 10.0
    day2 = day1 + 23 * 3600_000  # next KST day
    rolled = book.fold("TEST", [(day2, 189, 1)])
    assert rolled == [
        {"s": "TEST", "d": "20251216", "o": 200, "h": 210, "l": 200, "c": 210, "v": 3, "pct": 5.0}
    ]
    msg = book.message("TEST", day2)
    assert (msg["p"], msg["c"], msg["yc"]) == (189, 0.0, 5.0)
    other = TickerBook("Asia/Seoul", lambda s: None)
    other.load_state(json.loads(json.dumps(book.to_state())))
    assert other.message("TEST", day2) == msg


def test_service_writes_prev_day_at_the_day_boundary(settings, aws, depth_cache, backup_cache):
    day = 86_400_000
    t1 = 1765843200000 + 3600_000  # 2025-12-16 01:00 UTC
    cmds = [
        {
            "action": "ADD",
            "symbol": "DAY",
            "order_id": "a",
            "user_id": "u1",
            "is_buy": False,
            "price": 100,
            "quantity": 10,
            "ts": t1,
        },
        {
            "action": "ADD",
            "symbol": "DAY",
            "order_id": "b",
            "user_id": "u2",
            "is_buy": True,
            "price": 100,
            "quantity": 1,
            "ts": t1 + 1,
        },
        {
            "action": "ADD",
            "symbol": "DAY",
            "order_id": "c",
            "user_id": "u1",
            "is_buy": False,
            "price": 120,
            "quantity": 10,
            "ts": t1 + 2,
        },
        {
            "action": "ADD",
            "symbol": "DAY",
            "order_id": "d",
            "user_id": "u2",
            "is_buy": True,
            "price": 120,
            "quantity": 11,
            "ts": t1 + 3,
        },
        {"action": "ADD", "symbol": "DAY", "order_id": "e", "user_id": "u2", "is_buy": True, "price": 130,
         "quantity": 1, "ts": t1 + day},
    ]
    with running_service(fast(settings)):
        put_orders(aws.client("kinesis"), settings.orders_stream, cmds)
        prev = json.loads(wait_until(lambda: backup_cache.get(keys.prev_day("DAY")), 20, what="prev:{DAY}"))
        assert prev == {
            "s": "DAY",
            "d": "20251216",
            "o": 100,
            "h": 120,
            "l": 100,
            "c": 120,
            "v": 12,
            "pct": 20.0,
        }
        t = wait_until(
            lambda: (
                orjson.loads(depth_cache.get(keys.ticker("DAY")) or b"{}").get("t") == t1 + day
                and orjson.loads(depth_cache.get(keys.ticker("DAY")))
            ),
            10,
        )
        assert (t["p"], t["c"], t["yc"]) == (120, 0.0, 20.0)


def test_snapshot_write_is_fenced_by_the_lease(settings, backup_cache):
    client = redis.Redis.from_url(settings.backup_cache_url)
    store = SnapshotStore(client, settings.orders_stream)
    mine = LeaseManager(client, settings.orders_stream, "e1", "e1:tok", 2000)
    theirs = LeaseManager(client, settings.orders_stream, "e2", "e2:tok", 2000)
    assert mine.try_acquire("shardId-000000000000") and not theirs.try_acquire("shardId-000000000000")
    store.save(Snapshot("shardId-000000000000", "123", engine=b"\x00\x01"), mine.token)
    with pytest.raises(LeaseLost):
        store.save(Snapshot("shardId-000000000000", "999"), theirs.token)
    assert not theirs.renew("shardId-000000000000") and mine.renew("shardId-000000000000")
    snap = store.load("shardId-000000000000")
    assert (snap.seq, snap.engine) == ("123", b"\x00\x01")
    assert mine.release("shardId-000000000000") and theirs.try_acquire("shardId-000000000000")


def test_dev_clears_snapshots_and_depth_and_starts_at_latest(settings, aws, depth_cache, backup_cache):
    kinesis = aws.client("kinesis")
    old = {
        "action": "ADD",
        "symbol": "OLD",
        "order_id": "o1",
        "user_id": "u1",
        "is_buy": True,
        "price": 5,
        "quantity": 1,
        "ts": 1,
    }
    put_orders(kinesis, settings.orders_stream, [old])
    depth_cache.set(keys.depth("STALE"), '{"u":99}')
    store = SnapshotStore(redis.Redis.from_url(settings.backup_cache_url), settings.orders_stream)
    store.save(Snapshot("shardId-000000000000", "1", engine=b"garbage"), None)
    with running_service(fast(settings), dev=True) as svc:
        wait_until(
            lambda: len(svc.workers) == 4 and all(w.state.value == "reading" for w in svc.workers.values()),
            10,
        )
        assert depth_cache.get(keys.depth("STALE")) is None
        new = {**old, "symbol": "NEW", "order_id": "n1"}
        put_orders(kinesis, settings.orders_stream, [new])
        wait_until(lambda: depth_cache.get(keys.depth("NEW")), 10, what="NEW depth")
        assert depth_cache.get(keys.depth("OLD")) is None
        shard_ids = svc.shard_ids()
    snaps = {sid: store.load(sid) for sid in shard_ids}
    assert all(s is not None for s in snaps.values())
    assert any(s.seq is not None for s in snaps.values())  # the shard that read NEW checkpointed it
    # SPEC §10 "no retained order is skipped", also after a --dev: orders put while no engine
    # runs, on shards that have read nothing since the --dev, are matched by the next start
    later = [{**old, "symbol": f"AFT{i}", "order_id": f"a{i}"} for i in range(12)]
    put_orders(kinesis, settings.orders_stream, later)
    with running_service(fast(settings)):
        for c in later:
            wait_until(lambda c=c: depth_cache.get(keys.depth(c["symbol"])), 15, what=c["symbol"])
        assert depth_cache.get(keys.depth("OLD")) is None  # what came before the --dev stays skipped


def test_each_symbol_gets_a_snapshot_view_of_its_book_at_the_checkpoint(settings, aws, backup_cache):
    """SPEC §4's `snapshot:{SYM}`: the symbol's book and the checkpoint it reflects, written with
    every shard snapshot; `--dev` removes the views of its own stream only."""
    kinesis = aws.client("kinesis")
    base = {"action": "ADD", "user_id": "u1", "quantity": 1, "ts": 5}
    put_orders(kinesis, settings.orders_stream, [
        {**base, "symbol": "VIEWA", "order_id": "va1", "is_buy": True, "price": 10, "quantity": 3},
        {**base, "symbol": "VIEWA", "order_id": "va2", "user_id": "u2", "is_buy": False, "price": 12, "quantity": 2},
        {**base, "symbol": "VIEWB", "order_id": "vb1", "is_buy": True, "price": 7},
    ])
    other_stream_view = keys.snapshot("VIEWC")
    backup_cache.set(other_stream_view, json.dumps({"s": "VIEWC", "stream": "another-stream"}))

    def view(sym: str) -> dict | None:
        raw = backup_cache.get(keys.snapshot(sym))
        return json.loads(raw) if raw else None

    with running_service(fast(settings)) as svc:
        wait_until(lambda: (view("VIEWA") or {}).get("u") == 2 and (view("VIEWB") or {}).get("u") == 1, 20,
                   what="both symbols' views")
        assert svc.worker_for("VIEWA").engine.depth("VIEWA", 10) == {"b": [[10, 3]], "a": [[12, 2]]}
    a, b = view("VIEWA"), view("VIEWB")
    assert (a["s"], a["b"], a["a"], b["b"], b["a"]) == ("VIEWA", [[10, 3]], [[12, 2]], [[7, 1]], [])
    store = SnapshotStore(redis.Redis.from_url(settings.backup_cache_url), settings.orders_stream)
    for v in (a, b):
        assert v["stream"] == settings.orders_stream and v["snapshot"] == store.key(v["shard"])
        assert v["checkpoint"] == store.load(v["shard"]).seq is not None  # the final snapshot at stop
    with running_service(fast(settings), dev=True) as svc:
        wait_until(lambda: len(svc.workers) == 4, 10)
    assert view("VIEWA") is None and view("VIEWB") is None
    assert view("VIEWC") == {"s": "VIEWC", "stream": "another-stream"}


def test_a_batch_that_failed_to_publish_blocks_every_later_acknowledgement():
    """A batch whose publish failed (the service was stopping) stays unacknowledged: a later
    drain fails on it again, so neither the emitted mark nor a snapshot can move past it, even
    when later batches were published (they would be re-published after a restart)."""
    from concurrent.futures import Future

    from engine_pkg.service.errors import PublishError
    from engine_pkg.service.shard_reader import ShardWorker

    def done(exc: Exception | None = None) -> Future:
        f: Future = Future()
        if exc is None:
            f.set_result(None)
        else:
            f.set_exception(exc)
        return f

    w = ShardWorker.__new__(ShardWorker)  # only the in-flight queue is exercised
    w._inflight = deque([("1", [done()]), ("2", [done(PublishError("stopping"))]), ("3", [done()])])
    w.emitted = None
    for _ in range(2):
        with pytest.raises(PublishError):
            while w._inflight:
                w._wait_oldest()
        assert w.emitted == "1" and [seq for seq, _ in w._inflight] == ["2", "3"]


def test_only_a_top_level_ts_lets_a_batch_skip_the_per_arrival_runs():
    """A `"ts"` nested in an ignored field must not count as the command's own `ts` (its events
    would then take another record's arrival time, and differ after a crash re-read)."""
    from engine_pkg.service.shard_reader import _TS_OK

    own = [b'{"action":"ADD","symbol":"T","ts":1733896438267}', b'{"m":{"ts":1},"ts":7}', b'{"ts":1} ']
    nested = [b'{"action":"ADD","meta":{"ts":1}}', b'{"a":[{"ts":1}]}', b'{"x":"\\"ts\\":1}"}', b'{"m":{"ts":1} }']
    assert all(_TS_OK.search(r) for r in own)
    assert not any(_TS_OK.search(r) for r in nested)


def test_a_rejected_order_is_logged_with_its_shard_symbol_order_and_user(settings, aws, caplog):
    kinesis = aws.client("kinesis")
    bad = {"action": "ADD", "symbol": "LOGD", "order_id": "bad-q", "user_id": "u-log", "is_buy": True,
           "price": 5, "quantity": 0, "ts": 1}
    put_orders(kinesis, settings.orders_stream, [bad])
    with caplog.at_level("INFO", logger="supernoba.engine.shard"), running_service(fast(settings)):
        wait_until(lambda: "order=bad-q" in caplog.text, 15, what="the rejection's log line")
    [line] = [r.getMessage() for r in caplog.records if "order=bad-q" in r.getMessage()]
    assert line.startswith("event=order_status shard=shardId-") and "symbol=LOGD" in line
    assert "user=u-log status=REJECTED reason=BAD_ORDER" in line
