"""1-minute candles close at the minute boundary, not only when a later trade arrives (SPEC §4,
§6): `candle_close.lua` through `DepthWriter.close_candles`, candles.lua's handling of a late
trade for a minute already closed, `CandleCloser`'s decision (caught up, event clock), and a
running service with an injected wall clock."""

from __future__ import annotations

import hashlib
import json
import time

import orjson
import pytest
import redis

from chalice_app import cache, keys
from engine_pkg.service.candle_closer import CandleCloser, minute_of
from engine_pkg.service.depth_writer import DepthWriter, SymbolUpdate
from engine_pkg.service.main import EngineService
from engine_pkg.service.shard_reader import ShardWorker
from tests.engine_pkg.service.helpers import all_reading, fast, put_orders, running_service
from tests.waiting import wait_until

M1, M2, M3, M4 = "202512161420", "202512161421", "202512161422", "202512161423"


def _apply(writer: DepthWriter, u: int, trades, now_minute: str = "", sym: str = "TEST") -> None:
    writer.write([SymbolUpdate(sym, u, b'{"u":%d}' % u, b'{"e":"t"}', trades, now_minute)])


def _closed(r: redis.Redis, sym: str = "TEST") -> list[dict]:
    return [json.loads(x) for x in r.lrange(keys.candle_closed(sym), 0, -1)]


def test_close_script_pushes_the_candle_keeps_seq_and_records_the_minute(depth_cache, settings):
    writer = DepthWriter(redis.Redis.from_url(settings.depth_cache_url))
    _apply(writer, 3, [(1, M1, 100, 5), (2, M1, 110, 1), (3, M1, 90, 2)])
    # not due yet: the open minute is not before the cutoff; its t is reported
    assert writer.close_candles(["TEST"], M1) == {"TEST": M1}
    assert depth_cache.hget(keys.candle("TEST"), "t") == M1 and _closed(depth_cache) == []
    # due: pushed exactly as a trade-time close pushes it; seq kept, ct = the closed minute
    assert writer.close_candles(["TEST", "NONE"], M2) == {}
    assert _closed(depth_cache) == [{"s": "TEST", "o": 100, "h": 110, "l": 90, "c": 90, "v": 8, "t": M1}]
    assert depth_cache.hgetall(keys.candle("TEST")) == {"seq": "3", "ct": M1}
    assert writer.close_candles(["TEST"], M3) == {}  # idempotent: nothing left to close
    assert len(_closed(depth_cache)) == 1
    # a replay of the closed minute's trades changes nothing (seq guard kept)
    _apply(writer, 3, [(2, M1, 110, 1), (3, M1, 90, 2)], M3)
    assert depth_cache.hgetall(keys.candle("TEST")) == {"seq": "3", "ct": M1}
    # the next minute's trade opens a fresh candle; the closed minute is not pushed again
    _apply(writer, 4, [(4, M2, 95, 3)], M2)
    assert depth_cache.hgetall(keys.candle("TEST")) == {
        "seq": "4", "ct": M1, "t": M2, "o": "95", "h": "95", "l": "95", "c": "95", "v": "3"}
    _apply(writer, 5, [(5, M3, 96, 1)], M3)
    assert [c["t"] for c in _closed(depth_cache)] == [M1, M2]


def test_a_late_trade_of_a_closed_minute_never_reopens_it(depth_cache, settings):
    writer = DepthWriter(redis.Redis.from_url(settings.depth_cache_url))
    _apply(writer, 1, [(1, M1, 100, 5)])
    writer.close_candles(["TEST"], M3)
    # no open candle: the late trade opens the candle of the engine's current minute
    _apply(writer, 2, [(2, M1, 120, 2)], M3)
    h = depth_cache.hgetall(keys.candle("TEST"))
    assert (h["t"], h["o"], h["v"], h["ct"]) == (M3, "120", "2", M1)
    # an open candle: a late trade (minute <= ct) is folded into it
    _apply(writer, 3, [(3, M1, 80, 1)], M3)
    h = depth_cache.hgetall(keys.candle("TEST"))
    assert (h["t"], h["l"], h["c"], h["v"]) == (M3, "80", "80", "3")
    assert [c["t"] for c in _closed(depth_cache)] == [M1]
    # the older call layout (no current minute): the minute after the closed one
    writer.close_candles(["TEST"], M4)
    assert depth_cache.hget(keys.candle("TEST"), "ct") == M3
    _apply(writer, 4, [(4, M2, 70, 1)])
    assert depth_cache.hget(keys.candle("TEST"), "t") == M4
    # a current minute not after ct (clock skew) also falls back to the minute after ct
    writer.close_candles(["TEST"], "202512161424")
    _apply(writer, 5, [(5, M1, 60, 1)], M2)
    assert depth_cache.hget(keys.candle("TEST"), "t") == "202512161424"
    assert [c["t"] for c in _closed(depth_cache)] == [M1, M3, M4]


