"""The order router: REST order requests → one order command on `supernoba-orders` (SPEC §2).

Checks made here, before anything is sent (the engine re-validates everything):

- the symbol is well-formed and in `active:symbols` (404 UNKNOWN_SYMBOL otherwise);
- LIMIT prices are a multiple of the symbol's tick size, inside its min/max price and,
  when `price_band_pct` > 0, within that percentage of the last trade (`ticker:{SYM}`);
- MARKET: the tif becomes IOC unless it is FOK, and the order is refused up front
  (409 NO_LIQUIDITY) when the opposite side of `depth:{SYM}` is empty;
- `client_order_id`: the first request claims `idem:USER:COID` with SET NX (24 h TTL,
  state pending), sends, then marks it sent; a retry with the same body gets the same
  order_id and sends nothing — unless the claim stayed pending for PENDING_STALE_MS (the
  first Lambda died mid-way), then the retry resends the same order_id once. A PutRecord
  that fails (503) leaves the claim marked failed, with its order_id: the record may have
  reached the stream all the same (a read timeout), so the retry resends that same order_id
  and the engine applies it at most once. A retry that arrives while the first request's
  PutRecord is still in flight waits for its outcome (up to PENDING_WAIT_S): sent → the same
  order_id; failed → it resends that order_id; still undecided → 503, so that a 202 always
  names an order on the stream.
  The same id with a different body is 409 IDEMPOTENCY_CONFLICT.

Order ids are sortable and unique: `ord_` + 26 Crockford base-32 characters (48-bit
millisecond time + 80-bit random part, incremented within one millisecond — a ULID).

Errors (chalice_app.errors)::

    BadRequest   INVALID_SYMBOL, INVALID_ORDER_ID, INVALID_TICK, PRICE_OUT_OF_BAND,
                 PRICE_REQUIRED, VALIDATION_ERROR
    NotFound     UNKNOWN_SYMBOL
    Conflict     NO_LIQUIDITY, IDEMPOTENCY_CONFLICT
    Unavailable  ORDER_STREAM_UNAVAILABLE (Kinesis refused; botocore error chained)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from botocore.exceptions import BotoCoreError, ClientError

from chalice_app import keys
from chalice_app.errors import BadRequest, Conflict, Unavailable
from chalice_app.messages import dumps, order_command
from chalice_app.models import PlaceOrder, ReplaceOrder
from chalice_app.symbols import SymbolMeta, SymbolRegistry

log = logging.getLogger("supernoba.orders")

ORDER_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
IDEMPOTENCY_TTL_S = 24 * 3600
#: a claimed client_order_id whose PutRecord is unconfirmed for this long is resent on retry
PENDING_STALE_MS = 30_000
#: how long a retry waits for an in-flight first attempt's PutRecord before answering 503
PENDING_WAIT_S = 3.0
PENDING_POLL_S = 0.02
#: SET the key to ARGV[2] (EX ARGV[3]) only if it still holds ARGV[1]; 1 when it did.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _claim_value(order_id: str, fingerprint: str, state: str) -> bytes:
    """An `idem:` claim: state P (PutRecord pending), S (sent) or F (PutRecord failed)."""
    return dumps({"id": order_id, "fp": fingerprint, "st": state, "at": _now_ms()})


class OrderIdGenerator:
    """ULID-style ids: sortable by time, monotonic within one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def __call__(self, now_ms: int | None = None) -> str:
        with self._lock:
            ms = int(time.time() * 1000) if now_ms is None else now_ms
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = (self._last_rand + 1) & ((1 << 80) - 1)
            else:
                rand = int.from_bytes(os.urandom(10), "big") >> 1  # leave room to increment
            self._last_ms, self._last_rand = ms, rand
        value = (ms << 80) | rand
        chars = []
        for _ in range(26):
            chars.append(_CROCKFORD[value & 31])
            value >>= 5
        return "ord_" + "".join(reversed(chars))


@dataclass(frozen=True)
class Queued:
    order_id: str
    status: str = "QUEUED"
    duplicate: bool = False

    def body(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "status": self.status}


def _now_ms() -> int:
    return int(time.time() * 1000)


