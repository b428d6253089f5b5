"""The engine service on a cluster-mode Valkey (CACHE_CLUSTER_MODE, 3 primaries): the candle
Lua script, the change notification, fenced snapshots and leases, and a whole `--dev` run
whose symbols' keys live on three different nodes."""

from __future__ import annotations

import dataclasses
import json

import orjson
import pytest
import redis

from chalice_app import cache, keys
from engine_pkg.service.depth_writer import DepthWriter, SymbolUpdate
from engine_pkg.service.errors import LeaseLost
from engine_pkg.service.leases import LeaseManager
from engine_pkg.service.snapshots import Snapshot, SnapshotStore
from tests.cluster import CLUSTER_SYMBOLS
from tests.engine_pkg.service.helpers import fast, put_orders, running_service
from tests.waiting import wait_until

#: one symbol per primary (asserted: the tests cannot pass on one node by accident)
SYMBOLS = CLUSTER_SYMBOLS  # one per primary (asserted by the `cluster` fixture)
M1, M2 = "202512161420", "202512161421"


def test_depth_writer_runs_the_candle_script_on_every_node_and_publishes(valkey_cluster, cluster):
    writer = DepthWriter(cache.client(valkey_cluster.url, "auto"))
    assert cache.is_cluster(writer.client)
    listener = redis.Redis(port=valkey_cluster.ports[1]).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.DEPTH_CHANGED_CHANNEL)
    first = [SymbolUpdate(s, 2, b'{"u":2,"s":"%s"}' % s.encode(), b'{"e":"t"}', [(1, M1, 100 + i, 5), (2, M1, 90, 1)])
             for i, s in enumerate(SYMBOLS)]
    writer.write(first)
    # a primary loses its script cache (restart / failover): the writer loads it again and goes on
    with redis.Redis(port=valkey_cluster.ports[valkey_cluster.node_of(keys.depth("X"))]) as node:
        node.script_flush()
    writer.write([SymbolUpdate(s, 3, b'{"u":3}', b'{"e":"t","p":95}', [(3, M2, 95, 2)]) for s in SYMBOLS])
    writer.write(first)  # a replay after a crash: no effect
    for i, s in enumerate(SYMBOLS):
        assert json.loads(cluster.get(keys.depth(s))) == {"u": 3}
        assert cluster.get(keys.ticker(s)) == '{"e":"t","p":95}'
        assert cluster.hgetall(keys.candle(s)) == {"seq": "3", "t": M2, "o": "95", "h": "95", "l": "95", "c": "95",
                                                   "v": "2"}
        closed = [json.loads(x) for x in cluster.lrange(keys.candle_closed(s), 0, -1)]
        assert closed == [{"s": s, "o": 100 + i, "h": 100 + i, "l": 90, "c": 90, "v": 6, "t": M1}]
    heard = []
    for _ in range(30):
        msg = listener.get_message(timeout=0.1)
        # the cluster bus may still deliver an earlier test's PUBLISH (other symbols): skip it
        if msg and set(orjson.loads(msg["data"])) & set(SYMBOLS):
            heard.append(orjson.loads(msg["data"]))
        if len(heard) == 3:
            break
    assert heard == [list(SYMBOLS)] * 3
    listener.close()


def test_missing_keys_are_found_and_written_back_on_every_node(valkey_cluster, cluster):
    """depth_rebuild's EXISTS pipeline and write-back on a cluster: one symbol per primary."""
    writer = DepthWriter(cache.client(valkey_cluster.url, "auto"))
    listener = redis.Redis(port=valkey_cluster.ports[2]).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.DEPTH_CHANGED_CHANNEL)
    listener.get_message(timeout=1)
    cluster.set(keys.depth("X"), '{"u":5}')  # written since the check: newer, kept
    assert writer.missing(list(SYMBOLS), list(SYMBOLS)) == (["TEST", "AAPL"], list(SYMBOLS), list(SYMBOLS))
    writer.rebuild([SymbolUpdate(s, 4, b'{"u":4,"s":"%s"}' % s.encode(), b'{"e":"t"}') for s in SYMBOLS],
                   set(SYMBOLS))
    assert writer.missing(list(SYMBOLS), list(SYMBOLS)) == ([], [], [])
    for s in SYMBOLS:
        assert cluster.get(keys.ticker(s)) == '{"e":"t"}' and cluster.hgetall(keys.candle(s)) == {"seq": "4"}
    assert [orjson.loads(cluster.get(keys.depth(s))) for s in SYMBOLS] == [{"u": 4, "s": "TEST"}, {"u": 5},
                                                                          {"u": 4, "s": "AAPL"}]
    heard = wait_until(lambda: (m := listener.get_message(timeout=0.1)) and set(orjson.loads(m["data"])) == set(SYMBOLS)
                       and m, 10, what="depth:changed with the symbols")
    assert orjson.loads(heard["data"]) == list(SYMBOLS)
    listener.close()