@pytest.mark.parametrize(("ct", "nxt"), [
    ("202512312359", "202601010000"), ("202402282359", "202402290000"), ("202302282359", "202303010000"),
    ("210002282359", "210003010000"), ("200002282359", "200002290000"), ("202504302359", "202505010000"),
    ("202512161459", "202512161500"),
])
def test_the_minute_after_a_closed_one_follows_the_calendar(depth_cache, settings, ct, nxt):
    writer = DepthWriter(redis.Redis.from_url(settings.depth_cache_url))
    depth_cache.hset(keys.candle("TEST"), mapping={"seq": 1, "ct": ct})
    _apply(writer, 2, [(2, ct, 100, 1)])
    assert depth_cache.hget(keys.candle("TEST"), "t") == nxt


def test_the_closer_waits_for_a_caught_up_shard_and_checks_once_a_second():
    now = [1_765_894_000.0]  # 2025-12-16 14:06:40 UTC
    c = CandleCloser(lambda: now[0])
    c.note("TEST", minute_of(int(now[0] * 1000) - 60_000), live=True)
    assert c.due() is None  # nothing read yet: no horizon
    c.read(c.now_ms(), 500, 500, 0)  # a full page: more records may be waiting
    assert c.due() is None
    c.read(c.now_ms(), 10, 500, 60_000)  # a short page, but far behind the tip (catch-up)
    assert c.due() is None
    c.read(c.now_ms(), 0, 500, 0)  # caught up
    cutoff, first, live, unknown = c.due()
    assert (cutoff, live, unknown) == (minute_of(int(now[0] * 1000) - 2000), ["TEST"], [])
    assert first == minute_of(int(now[0] * 1000) - 2000 - 300_000)
    c.checked(["TEST"], {})
    assert c.open == {}
    c.note("AAA", minute_of(int(now[0] * 1000)), live=True)  # the current minute: not due
    now[0] += 0.5
    c.read(c.now_ms(), 0, 500, 0)
    assert c.due() is None  # checked less than a second ago
    now[0] += 61
    c.read(c.now_ms(), 0, 500, 0)
    assert c.due() is not None
    c.checked(["AAA"], {"AAA": "209901010000"})  # the script saw a later open minute: keep watching it
    assert c.open == {"AAA": "209901010000"}


def test_live_candles_close_however_old_replayed_ones_wait_for_a_trade_restored_ones_use_the_window():
    now = [1_765_894_020.0]  # 2025-12-16 14:07:00 UTC
    c = CandleCloser(lambda: now[0])
    c.note("BACKLOG", "202512161350", live=True)  # read after a 17-minute outage: its ts ~ its arrival
    c.note("REPLAY", "202412110000", live=False)  # a tool's commands with year-old ts
    c.adopt(["RESTORED"])  # from a snapshot: minute and liveness unknown
    c.read(c.now_ms(), 0, 500, 0)
    cutoff, first, live, unknown = c.due()
    assert (cutoff, first) == ("202512161406", "202512161401")
    assert (live, unknown) == (["BACKLOG"], ["RESTORED"])
    c.checked(live, {})
    c.checked(unknown, {"RESTORED": "202412110000"}, first)  # left open by the window: not asked again
    now[0] += 2
    c.read(c.now_ms(), 0, 500, 0)
    assert c.due() is None


def test_a_late_trade_never_moves_its_symbols_recorded_candle():
    c = CandleCloser(lambda: 1_765_894_020.0)
    c.note("TEST", "202512161406", live=True)
    c.note("TEST", "202412110000", live=False)  # a year-old ts, folded into the open candle
    assert (c.open, c.replayed) == ({"TEST": "202512161406"}, set())
    c.note("TEST", "202512161407", live=False)  # a newer minute from a replayed timeline
    assert (c.open, c.replayed) == ({"TEST": "202512161407"}, {"TEST"})


