"""The streamer end to end: real Valkey, a real `@connections` HTTP server, the real Streamer."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from chalice_app import connections, keys
from tests.mgmt_server import MgmtServer
from tests.streamer_pkg.helpers import (
    RunningStreamer,
    connect,
    listening,
    of,
    write_candle,
    write_depth,
    write_ticker,
)
from tests.waiting import wait_until


@pytest.fixture
def server() -> Iterator[MgmtServer]:
    s = MgmtServer().start()
    yield s
    s.stop()


@pytest.mark.parametrize("transport", ["fast", "chalice", "chalice-lean", "aiohttp"])
def test_depth_reaches_subscribers_of_that_symbol_only(settings, depth_cache, server, transport):
    r = depth_cache
    connect(r, "a", logged_in=True, main="TEST")
    connect(r, "b", logged_in=True, main="OTHER")
    connect(r, "c", logged_in=True, subs=("TEST",))
    write_depth(r, "OTHER", u=1)
    with RunningStreamer(settings, server.endpoint, transport=transport):
        wait_until(lambda: of(server.messages("b"), "d"), what="OTHER depth at b")
        d = write_depth(r, "TEST", u=7, bid=1500)
        write_ticker(r, "TEST", p=1500)
        wait_until(lambda: of(server.messages("a"), "d", "TEST"), what="TEST depth at a")
        wait_until(lambda: of(server.messages("c"), "t", "TEST"), what="TEST ticker at c")
        time.sleep(0.15)
    a, b, c = server.messages("a"), server.messages("b"), server.messages("c")
    depth = of(a, "d", "TEST")
    assert depth == [{"e": "d", "s": "TEST", "t": d["t"], "u": 7, "b": d["b"], "a": d["a"]}]
    assert of(a, "t", "TEST")[-1] == {"e": "t", "s": "TEST", "t": 0, "p": 1500, "c": 1.5, "yc": -0.5}
    assert not [m for m in b if m.get("s") == "TEST"]
    assert of(b, "d", "OTHER") and not of(a, "d", "OTHER")
    assert not of(c, "d")  # a sub subscription gets the ticker only


def test_realtime_is_pushed_on_publish_not_on_the_poll(settings, depth_cache, server):
    """With the periodic full read pushed out to an hour, only the `depth:changed` notification
    can make the streamer read (and push) a change after start-up: every update still arrives."""
    r = depth_cache
    connect(r, "rt", logged_in=True, main="TEST")
    with RunningStreamer(settings, server.endpoint, realtime_interval=3600.0) as s:
        wait_until(lambda: listening(r), what="the change listener")
        for u in range(1, 6):
            write_depth(r, "TEST", u=u)
            wait_until(lambda u=u: [m for m in of(server.messages("rt"), "d") if m["u"] == u], what=f"u={u} at rt")
        assert s.wakeups >= 5
    assert [m["u"] for m in of(server.messages("rt"), "d")] == [1, 2, 3, 4, 5]


def test_anonymous_tier_sends_one_update_per_tick_however_often_the_depth_changes(settings, depth_cache, server):
    """The anonymous tier's throttle: its connections are served by its own tick only (one per
    `anon_interval`, 500 ms by default, so at most 2 updates a second), one depth message per
    tick carrying the latest state, while a logged-in connection gets every change at once.
    The tick is driven by hand here (its period pushed out to an hour): the counts hold
    whatever the machine's speed."""
    r = depth_cache
    connect(r, "anon", logged_in=False, main="TEST")
    connect(r, "rt", logged_in=True, main="TEST")
    runner = RunningStreamer(settings, server.endpoint, anon_interval=3600.0)
    with runner as s:
        wait_until(lambda: listening(r), what="the change listener")
        u = 0
        for tick in range(1, 4):
            for _ in range(5):  # five changes between two ticks, each pushed to rt at once
                u += 1
                write_depth(r, "TEST", u=u)
                wait_until(lambda u=u: [m for m in of(server.messages("rt"), "d") if m["u"] == u],
                           what=f"u={u} at rt")
            assert [m["u"] for m in of(server.messages("anon"), "d")] == [5, 10, 15][:tick - 1]
            runner.call(s.anon_tick)
            wait_until(lambda u=u: [m for m in of(server.messages("anon"), "d") if m["u"] == u],
                       what=f"u={u} at anon")
        assert runner.call(s.anon_tick) == []  # nothing changed since the last tick: nothing sent
    assert [m["u"] for m in of(server.messages("anon"), "d")] == [5, 10, 15]
    assert [m["u"] for m in of(server.messages("rt"), "d")] == list(range(1, 16))  # every change, in order


