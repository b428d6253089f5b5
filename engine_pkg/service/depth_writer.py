"""Writes one batch's depth, ticker and candles to the depth cache in one round trip.

For each symbol a batch touched, one call of `candles.lua` (see its header) sets
`depth:{SYM}` (10 levels, `u` = the book's seq), `ticker:{SYM}` and folds the batch's trades
into `candle:1m:{SYM}` / `candle:closed:1m:{SYM}` — all guarded by the engine seq, so a replay
after a crash never goes backwards nor counts a trade twice. The calls and a final
`PUBLISH depth:changed <JSON list of symbols>` go out as one pipeline (on a cluster-mode cache
the pipeline is split per node by redis-py and the PUBLISH follows it: chalice_app.cache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources

import orjson
import redis

from chalice_app import cache, keys

log = logging.getLogger("supernoba.engine.depth")



def candles_script(client: redis.Redis):
    """`candles.lua` registered with the client (its sha; loaded by `DepthWriter.write`)."""
    source = resources.files("engine_pkg.service").joinpath("candles.lua").read_text()
    return client.register_script(source)


@dataclass
class SymbolUpdate:
    """Everything one batch changed for one symbol."""

    symbol: str
    u: int
    depth_json: bytes = b""
    ticker_json: bytes = b""
    trades: list[tuple[int, str, int, int]] = field(default_factory=list)  # seq, minute, price, qty


class DepthWriter:
    """Applies `SymbolUpdate`s through the Lua script, then publishes the changed symbols."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.script = candles_script(client)
        self._loaded = False  # SCRIPT LOAD before the first batch (not here: no I/O at start-up)

    def write(self, updates: list[SymbolUpdate]) -> None:
        if not updates:
            return
        if not self._loaded:
            # loaded before the first batch so its PUBLISH never precedes its data
            cache.load_script(self.client, self.script)
            self._loaded = True
        try:
            self._write(updates)
        except redis.exceptions.NoScriptError:
            # a node lost its script cache (restart, failover); the script is seq-guarded, so
            # re-running the calls that did apply changes nothing
            log.warning("event=script_reload script=candles.lua sha=%s", self.script.sha)
            cache.load_script(self.client, self.script)
            self._write(updates)

    def _write(self, updates: list[SymbolUpdate]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for up in updates:
            s = up.symbol
            args: list = [s, up.u, up.depth_json, up.ticker_json]
            for seq, minute, p, q in up.trades:
                args += (seq, minute, p, q)
            cache.queue_script(pipe, self.script,
                               [keys.depth(s), keys.ticker(s), keys.candle(s), keys.candle_closed(s)], args)
        cache.execute_and_publish(self.client, pipe, keys.DEPTH_CHANGED_CHANNEL,
                                  orjson.dumps([u.symbol for u in updates]))
