"""The streamer on a cluster-mode Valkey (CACHE_CLUSTER_MODE, 3 primaries): one tick reads
symbols whose keys live on three different nodes and pushes them to both tiers; the change
notifications, the subscribe markers (`symbol:{SYM}:fresh`), the roll-up writes and the cleanup
of a gone connection work there too."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from chalice_app import cache, connections, keys
from tests.cluster import CLUSTER_SYMBOLS
from tests.mgmt_server import MgmtServer
from tests.streamer_pkg.helpers import (
    RunningStreamer,
    connect,
    of,
    write_candle,
    write_depth,
    write_ticker,
)
from tests.waiting import wait_until

SYMBOLS = CLUSTER_SYMBOLS  # one per primary (asserted by the `cluster` fixture)


@pytest.fixture
def server() -> Iterator[MgmtServer]:
    s = MgmtServer().start()
    yield s
    s.stop()


def test_one_tick_reads_symbols_on_three_nodes_and_pushes_them(settings, cluster, cluster_url, server):
    on_cluster = dataclasses.replace(settings, depth_cache_url=cluster_url, backup_cache_url=cluster_url,
                                     cache_cluster_mode="auto")
    r = cluster
    connect(r, "rt", logged_in=True, main="TEST", subs=("X", "AAPL"))
    connect(r, "rt2", logged_in=True, main="X")
    connect(r, "anon", logged_in=False, main="AAPL")
    connect(r, "dead", logged_in=True, main="AAPL", subs=("TEST",))
    server.gone.add("dead")
    for i, s in enumerate(SYMBOLS):
        write_depth(r, s, u=1, bid=1000 + i, publish=False)
        write_ticker(r, s, p=1000 + i)
    with RunningStreamer(on_cluster, server.endpoint, anon_interval=0.1) as s:
        assert s.reader.cluster and cache.is_cluster(s.sync_redis)
        wait_until(lambda: of(server.messages("rt"), "d", "TEST"), what="TEST depth at rt")
        assert set(s.snapshot.symbols) == set(SYMBOLS)  # every node's keys in one snapshot
        assert all(s.snapshot.symbols[x].depth["u"] == 1 for x in SYMBOLS)
        wait_until(lambda: len(of(server.messages("rt"), "t")) >= 3, what="three tickers at rt")
        wait_until(lambda: of(server.messages("rt2"), "d", "X"), what="X depth at rt2")
        wait_until(lambda: of(server.messages("anon"), "d", "AAPL"), what="AAPL depth at anon")
        # a change on each node wakes the realtime tier (PUBLISH reaches the subscribing node)
        for i, sym in enumerate(SYMBOLS):
            write_depth(r, sym, u=2, bid=2000 + i)
        wait_until(lambda: [m for m in of(server.messages("rt"), "d", "TEST") if m["u"] == 2], what="u=2 at rt")
        wait_until(lambda: [m for m in of(server.messages("rt2"), "d", "X") if m["u"] == 2], what="u=2 at rt2")
        wait_until(lambda: [m for m in of(server.messages("anon"), "d", "AAPL") if m["u"] == 2], what="u=2 anon")
        # a repeated subscribe changes no set: its marker (taken with SPOP on X's node) shows it
        n = len(of(server.messages("rt2"), "d", "X"))
        connections.subscribe(r, "rt2", main="X")
        wait_until(lambda: len(of(server.messages("rt2"), "d", "X")) > n, what="X's state again at rt2")
        assert of(server.messages("rt2"), "d", "X")[-1]["u"] == 2 and not r.exists(keys.symbol_fresh("X"))
        # roll-ups are queued writes of the next tick's (cluster) pipeline
        write_candle(r, "AAPL", "202501010000", 100, 110, 90, 105, 7)
        wait_until(lambda: r.hget(keys.candle("AAPL", "5m"), "v") == "7", what="5m roll-up of AAPL")
        # a gone connection is removed with the sync cluster client (keys on several nodes)
        wait_until(lambda: not r.exists(keys.ws_conn("dead")), what="cleanup of dead")
        wait_until(lambda: s.metrics.errors["gone"] >= 1, what="gone counted")
    assert of(server.messages("rt"), "t", "X")[-1]["p"] == 1001
    assert of(server.messages("rt"), "t", "AAPL")[-1]["p"] == 1002
    assert not of(server.messages("rt"), "d", "X")  # a sub subscription gets the ticker only
    assert "dead" not in r.smembers(keys.symbol_main("AAPL")) | r.smembers(keys.symbol_sub("TEST"))
    assert not r.exists(keys.conn_main("dead")) and not r.exists(keys.conn_subs("dead"))
    assert r.hexists(keys.STREAMER_ANON_CACHE, "AAPL")