def test_an_odd_ts_on_one_symbol_never_moves_another_symbols_close(depth_cache, settings):
    """The clock is the shard's read horizon, not the commands' `ts`: a command stamped two
    minutes ahead opens its own candle in that minute and leaves the others alone."""
    writer = DepthWriter(redis.Redis.from_url(settings.depth_cache_url))
    _apply(writer, 1, [(1, "202512161406", 100, 1)], sym="AAA")
    _apply(writer, 1, [(1, "202512161409", 100, 1)], sym="BBB")  # ts two minutes ahead
    now = [1_765_894_000.0]  # 14:06:40
    c = CandleCloser(lambda: now[0])
    c.note("AAA", "202512161406", live=True)
    c.note("BBB", "202512161409", live=True)
    c.read(c.now_ms(), 0, 500, 0)
    assert c.due() is None  # 14:06 is not over
    now[0] += 22  # 14:07:02, past the grace
    c.read(c.now_ms(), 0, 500, 0)
    cutoff, _, live, unknown = c.due()
    assert (live, unknown) == (["AAA"], [])
    c.checked(live, writer.close_candles(live, cutoff))
    assert depth_cache.hget(keys.candle("AAA"), "t") is None
    assert depth_cache.hget(keys.candle("BBB"), "t") == "202512161409"
    assert c.open == {"BBB": "202512161409"}


def test_the_close_script_leaves_a_candle_older_than_the_window_open(depth_cache, settings):
    writer = DepthWriter(redis.Redis.from_url(settings.depth_cache_url))
    _apply(writer, 1, [(1, "202412110000", 100, 1)])
    assert writer.close_candles(["TEST"], "202512161406", "202512161401") == {"TEST": "202412110000"}
    assert depth_cache.lrange(keys.candle_closed("TEST"), 0, -1) == []
    assert writer.close_candles(["TEST"], "202512161406") == {}, "no window: closed"


def _cross(sym: str, i: int, ts: int, price: int = 1000, qty: int = 2) -> list[dict]:
    return [
        {"action": "ADD", "symbol": sym, "order_id": f"s{i}", "user_id": "u1", "is_buy": False,
         "price": price, "quantity": qty, "ts": ts},
        {"action": "ADD", "symbol": sym, "order_id": f"b{i}", "user_id": "u2", "is_buy": True,
         "price": price, "quantity": qty, "ts": ts + 1},
    ]


