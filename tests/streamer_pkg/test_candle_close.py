"""A 1-minute candle the engine closes by time (the hash keeps only `seq` and `ct`): the
streamer sends `candle_close` once with the engine's final values and no bogus `candle`, a
subscriber arriving meanwhile gets no candle (the streamer's new-subscriber snapshot is the only
one: the ws handlers send none), GET /chart agrees, and the reader does not count the hash as
bad data."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import orjson
import pytest
import redis
import redis.asyncio as aredis

from chalice_app import keys
from engine_pkg.service.depth_writer import DepthWriter
from streamer_pkg.diff import SymbolState, diff_symbol
from streamer_pkg.reader import Reader, SymbolData
from tests.mgmt_server import MgmtServer
from tests.streamer_pkg.helpers import RunningStreamer, connect, of, write_candle
from tests.waiting import wait_until

M1, M2 = "202501010001", "202501010002"


@pytest.fixture
def server() -> Iterator[MgmtServer]:
    s = MgmtServer().start()
    yield s
    s.stop()


def _candle(t: str, o: int, h: int, low: int, c: int, v: int) -> dict[str, str]:
    return {"o": str(o), "h": str(h), "l": str(low), "c": str(c), "v": str(v), "t": t}


def _events(sends) -> list[tuple[frozenset, dict]]:  # noqa: ANN001
    return [(frozenset(s.recipients), orjson.loads(s.data)) for s in sends if orjson.loads(s.data)["e"] != "d"]


def test_diff_sends_the_close_once_and_no_candle_while_none_is_open():
    st = SymbolState()
    member = lambda c: True  # noqa: E731
    main = frozenset({"a"})
    first = SymbolData("TEST", candle=_candle(M1, 100, 120, 95, 110, 4), main=main)
    assert [e["e"] for _, e in _events(diff_symbol(st, first, member, None))] == ["candle"]
    final = {"s": "TEST", "o": 100, "h": 130, "l": 95, "c": 125, "v": 9, "t": M1}
    gone = SymbolData("TEST", candle=None, closed_t=M1, main=main)
    assert _events(diff_symbol(st, gone, member, final)) == [(main, {
        "e": "candle_close", "s": "TEST", "o": "100", "h": "130", "l": "95", "c": "125", "v": "9", "t": M1})]
    assert st.candle is None
    # more ticks, and a new subscriber meanwhile: no second close, no candle
    again = SymbolData("TEST", candle=None, closed_t=M1, main=frozenset({"a", "b"}))
    assert _events(diff_symbol(st, again, member, final)) == []
    # the next minute's trade: its candle, no close (that minute was closed already)
    nxt = SymbolData("TEST", candle=_candle(M2, 125, 125, 125, 125, 2), closed_t=M1, main=frozenset({"a", "b"}))
    assert [e["e"] for _, e in _events(diff_symbol(st, nxt, member, final))] == ["candle"]
    # no closed candle known: the last values seen
    st2 = SymbolState()
    diff_symbol(st2, first, member, None)
    sent = _events(diff_symbol(st2, gone, member, None))
    assert sent[0][1] == {"e": "candle_close", "s": "TEST", **_candle(M1, 100, 120, 95, 110, 4)}
    # a hash that lost its t for another reason (no ct reaching that minute) closes nothing
    st3 = SymbolState()
    diff_symbol(st3, first, member, None)
    assert _events(diff_symbol(st3, SymbolData("TEST", main=main), member, None)) == []


def test_reader_takes_a_closed_hash_as_no_candle_not_bad_data(settings, depth_cache):
    depth_cache.hset(keys.candle("TEST"), mapping={"seq": 4, "ct": M1})
    depth_cache.hset(keys.candle("BAD"), mapping={"seq": 4, "o": 1})
    bad: list[str] = []

    async def main() -> dict[str, SymbolData]:
        client = aredis.Redis.from_url(settings.depth_cache_url, decode_responses=True)
        try:
            rd = Reader(client, on_bad_data=bad.append)
            connect(depth_cache, "a", logged_in=True, main="TEST", subs=("BAD",))
            snap = await rd.read(time.time())
            return snap.symbols
        finally:
            await client.aclose()

    syms = asyncio.run(main())
    assert (syms["TEST"].candle, syms["TEST"].closed_t) == (None, M1)
    assert syms["BAD"].candle is None and bad == ["bad_data"]  # a half-written hash still is bad data


def test_streamer_sends_candle_close_when_the_engine_closes_by_time(settings, depth_cache, server):
    r = depth_cache
    writer = DepthWriter(redis.Redis.from_url(settings.depth_cache_url))
    connect(r, "rt", logged_in=True, main="TEST")
    connect(r, "anon", logged_in=False, main="TEST")
    with RunningStreamer(settings, server.endpoint, anon_interval=0.1):
        write_candle(r, "TEST", M1, 100, 120, 95, 110, 4)
        for cid in ("rt", "anon"):
            wait_until(lambda cid=cid: of(server.messages(cid), "candle"), what=f"candle at {cid}")
        # a trade the streamer never saw (h=130), then the engine closes the minute by time
        r.hset(keys.candle("TEST"), mapping={"seq": 2, "h": 130, "c": 125, "v": 9})
        assert writer.close_candles(["TEST"], M2) == {}
        assert r.hgetall(keys.candle("TEST")) == {"seq": "2", "ct": M1}
        for cid in ("rt", "anon"):
            wait_until(lambda cid=cid: of(server.messages(cid), "candle_close"), what=f"close at {cid}")
        connect(r, "late", logged_in=True, main="TEST")  # subscribes while no candle is open
        time.sleep(0.4)
        n_candles = {cid: len(of(server.messages(cid), "candle")) for cid in ("rt", "anon")}
        # the next minute's trade opens a candle: no second close; roll-ups use the final values
        r.hset(keys.candle("TEST"), mapping={"seq": 3, "t": M2, "o": 126, "h": 126, "l": 126, "c": 126, "v": 1})
        r.publish(keys.DEPTH_CHANGED_CHANNEL, orjson.dumps(["TEST"]))
        wait_until(lambda: of(server.messages("late"), "candle"), what="candle at late")
        rollup = wait_until(lambda: (h := r.hgetall(keys.candle("TEST", "5m"))).get("v") == "10" and h,
                            what="5m roll-up with the final values")
        time.sleep(0.3)
    for cid in ("rt", "anon"):
        msgs = server.messages(cid)
        assert of(msgs, "candle_close") == [{"e": "candle_close", "s": "TEST", "o": "100", "h": "130", "l": "95",
                                             "c": "125", "v": "9", "t": M1}], cid
        assert n_candles[cid] == len([m for m in of(msgs, "candle") if m["t"] == M1]), "no bogus candle"
        assert of(msgs, "candle")[-1]["t"] == M2
    assert [m["t"] for m in of(server.messages("late"), "candle")] == [M2]
    assert {k: rollup[k] for k in "ohlcvt"} == {"o": "100", "h": "130", "l": "95", "c": "126", "v": "10",
                                                 "t": "202501010000"}


def test_chart_reads_a_closed_hash_as_no_open_candle(depth_cache):
    """GET /chart's hot candles on the Valkey state the streamer test above reads."""
    from chalice_app.market import MarketData

    r = depth_cache
    r.rpush(keys.candle_closed("TEST"), orjson.dumps({"s": "TEST", "o": 1, "h": 2, "l": 1, "c": 2, "v": 3, "t": M1}))
    r.hset(keys.candle("TEST"), mapping={"seq": 2, "ct": M1})
    hot = MarketData(r, None, None).hot_1m("TEST")  # type: ignore[arg-type]
    assert [(c.open, c.close, c.volume) for c in hot.values()] == [(1, 2, 3)]


