"""Kinesis handlers' logic: persist fills and tell users about their fills and orders (SPEC §3, §6, §7).

Fills (`supernoba-fills`): every valid fill becomes one `trade_history` item — pk
`TRADE#SYM`, sk `<13-digit ms>#<trade_id>` — written with BatchWriteItem in chunks of 25
(boto3's batch writer, which also resends unprocessed items). The key is derived from
the fill itself, so a redelivered batch overwrites the same items: idempotent. After the
write, a `fill` event goes to every connection of the maker and of the taker: the record's
§3 fields, with the other side's user id withheld (`null`) so that counterparties stay
anonymous to each other.

Order status (`supernoba-order-status`): the `order` event goes to every connection of
`user_id`.

A record that is not JSON or not a well-formed event is logged and skipped: one bad
record never fails the batch (which would make Lambda redeliver it forever). A gone
connection is removed by `ws_send`. A DynamoDB outage does raise, so that Lambda retries
the batch — the writes are idempotent and the notifications come after them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import redis

from chalice_app import keys
from chalice_app.connections import user_connection_ids
from chalice_app.messages import E_FILL, E_ORDER
from chalice_app.ws_send import SendResult, WsSender

log = logging.getLogger("supernoba.notify")


@dataclass
class BatchReport:
    records: int = 0
    bad: int = 0
    written: int = 0
    sent: int = 0
    gone: int = 0
    failed: int = 0
    duplicates: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _id(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v.encode()) <= 64


def parse_fill(data: bytes) -> dict[str, Any] | None:
    try:
        ev = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(ev, dict) or ev.get("e") != E_FILL or not keys.is_valid_symbol(ev.get("s")):
        return None
    # t < 2^53 as in order commands (SPEC §3a); the sort key pads it to 13 digits (ms until 2286)
    if not all(_int(ev.get(f)) for f in ("p", "q", "t")) or not 0 <= ev["t"] < 2**53:
        return None
    if not all(_id(ev.get(f)) for f in ("trade_id", "maker_user_id", "taker_user_id")):
        return None
    # a record the engine could not have written (oversize strings, a bad side) is skipped as
    # bad rather than failing the batch on DynamoDB's item size limit
    if ev.get("taker_side") not in ("BUY", "SELL") or not all(
            ev.get(f) is None or _id(ev.get(f)) for f in ("maker_order_id", "taker_order_id")):
        return None
    return ev


def parse_status(data: bytes) -> dict[str, Any] | None:
    try:
        ev = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(ev, dict) or ev.get("e") != E_ORDER or not _id(ev.get("user_id")):
        return None
    return ev


def fill_for(fill: dict[str, Any], user_id: str) -> bytes:
    """The fill as its party ``user_id`` receives it (SPEC §6): the §3 fields, with the other
    side's user id withheld (null), as an exchange keeps counterparties anonymous."""
    mine = dict(fill)
    for field in ("maker_user_id", "taker_user_id"):
        if mine[field] != user_id:
            mine[field] = None
    return orjson.dumps(mine)


def trade_item(fill: dict[str, Any]) -> dict[str, Any]:
    sym = fill["s"]
    item: dict[str, Any] = {
        "pk": f"TRADE#{sym}",
        "sk": f"{fill['t']:013d}#{fill['trade_id']}",
        "symbol": sym,
        "trade_id": fill["trade_id"],
        "price": Decimal(fill["p"]),
        "quantity": Decimal(fill["q"]),
        "t": Decimal(fill["t"]),
    }
    for f in ("maker_order_id", "maker_user_id", "taker_order_id", "taker_user_id", "taker_side"):
        if isinstance(fill.get(f), str):
            item[f] = fill[f]
    if _int(fill.get("seq")):
        item["seq"] = Decimal(fill["seq"])
    return item


class Notifier:
    def __init__(self, redis_client: redis.Redis, sender: WsSender, trade_table: Any) -> None:
        self.r = redis_client
        self.sender = sender
        self.trades = trade_table

    def _deliver(self, per_user: list[tuple[str, bytes]], report: BatchReport) -> None:
        """Send each (user_id, payload) to all that user's connections, concurrently."""
        if not per_user:
            return
        if not self.sender.configured:
            log.warning("event=notify_skipped reason=no_websocket_endpoint n=%d", len(per_user))
            return
        conn_cache: dict[str, list[str]] = {}
        pairs: list[tuple[str, bytes]] = []
        for user_id, payload in per_user:
            if user_id not in conn_cache:
                conn_cache[user_id] = sorted(user_connection_ids(self.r, user_id))
            pairs.extend((conn_id, payload) for conn_id in conn_cache[user_id])
        for (conn_id, _), result in zip(pairs, self.sender.send_batch(pairs), strict=True):
            if result is SendResult.SENT:
                report.sent += 1
            elif result is SendResult.GONE:
                report.gone += 1
            else:
                report.failed += 1
                log.warning("event=notify_failed conn=%s", conn_id)

    def handle_fills(self, records: Iterable[bytes]) -> BatchReport:
        report = BatchReport()
        fills: list[dict[str, Any]] = []
        seen: set[str] = set()
        for data in records:
            report.records += 1
            fill = parse_fill(data)
            if fill is None:
                report.bad += 1
                log.error("event=bad_fill_record data=%r", bytes(data)[:200])
                continue
            if fill["trade_id"] in seen:  # delivered twice in one batch: store and notify once
                report.duplicates += 1
                continue
            seen.add(fill["trade_id"])
            fills.append(fill)
        if fills:
            with self.trades.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
                for fill in fills:
                    batch.put_item(Item=trade_item(fill))
            report.written = len(fills)
        per_user: list[tuple[str, bytes]] = []
        for fill in fills:
            for user_id in dict.fromkeys((fill["maker_user_id"], fill["taker_user_id"])):
                per_user.append((user_id, fill_for(fill, user_id)))
            log.info("event=fill_stored symbol=%s trade=%s maker=%s taker=%s",
                     fill["s"], fill["trade_id"], fill["maker_user_id"], fill["taker_user_id"])
        self._deliver(per_user, report)
        return report

    def handle_statuses(self, records: Iterable[bytes]) -> BatchReport:
        report = BatchReport()
        per_user: list[tuple[str, bytes]] = []
        for data in records:
            report.records += 1
            ev = parse_status(data)
            if ev is None:
                report.bad += 1
                log.error("event=bad_status_record data=%r", bytes(data)[:200])
                continue
            per_user.append((ev["user_id"], data))
            log.info("event=order_notified user=%s order=%s status=%s reason=%s",
                     ev["user_id"], ev.get("order_id"), ev.get("status"), ev.get("reason"))
        self._deliver(per_user, report)
        return report
