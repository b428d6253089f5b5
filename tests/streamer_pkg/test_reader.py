"""The reader's raw-reply reuse and diff.py's skip of unchanged symbols, against a real Valkey.

Invariant relied on: a symbol is skipped only when its raw depth, ticker AND candle replies and
its subscriber sets are all unchanged; a change to any one of them (a candle or ticker written
without a new depth `u` included) is parsed and pushed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aredis

from chalice_app import connections, keys
from streamer_pkg import reader as reader_mod
from streamer_pkg.diff import Send, TierState, diff_tier
from streamer_pkg.reader import Reader, Snapshot
from tests.streamer_pkg.helpers import connect, write_candle, write_depth, write_ticker

SYMS = ["AAA", "BBB", "CCC"]


def _seed(r) -> None:  # noqa: ANN001
    for i, s in enumerate(SYMS):
        connect(r, f"c{i}", logged_in=True, main=s)
        write_depth(r, s, u=5, t=1)
        write_ticker(r, s, p=100, t=1)
        write_candle(r, s, "202501010000", 100, 110, 90, 105, 7)


def _run(settings, body: Callable[[Reader, list[int]], Any]) -> Any:  # noqa: ANN001
    """`body(reader, parses)` on a fresh Reader; `parses` counts the JSON payloads parsed."""

    async def main() -> Any:
        client = aredis.Redis.from_url(settings.depth_cache_url, decode_responses=True)
        parses = [0]
        rd = Reader(client, membership_every=3600)
        real = rd._json

        def counting(symbol: str, what: str, raw: str | None) -> dict | None:
            parses[0] += raw is not None
            return real(symbol, what, raw)

        rd._json = counting  # type: ignore[method-assign]
        try:
            return await body(rd, parses)
        finally:
            await client.aclose()

    return asyncio.run(main())


def _diff(st: TierState, snap: Snapshot) -> list[Send]:
    return diff_tier(st, snap, snap.realtime.__contains__, {}, snap.realtime)


def _events(sends: list[Send]) -> list[tuple[str, str]]:
    out = []
    for s in sends:
        m = orjson.loads(s.data)
        out.append((m["e"], m["s"]))
    return sorted(out)


def test_unchanged_symbols_are_not_parsed_or_sent_again(settings, depth_cache):
    _seed(depth_cache)

    async def body(rd: Reader, parses: list[int]) -> None:
        st = TierState("rt")
        first = await rd.read(0.0)
        assert len(_diff(st, first)) == 3 * 3  # d, candle, ticker per symbol
        assert parses[0] == 3 * 2
        second = await rd.read(0.05)
        assert parses[0] == 3 * 2  # nothing parsed again
        assert all(second.symbols[s] is first.symbols[s] for s in SYMS)
        assert _diff(st, second) == []
        write_depth(depth_cache, "BBB", u=6, t=2)
        third = await rd.read(0.1)
        assert parses[0] == 3 * 2 + 1  # only BBB's depth
        assert third.symbols["AAA"] is first.symbols["AAA"]
        assert third.symbols["BBB"].ticker is first.symbols["BBB"].ticker  # reused, not re-parsed
        assert _events(_diff(st, third)) == [("d", "BBB")]

    _run(settings, body)


def test_candle_or_ticker_change_without_a_new_depth_is_still_pushed(settings, depth_cache):
    _seed(depth_cache)

    async def body(rd: Reader, parses: list[int]) -> None:
        st = TierState("rt")
        _diff(st, await rd.read(0.0))
        write_candle(depth_cache, "AAA", "202501010000", 100, 120, 90, 115, 9)  # depth untouched
        write_ticker(depth_cache, "CCC", p=101, t=1)
        snap = await rd.read(0.05)
        assert snap.symbols["AAA"].candle == {"o": "100", "h": "120", "l": "90", "c": "115", "v": "9",
                                              "t": "202501010000"}
        assert _events(_diff(st, snap)) == [("candle", "AAA"), ("t", "CCC")]
        # a partial (wake) read of an unchanged symbol keeps its object: no resend either
        part = await rd.read(0.06, only={"AAA"})
        assert part.partial and part.symbols["AAA"] is snap.symbols["AAA"]
        assert _diff(st, part) == []

    _run(settings, body)


def test_a_new_subscriber_of_unchanged_data_gets_its_snapshot(settings, depth_cache):
    _seed(depth_cache)

    async def body(rd: Reader, parses: list[int]) -> None:
        st = TierState("rt")
        _diff(st, await rd.read(0.0))
        connect(depth_cache, "late", logged_in=True, main="AAA")
        rd.mark_dirty()
        rd.membership_min_gap = 0.0
        snap = await rd.read(0.05)
        sends = _diff(st, snap)
        assert _events(sends) == [("candle", "AAA"), ("d", "AAA"), ("t", "AAA")]
        assert all(set(s.recipients) == {"late"} for s in sends)
        assert parses[0] == 3 * 2  # the data itself was not parsed again

    _run(settings, body)


def test_bad_payload_is_counted_once_until_it_changes(settings, depth_cache):
    _seed(depth_cache)
    bad: list[str] = []

    async def body(rd: Reader, parses: list[int]) -> None:
        rd._on_bad = bad.append
        depth_cache.set(keys.depth("AAA"), "{not json")
        for _ in range(3):
            snap = await rd.read(0.0)
            assert snap.symbols["AAA"].depth is None and snap.symbols["BBB"].depth is not None
        assert bad == ["bad_data"]
        depth_cache.set(keys.depth("AAA"), "[1]")
        await rd.read(0.1)
        assert bad == ["bad_data", "bad_data"]

    _run(settings, body)


def test_a_candle_hash_without_candle_fields_is_no_open_candle_not_bad_data(settings, depth_cache):
    """The engine's depth-cache rebuild writes `candle:1m:{SYM}` as `{seq}` only, a close by
    time as `{seq, ct}`: no open candle either way. Some of `o h l c v t` (or a key of the
    wrong type) is bad data."""
    r = depth_cache
    _seed(r)
    bad: list[str] = []
    r.delete(keys.candle("AAA"), keys.candle("BBB"), keys.candle("CCC"))
    r.hset(keys.candle("AAA"), "seq", "5")
    r.hset(keys.candle("BBB"), mapping={"seq": "6", "ct": "202501010000"})
    r.hset(keys.candle("CCC"), mapping={"seq": "7", "o": "1", "h": "1"})

    async def body(rd: Reader, parses: list[int]) -> None:
        rd._on_bad = bad.append
        snap = await rd.read(0.0)
        assert (snap.symbols["AAA"].candle, snap.symbols["AAA"].closed_t) == (None, None)
        assert (snap.symbols["BBB"].candle, snap.symbols["BBB"].closed_t) == (None, "202501010000")
        assert snap.symbols["CCC"].candle is None
        assert bad == ["bad_data"], "CCC only"
        r.delete(keys.candle("AAA"))
        r.rpush(keys.candle("AAA"), "x")  # a list where a hash belongs
        await rd.read(0.1)
        assert bad == ["bad_data", "bad_data"]

    _run(settings, body)


def test_symbols_are_read_in_chunks_of_script_calls(settings, depth_cache, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(reader_mod, "SCRIPT_CHUNK", 2)
    syms = [f"S{i}" for i in range(5)]
    for i, s in enumerate(syms):
        connect(depth_cache, f"m{i}", logged_in=True, main=s, subs=(syms[(i + 1) % 5],))
        write_depth(depth_cache, s, u=10 + i)
        write_ticker(depth_cache, s, p=100 + i)
    depth_cache.delete(keys.ticker("S3"))

    async def body(rd: Reader, parses: list[int]) -> None:
        snap = await rd.read(0.0)  # the membership read (SMEMBERS inside the script)
        assert sorted(snap.symbols) == syms
        for i, s in enumerate(syms):
            d = snap.symbols[s]
            assert d.depth is not None and d.depth["u"] == 10 + i
            assert d.main == {f"m{i}"} and d.sub == {f"m{(i - 1) % 5}"}
            assert d.candle is None and (d.ticker is None) == (s == "S3")
        write_depth(depth_cache, "S4", u=99)
        snap = await rd.read(0.05)  # a steady-state read
        assert snap.symbols["S4"].depth["u"] == 99  # type: ignore[index]

    _run(settings, body)


def test_a_repeated_subscribe_gets_the_state_again_once(settings, depth_cache):
    """The sets alone do not show a repeated subscribe, nor an unsubscribe + subscribe between
    two reads: `symbol:{SYM}:fresh` (written by the registry's subscribe) does. The state goes
    to that connection only, once; a `sub` re-subscribe gets the ticker only."""
    r = depth_cache
    _seed(r)
    connect(r, "s", logged_in=True, subs=("AAA",))

    async def body(rd: Reader, parses: list[int]) -> None:
        st = TierState("rt")
        rd.membership_min_gap = 0.0
        _diff(st, await rd.read(0.0))
        assert not r.exists(keys.symbol_fresh("AAA")), "taken by the membership read"
        assert _diff(st, await rd.read(0.05)) == []

        connections.subscribe(r, "c0", main="AAA")  # the same main again: no set changes
        rd.mark_dirty()
        snap = await rd.read(0.1)
        assert snap.fresh == {"AAA": {"c0"}} and not r.exists(keys.symbol_fresh("AAA"))
        sends = _diff(st, snap)
        assert _events(sends) == [("candle", "AAA"), ("d", "AAA"), ("t", "AAA")]
        assert all(set(s.recipients) == {"c0"} for s in sends)
        rd.mark_dirty()
        assert _diff(st, await rd.read(0.15)) == [], "once"

        connections.unsubscribe(r, "c1", main="BBB")  # between two reads: the sets end as they were
        connections.subscribe(r, "c1", main="BBB")
        connections.subscribe(r, "s", subs=("AAA",))
        rd.mark_dirty()
        sends = _diff(st, await rd.read(0.2))
        assert sorted((orjson.loads(s.data)["e"], orjson.loads(s.data)["s"], tuple(s.recipients)) for s in sends) == [
            ("candle", "BBB", ("c1",)), ("d", "BBB", ("c1",)), ("t", "AAA", ("s",)), ("t", "BBB", ("c1",))]
        assert parses[0] == 3 * 2  # the data itself was not parsed again

    _run(settings, body)


def test_markers_taken_by_a_read_that_then_fails_are_reported_by_the_next(settings, depth_cache):
    """READ_SCRIPT deletes the markers it reads; a queued write refused in the same pipeline
    (here INCR of a non-number) makes the read raise after that. The markers are not lost: the
    next read (a membership read at once) reports them."""
    r = depth_cache
    _seed(r)
    r.set("notanumber", "abc")

    async def body(rd: Reader, parses: list[int]) -> None:
        rd.membership_min_gap = 0.0
        await rd.read(0.0)
        connections.subscribe(r, "c0", main="AAA")  # repeated: only the marker shows it
        rd.mark_dirty()
        rd.queue_write(lambda pipe: pipe.incr("notanumber"))
        with pytest.raises(redis.ResponseError):
            await rd.read(0.1)
        assert not r.exists(keys.symbol_fresh("AAA")), "taken by the failed read"
        snap = await rd.read(0.2)
        assert snap.fresh == {"AAA": {"c0"}}
        rd.mark_dirty()
        assert (await rd.read(0.3)).fresh == {}, "once"

    _run(settings, body)


def test_a_marker_of_a_connection_that_left_is_dropped(settings, depth_cache):
    """A marker whose connection is not (or no longer) in the symbol's sets sends nothing (and
    is gone): an unsubscribe takes its markers back; one taken between a subscribe's marker and
    its set write (simulated) or left by a crash is skipped."""
    r = depth_cache
    _seed(r)

    async def body(rd: Reader, parses: list[int]) -> None:
        st = TierState("rt")
        rd.membership_min_gap = 0.0
        _diff(st, await rd.read(0.0))
        connections.subscribe(r, "c9", main="AAA")
        connections.unsubscribe(r, "c9")
        assert not r.exists(keys.symbol_fresh("AAA"))
        r.sadd(keys.symbol_fresh("AAA"), "c9")
        rd.mark_dirty()
        snap = await rd.read(0.05)
        assert snap.fresh == {"AAA": {"c9"}}
        assert _diff(st, snap) == []
        assert not r.exists(keys.symbol_fresh("AAA"))

    _run(settings, body)
