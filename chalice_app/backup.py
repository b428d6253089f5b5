"""The trades-backup schedule: closed 1m candles from Valkey to S3 and DynamoDB (SPEC §4, §7).

For each symbol with a `candle:closed:1m:{SYM}` list (active symbols, plus any list found
by SCAN, so a removed symbol's last candles are not stranded):

1. LRANGE up to BATCH items (read, not popped);
2. S3 `candles/SYM/1m/YYYY/MM/DD/HHMM.jsonl` — one object per minute, one JSON line;
3. DynamoDB `candle_history` 1m items, then every roll-up bucket those minutes touch,
   recomputed from all stored 1m candles of that bucket (so it is complete, not additive);
4. only then LREM exactly the items read.

Every write is keyed by time and overwrites, so a crash at any step just means the next
run writes the same objects again: no candle is lost and none is stored twice. Items
that are not candles go to `candle:dead:1m:{SYM}` (and the log) instead of blocking the list.

Errors: S3/DynamoDB failures are logged per symbol and leave that symbol's list
untouched for the next run; `run()` returns a report and never raises for one symbol.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from botocore.exceptions import BotoCoreError, ClientError

from chalice_app import keys
from chalice_app.cache import as_str
from chalice_app.candles import (
    HIGHER_INTERVALS,
    INTERVAL_SECONDS,
    Candle,
    CandleStore,
    aggregate,
    bucket,
    minute_stamp,
    parse_candle,
)

log = logging.getLogger("supernoba.backup")

BATCH = 1000


@dataclass
class BackupReport:
    symbols: int = 0
    candles: int = 0
    rollups: int = 0
    dead: int = 0
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"symbols": self.symbols, "candles": self.candles, "rollups": self.rollups,
                "dead": self.dead, "failed": self.failed}


def s3_key(symbol: str, epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime(f"candles/{symbol}/1m/%Y/%m/%d/%H%M.jsonl")


def jsonl_line(symbol: str, c: Candle) -> bytes:
    # stdlib json, not orjson: a volume is not bounded by 64 bits (SPEC §3a Magnitudes)
    return json.dumps({"s": symbol, "t": minute_stamp(c.time), "time": c.time, "o": c.open, "h": c.high,
                       "l": c.low, "c": c.close, "v": c.volume}, separators=(",", ":")).encode() + b"\n"


class CandleBackup:
    def __init__(self, redis_client: redis.Redis, s3: Any, bucket_name: str, store: CandleStore) -> None:
        self.r = redis_client
        self.s3 = s3
        self.bucket = bucket_name
        self.store = store

    def symbols(self) -> list[str]:
        found = {as_str(x) for x in self.r.smembers(keys.ACTIVE_SYMBOLS)}
        for key in self.r.scan_iter(match=keys.CANDLE_CLOSED_PATTERN, count=500):
            k = as_str(key)
            if k.endswith("}") and "{" in k:
                found.add(k[k.index("{") + 1:-1])
        return sorted(s for s in found if keys.is_valid_symbol(s))

    def run(self) -> BackupReport:
        report = BackupReport()
        for symbol in self.symbols():
            try:
                n, rolled, dead = self.backup_symbol(symbol)
            except (ClientError, BotoCoreError, redis.RedisError, ValueError, TypeError) as exc:
                # one symbol's failure (a store outage, or data the stores refuse) never stops
                # the others; its list stays in place and the next run retries it
                log.error("event=backup_failed symbol=%s error=%r", symbol, exc)
                report.failed.append(symbol)
                continue
            if n or dead:
                report.symbols += 1
            report.candles += n
            report.rollups += rolled
            report.dead += dead
        log.info("event=backup_done symbols=%d candles=%d rollups=%d dead=%d failed=%d",
                 report.symbols, report.candles, report.rollups, report.dead, len(report.failed))
        return report

    def backup_symbol(self, symbol: str) -> tuple[int, int, int]:
        list_key = keys.candle_closed(symbol)
        raw_items = self.r.lrange(list_key, 0, BATCH - 1)
        if not raw_items:
            return 0, 0, 0
        by_minute: dict[int, Candle] = {}
        dead: list[bytes | str] = []
        for raw in raw_items:
            try:
                c = parse_candle(json.loads(raw))  # exact integers of any size (orjson: 64 bits)
            except ValueError:
                c = None
            if c is None:
                dead.append(raw)
                log.error("event=backup_bad_candle symbol=%s raw=%r", symbol, as_str(raw)[:200])
                continue
            minute = bucket(c.time, "1m")
            by_minute[minute] = Candle(minute, c.open, c.high, c.low, c.close, c.volume)  # last one wins
        candles = sorted(by_minute.values(), key=lambda c: c.time)
        for c in candles:
            self.s3.put_object(Bucket=self.bucket, Key=s3_key(symbol, c.time), Body=jsonl_line(symbol, c),
                               ContentType="application/x-ndjson")
        self.store.put_many(symbol, "1m", candles)
        rolled = self._rollups(symbol, (c.time for c in candles))
        pipe = self.r.pipeline(transaction=False)
        if dead:
            pipe.rpush(keys.candle_dead(symbol), *dead)
        for raw in raw_items:
            pipe.lrem(list_key, 1, raw)
        pipe.execute()
        log.info("event=backup_symbol symbol=%s candles=%d rollups=%d dead=%d", symbol, len(candles), rolled, len(dead))
        return len(candles), rolled, len(dead)

    def _rollups(self, symbol: str, minutes: Iterable[int]) -> int:
        minutes = list(minutes)
        if not minutes:
            return 0
        affected = {iv: {bucket(m, iv) for m in minutes} for iv in HIGHER_INTERVALS}
        start = min(min(b) for b in affected.values())
        end = max(max(b) + INTERVAL_SECONDS[iv] for iv, b in affected.items())
        ones = self.store.range(symbol, "1m", start, end)
        n = 0
        for iv in HIGHER_INTERVALS:
            built = aggregate(ones, iv)
            n += self.store.put_many(symbol, iv, (built[b] for b in sorted(affected[iv]) if b in built))
        return n
