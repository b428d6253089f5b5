"""Reads what the streamer pushes from the depth cache, in one pipelined round trip per tick.

Per tick, for the symbols in `subscribed:symbols` (as of the last membership read), one
`READ_SCRIPT` EVAL per 100 symbols returns each symbol's `depth:{SYM}`, `ticker:{SYM}` and
`candle:1m:{SYM}` (or, on a tick woken by the engine's `depth:changed`, only the symbols it
named), plus any writes queued since the last tick (roll-ups, the anonymous-tier cache), so
the steady state is exactly one round trip and its size does not grow with the number of
connections. On a cluster-mode cache, where one command may not span slots, it is GET /
GET / HGETALL per symbol instead (redis-py splits the pipeline into one round trip per node).
A symbol whose raw replies equal the last read's is not parsed again and keeps its
`SymbolData` object, which diff.py skips by identity.

Who is subscribed (`subscribed:symbols`, `realtime:connections`, `symbol:{SYM}:main|sub`)
is cached and re-read in the same pipeline (the same EVAL) only

- when the ws handlers announce a change (`connections.CONNECTIONS_CHANGED_CHANNEL`,
  `mark_dirty()`), at most every `membership_min_gap` seconds (a subscribe storm costs
  one re-read per gap, not one per subscriber), and
- every `membership_every` seconds anyway (a missed pub/sub message heals itself).

Unchanged sets keep their identity (`is`) across re-reads, so per-tier partitions computed
from them (diff.py) are reused. Each re-read also takes (reads and deletes) every symbol's
`symbol:{SYM}:fresh`, the connections a subscribe marked as owed that symbol's current state
(`Snapshot.fresh`): a repeated subscribe changes no set, so only this marker shows it. A
symbol that just joined `subscribed:symbols` costs one extra round trip for that symbol on
the tick it appears. Payloads the engine wrote badly are
logged, counted (`bad_data`, once per distinct bad payload) and treated as absent; they never
stop a tick. A candle hash without any of `o h l c v t`, whatever else it holds (the engine
closed the minute by time and keeps only `seq` and `ct`, the closed minute; or its depth-cache
rebuild wrote only `seq`), is no open candle, not bad data: `SymbolData.candle` is None and
`closed_t` = `ct` (None without one). Some but not all of those fields is bad data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
import redis.asyncio as aredis

from chalice_app import cache, keys

log = logging.getLogger("supernoba.streamer.reader")

CANDLE_FIELDS = ("o", "h", "l", "c", "v", "t")


@dataclass
class SymbolData:
    symbol: str
    depth: dict | None = None
    ticker: dict | None = None
    candle: dict[str, str] | None = None
    closed_t: str | None = None  # the hash's `ct`: the last minute the engine closed by time
    main: frozenset[str] = frozenset()
    sub: frozenset[str] = frozenset()


@dataclass
class Snapshot:
    """One tick's view of the depth cache. `membership` changes whenever any subscriber set
    of this snapshot differs from the previous snapshot's."""

    read_at: float
    realtime: frozenset[str]
    symbols: dict[str, SymbolData] = field(default_factory=dict)
    membership: int = 0
    partial: bool = False  # only some subscribed symbols were read (those the engine named)
    #: symbol -> connections that (re)subscribed to it since the last membership read (taken
    #: from `symbol:{SYM}:fresh`): owed its current state once, even if served before
    fresh: dict[str, frozenset[str]] = field(default_factory=dict)


#: A tick's reads of up to `SCRIPT_CHUNK` symbols as ONE command on a single-node cache.
#: KEYS = n depth, n ticker, n candle (+ n main, n sub, n fresh when ARGV[2] == '1'); ARGV[1] = n.
#: Replies per symbol: {depth or nil, ticker or nil, HGETALL flat list[, SMEMBERS main, SMEMBERS
#: sub, the fresh set's members]}; the fresh set is deleted once read (the script is atomic, so a
#: subscribe's marker is either taken by this read or left whole for the next).
#: One EVAL instead of 2 MGETs + 100 HGETALLs: redis-py's per-command packing and reply
#: handling was most of a 50 ms full read's CPU (docs/streamer.md, "Read cost").
#: A key holding the wrong type (or any per-key error) must not fail the whole read: the
#: script turns it into data that fails parsing (a string starting with `!`, a hash without
#: the candle's fields), so it is logged as that symbol's bad data; a bad set reads as empty.
READ_SCRIPT = """
local function str(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then return '!' .. v.err end
  return v or false
end
local function coll(cmd, key, bad)
  local v = redis.pcall(cmd, key)
  if type(v) == 'table' and v.err then return bad(v.err) end
  return v
end
local function bad_hash(err) return {'!error', err} end
local function bad_set(err) return {} end
local n = tonumber(ARGV[1])
local sets = ARGV[2] == '1'
local out = {}
for i = 1, n do
  local row = {str(KEYS[i]), str(KEYS[n + i]), coll('HGETALL', KEYS[2 * n + i], bad_hash)}
  if sets then
    row[4] = coll('SMEMBERS', KEYS[3 * n + i], bad_set)
    row[5] = coll('SMEMBERS', KEYS[4 * n + i], bad_set)
    row[6] = coll('SMEMBERS', KEYS[5 * n + i], bad_set)
    if #row[6] > 0 then redis.call('DEL', KEYS[5 * n + i]) end
  end
  out[i] = row
end
return out
"""