def test_unchanged_data_is_not_resent_and_new_subscribers_get_a_snapshot(settings, depth_cache, server):
    r = depth_cache
    connect(r, "a", logged_in=True, main="TEST")
    write_depth(r, "TEST", u=5)
    write_ticker(r, "TEST", p=100, t=1)
    write_candle(r, "TEST", "202501010000", 100, 110, 90, 105, 7)
    with RunningStreamer(settings, server.endpoint, anon_interval=0.1):
        wait_until(lambda: len(server.messages("a")) >= 3, what="initial snapshot")
        time.sleep(0.2)
        before = len(server.messages("a"))
        for _ in range(5):  # same u, same candle, ticker with only `t` changed
            write_depth(r, "TEST", u=5)
            write_ticker(r, "TEST", p=100, t=int(time.time() * 1000))
            write_candle(r, "TEST", "202501010000", 100, 110, 90, 105, 7)
            time.sleep(0.06)
        time.sleep(0.2)
        assert len(server.messages("a")) == before
        # a late subscriber (anonymous too) gets the current state although nothing changed
        connect(r, "late", logged_in=True, main="TEST")
        connect(r, "late-anon", logged_in=False, main="TEST")
        for cid in ("late", "late-anon"):
            wait_until(lambda cid=cid: {m["e"] for m in server.messages(cid)} >= {"d", "t", "candle"},
                       what=f"snapshot at {cid}")
        time.sleep(0.3)
    assert len(server.messages("a")) == before
    assert [m["e"] for m in server.messages("late")].count("d") == 1


def test_candle_close_exactly_once_per_minute_and_rollups(settings, depth_cache, server):
    r = depth_cache
    connect(r, "rt", logged_in=True, main="TEST")
    connect(r, "anon", logged_in=False, main="TEST")
    with RunningStreamer(settings, server.endpoint, anon_interval=0.1):
        write_candle(r, "TEST", "202501010001", 100, 100, 100, 100, 1)
        wait_until(lambda: of(server.messages("rt"), "candle"), what="first candle")
        write_candle(r, "TEST", "202501010001", 100, 120, 95, 110, 4)
        for cid in ("rt", "anon"):
            wait_until(lambda cid=cid: [m for m in of(server.messages(cid), "candle") if m["v"] == "4"])
        # the minute closes: the engine pushes the final candle (a trade we never saw: h=130)
        r.rpush(keys.candle_closed("TEST"), orjson.dumps(
            {"s": "TEST", "o": 100, "h": 130, "l": 95, "c": 125, "v": 9, "t": "202501010001"}))
        write_candle(r, "TEST", "202501010002", 125, 125, 125, 125, 2)
        for cid in ("rt", "anon"):
            wait_until(lambda cid=cid: of(server.messages(cid), "candle_close"), what=f"close at {cid}")
        for _ in range(5):  # more ticks and notifications: no second close
            write_candle(r, "TEST", "202501010002", 125, 126, 125, 126, 3)
            time.sleep(0.05)
        write_candle(r, "TEST", "202501010003", 126, 126, 126, 126, 1)  # next minute, no closed entry
        wait_until(lambda: len(of(server.messages("rt"), "candle_close")) == 2)
        time.sleep(0.3)
        rollup5 = wait_until(lambda: r.hgetall(keys.candle("TEST", "5m")).get("v") == "13"
                             and r.hgetall(keys.candle("TEST", "5m")), what="5m roll-up")
        rollup1h = r.hgetall(keys.candle("TEST", "1h"))
        rollup3m = r.hgetall(keys.candle("TEST", "3m"))
    for cid in ("rt", "anon"):
        closes = of(server.messages(cid), "candle_close")
        assert [c["t"] for c in closes] == ["202501010001", "202501010002"], closes
        assert closes[0] == {"e": "candle_close", "s": "TEST", "o": "100", "h": "130", "l": "95",
                             "c": "125", "v": "9", "t": "202501010001"}
        assert closes[1]["v"] == "3"  # fallback: the last values seen of minute 0002
    # minutes 0001 (final v 9) + 0002 (last seen v 3) + 0003 (open, v 1), all in the 0000 5m bucket
    assert {k: rollup5[k] for k in "ohlcvt"} == {"o": "100", "h": "130", "l": "95", "c": "126", "v": "13",
                                                  "t": "202501010000"}
    assert rollup1h["t"] == "202501010000" and rollup1h["v"] == "13"
    assert rollup3m["t"] == "202501010003" and rollup3m["v"] == "1" and rollup3m["o"] == "126"