def test_fenced_snapshots_and_leases_on_shards_of_different_nodes(valkey_cluster, cluster):
    stream = "orders-cluster"
    shards = [f"shardId-00000000000{i}" for i in range(6)]
    assert len({valkey_cluster.node_of(keys.shard_lease(stream, sid)) for sid in shards}) == 3
    client = cache.client(valkey_cluster.url, "on")
    store = SnapshotStore(client, stream)
    mine = LeaseManager(client, stream, "e1", "e1:tok", 2000)
    theirs = LeaseManager(client, stream, "e2", "e2:tok", 2000)
    assert mine.heartbeat() == 1 and theirs.heartbeat() == 2
    for sid in shards:
        assert mine.try_acquire(sid) and not theirs.try_acquire(sid)
        store.save(Snapshot(sid, f"seq-{sid}", engine=b"\x00\x01"), mine.token)
        with pytest.raises(LeaseLost):
            store.save(Snapshot(sid, "999"), theirs.token)
        assert not theirs.renew(sid) and mine.renew(sid)
        assert (store.load(sid).seq, store.load(sid).engine) == (f"seq-{sid}", b"\x00\x01")
    # `--dev`'s sweeps find the keys on every primary
    assert mine.delete_all() == len(shards) + 1 and store.delete_all() == len(shards)
    assert all(store.load(sid) is None and mine.holder(sid) is None for sid in shards)


def test_engine_dev_run_on_a_cluster(settings, aws, valkey_cluster, cluster):
    on_cluster = dataclasses.replace(fast(settings), depth_cache_url=valkey_cluster.url,
                                     backup_cache_url=valkey_cluster.url, cache_cluster_mode="auto")
    for s in ("STALE", "B", "ETH"):  # leftovers on the three nodes, which --dev must clear
        cluster.set(keys.depth(s), '{"u":99}')
    assert len({valkey_cluster.node_of(keys.depth(s)) for s in ("STALE", "B", "ETH")}) > 1
    cmds = []
    for i, s in enumerate(SYMBOLS):
        cmds += [
            {"action": "ADD", "symbol": s, "order_id": f"{s}-s", "user_id": "u1", "is_buy": False,
             "price": 1000 + i, "quantity": 100, "ts": 1765894800000},
            {"action": "ADD", "symbol": s, "order_id": f"{s}-b", "user_id": "u2", "is_buy": True,
             "price": 1000 + i, "quantity": 40, "ts": 1765894800001},
        ]
    with running_service(on_cluster, dev=True) as svc:
        assert cache.is_cluster(svc.depth_cache) and cache.is_cluster(svc.backup_cache)
        wait_until(lambda: len(svc.workers) == 4 and all(w.state.value == "reading" for w in svc.workers.values()),
                   10, what="workers reading")
        assert not any(cluster.get(keys.depth(s)) for s in ("STALE", "B", "ETH"))
        put_orders(aws.client("kinesis"), settings.orders_stream, cmds)
        for i, s in enumerate(SYMBOLS):
            d = orjson.loads(wait_until(lambda s=s: cluster.get(keys.depth(s)), 15, what=f"depth:{{{s}}}"))
            assert (d["s"], d["b"], d["a"]) == (s, [], [[1000 + i, 60]])
            t = orjson.loads(wait_until(lambda s=s: cluster.get(keys.ticker(s)), 5, what=f"ticker:{{{s}}}"))
            assert t["p"] == 1000 + i
            assert cluster.hget(keys.candle(s), "v") == "40"
    snaps = [keys.shard_snapshot(settings.orders_stream, sid) for sid in svc.shard_ids()]
    assert len({valkey_cluster.node_of(k) for k in snaps}) > 1
    assert all(cluster.exists(k) for k in snaps)  # every shard snapshotted at the graceful stop
