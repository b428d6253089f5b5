"""Ground truth after a load or a fault: did the exchange lose or double anything?

It reads the whole orders, fills and order-status streams from Kinesis (every shard, from
TRIM_HORIZON), replays the orders stream through a fresh engine (`python -m engine_pkg
replay -`, a separate process) and compares:

- books: `depth:{SYM}` in the depth cache equals the replay's final depth (bids, asks, `u`)
- orders: every order the load had accepted (202) has a final status in the replay
- statuses / fills: every status and fill of the replay is on its stream (duplicates from a
  crash-replay are allowed on a stream; they must be identical events)
- trades: every trade id of the replay is in DynamoDB `trade_history` exactly once, and
  the table holds no trade the replay does not know

`verify(...)` returns a `Verdict`; `Verdict.lost` is the count of anything lost or doubled.
Every loop is bounded (records per shard, seconds per stream).

    VerifyError   a stream, table or cache could not be read at all
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import boto3
import orjson
import redis
from botocore.exceptions import BotoCoreError, ClientError

from chalice_app import keys
from chalice_app.cache import client
from chalice_app.config import Settings
from chalice_app.messages import FINAL_STATUSES

log = logging.getLogger("supernoba.load.verify")


class VerifyError(RuntimeError):
    """A source of truth could not be read."""


@dataclass
class ReplayResult:
    fills: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    depth: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Verdict:
    """What the checks found; every count should be 0."""

    orders_in_stream: int = 0
    trades: int = 0
    symbols: list[str] = field(default_factory=list)
    orders_without_final: int = 0
    books_differing: list[str] = field(default_factory=list)
    levels_compared: int = 0  # price levels of the replay's books compared with the cache (0: empty books)
    statuses_missing: int = 0
    statuses_conflicting: int = 0
    fills_missing: int = 0
    fills_conflicting: int = 0
    trades_missing: int = 0
    trades_duplicated: int = 0
    trades_unknown: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return (self.orders_without_final + len(self.books_differing) + self.statuses_missing
                + self.statuses_conflicting + self.fills_missing + self.fills_conflicting + self.trades_missing
                + self.trades_duplicated + self.trades_unknown)

    @property
    def ok(self) -> bool:
        return self.lost == 0

    def summary(self) -> str:
        return (f"orders in stream {self.orders_in_stream}, trades {self.trades}, symbols {self.symbols}; "
                f"orders without final status {self.orders_without_final}, books differing "
                f"{self.books_differing or 0} ({self.levels_compared} levels compared), statuses missing {self.statuses_missing} "
                f"(conflicting {self.statuses_conflicting}), fills missing {self.fills_missing} "
                f"(conflicting {self.fills_conflicting}), trade_history missing {self.trades_missing} / "
                f"duplicated {self.trades_duplicated} / unknown {self.trades_unknown}")


def read_stream(kinesis, stream: str, *, max_per_shard: int = 2_000_000, timeout: float = 60.0) -> list[bytes]:
    """Every record of `stream`, shard after shard, each shard in order (bounded)."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        shards = kinesis.list_shards(StreamName=stream)["Shards"]
        for shard in shards:
            it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            got = 0
            while it and got < max_per_shard:
                if time.monotonic() > deadline:
                    raise VerifyError(f"reading {stream} took longer than {timeout}s")
                resp = kinesis.get_records(ShardIterator=it, Limit=10_000)
                recs = resp["Records"]
                out += [r["Data"] for r in recs]
                got += len(recs)
                it = resp.get("NextShardIterator")
                if not recs and resp.get("MillisBehindLatest", 0) == 0:
                    break
    except (ClientError, BotoCoreError) as exc:
        raise VerifyError(f"cannot read stream {stream}: {exc}") from exc
    return out