def test_gone_connection_is_removed_from_every_set(settings, depth_cache, server):
    r = depth_cache
    connect(r, "ok", logged_in=True, main="TEST")
    connect(r, "dead", logged_in=True, main="TEST", subs=("AAA", "BBB"))
    server.gone.add("dead")
    with RunningStreamer(settings, server.endpoint) as s:
        write_depth(r, "TEST", u=1)
        wait_until(lambda: not r.exists(keys.ws_conn("dead")), what="cleanup of dead")
        wait_until(lambda: of(server.messages("ok"), "d"))
        write_depth(r, "TEST", u=2)
        wait_until(lambda: len(of(server.messages("ok"), "d")) == 2)
        wait_until(lambda: s.metrics.errors["gone"] >= 1, what="gone counted")
    assert "dead" not in r.smembers(keys.symbol_main("TEST"))
    assert "dead" not in r.smembers(keys.symbol_sub("AAA")) | r.smembers(keys.symbol_sub("BBB"))
    assert "dead" not in r.smembers(keys.REALTIME_CONNECTIONS)
    assert "dead" not in r.smembers(keys.ALL_CONNECTIONS)
    assert "dead" not in r.smembers(keys.user_connections("user-dead"))
    assert r.smembers(keys.SUBSCRIBED_SYMBOLS) == {"TEST"}  # AAA/BBB lost their only subscriber
    assert not r.exists(keys.conn_main("dead"), keys.conn_subs("dead"), keys.conn_user("dead"))


def test_a_connection_that_never_reads_does_not_stall_the_others(settings, depth_cache, server):
    """While the `@connections` call for one connection does not return (held by the fake
    server until the test releases it; the send timeout is longer than the test), every other
    connection still gets every update; once released, the stuck one gets the latest state
    only (its pending depth coalesced), in order. No wall-clock bound is involved."""
    r = depth_cache
    server.holds.add("stuck")
    others = [f"c{i}" for i in range(30)]
    connect(r, "stuck", logged_in=True, main="TEST")
    for c in others:
        connect(r, c, logged_in=True, main="TEST")
    with RunningStreamer(settings, server.endpoint, concurrency=8, slow_concurrency=2, send_timeout=600.0):
        for u in range(1, 11):
            write_depth(r, "TEST", u=u)
            wait_until(lambda u=u: all(of(server.messages(c), "d") and server.messages(c)[-1]["u"] == u
                                       for c in others), what=f"u={u} at all others")
        assert server.messages("stuck") == []  # its first send is still held
        server.holds.discard("stuck")
        wait_until(lambda: [m for m in of(server.messages("stuck"), "d") if m["u"] == 10], what="u=10 at stuck")
    for c in others:
        assert [m["u"] for m in of(server.messages(c), "d")] == list(range(1, 11))
    stuck = [m["u"] for m in of(server.messages("stuck"), "d")]
    assert stuck == [1, 10], stuck  # the held send, then the latest: u=2..9 were coalesced away


