"""Tradable symbols and their admin-set metadata (SPEC §4 `active:symbols`, §5 admin).

`active:symbols` is the set the order router and the WebSocket handlers check;
`removed:symbols` remembers symbols an admin removed: no new orders or replaces, but the
owners of orders still resting in the engine's book can cancel them (re-adding the symbol
resumes trading on the same book);
`symbol:{SYM}:meta` is a hash of the metadata: display_name, tick_size (price must be a
multiple), price_band_pct (max distance from the last trade, 0 = off), min_price,
max_price, created_at (ms). Symbols are validated before they touch a key.

Errors::

    BadRequest  INVALID_SYMBOL
    NotFound    UNKNOWN_SYMBOL
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from chalice_app import keys
from chalice_app.cache import as_str
from chalice_app.errors import BadRequest, NotFound
from chalice_app.models import SymbolSpec

log = logging.getLogger("supernoba.symbols")


@dataclass(frozen=True)
class SymbolMeta:
    symbol: str
    display_name: str
    tick_size: int = 1
    price_band_pct: float = 0
    min_price: int | None = None
    max_price: int | None = None
    created_at: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_valid(symbol: object) -> str:
    if symbol is None or symbol == "":
        raise BadRequest("symbol is required", "INVALID_SYMBOL")
    if not keys.is_valid_symbol(symbol):
        raise BadRequest(f"invalid symbol {str(symbol)[:40]!r}: must match {keys.SYMBOL_PATTERN}",
                         "INVALID_SYMBOL")
    return symbol  # type: ignore[return-value]


class SymbolRegistry:
    def __init__(self, redis_client: redis.Redis) -> None:
        self.r = redis_client

    def is_active(self, symbol: str) -> bool:
        return keys.is_valid_symbol(symbol) and bool(self.r.sismember(keys.ACTIVE_SYMBOLS, symbol))

    def require_active(self, symbol: object) -> str:
        sym = require_valid(symbol)
        if not self.r.sismember(keys.ACTIVE_SYMBOLS, sym):
            raise NotFound(f"unknown symbol {sym}", "UNKNOWN_SYMBOL")
        return sym

    def require_cancellable(self, symbol: object) -> str:
        """An active symbol, or one an admin removed (its resting orders can still be cancelled)."""
        sym = require_valid(symbol)
        pipe = self.r.pipeline(transaction=False)
        pipe.sismember(keys.ACTIVE_SYMBOLS, sym)
        pipe.sismember(keys.REMOVED_SYMBOLS, sym)
        if not any(pipe.execute()):
            raise NotFound(f"unknown symbol {sym}", "UNKNOWN_SYMBOL")
        return sym

    def meta(self, symbol: str) -> SymbolMeta:
        raw = {as_str(k): as_str(v) for k, v in self.r.hgetall(keys.symbol_meta(symbol)).items()}

        def num(name: str, cast: type, default: Any) -> Any:
            try:
                return cast(raw[name]) if raw.get(name) not in (None, "") else default
            except ValueError:
                log.warning("event=bad_symbol_meta symbol=%s field=%s value=%r", symbol, name, raw[name])
                return default

        return SymbolMeta(
            symbol=symbol,
            display_name=raw.get("display_name") or symbol,
            tick_size=max(1, num("tick_size", int, 1)),
            price_band_pct=num("price_band_pct", float, 0),
            min_price=num("min_price", int, None),
            max_price=num("max_price", int, None),
            created_at=num("created_at", int, 0),
        )

    def list(self) -> list[SymbolMeta]:
        symbols = sorted(s for s in (as_str(x) for x in self.r.smembers(keys.ACTIVE_SYMBOLS)) if keys.is_valid_symbol(s))
        return [self.meta(s) for s in symbols]

    def add(self, spec: SymbolSpec) -> tuple[SymbolMeta, bool]:
        """Activate (or update the metadata of) a symbol; returns (meta, created)."""
        if spec.min_price is not None and spec.max_price is not None and spec.min_price > spec.max_price:
            raise BadRequest("min_price is above max_price", "VALIDATION_ERROR")
        key = keys.symbol_meta(spec.symbol)
        existing = self.r.hget(key, "created_at")
        mapping: dict[str, Any] = {
            "display_name": spec.display_name or spec.symbol,
            "tick_size": spec.tick_size,
            "price_band_pct": spec.price_band_pct,
            "min_price": "" if spec.min_price is None else spec.min_price,
            "max_price": "" if spec.max_price is None else spec.max_price,
            "created_at": as_str(existing) if existing is not None else int(time.time() * 1000),
        }
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(key, mapping=mapping)
        pipe.sadd(keys.ACTIVE_SYMBOLS, spec.symbol)
        pipe.srem(keys.REMOVED_SYMBOLS, spec.symbol)
        _, added, _ = pipe.execute()
        log.info("event=symbol_added symbol=%s created=%s tick=%s", spec.symbol, bool(added), spec.tick_size)
        return self.meta(spec.symbol), bool(added)

    def remove(self, symbol: object) -> str:
        sym = require_valid(symbol)
        pipe = self.r.pipeline(transaction=False)
        pipe.srem(keys.ACTIVE_SYMBOLS, sym)
        pipe.delete(keys.symbol_meta(sym))
        removed, _ = pipe.execute()
        if not removed:
            raise NotFound(f"unknown symbol {sym}", "UNKNOWN_SYMBOL")
        self.r.sadd(keys.REMOVED_SYMBOLS, sym)
        log.info("event=symbol_removed symbol=%s", sym)
        return sym
