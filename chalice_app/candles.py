"""Candles: parsing what the engine and streamer write, time buckets, roll-ups, and the
DynamoDB `candle_history` store (SPEC §4, §7).

Accepted candle shapes (JSON in `candle:closed:1m:{SYM}`, hash `candle:1m:{SYM}` and the
streamer's `candle:<iv>:{SYM}`): fields `o h l c v t` (also `open high low close volume
time`), optional `s`; numbers as JSON numbers or numeric strings (bytes too); `t` as
`YYYYMMDDHHMM` (UTC, 12 digits, string or number), or epoch seconds (≤ 11 digits), or
epoch milliseconds (13 digits). Anything else parses to None (the caller logs it).

`candle_history` items: pk `CANDLE#SYM#<interval>`, sk = bucket start in epoch seconds,
attributes `o h l c v` (numbers), `t` (`YYYYMMDDHHMM`), `symbol`, `interval`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from boto3.dynamodb.conditions import Key

from chalice_app.cache import as_str

log = logging.getLogger("supernoba.candles")

INTERVAL_SECONDS = {
    "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "4h": 14400, "1d": 86400,
}
HIGHER_INTERVALS = tuple(iv for iv in INTERVAL_SECONDS if iv != "1m")


@dataclass(frozen=True)
class Candle:
    time: int  # bucket start, epoch seconds UTC
    open: int | float
    high: int | float
    low: int | float
    close: int | float
    volume: int | float

    def chart_point(self) -> dict[str, Any]:
        return {"time": self.time, "open": self.open, "high": self.high, "low": self.low,
                "close": self.close, "volume": self.volume}

    def merge(self, later: Candle) -> Candle:
        """This candle followed by `later` (same bucket)."""
        return Candle(self.time, self.open, max(self.high, later.high), min(self.low, later.low),
                      later.close, self.volume + later.volume)


def _num(value: Any) -> int | float | None:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    if not d.is_finite():
        return None
    return int(d) if d == d.to_integral_value() else float(d)


def parse_time(value: Any) -> int | None:
    """`YYYYMMDDHHMM` / epoch seconds / epoch ms → epoch seconds, or None."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    if isinstance(value, float):
        if value != int(value):
            return None
        text = str(int(value))
    if not (text.isascii() and text.isdigit()):
        return None
    if len(text) == 12:
        try:
            dt = datetime.strptime(text, "%Y%m%d%H%M").replace(tzinfo=UTC)
        except ValueError:
            return None
        return int(dt.timestamp())
    if len(text) == 13:
        return int(text) // 1000
    if len(text) <= 11:
        return int(text)
    return None


def minute_stamp(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y%m%d%H%M")


def parse_candle(obj: Any) -> Candle | None:
    if not isinstance(obj, Mapping):
        return None
    fields = {as_str(k): v for k, v in obj.items()}

    def get(short: str, long: str) -> Any:
        return fields.get(short, fields.get(long))

    t = parse_time(get("t", "time"))
    o, h, lo, c = (_num(get(a, b)) for a, b in (("o", "open"), ("h", "high"), ("l", "low"), ("c", "close")))
    v = _num(get("v", "volume"))
    if t is None or None in (o, h, lo, c):
        return None
    return Candle(t, o, h, lo, c, v if v is not None else 0)  # type: ignore[arg-type]


def bucket(epoch_s: int, interval: str) -> int:
    size = INTERVAL_SECONDS[interval]
    return epoch_s - epoch_s % size


def aggregate(candles: Iterable[Candle], interval: str) -> dict[int, Candle]:
    """Roll 1-minute candles (any order, one per minute) up to `interval` buckets."""
    out: dict[int, Candle] = {}
    for c in sorted(candles, key=lambda x: x.time):
        b = bucket(c.time, interval)
        rebased = Candle(b, c.open, c.high, c.low, c.close, c.volume)
        out[b] = out[b].merge(rebased) if b in out else rebased
    return out


# --------------------------------------------------------------------------- DynamoDB


def _dec(x: int | float) -> Decimal:
    return Decimal(x) if isinstance(x, int) else Decimal(str(x))


def _from_dec(x: Any) -> int | float:
    if isinstance(x, Decimal):
        return int(x) if x == x.to_integral_value() else float(x)
    return x


class CandleStore:
    """`candle_history` through a boto3 DynamoDB Table resource."""

    MAX_RANGE_ITEMS = 20_000

    def __init__(self, table: Any) -> None:
        self.table = table

    @staticmethod
    def pk(symbol: str, interval: str) -> str:
        return f"CANDLE#{symbol}#{interval}"

    def item(self, symbol: str, interval: str, c: Candle) -> dict[str, Any]:
        return {
            "pk": self.pk(symbol, interval), "sk": c.time, "symbol": symbol, "interval": interval,
            "t": minute_stamp(c.time), "o": _dec(c.open), "h": _dec(c.high), "l": _dec(c.low),
            "c": _dec(c.close), "v": _dec(c.volume),
        }

    @staticmethod
    def _candle(item: Mapping[str, Any]) -> Candle:
        return Candle(int(item["sk"]), _from_dec(item["o"]), _from_dec(item["h"]), _from_dec(item["l"]),
                      _from_dec(item["c"]), _from_dec(item.get("v", 0)))

    def put_many(self, symbol: str, interval: str, candles: Iterable[Candle]) -> int:
        n = 0
        with self.table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for c in candles:
                batch.put_item(Item=self.item(symbol, interval, c))
                n += 1
        return n

    def latest(self, symbol: str, interval: str, limit: int) -> list[Candle]:
        """The newest `limit` candles, ascending."""
        out: list[Candle] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(self.pk(symbol, interval)),
            "ScanIndexForward": False,
        }
        while len(out) < limit:
            resp = self.table.query(Limit=limit - len(out), **kwargs)
            out.extend(self._candle(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return sorted(out, key=lambda c: c.time)

    def range(self, symbol: str, interval: str, start: int, end: int | None = None) -> list[Candle]:
        """Candles with start ≤ time (< end), ascending, at most MAX_RANGE_ITEMS."""
        cond = Key("pk").eq(self.pk(symbol, interval))
        cond = cond & (Key("sk").between(start, end - 1) if end is not None else Key("sk").gte(start))
        kwargs: dict[str, Any] = {"KeyConditionExpression": cond, "ScanIndexForward": True}
        out: list[Candle] = []
        while len(out) < self.MAX_RANGE_ITEMS:
            resp = self.table.query(**kwargs)
            out.extend(self._candle(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return out[: self.MAX_RANGE_ITEMS]
