"""Writes one batch's depth, ticker and candles to the depth cache in one round trip.

For each symbol a batch touched, one call of `candles.lua` (see its header) sets
`depth:{SYM}` (10 levels, `u` = the book's seq), `ticker:{SYM}` and folds the batch's trades
into `candle:1m:{SYM}` / `candle:closed:1m:{SYM}` — all guarded by the engine seq, so a replay
after a crash never goes backwards nor counts a trade twice. The calls and a final
`PUBLISH depth:changed <JSON list of symbols>` go out as one pipeline (on a cluster-mode cache
the pipeline is split per node by redis-py and the PUBLISH follows it: chalice_app.cache).

`close_candles` closes open 1-minute candles by time (`candle_close.lua`, one call per
symbol, one pipeline, then the same PUBLISH naming the symbols checked, so the streamer
reads the change at once).

`missing` and `rebuild` serve `depth_rebuild`: which of the keys asked about are gone (one
round trip when none is: a count per multi-key EXISTS), and the write-back of keys found
missing (depth through the same seq-guarded script, the ticker with SET NX, the candle
hash's replay guard with HSETNX), then the same PUBLISH.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
import redis

from chalice_app import cache, keys

log = logging.getLogger("supernoba.engine.depth")

#: Keys per multi-key EXISTS of `DepthWriter.missing` on a single node.
EXISTS_CHUNK = 1000



def candles_script(client: redis.Redis, name: str = "candles.lua"):
    """`candles.lua` (or another script of this package) registered with the client (its sha;
    loaded by `DepthWriter.write` / `close_candles`)."""
    source = resources.files("engine_pkg.service").joinpath(name).read_text()
    return client.register_script(source)


@dataclass
class SymbolUpdate:
    """Everything one batch changed for one symbol."""

    symbol: str
    u: int
    depth_json: bytes = b""
    ticker_json: bytes = b""
    trades: list[tuple[int, str, int, int]] = field(default_factory=list)  # seq, minute, price, qty
    now_minute: str = ""  # the engine's current minute (candles.lua: a late trade of a closed minute)


def _script_keys(symbol: str) -> list[str]:
    """KEYS of candles.lua for one symbol."""
    return [keys.depth(symbol), keys.ticker(symbol), keys.candle(symbol), keys.candle_closed(symbol)]


class DepthWriter:
    """Applies `SymbolUpdate`s through the Lua script, then publishes the changed symbols."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.script = candles_script(client)
        self._loaded = False  # SCRIPT LOAD before the first batch (not here: no I/O at start-up)
        self.close_script = candles_script(client, "candle_close.lua")
        self._close_loaded = False
        self._names: dict[str, tuple[str, str, str]] = {}  # symbol -> its depth, ticker, candle key

    def write(self, updates: list[SymbolUpdate]) -> None:
        if updates:
            self._with_script(self._write, updates)

    def _with_script(self, run: Callable[..., None], *args: Any) -> None:
        """``run(*args)`` with candles.lua loaded: before the first call (so its PUBLISH never
        precedes its data), and again when a node lost its script cache (restart, failover);
        the script is seq-guarded, so re-running the calls that did apply changes nothing."""
        if not self._loaded:
            cache.load_script(self.client, self.script)
            self._loaded = True
        try:
            run(*args)
        except redis.exceptions.NoScriptError:
            log.warning("event=script_reload script=candles.lua sha=%s", self.script.sha)
            cache.load_script(self.client, self.script)
            run(*args)

    def _write(self, updates: list[SymbolUpdate]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for up in updates:
            s = up.symbol
            args: list = [s, up.u, up.depth_json, up.ticker_json]
            for seq, minute, p, q in up.trades:
                args += (seq, minute, p, q)
            if up.trades and up.now_minute:
                args.append(up.now_minute)
            cache.queue_script(pipe, self.script, _script_keys(s), args)
        cache.execute_and_publish(self.client, pipe, keys.DEPTH_CHANGED_CHANNEL,
                                  orjson.dumps([u.symbol for u in updates]))

    def close_candles(self, symbols: list[str], cutoff: str, first: str = "") -> dict[str, str]:
        """Close the open 1-minute candle of each symbol whose minute is before `cutoff` and not
        before `first` (`YYYYMMDDHHMM`; "" = no lower bound), then PUBLISH the symbols checked.
        Returns {symbol: open minute} of the symbols whose candle is still open."""
        if not symbols:
            return {}
        if not self._close_loaded:
            cache.load_script(self.client, self.close_script)
            self._close_loaded = True
        try:
            replies = self._close(symbols, cutoff, first)
        except redis.exceptions.NoScriptError:
            log.warning("event=script_reload script=candle_close.lua sha=%s", self.close_script.sha)
            cache.load_script(self.client, self.close_script)
            replies = self._close(symbols, cutoff, first)  # idempotent: a closed candle is not there any more
        return {s: cache.as_str(reply) for s, reply in zip(symbols, replies, strict=True) if reply}

    def _close(self, symbols: list[str], cutoff: str, first: str) -> list:
        pipe = self.client.pipeline(transaction=False)
        for s in symbols:
            cache.queue_script(pipe, self.close_script, [keys.candle(s), keys.candle_closed(s)], [s, cutoff, first])
        return cache.execute_and_publish(self.client, pipe, keys.DEPTH_CHANGED_CHANNEL, orjson.dumps(symbols))

    def _keys_of(self, symbol: str) -> tuple[str, str, str]:
        names = self._names.get(symbol)
        if names is None:
            names = self._names[symbol] = (keys.depth(symbol), keys.ticker(symbol), keys.candle(symbol))
        return names

    def missing(self, symbols: Sequence[str], traded: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
        """(symbols without `depth:{SYM}`, traded symbols without `ticker:{SYM}`, traded symbols
        without `candle:1m:{SYM}`). A symbol that traded always has the candle hash: closing a
        candle by time keeps its `seq`."""
        depth = {self._keys_of(s)[0]: s for s in symbols}
        ticker = {self._keys_of(s)[1]: s for s in traded}
        candle = {self._keys_of(s)[2]: s for s in traded}
        gone = set(self._absent([*depth, *ticker, *candle]))
        return ([s for k, s in depth.items() if k in gone], [s for k, s in ticker.items() if k in gone],
                [s for k, s in candle.items() if k in gone])

    def _absent(self, names: list[str]) -> list[str]:
        """The keys of `names` (distinct) that do not exist. Single node: one pipeline of
        multi-key EXISTS (a count per `EXISTS_CHUNK` keys, ~10x cheaper than one EXISTS a key),
        then single-key EXISTS only for a chunk that came up short. A cluster refuses a
        multi-key EXISTS across slots: one single-key EXISTS a key, in one pipeline."""
        if not names:
            return []
        suspects = names
        if not cache.is_cluster(self.client):
            pipe = self.client.pipeline(transaction=False)
            chunks = [names[i:i + EXISTS_CHUNK] for i in range(0, len(names), EXISTS_CHUNK)]
            for chunk in chunks:
                pipe.exists(*chunk)
            counts = pipe.execute()
            suspects = [k for chunk, n in zip(chunks, counts, strict=True) if n < len(chunk) for k in chunk]
            if not suspects:
                return []
        pipe = self.client.pipeline(transaction=False)
        for k in suspects:
            pipe.exists(k)
        return [k for k, found in zip(suspects, pipe.execute(), strict=True) if not found]

    def rebuild(self, updates: list[SymbolUpdate], candle_guards: Collection[str] = ()) -> None:
        """Write back keys found missing, then PUBLISH the symbols. Per update: a `depth_json`
        goes through `candles.lua` without trades (so it is still replaced only when `u` is not
        older than a stored one), a `ticker_json` is SET NX (never over a ticker written since);
        for a symbol in `candle_guards`, `candle:1m:{SYM}` gets `seq` = `u` with HSETNX: no
        open candle (readers see none), but a replay after a crash cannot fold trades up to `u`
        in again. Every write is idempotent, so a NoScriptError re-runs the whole pipeline."""
        if updates:
            self._with_script(self._rebuild, updates, candle_guards)

    def _rebuild(self, updates: list[SymbolUpdate], candle_guards: Collection[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for up in updates:
            s = up.symbol
            if up.depth_json:
                cache.queue_script(pipe, self.script, _script_keys(s), [s, up.u, up.depth_json, b""])
            if s in candle_guards:
                pipe.hsetnx(keys.candle(s), "seq", up.u)
            if up.ticker_json:
                pipe.set(keys.ticker(s), up.ticker_json, nx=True)
        cache.execute_and_publish(self.client, pipe, keys.DEPTH_CHANGED_CHANNEL,
                                  orjson.dumps([u.symbol for u in updates]))