class OrderRouter:
    def __init__(self, redis_client: redis.Redis, kinesis: Any, stream: str, symbols: SymbolRegistry) -> None:
        self.r = redis_client
        self.kinesis = kinesis
        self.stream = stream
        self.symbols = symbols
        self.new_id = OrderIdGenerator()

    # ------------------------------------------------------------------ checks
    def _check_price(self, meta: SymbolMeta, price: int) -> None:
        if price % meta.tick_size:
            raise BadRequest(f"price {price} is not a multiple of the tick size {meta.tick_size}", "INVALID_TICK")
        if meta.min_price is not None and price < meta.min_price:
            raise BadRequest(f"price {price} is below the minimum {meta.min_price}", "PRICE_OUT_OF_BAND")
        if meta.max_price is not None and price > meta.max_price:
            raise BadRequest(f"price {price} is above the maximum {meta.max_price}", "PRICE_OUT_OF_BAND")
        if meta.price_band_pct > 0:
            last = self._last_price(meta.symbol)
            if last and abs(price - last) * 100 > meta.price_band_pct * last:
                raise BadRequest(
                    f"price {price} is more than {meta.price_band_pct}% away from the last price {last}",
                    "PRICE_OUT_OF_BAND",
                )

    def _last_price(self, symbol: str) -> int | None:
        raw = self.r.get(keys.ticker(symbol))
        if raw is None:
            return None
        try:
            p = orjson.loads(raw).get("p")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return int(p) if isinstance(p, int | float) and not isinstance(p, bool) and p > 0 else None

    def _opposite_side_empty(self, symbol: str, is_buy: bool) -> bool:
        raw = self.r.get(keys.depth(symbol))
        if raw is None:
            return True
        try:
            book = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("event=bad_depth symbol=%s", symbol)
            return True
        side = book.get("a" if is_buy else "b") if isinstance(book, dict) else None
        return not side

    # ------------------------------------------------------------------ send
    def _put(self, command: dict[str, Any]) -> None:
        try:
            self.kinesis.put_record(StreamName=self.stream, Data=dumps(command), PartitionKey=command["symbol"])
        except (ClientError, BotoCoreError) as exc:
            log.error("event=order_put_failed symbol=%s order=%s error=%s",
                      command["symbol"], command["order_id"], exc)
            raise Unavailable("the order stream is unavailable; retry", "ORDER_STREAM_UNAVAILABLE") from exc
        log.info("event=order_queued action=%s symbol=%s order=%s user=%s",
                 command["action"], command["symbol"], command["order_id"], command["user_id"])

    @staticmethod
    def check_order_id(order_id: str) -> str:
        if not isinstance(order_id, str) or not ORDER_ID_RE.fullmatch(order_id):
            raise BadRequest("order_id must match [A-Za-z0-9._:-]{1,64}", "INVALID_ORDER_ID")
        return order_id

    # ------------------------------------------------------------------ actions
    def place(self, user_id: str, req: PlaceOrder) -> Queued:
        symbol = self.symbols.require_active(req.symbol)
        is_buy = req.side == "BUY"
        market = req.type == "MARKET"
        tif = ("FOK" if req.tif == "FOK" else "IOC") if market else req.tif
        price = None if market else req.price
        if not market and price is None:
            raise BadRequest("price is required for a LIMIT order", "PRICE_REQUIRED")

        order_id = self.new_id()
        idem_key = fingerprint = None
        fresh = True  # this request's own order (else a resend of an earlier attempt's)
        if req.client_order_id:
            idem_key = keys.idempotency(user_id, req.client_order_id)
            fingerprint = hashlib.sha256(dumps(req.model_dump(exclude={"client_order_id"}))).hexdigest()[:16]
            claimed, must_send = self._claim(idem_key, fingerprint, order_id, req.client_order_id)
            if not must_send:
                log.info("event=order_retry symbol=%s order=%s client_order_id=%s",
                         symbol, claimed, req.client_order_id)
                return Queued(claimed, duplicate=True)
            # a resend of an earlier attempt's order is answered from its claim: the market checks
            # may have changed their answer since it went
            fresh, order_id = claimed == order_id, claimed
        if fresh:
            try:
                self._check_market(symbol, is_buy, price)
            except Exception:  # refused, or the cache failed: nothing was sent, so the id is free again
                if idem_key is not None:
                    self.r.delete(idem_key)
                raise

        command = order_command(
            "ADD", symbol, order_id, user_id, ts=_now_ms(), is_buy=is_buy, price=price,
            quantity=req.quantity, type=req.type, tif=tif,
        )
        try:
            self._put(command)
        except Unavailable:
            if idem_key:
                # the record may have reached the stream all the same (a read timeout): the
                # retry resends this same order_id, which the engine applies at most once
                self.r.set(idem_key, _claim_value(order_id, fingerprint, "F"), ex=IDEMPOTENCY_TTL_S)
            raise
        if idem_key:
            self.r.set(idem_key, _claim_value(order_id, fingerprint, "S"), ex=IDEMPOTENCY_TTL_S)
        return Queued(order_id)

    def _claim(self, idem_key: str, fingerprint: str, order_id: str, client_order_id: str) -> tuple[str, bool]:
        """(order_id, must_send) for a request with a client_order_id.

        must_send is True for the first request (it claimed the id with ``order_id``), and for
        the one retry that takes over a claim whose PutRecord failed (503) or stayed pending for
        PENDING_STALE_MS (its Lambda died): that retry sends the earlier order_id again — if the
        first copy did reach the stream after all, the engine refuses the second as
        DUPLICATE_ORDER_ID, so it is never applied twice. False: the earlier request's record is
        on the stream; answer with its order_id and send nothing.
        """
        deadline = time.monotonic() + PENDING_WAIT_S
        while True:
            claim = _claim_value(order_id, fingerprint, "P")
            if self.r.set(idem_key, claim, nx=True, ex=IDEMPOTENCY_TTL_S):
                return order_id, True
            prev = self._previous(idem_key, fingerprint, client_order_id)
            if prev is not None and prev[1] != "pending":
                return prev[0], prev[1] == "resend"
            # in flight (or released a moment ago): wait for the first attempt's outcome
            if time.monotonic() >= deadline:
                raise Unavailable(f"an earlier request with client_order_id {client_order_id} is still "
                                  "being queued; retry", "ORDER_STREAM_UNAVAILABLE")
            time.sleep(PENDING_POLL_S)

    def _check_market(self, symbol: str, is_buy: bool, price: int | None) -> None:
        """The checks against the market's state: MARKET needs an opposite side (409
        NO_LIQUIDITY); a LIMIT price the symbol's tick, min/max and band."""
        if price is None:
            if self._opposite_side_empty(symbol, is_buy):
                raise Conflict(f"no {'asks' if is_buy else 'bids'} on {symbol} for a market order", "NO_LIQUIDITY")
        else:
            self._check_price(self.symbols.meta(symbol), price)

    def _previous(self, idem_key: str, fingerprint: str, client_order_id: str) -> tuple[str, str] | None:
        """(order_id, state) of an earlier request with this client_order_id, or None when its
        claim vanished meanwhile (its PutRecord failed, or the key expired).

        state: "sent" (on the stream), "pending" (its PutRecord in flight), or "resend" (this
        caller took over a failed claim, or one pending for PENDING_STALE_MS, and must send it).
        """
        raw = self.r.get(idem_key)
        if raw is None:
            return None
        try:
            prev = orjson.loads(raw)
            prev_id, prev_fp, state, at = prev["id"], prev["fp"], prev["st"], int(prev["at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.error("event=bad_idempotency_record key=%s", idem_key)
            raise Unavailable("the idempotency record is unreadable; retry", "ORDER_STREAM_UNAVAILABLE") from None
        if prev_fp != fingerprint:
            raise Conflict(f"client_order_id {client_order_id} was already used for a different order",
                           "IDEMPOTENCY_CONFLICT")
        if state not in ("P", "F"):
            return prev_id, "sent"
        if state == "F" or _now_ms() - at > PENDING_STALE_MS:
            claim = _claim_value(prev_id, fingerprint, "P")
            # take the claim over with a compare-and-set: only one retry resends, and a retry
            # that lost the race never overwrites the winner's newer claim
            if self.r.eval(_TAKE_OVER, 1, idem_key, raw, claim, IDEMPOTENCY_TTL_S):
                return prev_id, "resend"
        return prev_id, "pending"

    def cancel(self, user_id: str, order_id: str, symbol: str | None) -> Queued:
        self.check_order_id(order_id)
        if not symbol:
            raise BadRequest("query parameter symbol is required", "INVALID_SYMBOL")
        sym = self.symbols.require_cancellable(symbol)  # a removed symbol's orders stay cancellable
        self._put(order_command("CANCEL", sym, order_id, user_id, ts=_now_ms()))
        return Queued(order_id)

    def replace(self, user_id: str, order_id: str, req: ReplaceOrder) -> Queued:
        self.check_order_id(order_id)
        sym = self.symbols.require_active(req.symbol)
        if req.price is None and req.quantity is None:
            raise BadRequest("a replace needs a new price and/or quantity", "VALIDATION_ERROR")
        if req.price is not None:
            self._check_price(self.symbols.meta(sym), req.price)
        self._put(order_command("REPLACE", sym, order_id, user_id, ts=_now_ms(),
                                price=req.price, quantity=req.quantity))
        return Queued(order_id)
