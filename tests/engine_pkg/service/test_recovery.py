"""Crash safety and scale-out of the engine service (issue 4).

Both tests compare the end state with an uninterrupted run of the same stream (the
in-process `Engine` on the same commands, which test_flow shows the service matches):
books, depth keys, candles, tickers and the *set* of trade ids / statuses on the streams
(the replayed tail re-puts identical events; consumers are idempotent).
"""

from __future__ import annotations

import json
import time
import urllib.request

import orjson

from chalice_app import keys
from engine_pkg import Engine
from tests.engine_pkg.service.helpers import (
    EngineProcess,
    Producer,
    fast_env,
    order_flow,
    put_orders,
    read_stream,
)
from tests.waiting import wait_until
from tools.services import free_port

SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH"]


def _reference(cmds):
    eng = Engine(clock=lambda: 0)
    res = eng.process([orjson.dumps(c) for c in cmds])
    return eng, res


def _caught_up(depth_cache, ref) -> bool:
    for sym in ref.symbols():
        raw = depth_cache.get(keys.depth(sym))
        if raw is None or orjson.loads(raw)["u"] != ref.last_seq(sym):
            return False
    return True


def _assert_same_as_uninterrupted(kinesis, settings, depth_cache, ref, ref_res) -> None:
    for sym in ref.symbols():
        d = orjson.loads(depth_cache.get(keys.depth(sym)))
        want = ref.depth(sym, 10)
        assert (d["u"], d["b"], d["a"]) == (ref.last_seq(sym), want["b"], want["a"]), sym
    ref_fills = [orjson.loads(f) for f in ref_res.fills]
    fills = read_stream(kinesis, settings.fills_stream)
    assert {f["trade_id"] for f in fills} == {f["trade_id"] for f in ref_fills}
    # duplicates on the stream are byte-identical re-emissions, never different events
    assert {orjson.dumps({k: v for k, v in f.items() if k != "_key"}) for f in fills} == set(ref_res.fills)
    statuses = read_stream(kinesis, settings.status_stream)
    assert {orjson.dumps({k: v for k, v in s.items() if k != "_key"}) for s in statuses} == set(
        ref_res.statuses
    )
    # candles: each closed minute exactly once, open candle's volume counts each trade once
    by_sym: dict[str, list[dict]] = {}
    for f in ref_fills:
        by_sym.setdefault(f["s"], []).append(f)
    for sym, fs in by_sym.items():
        closed = [json.loads(x) for x in depth_cache.lrange(keys.candle_closed(sym), 0, -1)]
        h = depth_cache.hgetall(keys.candle(sym))
        # the open candle may have closed by time meanwhile (its hash then holds no `v`)
        assert sum(c["v"] for c in closed) + int(h.get("v", 0)) == sum(f["q"] for f in fs), sym
        assert len({c["t"] for c in closed}) == len(closed), f"{sym}: a closed minute was pushed twice"
        t = orjson.loads(depth_cache.get(keys.ticker(sym)))
        assert t["p"] == fs[-1]["p"]


def _book(port: int, sym: str) -> dict:
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/book/{sym}?levels=100000"))


def test_kill_9_while_producing_then_restart_equals_uninterrupted_run(
    settings, aws, depth_cache, backup_cache, tmp_path
):
    kinesis = aws.client("kinesis")
    cmds = order_flow(2000, SYMBOLS, step_ms=40, seed=11)
    ref, ref_res = _reference(cmds)
    port = free_port()
    env = fast_env(settings, ENGINE_HTTP_PORT=str(port), ENGINE_ID="crashy")
    producer = Producer(kinesis, settings.orders_stream, cmds, chunk=25, pause=0.01)
    eng = EngineProcess(env, log_path=tmp_path / "engine.log")
    try:
        wait_until(lambda: len(list(backup_cache.scan_iter("lease:*"))) == 4, 20, what="4 leases")
        producer.start()
        for kill_at in (600, 1300):
            wait_until(lambda k=kill_at: producer.sent >= k, 60, what=f"{kill_at} orders sent")
            # a snapshot with a checkpoint exists, and records were processed after it
            wait_until(
                lambda: any(
                    '"seq":"' in backup_cache.getrange(k, 0, 120)
                    for k in backup_cache.scan_iter("snapshot:*")
                ),
                20,
                what="a snapshot",
            )
            eng.kill9()
            eng.close()
            eng = EngineProcess(env, log_path=tmp_path / "engine.log")
        producer.join(60)
        assert producer.error is None and producer.sent == len(cmds)
        wait_until(lambda: _caught_up(depth_cache, ref), 60, what="engine caught up")
        wait_until(lambda: len(read_stream(kinesis, settings.status_stream)) >= len(ref_res.statuses), 30)
        _assert_same_as_uninterrupted(kinesis, settings, depth_cache, ref, ref_res)
        for sym in ref.symbols():
            book = wait_until(lambda s=sym: _book(port, s), 10)
            full = ref.depth(sym, 100000)
            assert (book["b"], book["a"]) == (full["b"], full["a"])
        assert eng.term() == 0  # graceful stop after all that
    finally:
        eng.close()
        producer.join(5)