def test_a_quiet_symbols_candle_closes_at_the_minute_boundary(settings, aws, depth_cache):
    kinesis = aws.client("kinesis")
    sym = "QUIET"
    shift = [0.0]  # the service's wall clock runs `shift` seconds ahead of the real one
    svc = EngineService(fast(settings), http_port=0)
    svc.wall_clock = lambda: time.time() + shift[0]
    svc.start()
    try:
        wait_until(lambda: all_reading(svc), 20, what="4 shards reading")
        ts = (int(time.time() * 1000) // 60000) * 60000 + 1000  # 1 s into the current minute
        minute = minute_of(ts)
        put_orders(kinesis, settings.orders_stream, _cross(sym, 1, ts))
        wait_until(lambda: depth_cache.hget(keys.candle(sym), "t") == minute, 20, what="the open candle")
        time.sleep(1.5)  # a few close checks: the minute is still open
        assert depth_cache.hget(keys.candle(sym), "t") == minute and _closed(depth_cache, sym) == []
        shift[0] = 62.0  # the minute is over (with its grace) and no trade follows
        closed = wait_until(lambda: _closed(depth_cache, sym), 10, what="the candle closed by time")
        assert closed == [{"s": sym, "o": 1000, "h": 1000, "l": 1000, "c": 1000, "v": 2, "t": minute}]
        h = depth_cache.hgetall(keys.candle(sym))
        assert set(h) == {"seq", "ct"} and h["ct"] == minute
        # a late trade of the closed minute opens the next minute's candle; the closed one stays once
        put_orders(kinesis, settings.orders_stream, _cross(sym, 2, ts + 10, 1010, 3))
        wait_until(lambda: "t" in depth_cache.hgetall(keys.candle(sym)), 20, what="a new open candle")
        h = depth_cache.hgetall(keys.candle(sym))
        assert h["t"] > minute and (h["o"], h["v"], h["ct"]) == ("1010", "3", minute)
        assert len(_closed(depth_cache, sym)) == 1
    finally:
        svc.stop()


def test_close_candles_on_a_cluster_mode_cache(valkey_cluster, cluster):
    writer = DepthWriter(cache.client(valkey_cluster.url, "auto"))
    assert cache.is_cluster(writer.client)
    symbols = ["AAA", "BBB", "CCC", "DDD"]  # keys of different slots (and nodes)
    writer.write([SymbolUpdate(s, 1, b'{"u":1}', b"", [(1, M1, 100, 1)]) for s in symbols])
    writer.write([SymbolUpdate("DDD", 2, b'{"u":2}', b"", [(2, M2, 101, 1)])])
    assert writer.close_candles(symbols, M2) == {"DDD": M2}
    for s in symbols[:3]:
        assert cluster.hgetall(keys.candle(s)) == {"seq": "1", "ct": M1}
        assert [json.loads(x)["t"] for x in cluster.lrange(keys.candle_closed(s), 0, -1)] == [M1]
    assert cluster.hget(keys.candle("DDD"), "t") == M2


def test_a_backlog_candle_closes_by_time_after_a_long_outage(settings, aws, depth_cache):
    """Orders traded while no engine ran for 10 minutes: read on restart, their `ts` is close to
    their arrival, so their candle is live and closes by time, not only at the next trade."""
    kinesis = aws.client("kinesis")
    sym = "GAP"
    put_orders(kinesis, settings.orders_stream, _cross(sym, 1, int(time.time() * 1000)))
    svc = EngineService(fast(settings), http_port=0)
    svc.wall_clock = lambda: time.time() + 600  # the engine comes back 10 minutes later
    svc.start()
    try:
        wait_until(lambda: all_reading(svc), 20, what="4 shards reading")
        wait_until(lambda: _closed(depth_cache, sym), 20, what="the outage's candle closed by time")
        assert depth_cache.hget(keys.candle(sym), "t") is None
    finally:
        svc.stop()


def test_a_backlog_batch_judges_each_symbols_liveness_by_its_own_records(settings, aws, depth_cache,
                                                                         monkeypatch):
    """One GetRecords page of a backlog can hold records put minutes apart: a trade is live when
    its ts falls among its own symbol's arrivals — an early outage trade closes by time, an old
    timeline put just now (a tool) does not, though both share the batch."""
    kinesis = aws.client("kinesis")
    shards = kinesis.list_shards(StreamName=settings.orders_stream)["Shards"]

    def shard_of(sym: str) -> str:
        h = int(hashlib.md5(sym.encode()).hexdigest(), 16)
        return next(s["ShardId"] for s in shards if int(s["HashKeyRange"]["StartingHashKey"]) <= h
                    <= int(s["HashKeyRange"]["EndingHashKey"]))

    late, rep = (next(f"{p}{i}" for i in range(1000) if shard_of(f"{p}{i}") == shard_of("EARLY"))
                 for p in ("LATE", "REP"))
    now = int(time.time() * 1000)
    put_now = {}  # order id -> arrival; the others arrived when their router stamped them (AWS)

    def arrival_ms(r: dict) -> int:
        d = orjson.loads(r["Data"])
        return put_now.get(d["order_id"], int(d["ts"]) + 5)

    monkeypatch.setattr(ShardWorker, "_arrival_ms", staticmethod(arrival_ms))
    replayed = _cross(rep, 3, now - 8 * 60_000)  # a tool writes an old timeline ...
    put_now.update({o["order_id"]: now - 1000 for o in replayed})  # ... put just now
    put_orders(kinesis, settings.orders_stream,
               _cross("EARLY", 1, now - 7 * 60_000) + _cross(late, 2, now - 30_000) + replayed)
    with running_service(fast(settings)) as svc:
        wait_until(lambda: _closed(depth_cache, "EARLY"), 20, what="the early outage trade's candle closed by time")
        worker = next(w for w in svc.workers.values() if w.shard_id == shard_of(rep))
        wait_until(lambda: rep in worker.candles.replayed, 10, what="the old timeline taken as replayed")
        assert _closed(depth_cache, rep) == [] and depth_cache.hget(keys.candle(rep), "t") is not None