def test_errors_are_retried_with_backoff_and_counted(settings, depth_cache, server):
    r = depth_cache
    connect(r, "flaky", logged_in=True, main="TEST")
    server.fail_next["flaky"] = 2
    with RunningStreamer(settings, server.endpoint) as s:
        write_depth(r, "TEST", u=3)
        wait_until(lambda: of(server.messages("flaky"), "d"), what="delivery after retries")
        assert s.metrics.errors["http_5xx"] == 2
        assert "streamer_send_errors_total{kind=\"http_5xx\"} 2" in s.render_metrics()


def test_bad_data_is_counted_and_does_not_stop_the_tick(settings, depth_cache, server):
    r = depth_cache
    connect(r, "a", logged_in=True, main="BAD", subs=("TEST",))
    r.set(keys.depth("BAD"), b"{not json")
    write_ticker(r, "TEST", p=5)
    with RunningStreamer(settings, server.endpoint) as s:
        wait_until(lambda: of(server.messages("a"), "t", "TEST"))
        assert s.metrics.errors["bad_data"] >= 1



def test_undecodable_bytes_and_wrong_types_in_the_cache_stop_no_other_symbol(settings, depth_cache, server):
    """A value that is not UTF-8, a key of the wrong type, a pub/sub message that is not UTF-8:
    each is that symbol's bad data; the streamer stays up and TEST keeps updating (full reads
    included: no PUBLISH here)."""
    r = depth_cache
    connect(r, "a", logged_in=True, main="TEST", subs=("BIN", "WRONG"))
    connect(r, "b", logged_in=True, main="BIN")
    connect(r, "c", logged_in=True, main="WRONG")
    r.set(keys.depth("BIN"), b'\xff\xfe{"u":1}')
    r.hset(keys.depth("WRONG"), "x", "y")  # a hash where a string belongs
    r.set(keys.ticker("WRONG"), b"\xff")
    write_ticker(r, "TEST", p=5)
    with RunningStreamer(settings, server.endpoint) as s:
        wait_until(lambda: of(server.messages("a"), "t", "TEST"), what="TEST ticker")
        r.publish(keys.DEPTH_CHANGED_CHANNEL, b"\xff\xfe")
        for u in (2, 3):
            write_depth(r, "TEST", u=u, publish=False)
            wait_until(lambda u=u: [m for m in of(server.messages("a"), "d") if m["u"] == u], what=f"TEST u={u}")
        assert s.metrics.errors["bad_data"] >= 3 and not s.failed
        assert s.health()[0], s.health()


def test_a_depth_of_more_than_ten_levels_is_cut_to_ten(settings, depth_cache, server):
    r = depth_cache
    connect(r, "a", logged_in=True, main="TEST")
    levels = [[1000 - i, 1] for i in range(25)]
    r.set(keys.depth("TEST"), orjson.dumps({"e": "d", "s": "TEST", "t": 1, "u": 1, "b": levels, "a": []}))
    with RunningStreamer(settings, server.endpoint):
        wait_until(lambda: of(server.messages("a"), "d"), what="depth")
        assert of(server.messages("a"), "d")[0]["b"] == levels[:10]

def test_init_resets_the_anonymous_tier_cache(settings, depth_cache, server):
    r = depth_cache
    connect(r, "anon", logged_in=False, main="TEST")
    write_depth(r, "TEST", u=9)
    with RunningStreamer(settings, server.endpoint, anon_interval=0.1):
        wait_until(lambda: of(server.messages("anon"), "d"))
        wait_until(lambda: r.hexists(keys.STREAMER_ANON_CACHE, "TEST"), what="anon cache written")
    server.clear()
    with RunningStreamer(settings, server.endpoint, anon_interval=0.1):  # restart: nothing new
        time.sleep(0.5)
        assert server.messages("anon") == []
        write_depth(r, "TEST", u=10)
        wait_until(lambda: of(server.messages("anon"), "d"))
    server.clear()
    with RunningStreamer(settings, server.endpoint, anon_interval=0.1, init=True):  # --init: full snapshot
        wait_until(lambda: [m for m in of(server.messages("anon"), "d") if m["u"] == 10])