def test_two_engines_split_four_shards_and_one_takes_over_after_kill_9(
    settings, aws, depth_cache, backup_cache, tmp_path
):
    kinesis = aws.client("kinesis")
    cmds = order_flow(1500, SYMBOLS, step_ms=40, seed=5)
    ref, ref_res = _reference(cmds)

    def holders() -> dict[str, str]:
        return {k: (backup_cache.get(k) or "").split(":")[0] for k in backup_cache.scan_iter("lease:*")}

    e1 = EngineProcess(fast_env(settings, ENGINE_ID="e1"), log_path=tmp_path / "e1.log")
    e2 = EngineProcess(fast_env(settings, ENGINE_ID="e2"), log_path=tmp_path / "e2.log")
    producer = Producer(kinesis, settings.orders_stream, cmds, chunk=25, pause=0.01)
    try:

        def split() -> bool:
            h = holders()
            return len(h) == 4 and sorted(h.values()) == ["e1", "e1", "e2", "e2"]

        wait_until(split, 30, what="2 + 2 shards")
        producer.start()
        wait_until(lambda: producer.sent >= 600, 60)
        e1.kill9()
        wait_until(lambda: sorted(holders().values()) == ["e2"] * 4, 20, what="e2 takes over all shards")
        producer.join(60)
        assert producer.error is None and producer.sent == len(cmds)
        wait_until(lambda: _caught_up(depth_cache, ref), 60, what="caught up")
        wait_until(lambda: len(read_stream(kinesis, settings.status_stream)) >= len(ref_res.statuses), 30)
        _assert_same_as_uninterrupted(kinesis, settings, depth_cache, ref, ref_res)
    finally:
        e1.close()
        e2.close()
        producer.join(5)


def test_after_kill_9_records_already_emitted_are_replayed_silently(settings, aws, depth_cache, backup_cache,
                                                                    tmp_path):
    """Snapshot only after the first batch; kill -9 once everything is emitted; the restarted
    engine rebuilds the books without putting a single duplicate, then carries on."""
    kinesis = aws.client("kinesis")
    cmds = order_flow(900, SYMBOLS, step_ms=40, seed=23)
    first, second, third = cmds[:100], cmds[100:600], cmds[600:]
    ref, ref_res = _reference(cmds)
    ref_mid, ref_mid_res = _reference(first + second)
    env = fast_env(settings, ENGINE_ID="quiet", ENGINE_SNAPSHOT_RECORDS="100000000",
                   ENGINE_SNAPSHOT_SECONDS="100000")
    eng = EngineProcess(env, log_path=tmp_path / "engine.log")
    try:
        wait_until(lambda: len(list(backup_cache.scan_iter("lease:*"))) == 4, 20, what="4 leases")
        put_orders(kinesis, settings.orders_stream, first)
        wait_until(lambda: sum('"seq":"' in backup_cache.getrange(k, 0, 120)
                               for k in backup_cache.scan_iter("snapshot:*")) >= 1, 20, what="first snapshots")
        put_orders(kinesis, settings.orders_stream, second)
        wait_until(lambda: _caught_up(depth_cache, ref_mid), 30, what="second chunk applied")
        wait_until(lambda: len(read_stream(kinesis, settings.status_stream)) >= len(ref_mid_res.statuses), 20)
        time.sleep(0.5)  # the emitted marks follow the acknowledged puts
        eng.kill9()
        eng.close()
        before = len(read_stream(kinesis, settings.fills_stream)), len(read_stream(kinesis, settings.status_stream))
        eng = EngineProcess(env, log_path=tmp_path / "engine.log")
        put_orders(kinesis, settings.orders_stream, third)
        wait_until(lambda: _caught_up(depth_cache, ref), 40, what="third chunk applied on the rebuilt books")
        wait_until(lambda: len(read_stream(kinesis, settings.status_stream)) >= len(ref_res.statuses), 20)
        fills = read_stream(kinesis, settings.fills_stream)
        statuses = read_stream(kinesis, settings.status_stream)
        # nothing of the first 600 orders was put again; the new ones are exactly the reference's
        assert (len(fills), len(statuses)) == (len(ref_res.fills), len(ref_res.statuses))
        assert before == (len(ref_mid_res.fills), len(ref_mid_res.statuses))
        _assert_same_as_uninterrupted(kinesis, settings, depth_cache, ref, ref_res)
        assert "silent_replay_done" in (tmp_path / "engine.log").read_text()
    finally:
        eng.close()