def test_a_restart_does_not_repeat_a_time_close_to_anonymous_subscribers(settings, depth_cache, server):
    """The anonymous tier's cache (seed of a restart without --init) forgets a candle closed by
    time; before, it kept it and the restarted streamer sent that candle_close again."""
    r = depth_cache
    writer = DepthWriter(redis.Redis.from_url(settings.depth_cache_url))
    connect(r, "anon", logged_in=False, main="TEST")
    with RunningStreamer(settings, server.endpoint, anon_interval=0.1):
        write_candle(r, "TEST", M1, 100, 120, 95, 110, 4)
        wait_until(lambda: of(server.messages("anon"), "candle"), what="the open candle")
        assert writer.close_candles(["TEST"], M2) == {}
        wait_until(lambda: of(server.messages("anon"), "candle_close"), what="the close")
        wait_until(lambda: orjson.loads(r.hget(keys.STREAMER_ANON_CACHE, "TEST") or b"{}").get("candle", 0) is None,
                   what="the anonymous cache forgets the closed candle")
    with RunningStreamer(settings, server.endpoint, anon_interval=0.1):  # restart, no --init
        r.publish(keys.DEPTH_CHANGED_CHANNEL, orjson.dumps(["TEST"]))
        time.sleep(1.0)  # ten anonymous ticks: a repeated close would have gone out by now
    assert len(of(server.messages("anon"), "candle_close")) == 1
