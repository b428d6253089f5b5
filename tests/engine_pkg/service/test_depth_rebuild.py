"""The engine writes back depth-cache keys that went missing (depth_rebuild), against real
Valkey and kinesalite: a deleted `depth:{SYM}` of a quiet symbol, a FLUSHDB of the depth
cache, and a flushed cache met by an engine restarted from its snapshot."""

from __future__ import annotations

import json
import logging
import re
import urllib.request

import orjson
import pytest
import redis

from chalice_app import keys
from engine_pkg import Engine
from engine_pkg.service.depth_rebuild import DepthRebuilder
from engine_pkg.service.depth_writer import DepthWriter, SymbolUpdate
from engine_pkg.service.main import EngineService
from tests.engine_pkg.service.helpers import all_reading, fast, order_flow, put_orders, running_service
from tests.waiting import wait_until

SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]


def _reference(cmds: list[dict]) -> tuple[Engine, set[str]]:
    eng = Engine(clock=lambda: 0)
    res = eng.process([orjson.dumps(c) for c in cmds])
    return eng, {orjson.loads(f)["s"] for f in res.fills}


def _engine_keys(depth_cache: redis.Redis, traded: set[str]) -> dict[str, str | None]:
    """Every depth and ticker key the engine wrote for the flow, by name."""
    names = [keys.depth(s) for s in SYMBOLS] + [keys.ticker(s) for s in sorted(traded)]
    return dict(zip(names, depth_cache.mget(names), strict=True))


def _written(depth_cache: redis.Redis, ref: Engine) -> bool:
    """Every symbol's depth in the cache is the reference book's (all orders matched)."""
    for s in SYMBOLS:
        raw = depth_cache.get(keys.depth(s))
        if raw is None or json.loads(raw)["u"] != ref.last_seq(s):
            return False
    return True


def _rebuilt_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "event=depth_rebuilt" in r.getMessage()]


def _feed(svc: EngineService, aws, settings, depth_cache: redis.Redis, cmds: list[dict], ref: Engine) -> None:  # noqa: ANN001
    """Put the flow on the orders stream once every shard reads, and wait for every depth."""
    wait_until(lambda: all_reading(svc), 15, what="all shards reading")
    put_orders(aws.client("kinesis"), settings.orders_stream, cmds)
    wait_until(lambda: _written(depth_cache, ref), 30, what="every symbol's depth written")


@pytest.fixture
def flow() -> tuple[list[dict], Engine, set[str]]:
    cmds = order_flow(300, SYMBOLS, step_ms=250)
    ref, traded = _reference(cmds)
    assert ref.open_orders() > 0 and traded == set(SYMBOLS), "the flow must trade and leave resting orders"
    return cmds, ref, traded


def test_missing_depth_and_ticker_keys_come_back_as_they_were(settings, aws, depth_cache, flow, caplog):
    cmds, ref, traded = flow
    with caplog.at_level(logging.INFO, logger="supernoba.engine.shard"), \
            running_service(fast(settings)) as svc:
        _feed(svc, aws, settings, depth_cache, cmds, ref)
        before = _engine_keys(depth_cache, traded)
        assert all(before.values())
        candles_before = {s: depth_cache.hgetall(keys.candle(s)) for s in SYMBOLS}
        listener = depth_cache.pubsub(ignore_subscribe_messages=True)
        listener.subscribe(keys.DEPTH_CHANGED_CHANNEL)
        listener.get_message(timeout=1)  # the subscription's confirmation

        # one quiet symbol's depth is deleted: it comes back equal (same u, levels and t)
        depth_cache.delete(keys.depth("CCC"))
        wait_until(lambda: depth_cache.get(keys.depth("CCC")), 20, what="depth:{CCC} written back")
        assert _engine_keys(depth_cache, traded) == before
        assert {s: depth_cache.hgetall(keys.candle(s)) for s in SYMBOLS} == candles_before  # untouched
        heard = wait_until(lambda: listener.get_message(timeout=0.1), 10, what="depth:changed")
        assert orjson.loads(heard["data"]) == ["CCC"]  # the streamer reads and pushes it
        [line] = _rebuilt_lines(caplog)
        assert re.search(rf"event=depth_rebuilt shard=\S+ symbol=CCC u={ref.last_seq('CCC')} keys=depth$", line)

        # the whole depth cache is emptied: every depth and ticker comes back equal; the open
        # candles are lost (the engine never holds them), only their replay guard comes back
        caplog.clear()
        depth_cache.flushdb()
        wait_until(lambda: all(_engine_keys(depth_cache, traded).values()), 20, what="every key written back")
        assert _engine_keys(depth_cache, traded) == before
        for s in SYMBOLS:
            assert depth_cache.hgetall(keys.candle(s)) == {"seq": str(ref.last_seq(s))}
        assert sorted(re.search(r"symbol=(\S+)", x)[1] for x in _rebuilt_lines(caplog)) == SYMBOLS
        assert all(x.endswith("keys=depth,ticker,candle_seq") for x in _rebuilt_lines(caplog))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{svc.http.port}/metrics").read().decode()
        assert "supernoba_engine_depth_rebuilt_total 6" in metrics
        listener.close()


