"""Orders on the stream come out as fills, statuses, depth, ticker and candles (issue 4)."""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict

import orjson
import pytest

from chalice_app import keys
from engine_pkg import Engine
from tests.engine_pkg.service.helpers import (
    all_reading,
    fast,
    order_flow,
    put_orders,
    read_stream,
    running_service,
)
from tests.waiting import wait_until

SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]


def _reference(cmds: list[dict]):
    eng = Engine(clock=lambda: 0)
    res = eng.process([orjson.dumps(c) for c in cmds])
    return eng, [orjson.loads(f) for f in res.fills], [orjson.loads(s) for s in res.statuses]


def _expected_candles(fills: list[dict]) -> dict[str, list[dict]]:
    import time

    out: dict[str, list[dict]] = defaultdict(list)
    for f in fills:
        m = time.strftime("%Y%m%d%H%M", time.gmtime(f["t"] // 60000 * 60))
        cs = out[f["s"]]
        if cs and cs[-1]["t"] == m:
            c = cs[-1]
            c["h"], c["l"], c["c"], c["v"] = max(c["h"], f["p"]), min(c["l"], f["p"]), f["p"], c["v"] + f["q"]
        else:
            cs.append({"s": f["s"], "o": f["p"], "h": f["p"], "l": f["p"], "c": f["p"], "v": f["q"], "t": m})
    return out


def test_orders_become_fills_statuses_depth_ticker_and_candles(settings, aws, depth_cache):
    kinesis = aws.client("kinesis")
    # 600 orders 250 ms apart: 150 s of event time, so the trades cross minute boundaries
    cmds = order_flow(600, SYMBOLS, step_ms=250)
    ref, ref_fills, ref_statuses = _reference(cmds)
    assert ref_fills, "the flow must trade"
    pubsub = depth_cache.pubsub()
    pubsub.subscribe(keys.DEPTH_CHANGED_CHANNEL)
    with running_service(fast(settings)) as svc:
        put_orders(kinesis, settings.orders_stream, cmds)
        wait_until(
            lambda: len(read_stream(kinesis, settings.status_stream)) >= len(ref_statuses),
            30,
            what="all statuses",
        )
        fills = read_stream(kinesis, settings.fills_stream)
        statuses = read_stream(kinesis, settings.status_stream)
        # fills: same events, partition key = symbol; statuses: partition key = user_id
        assert sorted(f["trade_id"] for f in fills) == sorted(f["trade_id"] for f in ref_fills)
        assert {orjson.dumps({k: v for k, v in f.items() if k != "_key"}) for f in fills} == {
            orjson.dumps(f) for f in ref_fills
        }
        assert all(f["_key"] == f["s"] for f in fills)
        assert all(s["_key"] == s["user_id"] for s in statuses)
        assert len(statuses) == len(ref_statuses)
        # per symbol, the events keep their engine order on the stream
        for sym in SYMBOLS:
            seqs = [f["seq"] for f in fills if f["s"] == sym]
            assert seqs == sorted(seqs)
        # depth: the reference book, u = last seq
        for sym in SYMBOLS:
            d = orjson.loads(depth_cache.get(keys.depth(sym)))
            want = ref.depth(sym, 10)
            assert (d["e"], d["s"], d["u"], d["b"], d["a"]) == (
                "d",
                sym,
                ref.last_seq(sym),
                want["b"],
                want["a"],
            )
        # ticker: last trade price; c relative to the day's first trade
        for sym in SYMBOLS:
            sym_fills = [f for f in ref_fills if f["s"] == sym]
            if not sym_fills:
                continue
            t = orjson.loads(depth_cache.get(keys.ticker(sym)))
            o, last = sym_fills[0]["p"], sym_fills[-1]["p"]
            assert t["e"] == "t" and t["p"] == last
            assert t["c"] == pytest.approx(round((last - o) * 100 / o, 2))
            assert t["yc"] is None
        # candles: closed ones on the list, the open one in the hash
        expected = _expected_candles(ref_fills)
        assert sum(len(cs) - 1 for cs in expected.values()) >= 3, "some candles must close"
        for sym, cs in expected.items():
            closed = [json.loads(x) for x in depth_cache.lrange(keys.candle_closed(sym), 0, -1)]
            assert closed == cs[:-1]
            h = depth_cache.hgetall(keys.candle(sym))
            assert {k: h[k] for k in "ohlcvt"} == {k: str(v) for k, v in cs[-1].items() if k != "s"}
        # the change notification names symbols as a JSON list
        msg = wait_until(lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1), 5)
        assert set(json.loads(msg["data"])) <= set(SYMBOLS)
        # operations endpoint
        base = f"http://127.0.0.1:{svc.http.port}"
        health = json.load(urllib.request.urlopen(f"{base}/health"))
        assert health["status"] == "ok" and len(health["shards"]) == 4
        metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
        assert f"supernoba_engine_orders_total {len(cmds)}" in metrics
        assert 'supernoba_engine_lease_owned{shard="shardId-000000000000"} 1' in metrics
        assert "supernoba_engine_batch_seconds_bucket" in metrics
        book = json.load(urllib.request.urlopen(f"{base}/book/AAA?levels=3"))
        want = ref.depth("AAA", 3)
        assert (book["b"], book["a"], book["u"]) == (want["b"], want["a"], ref.last_seq("AAA"))
        for path, code in (("/book/ZZZ", 404), ("/book/bad%20sym", 400), ("/book/AAA?levels=x", 400)):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + path)
            assert err.value.code == code and "code" in json.load(err.value)
        assert all_reading(svc)
    pubsub.close()


