"""GET /chart, GET /depth/{symbol}, GET /health and the admin symbol routes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from chalice_app import keys
from chalice_app.candles import Candle, CandleStore
from tests.chalice_app.helpers import ADMIN_HEADERS, add_symbol, post_json

T0 = int(datetime(2025, 12, 16, 14, 0, tzinfo=UTC).timestamp())


def stamp(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%d%H%M")


def unique_symbol(prefix: str = "C") -> str:
    return prefix + uuid.uuid4().hex[:8].upper()


def candle(i: int, base: int = 100) -> Candle:
    return Candle(T0 + 60 * i, base + i, base + i + 5, base + i - 5, base + i + 1, 10 + i)


def test_chart_merges_hot_over_cold(client, svc, cache):
    sym = unique_symbol()
    add_symbol(client, sym)
    store = CandleStore(svc.dynamodb.Table(svc.settings.candle_table))
    store.put_many(sym, "1m", [candle(i) for i in range(10)])  # cold: minutes 0..9
    # hot: minute 8 again (newer numbers win), 10 as strings, and the open minute 11
    cache.rpush(keys.candle_closed(sym),
                json.dumps({"s": sym, "o": 108, "h": 200, "l": 90, "c": 150, "v": 99, "t": stamp(T0 + 480)}),
                json.dumps({"s": sym, "o": "110", "h": "116", "l": "105", "c": "111", "v": "20",
                            "t": int(stamp(T0 + 600))}))
    cache.hset(keys.candle(sym, "1m"), mapping={"o": 111, "h": 113, "l": 109, "c": 112, "v": 3, "t": stamp(T0 + 660)})

    resp = client.http.get(f"/chart?symbol={sym}&interval=1m&limit=100")
    assert resp.status_code == 200, resp.body
    body = resp.json_body
    assert body["symbol"] == sym and body["interval"] == "1m"
    times = [p["time"] for p in body["data"]]
    assert times == [T0 + 60 * i for i in range(12)]
    by_t = {p["time"]: p for p in body["data"]}
    assert by_t[T0 + 480] == {"time": T0 + 480, "open": 108, "high": 200, "low": 90, "close": 150, "volume": 99}
    assert by_t[T0 + 600]["close"] == 111 and by_t[T0 + 660]["volume"] == 3
    assert by_t[T0]["open"] == 100

    last3 = client.http.get(f"/chart?symbol={sym}&limit=3").json_body["data"]
    assert [p["time"] for p in last3] == times[-3:]

    # 5m built from the merged 1m candles
    five = client.http.get(f"/chart?symbol={sym}&interval=5m").json_body["data"]
    assert [p["time"] for p in five] == [T0, T0 + 300, T0 + 600]
    minutes = [by_t[t] for t in times]
    for p in five:
        inside = [m for m in minutes if p["time"] <= m["time"] < p["time"] + 300]
        assert p["open"] == inside[0]["open"] and p["close"] == inside[-1]["close"]
        assert p["high"] == max(m["high"] for m in inside) and p["low"] == min(m["low"] for m in inside)
        assert p["volume"] == sum(m["volume"] for m in inside)
    day = client.http.get(f"/chart?symbol={sym}&interval=1d").json_body["data"]
    assert len(day) == 1 and day[0]["time"] == T0 - 14 * 3600
    assert day[0]["volume"] == sum(m["volume"] for m in minutes)


def test_chart_uses_stored_rollups_for_old_buckets(client, svc):
    sym = unique_symbol()
    add_symbol(client, sym)
    store = CandleStore(svc.dynamodb.Table(svc.settings.candle_table))
    old = Candle(T0 - 3600, 50, 60, 40, 55, 1000)  # an hour-old 1h candle, no 1m items behind it
    store.put_many(sym, "1h", [old])
    store.put_many(sym, "1m", [candle(i) for i in range(3)])
    data = client.http.get(f"/chart?symbol={sym}&interval=1h").json_body["data"]
    assert [p["time"] for p in data] == [T0 - 3600, T0]
    assert data[0]["volume"] == 1000 and data[1]["volume"] == 10 + 11 + 12


def test_chart_streamer_rollup_fills_uncovered_bucket(client, svc, cache):
    sym = unique_symbol()
    add_symbol(client, sym)
    cache.hset(keys.candle(sym, "15m"), mapping={"o": "5", "h": "9", "l": "4", "c": "8", "v": "7", "t": stamp(T0)})
    data = client.http.get(f"/chart?symbol={sym}&interval=15m").json_body["data"]
    assert data == [{"time": T0, "open": 5, "high": 9, "low": 4, "close": 8, "volume": 7}]


def test_chart_errors(client, svc):
    add_symbol(client, "CHART")
    for q, status, code in [
        ("symbol=CHART&interval=2m", 400, "INVALID_INTERVAL"),
        ("symbol=CHART&limit=0", 400, "INVALID_LIMIT"),
        ("symbol=CHART&limit=1001", 400, "INVALID_LIMIT"),
        ("symbol=CHART&limit=abc", 400, "INVALID_LIMIT"),
        ("symbol=NOPE", 404, "UNKNOWN_SYMBOL"),
        ("symbol=a*", 400, "INVALID_SYMBOL"),
        ("", 400, "INVALID_SYMBOL"),
    ]:
        resp = client.http.get(f"/chart?{q}")
        assert resp.status_code == status and resp.json_body["code"] == code, (q, resp.body)
    resp = client.http.get("/chart?interval=1m")
    assert resp.json_body["message"] == "symbol is required"
    resp = client.http.get("/chart?symbol=CHART&limit=1000")
    assert resp.status_code == 200 and resp.json_body["data"] == []


def test_depth(client, svc, cache):
    add_symbol(client, "DEP")
    empty = client.http.get("/depth/DEP")
    assert empty.status_code == 200
    assert empty.json_body == {"e": "d", "s": "DEP", "t": 0, "u": 0, "b": [], "a": []}
    book = {"e": "d", "s": "DEP", "t": 5, "u": 9, "b": [[100, 2]], "a": [[101, 3]]}
    cache.set(keys.depth("DEP"), json.dumps(book))
    assert client.http.get("/depth/DEP").json_body == book
    assert client.http.get("/depth/NOPE").json_body["code"] == "UNKNOWN_SYMBOL"
    resp = client.http.get("/depth/dep")
    assert resp.status_code == 400 and resp.json_body["code"] == "INVALID_SYMBOL"


def test_health(client, svc, make_svc):
    resp = client.http.get("/health")
    assert resp.status_code == 200, resp.body
    assert resp.json_body["status"] == "ok"
    assert resp.json_body["valkey"]["ok"] and resp.json_body["kinesis"]["ok"]
    make_svc(depth_cache_url="redis://127.0.0.1:1/0", orders_stream="missing-stream")
    resp = client.http.get("/health")
    assert resp.status_code == 503
    assert resp.json_body["status"] == "degraded"
    assert not resp.json_body["valkey"]["ok"] and not resp.json_body["kinesis"]["ok"]


def test_admin_symbols_crud(client, svc, cache):
    resp = post_json(client, "/admin/symbols", {"symbol": "ADM", "display_name": "Admin Co", "tick_size": 5,
                                                "price_band_pct": 15}, ADMIN_HEADERS)
    assert resp.status_code == 201
    assert resp.json_body["tick_size"] == 5 and resp.json_body["display_name"] == "Admin Co"
    resp = post_json(client, "/admin/symbols", {"symbol": "ADM", "tick_size": 10}, ADMIN_HEADERS)
    assert resp.status_code == 200 and resp.json_body["tick_size"] == 10
    resp = post_json(client, "/admin/symbols", {"symbol": "ADM", "tick_size": 10, "price_band_pct": 2.5},
                     ADMIN_HEADERS)
    assert resp.status_code == 200 and resp.json_body["price_band_pct"] == 2.5
    add_symbol(client, "ADM2")
    listed = client.http.get("/admin/symbols", headers=ADMIN_HEADERS).json_body["symbols"]
    assert [s["symbol"] for s in listed] == ["ADM", "ADM2"]
    assert cache.smembers("active:symbols") == {"ADM", "ADM2"}
    assert client.http.delete("/admin/symbols?symbol=ADM", headers=ADMIN_HEADERS).status_code == 200
    assert client.http.delete("/admin/symbols/ADM2", headers=ADMIN_HEADERS).status_code == 200
    assert cache.smembers("active:symbols") == set()
    assert not cache.exists("symbol:{ADM}:meta")
    resp = client.http.delete("/admin/symbols?symbol=ADM", headers=ADMIN_HEADERS)
    assert resp.status_code == 404 and resp.json_body["code"] == "UNKNOWN_SYMBOL"
    for bad in ({"symbol": "a:b"}, {"symbol": "X}*"}, {"symbol": "ABCDEFGHIJKLMNOPQ"}, {"symbol": "OK", "tick_size": 0},
                {"symbol": "OK", "min_price": 10, "max_price": 5}, {"symbol": "OK", "bogus": 1},
                {"symbol": "OK", "price_band_pct": True}, {"symbol": "OK", "price_band_pct": False},
                {"symbol": "OK", "price_band_pct": "5"}, {"symbol": "OK", "price_band_pct": -1},
                {"symbol": "OK", "price_band_pct": 1000.5}):
        resp = post_json(client, "/admin/symbols", bad, ADMIN_HEADERS)
        assert resp.status_code == 400, (bad, resp.body)
    resp = client.http.delete("/admin/symbols?symbol=%7BX%7D", headers=ADMIN_HEADERS)
    assert resp.status_code == 400 and resp.json_body["code"] == "INVALID_SYMBOL"
    assert cache.smembers("active:symbols") == set()