def test_health_and_metrics_endpoints(settings, depth_cache, server):
    r = depth_cache
    connect(r, "a", logged_in=True, main="TEST")
    connect(r, "b", logged_in=False, main="TEST")
    write_depth(r, "TEST", u=1)
    with RunningStreamer(settings, server.endpoint, anon_interval=0.1) as s:
        base = f"http://127.0.0.1:{s.http.port}"
        wait_until(lambda: of(server.messages("b"), "d"))
        with urllib.request.urlopen(base + "/health", timeout=5) as resp:
            health = orjson.loads(resp.read())
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/nope", timeout=5)
        assert orjson.loads(err.value.read())["code"] == "NOT_FOUND"
    assert health["status"] == "ok" and health["symbols"] == 1
    assert 'streamer_connections{tier="realtime"} 1' in text
    assert 'streamer_connections{tier="anonymous"} 1' in text
    sends = int(next(line.split()[1] for line in text.splitlines() if line.startswith("streamer_sends_total")))
    assert sends >= 2
    assert "streamer_tick_duration_seconds_count{tier=\"realtime\"}" in text
    assert "streamer_push_lag_seconds_count" in text and "streamer_sends_per_second" in text


def test_valkey_outage_is_survived(settings, depth_cache, server):
    """A tick that cannot reach Valkey is counted; the streamer carries on when it is back."""
    r = depth_cache
    connect(r, "a", logged_in=True, main="TEST")
    with RunningStreamer(settings, server.endpoint) as s:
        write_depth(r, "TEST", u=1)
        wait_until(lambda: of(server.messages("a"), "d"))
        r.client_kill_filter(_type="normal", skipme=True)  # drop the streamer's Valkey connections
        time.sleep(0.2)
        write_depth(r, "TEST", u=2)
        wait_until(lambda: [m for m in of(server.messages("a"), "d") if m["u"] == 2], what="after reconnect")
        assert s.health()[0], s.health()


def test_subscriber_sets_are_cached_and_refreshed_on_the_registry_notification(settings, depth_cache, server):
    """With the periodic membership re-read pushed out to 60 s, only `connections:changed`
    (published by chalice_app.connections) can make the streamer see a new or removed subscriber."""
    r = depth_cache
    connect(r, "a", logged_in=True, main="TEST")
    write_depth(r, "TEST", u=1)
    with RunningStreamer(settings, server.endpoint, membership_every=60.0) as s:
        wait_until(lambda: of(server.messages("a"), "d"), what="first depth at a")
        time.sleep(0.2)  # start-up re-reads (the listener marks the sets dirty once it subscribed)
        reads = s.reader.membership_reads
        for u in range(2, 6):  # depth changes alone never re-read the sets
            write_depth(r, "TEST", u=u)
            wait_until(lambda u=u: [m for m in of(server.messages("a"), "d") if m["u"] == u])
        assert s.reader.membership_reads == reads
        connect(r, "late", logged_in=True, main="TEST")  # snapshot without any depth change
        wait_until(lambda: of(server.messages("late"), "d"), timeout=2.0, what="snapshot at late")
        assert s.reader.membership_reads > reads
        connections.remove_connection(r, "a")
        wait_until(lambda: "a" not in s.reader.members["TEST"][0], timeout=2.0, what="a dropped from the cache")
        before = len(server.messages("a"))
        write_depth(r, "TEST", u=9)
        wait_until(lambda: [m for m in of(server.messages("late"), "d") if m["u"] == 9])
    assert len(server.messages("a")) == before
