"""The trades-backup and stale-connection schedules, invoked through Chalice's test client."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from chalice_app import connections as conns
from chalice_app import keys
from chalice_app.candles import CandleStore

T0 = int(datetime(2025, 12, 16, 23, 57, tzinfo=UTC).timestamp())  # crosses 5m, 1h and 1d boundaries


def stamp(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%d%H%M")


def closed(sym: str, i: int, *, strings: bool = False) -> str:
    o, h, lo, c, v = 100 + i, 110 + i, 90 + i, 105 + i, 1 + i
    vals = [str(x) for x in (o, h, lo, c, v)] if strings else [o, h, lo, c, v]
    return json.dumps({"s": sym, "o": vals[0], "h": vals[1], "l": vals[2], "c": vals[3], "v": vals[4],
                       "t": stamp(T0 + 60 * i) if strings else int(stamp(T0 + 60 * i))})


def invoke(client, name: str) -> dict:
    event = client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event", detail={},
                                            resources=["arn:aws:events:::rule/x"])
    return client.lambda_.invoke(name, event).payload


def s3_objects(svc, sym: str) -> dict[str, list[dict]]:
    resp = svc.s3.list_objects_v2(Bucket=svc.settings.backup_bucket, Prefix=f"candles/{sym}/")
    out = {}
    for obj in resp.get("Contents", []):
        body = svc.s3.get_object(Bucket=svc.settings.backup_bucket, Key=obj["Key"])["Body"].read()
        out[obj["Key"]] = [json.loads(line) for line in body.splitlines()]
    return out


@pytest.fixture
def sym(cache):
    s = "B" + uuid.uuid4().hex[:8].upper()
    cache.sadd("active:symbols", s)
    return s


def test_backup_moves_closed_candles_to_s3_and_dynamodb(client, svc, cache, sym):
    cache.rpush(keys.candle_closed(sym), *[closed(sym, i, strings=i % 2 == 1) for i in range(6)], "garbage{")
    report = invoke(client, "trades_backup")
    assert report["candles"] == 6 and report["dead"] == 1 and report["failed"] == []
    assert cache.llen(keys.candle_closed(sym)) == 0
    assert cache.lrange(keys.candle_dead(sym), 0, -1) == ["garbage{"]

    objects = s3_objects(svc, sym)
    assert sorted(objects) == [
        f"candles/{sym}/1m/2025/12/16/2357.jsonl", f"candles/{sym}/1m/2025/12/16/2358.jsonl",
        f"candles/{sym}/1m/2025/12/16/2359.jsonl", f"candles/{sym}/1m/2025/12/17/0000.jsonl",
        f"candles/{sym}/1m/2025/12/17/0001.jsonl", f"candles/{sym}/1m/2025/12/17/0002.jsonl",
    ]
    line = objects[f"candles/{sym}/1m/2025/12/16/2358.jsonl"]
    assert line == [{"s": sym, "t": "202512162358", "time": T0 + 60, "o": 101, "h": 111, "l": 91, "c": 106, "v": 2}]

    store = CandleStore(svc.dynamodb.Table(svc.settings.candle_table))
    ones = store.range(sym, "1m", 0)
    assert [c.time for c in ones] == [T0 + 60 * i for i in range(6)]
    midnight = T0 + 180
    five = store.range(sym, "5m", 0)
    assert [(c.time, c.open, c.close, c.volume) for c in five] == [
        (T0 - 120, 100, 107, 1 + 2 + 3), (midnight, 103, 110, 4 + 5 + 6)]
    days = store.range(sym, "1d", 0)
    assert [(c.time, c.high, c.low) for c in days] == [(midnight - 86400, 112, 90), (midnight, 115, 93)]
    # the stored 1m candles now serve the chart (hot list is empty)
    data = client.http.get(f"/chart?symbol={sym}&interval=1h").json_body["data"]
    assert [p["time"] for p in data] == [midnight - 3600, midnight]


def test_backup_is_crash_safe_and_never_duplicates(client, svc, cache, sym, monkeypatch):
    cache.rpush(keys.candle_closed(sym), *[closed(sym, i) for i in range(3)])
    store = svc.backup.store
    real_put = store.put_many
    calls = {"n": 0}

    def failing_put(symbol, interval, candles):
        calls["n"] += 1
        if interval != "1m":  # crash after S3 and the 1m items, in the middle of the roll-ups
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "BatchWriteItem")
        return real_put(symbol, interval, candles)

    monkeypatch.setattr(store, "put_many", failing_put)
    report = invoke(client, "trades_backup")
    assert report["failed"] == [sym] and calls["n"] == 2
    assert cache.llen(keys.candle_closed(sym)) == 3, "nothing is dropped before everything is stored"

    monkeypatch.setattr(store, "put_many", real_put)
    cache.rpush(keys.candle_closed(sym), closed(sym, 3))  # the engine keeps appending meanwhile
    report = invoke(client, "trades_backup")
    assert report["candles"] == 4 and report["failed"] == []
    assert cache.llen(keys.candle_closed(sym)) == 0
    assert invoke(client, "trades_backup")["candles"] == 0
    assert len(s3_objects(svc, sym)) == 4
    assert all(len(lines) == 1 for lines in s3_objects(svc, sym).values())
    ones = store.range(sym, "1m", 0)
    assert [c.time for c in ones] == [T0 + 60 * i for i in range(4)]
    assert [c.volume for c in store.range(sym, "5m", 0)] == [1 + 2 + 3, 4]



def test_backup_keeps_volumes_beyond_64_bits_exact_and_one_bad_symbol_stops_no_other(client, svc, cache, sym):
    big = 123456789012345678901  # > 2**64: volumes are not bounded (SPEC §3a Magnitudes)
    raw = closed(sym, 0).replace('"v": 1', f'"v": {big}')
    cache.rpush(keys.candle_closed(sym), raw)
    other = "C" + uuid.uuid4().hex[:8].upper()
    cache.rpush(keys.candle_closed(other), closed(other, 1))
    report = invoke(client, "trades_backup")
    assert report["failed"] == [] and report["candles"] == 2
    [line] = s3_objects(svc, sym)[f"candles/{sym}/1m/2025/12/16/2357.jsonl"]
    assert line["v"] == big
    assert CandleStore(svc.dynamodb.Table(svc.settings.candle_table)).range(sym, "1m", 0)[0].volume == big
    assert cache.llen(keys.candle_closed(sym)) == 0 and cache.llen(keys.candle_closed(other)) == 0


def test_backup_finds_lists_of_removed_symbols(client, svc, cache):
    sym = "R" + uuid.uuid4().hex[:8].upper()  # not active
    cache.rpush(keys.candle_closed(sym), closed(sym, 0))
    assert invoke(client, "trades_backup")["candles"] == 1
    assert cache.llen(keys.candle_closed(sym)) == 0


def test_stale_connection_cleanup(client, svc, cache):
    cache.sadd("active:symbols", "AAA", "BBB")
    conns.register_connection(cache, "gone", "u1", is_logged_in=True)
    conns.register_connection(cache, "anon-gone", None, is_logged_in=False)
    conns.register_connection(cache, "live", "u1", is_logged_in=True)
    conns.subscribe(cache, "gone", "AAA", ["BBB"])
    conns.subscribe(cache, "anon-gone", "BBB")
    conns.subscribe(cache, "live", None, ["BBB"])
    cache.delete("ws:gone", "ws:anon-gone")  # their TTL ran out: $disconnect never came
    assert invoke(client, "stale_connection_cleanup") == {"removed": 2}
    assert cache.smembers("user:u1:connections") == {"live"}
    assert cache.smembers("realtime:connections") == {"live"}
    assert cache.smembers("subscribed:symbols") == {"BBB"}
    assert cache.smembers("symbol:{BBB}:main") == set() and cache.smembers("symbol:{BBB}:sub") == {"live"}
    assert not cache.exists("conn:gone:main", "conn:gone:sub", "conn:anon-gone:main")
    assert invoke(client, "stale_connection_cleanup") == {"removed": 0}
