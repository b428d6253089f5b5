"""Read-only market data for REST: chart candles, the depth snapshot, and health (SPEC §5).

Chart = hot candles from Valkey merged over cold ones from DynamoDB `candle_history`:

- 1m: the newest `limit` cold 1m items, overlaid by the closed buffer
  `candle:closed:1m:{SYM}` (not yet backed up) and the open `candle:1m:{SYM}`.
- higher intervals: cold roll-ups of that interval; the buckets from the newest stored
  roll-up on (or the whole window when none is stored) are rebuilt from 1m candles
  (cold 1m + hot 1m), since the newest roll-up may still be growing; the streamer's
  open roll-up `candle:<iv>:{SYM}` fills a bucket nothing else covers.
Hot wins over cold for the same time; output is ascending epoch seconds, one per bucket.

Errors::

    BadRequest   INVALID_SYMBOL, INVALID_INTERVAL, INVALID_LIMIT
    NotFound     UNKNOWN_SYMBOL
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import redis
from botocore.exceptions import BotoCoreError, ClientError

from chalice_app import keys
from chalice_app.candles import INTERVAL_SECONDS, Candle, CandleStore, aggregate, bucket, parse_candle
from chalice_app.errors import BadRequest, Unavailable
from chalice_app.messages import depth_message
from chalice_app.symbols import SymbolRegistry

log = logging.getLogger("supernoba.market")

MAX_CHART_LIMIT = 1000
DEFAULT_CHART_LIMIT = 100
#: how far back a higher interval is rebuilt from 1m candles when no roll-up is stored
MAX_REBUILD_SECONDS = 7 * 86400


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_CHART_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_CHART_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_CHART_LIMIT}", "INVALID_LIMIT")
    return int(raw)


class MarketData:
    def __init__(self, redis_client: redis.Redis, candles: CandleStore, symbols: SymbolRegistry,
                 kinesis: Any = None, orders_stream: str = "") -> None:
        self.r = redis_client
        self.store = candles
        self.symbols = symbols
        self.kinesis = kinesis
        self.orders_stream = orders_stream

    # ------------------------------------------------------------------ hot candles
    def hot_1m(self, symbol: str) -> dict[int, Candle]:
        pipe = self.r.pipeline(transaction=False)
        pipe.lrange(keys.candle_closed(symbol), 0, -1)
        pipe.hgetall(keys.candle(symbol, "1m"))
        closed, open_ = pipe.execute()
        out: dict[int, Candle] = {}
        for raw in closed:
            try:
                c = parse_candle(orjson.loads(raw))
            except orjson.JSONDecodeError:
                c = None
            if c is None:
                log.warning("event=bad_closed_candle symbol=%s raw=%r", symbol, raw[:200])
                continue
            out[c.time] = c
        c = parse_candle(open_) if open_ else None
        if c is not None:
            out[c.time] = c
        return out

    def hot_rollup(self, symbol: str, interval: str) -> Candle | None:
        raw = self.r.hgetall(keys.candle(symbol, interval))
        c = parse_candle(raw) if raw else None
        return Candle(bucket(c.time, interval), c.open, c.high, c.low, c.close, c.volume) if c else None

    # ------------------------------------------------------------------ chart
    def chart(self, symbol: Any, interval: str | None, limit_raw: str | None) -> dict[str, Any]:
        sym = self.symbols.require_active(symbol)
        interval = interval or "1m"
        if interval not in INTERVAL_SECONDS:
            raise BadRequest(f"interval must be one of {', '.join(INTERVAL_SECONDS)}", "INVALID_INTERVAL")
        limit = parse_limit(limit_raw)
        try:
            candles = self._candles(sym, interval, limit)
        except (ClientError, BotoCoreError) as exc:
            raise Unavailable("candle history is unavailable", "HISTORY_UNAVAILABLE") from exc
        return {"symbol": sym, "interval": interval, "data": [c.chart_point() for c in candles]}

    def _candles(self, sym: str, interval: str, limit: int) -> list[Candle]:
        hot = self.hot_1m(sym)
        if interval == "1m":
            merged = {c.time: c for c in self.store.latest(sym, "1m", limit)}
            merged.update(hot)
            return sorted(merged.values(), key=lambda c: c.time)[-limit:]

        size = INTERVAL_SECONDS[interval]
        cold = {c.time: c for c in self.store.latest(sym, interval, limit)}
        if cold:
            rebuild_from = max(cold)
        else:
            newest = self.store.latest(sym, "1m", 1)
            ref_times = list(hot) + [c.time for c in newest]
            ref = bucket(max(ref_times) if ref_times else int(time.time()), interval)
            rebuild_from = ref - max(0, min((limit - 1) * size, MAX_REBUILD_SECONDS))
        if hot:
            rebuild_from = min(rebuild_from, bucket(min(hot), interval))
        ones = {c.time: c for c in self.store.range(sym, "1m", rebuild_from)}
        ones.update(hot)
        merged = dict(cold)
        merged.update(aggregate(ones.values(), interval))
        rollup = self.hot_rollup(sym, interval)
        if rollup is not None and rollup.time not in merged:
            merged[rollup.time] = rollup
        return sorted(merged.values(), key=lambda c: c.time)[-limit:]

    # ------------------------------------------------------------------ depth
    def depth(self, symbol: Any) -> dict[str, Any]:
        sym = self.symbols.require_active(symbol)
        raw = self.r.get(keys.depth(sym))
        if raw is None:
            return depth_message(sym, 0, 0, [], [])
        try:
            book = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            log.error("event=bad_depth symbol=%s", sym)
            raise Unavailable(f"depth of {sym} is unreadable", "DEPTH_UNAVAILABLE") from exc
        return book

    # ------------------------------------------------------------------ health
    def health(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        t0 = time.perf_counter()
        try:
            self.r.ping()
            checks["valkey"] = {"ok": True, "ms": round((time.perf_counter() - t0) * 1000, 1)}
        except redis.RedisError as exc:
            checks["valkey"] = {"ok": False, "error": type(exc).__name__}
        t0 = time.perf_counter()
        try:
            desc = self.kinesis.describe_stream_summary(StreamName=self.orders_stream)["StreamDescriptionSummary"]
            checks["kinesis"] = {"ok": desc["StreamStatus"] in ("ACTIVE", "UPDATING"),
                                 "stream": self.orders_stream, "status": desc["StreamStatus"],
                                 "ms": round((time.perf_counter() - t0) * 1000, 1)}
        except (ClientError, BotoCoreError) as exc:
            checks["kinesis"] = {"ok": False, "stream": self.orders_stream, "error": type(exc).__name__}
        ok = all(c["ok"] for c in checks.values())
        return ok, {"status": "ok" if ok else "degraded", **checks}