def test_bad_records_get_reasons_and_the_rest_flows(settings, aws, depth_cache):
    kinesis = aws.client("kinesis")
    good = [
        {
            "action": "ADD",
            "symbol": "AAA",
            "order_id": "s1",
            "user_id": "u1",
            "is_buy": False,
            "price": 100,
            "quantity": 5,
            "ts": 1,
        },
        {
            "action": "ADD",
            "symbol": "AAA",
            "order_id": "b1",
            "user_id": "u2",
            "is_buy": True,
            "price": 100,
            "quantity": 2,
            "ts": 2,
        },
    ]
    bad = [
        b"\xff\xfe not json",
        b'{"action":"ADD","symbol":"AAA","order_id":"x1","user_id":"u3","is_buy":"yes","price":1,"quantity":1}',
        b'{"action":"ADD","symbol":"bad sym","order_id":"x2","user_id":"u3","is_buy":true,"price":1,"quantity":1}',
        b'{"action":"CANCEL","symbol":"AAA","order_id":"nope","user_id":"u3"}',
        b"",
    ]
    with running_service(fast(settings)):
        put_orders(kinesis, settings.orders_stream, [good[0], *bad, good[1]])
        wait_until(lambda: len(read_stream(kinesis, settings.status_stream)) >= 7, 20, what="7 statuses")
        statuses = read_stream(kinesis, settings.status_stream)
        by_order = {s["order_id"]: s for s in statuses if s["status"] == "REJECTED"}
        assert by_order["x1"]["reason"] == "BAD_ORDER"
        assert by_order["x2"]["reason"] == "BAD_ORDER" and by_order["x2"]["seq"] is None
        assert by_order["nope"]["reason"] == "UNKNOWN_ORDER"
        fills = wait_until(lambda: read_stream(kinesis, settings.fills_stream), 10)
        assert [(f["p"], f["q"]) for f in fills] == [(100, 2)]
        d = orjson.loads(wait_until(lambda: depth_cache.get(keys.depth("AAA")), 10))
        assert d["a"] == [[100, 3]] and d["b"] == []


def test_a_batch_that_makes_the_engine_raise_is_rerun_record_by_record(settings, aws, depth_cache, monkeypatch):
    """Fault injection over the real engine: any batch holding the record b'BOOM' raises."""
    from engine_pkg.service import shard_reader

    class Fragile(shard_reader.Engine):
        def process(self, records):
            if b"BOOM" in records:
                raise ValueError("engine bug triggered by one record")
            return super().process(records)

    monkeypatch.setattr(shard_reader, "Engine", Fragile)
    kinesis = aws.client("kinesis")
    a = {"action": "ADD", "symbol": "AAA", "order_id": "a1", "user_id": "u1", "is_buy": True, "price": 10,
         "quantity": 3, "ts": 5}
    b = {**a, "order_id": "a2", "price": 11}
    with running_service(fast(settings)) as svc:
        kinesis.put_records(StreamName=settings.orders_stream, Records=[
            {"Data": orjson.dumps(a), "PartitionKey": "AAA"}, {"Data": b"BOOM", "PartitionKey": "AAA"},
            {"Data": orjson.dumps(b), "PartitionKey": "AAA"}])
        d = wait_until(lambda: orjson.loads(depth_cache.get(keys.depth("AAA")) or b'{"b":[]}')["b"] == [[11, 3], [10, 3]]
                       and depth_cache.get(keys.depth("AAA")), 15, what="both orders on the book")
        assert orjson.loads(d)["u"] == 2
        assert svc.metrics.counters["dropped_records_total"] == 1
        assert all_reading(svc)