def test_an_engine_restarted_from_its_snapshot_rebuilds_a_flushed_depth_cache(settings, aws, depth_cache, flow):
    """The restarted engine never wrote these depths itself: `u` and the levels are the book's,
    `t` is the rebuild's; the ticker (its last fill's `t` is in the snapshot) comes back equal."""
    cmds, ref, traded = flow
    with running_service(fast(settings)) as svc:
        _feed(svc, aws, settings, depth_cache, cmds, ref)
    before = _engine_keys(depth_cache, traded)  # the graceful stop wrote every shard's snapshot
    depth_cache.flushdb()
    with running_service(fast(settings)):
        wait_until(lambda: all(_engine_keys(depth_cache, traded).values()), 20, what="every key written back")
        after = _engine_keys(depth_cache, traded)
    for s in SYMBOLS:
        was, now = json.loads(before[keys.depth(s)]), json.loads(after[keys.depth(s)])
        assert {**now, "t": was["t"]} == was and now["t"] >= was["t"]
    assert {k: v for k, v in after.items() if k.startswith("ticker:")} == \
           {k: v for k, v in before.items() if k.startswith("ticker:")}


def test_rebuild_never_overwrites_a_newer_depth_or_a_ticker_written_since(depth_cache, settings):
    writer = DepthWriter(redis.Redis.from_url(settings.depth_cache_url))
    depth_cache.set(keys.depth("TEST"), '{"u":9}')
    depth_cache.set(keys.ticker("TEST"), '{"e":"t","p":5}')
    depth_cache.hset(keys.candle("TEST"), mapping={"seq": "9", "t": "202512161420", "o": "5"})
    assert writer.missing(["TEST", "NONE"], ["TEST", "NONE"]) == (["NONE"], ["NONE"], ["NONE"])
    writer.rebuild([SymbolUpdate("TEST", 7, b'{"u":7}', b'{"e":"t","p":4}')], {"TEST"})
    assert depth_cache.get(keys.depth("TEST")) == '{"u":9}'
    assert depth_cache.get(keys.ticker("TEST")) == '{"e":"t","p":5}'
    assert depth_cache.hgetall(keys.candle("TEST")) == {"seq": "9", "t": "202512161420", "o": "5"}
    writer.rebuild([SymbolUpdate("NONE", 3)], {"NONE"})  # a lost candle hash: only its replay guard
    assert depth_cache.hgetall(keys.candle("NONE")) == {"seq": "3"}
    assert depth_cache.get(keys.depth("NONE")) is None and depth_cache.get(keys.ticker("NONE")) is None


def test_missing_counts_by_chunk_and_names_only_the_keys_gone(depth_cache, settings, monkeypatch):
    monkeypatch.setattr("engine_pkg.service.depth_writer.EXISTS_CHUNK", 3)
    writer = DepthWriter(redis.Redis.from_url(settings.depth_cache_url))
    symbols = [f"S{i}" for i in range(10)]
    for s in symbols:
        depth_cache.set(keys.depth(s), "{}")
        depth_cache.set(keys.ticker(s), "{}")
        depth_cache.hset(keys.candle(s), "seq", 1)
    assert writer.missing(symbols, symbols) == ([], [], [])
    depth_cache.delete(keys.depth("S4"), keys.ticker("S9"), keys.candle("S0"), keys.depth("S0"))
    assert writer.missing(symbols, symbols[5:]) == (["S0", "S4"], ["S9"], [])
    assert writer.missing([], symbols) == ([], ["S9"], ["S0"])


def test_a_check_is_due_each_interval_and_at_once_after_a_valkey_recovery():
    now = [100.0]
    r = DepthRebuilder(clock=lambda: now[0], interval=1.0)
    assert r.due(0)  # the first check runs at once
    now[0] += 0.5
    assert not r.due(0)
    assert r.due(1)  # a Valkey connection error recovered meanwhile
    assert not r.due(1)
    now[0] += 1.0
    assert r.due(1)


def test_a_valkey_write_that_gets_through_after_connection_errors_is_counted(settings):
    svc = EngineService(settings, http_port=0)
    fails = [redis.ConnectionError("down"), redis.TimeoutError("slow")]

    def write() -> str:
        if fails:
            raise fails.pop(0)
        return "ok"

    assert svc._retry("depth", write) == "ok" and svc.valkey_recoveries == 1
    assert svc._retry("depth", lambda: "ok") == "ok" and svc.valkey_recoveries == 1


def test_a_cache_error_in_the_check_never_fails_the_shard(settings, aws, depth_cache, flow, caplog, monkeypatch):
    """An error other than a lost connection (here an OOM refusal of the check) is logged and
    retried at the next check; the shard keeps reading and the key still comes back."""
    cmds, ref, traded = flow
    with caplog.at_level(logging.WARNING, logger="supernoba.engine.shard"), \
            running_service(fast(settings)) as svc:
        _feed(svc, aws, settings, depth_cache, cmds, ref)
        real_missing, failures = svc.depth_writer.missing, []

        def refused_once(*args):  # noqa: ANN002, ANN202
            if not failures:
                failures.append(1)
                raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'")
            return real_missing(*args)

        monkeypatch.setattr(svc.depth_writer, "missing", refused_once)
        depth_cache.delete(keys.depth("CCC"))
        wait_until(lambda: depth_cache.get(keys.depth("CCC")), 20, what="depth:{CCC} written back")
        assert failures == [1]
        assert any("event=depth_check_failed" in r.getMessage() and "OOM" in r.getMessage() for r in caplog.records)
        assert all_reading(svc)