#: Symbols per EVAL: bounds how long one script holds the (single-threaded) server, ≈ 1.2 ms
#: of Valkey CPU per 100 symbols with all three keys present (measured, docs/streamer.md).
SCRIPT_CHUNK = 100
#: The cluster path takes a symbol's fresh markers with one SPOP of at most this many.
FRESH_POP_MAX = 100_000


@lru_cache(maxsize=64)
def _script_args(symbols: tuple[str, ...], sets: bool) -> tuple[int | str, ...]:
    """numkeys, KEYS and ARGV of one READ_SCRIPT call (cached: the symbol list rarely changes)."""
    ks = [keys.depth(s) for s in symbols] + [keys.ticker(s) for s in symbols]
    ks += [keys.candle(s) for s in symbols]
    if sets:
        ks += [keys.symbol_main(s) for s in symbols] + [keys.symbol_sub(s) for s in symbols]
        ks += [keys.symbol_fresh(s) for s in symbols]
    return (len(ks), *ks, len(symbols), "1" if sets else "0")


def _chunks(symbols: list[str]) -> Iterator[tuple[str, ...]]:
    for i in range(0, len(symbols), SCRIPT_CHUNK):
        yield tuple(symbols[i : i + SCRIPT_CHUNK])


def _queue_reads(pipe: Any, symbols: list[str], sets: bool, cluster: bool = False) -> None:
    """Per tick: one READ_SCRIPT EVAL per `SCRIPT_CHUNK` symbols (depth, ticker, candle
    + SMEMBERS main / sub and the taken fresh set when the membership is re-read). `cluster`:
    per symbol a GET per depth and ticker, HGETALL candle (+ SMEMBERS, and SPOP of the fresh
    set: atomic like the script's read + DEL), since each symbol's keys have their own slot."""
    if not cluster:
        for chunk in _chunks(symbols):
            pipe.eval(READ_SCRIPT, *_script_args(chunk, sets))
        return
    for s in symbols:
        pipe.get(keys.depth(s))
        pipe.get(keys.ticker(s))
        pipe.hgetall(keys.candle(s))
        if sets:
            pipe.smembers(keys.symbol_main(s))
            pipe.smembers(keys.symbol_sub(s))
            pipe.spop(keys.symbol_fresh(s), FRESH_POP_MAX)


def _split(res: Iterator[Any], symbols: list[str], sets: bool, cluster: bool = False) -> list[tuple[Any, ...]]:
    """The replies queued by `_queue_reads`, per symbol: (depth, ticker, candle[, main, sub,
    fresh]); candle is HGETALL's flat [field, value, …] list from the script, a dict on a cluster."""
    if not cluster:
        return [tuple(row) for _ in _chunks(symbols) for row in next(res)]
    n = 6 if sets else 3
    return [tuple(_contained(k, next(res)) for k in range(n)) for _ in symbols]


def _contained(k: int, reply: Any) -> Any:
    """A per-key error of the cluster path (read with raise_on_error=False) as READ_SCRIPT
    returns it: `!error` for a string, a hash without the candle's fields, an empty set."""
    if not isinstance(reply, Exception):
        return reply
    return (f"!{reply}", f"!{reply}", {"!error": str(reply)}, set(), set(), set())[k]


def _taken(replies: list[Any], symbols: list[str], cluster: bool) -> Iterator[tuple[str, Any]]:
    """(symbol, fresh members taken) from the replies `_queue_reads(…, sets=True)` queued, also
    when some of them are errors (those are skipped): read before anything can raise."""
    if cluster:
        for i, s in enumerate(symbols):
            yield s, replies[6 * i + 5]
        return
    for chunk, reply in zip(_chunks(symbols), replies, strict=False):
        if not isinstance(reply, Exception):
            for s, row in zip(chunk, reply, strict=False):
                yield s, row[5]