def replay(records: list[bytes], *, timeout: float = 300.0) -> ReplayResult:
    """Run the orders through a fresh engine in another process (`python -m engine_pkg replay -`)."""
    data = b"\n".join(r.replace(b"\n", b" ") for r in records) + b"\n"
    try:
        proc = subprocess.run([sys.executable, "-m", "engine_pkg", "replay", "-"], input=data,
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise VerifyError(f"replay took longer than {timeout}s") from exc
    if proc.returncode != 0:
        raise VerifyError(f"replay failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")
    res = ReplayResult()
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        ev = orjson.loads(line)
        kind = ev.get("e")
        if kind == "fill":
            res.fills.append(ev)
        elif kind == "order":
            res.statuses.append(ev)
        elif kind == "d":
            res.depth[ev["s"]] = ev
    return res


def scan_trades(ddb, table: str, symbols: list[str], *, timeout: float = 60.0) -> Counter:
    """trade id -> how many items of `trade_history` carry it, for these symbols."""
    counts: Counter = Counter()
    deadline = time.monotonic() + timeout
    try:
        for sym in symbols:
            kwargs: dict[str, Any] = {"TableName": table, "KeyConditionExpression": "pk = :pk",
                                      "ExpressionAttributeValues": {":pk": {"S": f"TRADE#{sym}"}}}
            while True:
                if time.monotonic() > deadline:
                    raise VerifyError(f"scanning {table} took longer than {timeout}s")
                resp = ddb.query(**kwargs)
                for item in resp.get("Items", []):
                    sk = item["sk"]["S"]
                    counts[sk.split("#", 1)[1] if "#" in sk else sk] += 1
                if "LastEvaluatedKey" not in resp:
                    break
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    except (ClientError, BotoCoreError) as exc:
        raise VerifyError(f"cannot read table {table}: {exc}") from exc
    return counts


def _status_key(ev: dict[str, Any]) -> tuple:
    return (ev.get("order_id"), ev.get("status"), ev.get("seq"))


def compare(
    replayed: ReplayResult,
    *,
    accepted_order_ids: list[str],
    status_stream: list[dict[str, Any]],
    fill_stream: list[dict[str, Any]],
    depth_cache: dict[str, dict[str, Any] | None],
    trade_counts: Counter,
    verdict: Verdict | None = None,
) -> Verdict:
    """The pure comparison (unit-tested): replay against what the live system produced."""
    v = verdict or Verdict()
    v.trades = len(replayed.fills)
    v.symbols = sorted(replayed.depth)
    final_ids = {ev.get("order_id") for ev in replayed.statuses if ev.get("status") in FINAL_STATUSES}
    missing_final = [oid for oid in accepted_order_ids if oid not in final_ids]
    v.orders_without_final = len(missing_final)
    if missing_final:
        v.details.append(f"accepted orders without a final status: {missing_final[:5]}")

    for sym, want in replayed.depth.items():
        v.levels_compared += len(want.get("b") or []) + len(want.get("a") or [])
        got = depth_cache.get(sym)
        if got is None or got.get("b") != want.get("b") or got.get("a") != want.get("a") or got.get("u") != want.get("u"):
            v.books_differing.append(sym)
            v.details.append(f"book {sym}: cache u={None if got is None else got.get('u')} "
                             f"b={None if got is None else got.get('b')[:3]} a={None if got is None else got.get('a')[:3]}"
                             f" / replay u={want.get('u')} b={want.get('b')[:3]} a={want.get('a')[:3]}")

    live_status = {}
    for ev in status_stream:
        live_status.setdefault(_status_key(ev), ev)
    for ev in replayed.statuses:
        got = live_status.get(_status_key(ev))
        if got is None:
            v.statuses_missing += 1
        elif {k: got.get(k) for k in ("filled", "remaining", "reason", "price")} != \
                {k: ev.get(k) for k in ("filled", "remaining", "reason", "price")}:
            v.statuses_conflicting += 1
    if v.statuses_missing:
        v.details.append(f"{v.statuses_missing} statuses of the replay are not on the status stream")

    live_fill = {}
    for ev in fill_stream:
        prev = live_fill.setdefault(ev.get("trade_id"), ev)
        if prev is not ev and (prev.get("p"), prev.get("q"), prev.get("maker_order_id")) != \
                (ev.get("p"), ev.get("q"), ev.get("maker_order_id")):
            v.fills_conflicting += 1
    replay_ids = set()
    for ev in replayed.fills:
        tid = ev.get("trade_id")
        replay_ids.add(tid)
        got = live_fill.get(tid)
        if got is None:
            v.fills_missing += 1
        elif (got.get("p"), got.get("q"), got.get("maker_order_id"), got.get("taker_order_id")) != \
                (ev.get("p"), ev.get("q"), ev.get("maker_order_id"), ev.get("taker_order_id")):
            v.fills_conflicting += 1
        n = trade_counts.get(tid, 0)
        if n == 0:
            v.trades_missing += 1
        elif n > 1:
            v.trades_duplicated += n - 1
    v.trades_unknown = sum(n for tid, n in trade_counts.items() if tid not in replay_ids)
    if v.trades_missing or v.trades_duplicated or v.trades_unknown:
        v.details.append(f"trade_history: missing {v.trades_missing}, duplicated {v.trades_duplicated}, "
                         f"unknown {v.trades_unknown}")
    return v


def verify(settings: Settings, accepted_order_ids: list[str], *, settle_timeout: float = 30.0) -> Verdict:
    """Read everything and compare. Waits (bounded) for the trades to reach DynamoDB."""
    session = boto3.Session(region_name=settings.aws_region)
    kinesis = session.client("kinesis")
    ddb = session.client("dynamodb")
    cache = client(settings.depth_cache_url, settings.cache_cluster_mode, socket_timeout=5)
    orders = read_stream(kinesis, settings.orders_stream)
    replayed = replay(orders)
    symbols = sorted(replayed.depth)
    deadline = time.monotonic() + settle_timeout
    while True:  # the engine, the fills pump and the DynamoDB writes catch up (bounded)
        fills = [orjson.loads(r) for r in read_stream(kinesis, settings.fills_stream)]
        statuses = [orjson.loads(r) for r in read_stream(kinesis, settings.status_stream)]
        try:
            depth = {}
            for sym in symbols:
                raw = cache.get(keys.depth(sym))
                depth[sym] = orjson.loads(raw) if raw else None
        except redis.RedisError as exc:
            raise VerifyError(f"cannot read the depth cache: {exc}") from exc
        counts = scan_trades(ddb, settings.trade_table, symbols)
        v = compare(replayed, accepted_order_ids=accepted_order_ids, status_stream=statuses,
                    fill_stream=fills, depth_cache=depth, trade_counts=counts)
        v.orders_in_stream = len(orders)
        if v.ok or time.monotonic() > deadline:
            return v
        log.info("event=verify_waiting %s", v.summary())
        time.sleep(1.0)