def _same(old: frozenset[str], raw: Any) -> frozenset[str]:
    """`old` itself when `raw` holds the same members (identity is what diff.py caches on)."""
    new = frozenset(raw)
    return old if new == old else new


class Reader:
    def __init__(
        self,
        client: aredis.Redis,
        on_bad_data: Callable[[str], None] | None = None,
        *,
        membership_every: float = 1.0,
        membership_min_gap: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.cluster = cache.is_cluster(client)
        self.known: list[str] = []
        self.members: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self.realtime: frozenset[str] = frozenset()
        self.membership = 0
        self.membership_reads = 0
        self.membership_every = membership_every
        self.membership_min_gap = membership_min_gap
        self._clock = clock
        self._dirty = True
        self._membership_at = -1e9
        self._writes: list[Callable[[Any], None]] = []
        # fresh markers taken from Valkey and not yet handed out in a snapshot: a read that
        # fails after taking them keeps them here for the next membership read
        self._fresh: dict[str, set[str]] = {}
        self._on_bad = on_bad_data or (lambda kind: None)
        # symbol -> (raw depth, ticker, candle replies of the last read, what they parsed to)
        self._last: dict[str, tuple[tuple[Any, ...], SymbolData]] = {}

    def mark_dirty(self) -> None:
        """Subscriber sets changed (a ws handler said so): re-read them soon."""
        self._dirty = True

    def queue_write(self, op: Callable[[Any], None]) -> None:
        """`op(pipe)` runs on the next tick's pipeline (after the reads)."""
        self._writes.append(op)

    async def flush_writes(self) -> None:
        if not self._writes:
            return
        pipe = self.client.pipeline(transaction=False)
        for op in self._writes:
            op(pipe)
        self._writes.clear()
        await pipe.execute()

    def _membership_due(self) -> bool:
        age = self._clock() - self._membership_at
        return age >= self.membership_every or (self._dirty and age >= self.membership_min_gap)

    def _keep_fresh(self, replies: list[Any], symbols: list[str]) -> None:
        for s, members in _taken(replies, symbols, self.cluster):
            if members and not isinstance(members, Exception):
                self._fresh.setdefault(s, set()).update(members)

    async def read(self, now: float, only: set[str] | None = None) -> Snapshot:
        """Read every subscribed symbol, or only those in `only` (a partial snapshot) — unless
        the membership is due for a re-read, which always reads everything.

        Fresh markers taken by a membership read that then raises (a queued write refused,
        the new symbols' round trip failing) are not lost: the next membership read, due at
        once (min gap), reports them in its `Snapshot.fresh`."""
        try:
            return await self._read(now, only)
        except BaseException:
            if self._fresh:
                self._dirty = True
            raise

    async def _read(self, now: float, only: set[str] | None) -> Snapshot:
        sets = self._membership_due()
        partial = only is not None and not sets
        symbols = [s for s in self.known if s in only] if partial else list(self.known)  # type: ignore[operator]
        if sets:
            self._dirty = False  # a notification arriving during this read marks it again
            self._membership_at = self._clock()
        pipe = self.client.pipeline(transaction=False)
        if sets:
            pipe.smembers(keys.SUBSCRIBED_SYMBOLS)
            pipe.smembers(keys.REALTIME_CONNECTIONS)
        _queue_reads(pipe, symbols, sets, self.cluster)
        writes, self._writes = self._writes, []
        for op in writes:
            op(pipe)
        replies = await pipe.execute(raise_on_error=False)
        if sets:  # the markers are taken now: keep them before anything can raise
            self._keep_fresh(replies[2:], symbols)
        if not self.cluster:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        else:  # per-key errors are contained by _split; a global set's error is not
            for reply in replies[:2] if sets else ():
                if isinstance(reply, Exception):
                    raise reply
            n_reads = (2 if sets else 0) + len(symbols) * (6 if sets else 3)
            for reply in replies[n_reads:]:  # the queued writes' replies
                if isinstance(reply, Exception):
                    log.warning("event=cache_write_failed error=%r", reply)
        res = iter(replies)
        if not sets:
            snap = Snapshot(read_at=now, realtime=self.realtime, membership=self.membership, partial=partial)
            for s, raw in zip(symbols, _split(res, symbols, False, self.cluster), strict=True):
                snap.symbols[s] = self._parse(s, raw, *self.members[s])
            return snap

        self.membership_reads += 1
        changed = False
        subscribed = {s for s in next(res) if keys.is_valid_symbol(s)}
        realtime = _same(self.realtime, next(res))
        changed |= realtime is not self.realtime
        self.realtime = realtime
        data: dict[str, SymbolData] = {}
        for s, raw in zip(symbols, _split(res, symbols, True, self.cluster), strict=True):
            if s not in subscribed:
                continue
            old_main, old_sub = self.members.get(s, (frozenset(), frozenset()))
            main, sub = _same(old_main, raw[3]), _same(old_sub, raw[4])
            changed |= main is not old_main or sub is not old_sub
            self.members[s] = (main, sub)
            data[s] = self._parse(s, raw, main, sub)
        new = sorted(subscribed - set(symbols))
        if new:
            changed = True
            pipe = self.client.pipeline(transaction=False)
            _queue_reads(pipe, new, True, self.cluster)
            replies = await pipe.execute(raise_on_error=False)
            self._keep_fresh(replies, new)
            for reply in replies if not self.cluster else ():
                if isinstance(reply, Exception):
                    raise reply
            for s, raw in zip(new, _split(iter(replies), new, True, self.cluster), strict=True):
                self.members[s] = (frozenset(raw[3]), frozenset(raw[4]))
                data[s] = self._parse(s, raw, *self.members[s])
        for s in [s for s in self.members if s not in subscribed]:
            del self.members[s]
            self._last.pop(s, None)
            changed = True
        if changed:
            self.membership += 1
        self.known = sorted(subscribed)
        fresh = {s: frozenset(c) for s, c in self._fresh.items() if s in subscribed}
        self._fresh = {}
        snap = Snapshot(read_at=now, realtime=self.realtime, membership=self.membership, fresh=fresh)
        for s in self.known:  # sorted order, like the steady-state ticks
            snap.symbols[s] = data[s]
        return snap

    def _parse(self, symbol: str, raw: tuple[Any, ...], main: frozenset[str], sub: frozenset[str]) -> SymbolData:
        """The symbol's data; parts whose raw reply equals the last read's are not parsed again,
        and when nothing differs (raw data and subscriber sets) the last SymbolData itself is
        returned: diff.py skips a symbol it already diffed by identity. Most symbols of a
        50 ms full read are unchanged."""
        now = raw[:3]
        last = self._last.get(symbol)
        if last is not None:
            before, old = last
            if before == now and old.main is main and old.sub is sub:
                return old
        else:
            before, old = (None, None, None), None
        depth_raw, ticker_raw, candle_raw = now
        data = SymbolData(symbol, main=main, sub=sub)
        data.depth = old.depth if old and before[0] == depth_raw else self._json(symbol, "depth", depth_raw)
        data.ticker = old.ticker if old and before[1] == ticker_raw else self._json(symbol, "ticker", ticker_raw)
        if old and before[2] == candle_raw:
            data.candle, data.closed_t = old.candle, old.closed_t
        elif candle_raw:
            if isinstance(candle_raw, list):  # HGETALL inside READ_SCRIPT: [field, value, …]
                it = iter(candle_raw)
                candle_raw = dict(zip(it, it, strict=True))
            if all(f in candle_raw for f in CANDLE_FIELDS):
                data.candle = {f: candle_raw[f] for f in CANDLE_FIELDS}
            elif any(f in candle_raw for f in CANDLE_FIELDS) or "!error" in candle_raw:  # a wrong-type key
                self._bad(symbol, "candle", f"missing fields in {sorted(candle_raw)}")
            ct = candle_raw.get("ct")
            data.closed_t = str(ct) if ct is not None else None
        self._last[symbol] = (now, data)
        return data

    def _json(self, symbol: str, what: str, raw: str | None) -> dict | None:
        if raw is None:
            return None
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._bad(symbol, what, str(exc))
            return None
        if not isinstance(value, dict):
            self._bad(symbol, what, "not an object")
            return None
        return value

    def _bad(self, symbol: str, what: str, why: str) -> None:
        self._on_bad("bad_data")
        log.warning("event=bad_data symbol=%s key=%s reason=%s", symbol, what, why)

    async def closed_candles(self, symbols: list[str]) -> dict[str, list[dict]]:
        """The newest closed 1-minute candles (RPUSHed by the engine) of each symbol."""
        pipe = self.client.pipeline(transaction=False)
        for s in symbols:
            pipe.lrange(keys.candle_closed(s), -5, -1)
        out: dict[str, list[dict]] = {}
        for s, items in zip(symbols, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(items, Exception):  # e.g. the key holds another type: that symbol only
                self._bad(s, "candle_closed", repr(items))
                continue
            parsed = []
            for item in items:
                try:
                    c = orjson.loads(item)
                except orjson.JSONDecodeError:
                    self._bad(s, "candle_closed", "bad JSON")
                    continue
                if isinstance(c, dict):
                    parsed.append(c)
            out[s] = parsed
        return out
