"""Valkey key names of SPEC §4 — the one place that spells them.

Every per-symbol key carries the symbol as a cluster hash tag, `{SYM}`, so that all of a
symbol's keys share one slot and a single Lua script may touch them together on a
cluster-mode ElastiCache. Symbols are validated against `SYMBOL_RE` before they are
ever put into a key (a symbol like `X}:*` must never reach another key).
"""

from __future__ import annotations

import re

#: A symbol: 1-16 characters, upper-case letters, digits and `._-`, not starting with `._-`.
#: The one spelling of the rule; REST models and error messages quote it from here.
SYMBOL_PATTERN = r"[A-Z0-9][A-Z0-9._-]{0,15}"
SYMBOL_RE = re.compile(SYMBOL_PATTERN)

ACTIVE_SYMBOLS = "active:symbols"
#: Symbols an admin removed (not in SPEC §4): their resting orders can still be cancelled.
REMOVED_SYMBOLS = "removed:symbols"
SUBSCRIBED_SYMBOLS = "subscribed:symbols"
REALTIME_CONNECTIONS = "realtime:connections"
#: Every registered WebSocket connection id (anonymous ones too), so that cleanup can
#: find connections whose `ws:CONNID` key has expired.
ALL_CONNECTIONS = "connections:all"
#: Pub/sub channel on which the engine names the symbols each batch changed.
DEPTH_CHANGED_CHANNEL = "depth:changed"
#: Pub/sub channel on which the connection registry (chalice_app.connections) announces that
#: a subscriber set changed (payload: the connection id); the streamer re-reads its cached sets.
CONNECTIONS_CHANGED_CHANNEL = "connections:changed"
#: Hash owned by the streamer: symbol -> JSON {"u","candle","ticker"} last pushed to the
#: anonymous tier (survives a restart; `python -m streamer_pkg --init` deletes it).
STREAMER_ANON_CACHE = "streamer:anon:cache"

CANDLE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d")
#: Roll-ups kept hot in Valkey by the streamer (1m is written by the engine).
ROLLUP_INTERVALS = ("3m", "5m", "15m", "30m", "1h")


def is_valid_symbol(symbol: object) -> bool:
    return isinstance(symbol, str) and SYMBOL_RE.fullmatch(symbol) is not None


def _tag(symbol: str) -> str:
    if not is_valid_symbol(symbol):
        raise ValueError(f"invalid symbol {symbol!r}")
    return "{" + symbol + "}"


def depth(symbol: str) -> str:
    return f"depth:{_tag(symbol)}"


def ticker(symbol: str) -> str:
    return f"ticker:{_tag(symbol)}"


def candle(symbol: str, interval: str = "1m") -> str:
    return f"candle:{interval}:{_tag(symbol)}"


def candle_closed(symbol: str) -> str:
    return f"candle:closed:1m:{_tag(symbol)}"


#: SCAN pattern matching every symbol's `candle:closed:1m:{SYM}` list (the backup job's sweep).
CANDLE_CLOSED_PATTERN = "candle:closed:1m:*"


def candle_dead(symbol: str) -> str:
    """Closed-candle entries the backup job could not parse (kept for an operator)."""
    return f"candle:dead:1m:{_tag(symbol)}"


def symbol_main(symbol: str) -> str:
    return f"symbol:{_tag(symbol)}:main"


def symbol_sub(symbol: str) -> str:
    return f"symbol:{_tag(symbol)}:sub"


def symbol_fresh(symbol: str) -> str:
    """Connections that (re)subscribed to the symbol and are owed its current state once
    (`depth`, `candle`, `ticker`; the ticker only for a `sub`): added by
    `connections.subscribe`, read and deleted by the streamer when it re-reads the
    subscriber sets. It makes a repeated subscribe (or unsubscribe + subscribe between two
    streamer reads) visible, which set membership alone does not show. Short TTL."""
    return f"symbol:{_tag(symbol)}:fresh"


def symbol_meta(symbol: str) -> str:
    """Admin-set metadata of a tradable symbol (tick size, price band, display name)."""
    return f"symbol:{_tag(symbol)}:meta"


def conn_main(conn_id: str) -> str:
    return f"conn:{conn_id}:main"


def conn_subs(conn_id: str) -> str:
    """The connection's `sub` symbols (needed to clean up on disconnect)."""
    return f"conn:{conn_id}:sub"


def conn_lock(conn_id: str) -> str:
    """Held (SET NX PX) while a subscribe/unsubscribe of the connection changes its sets."""
    return f"conn:{conn_id}:lock"


def conn_user(conn_id: str) -> str:
    """The connection's user id, kept without a TTL so cleanup finds `user:USERID:connections`."""
    return f"conn:{conn_id}:user"


def _escaped(text: str) -> str:
    """A free-form part of a key that has another part after it: `%`, `:`, `{` and `}`
    percent-encoded, so that the part cannot contain the `:` separator (two different pairs
    never make the same key) nor open a cluster hash tag. Plain ids (UUIDs, `u1`) are unchanged."""
    return text.replace("%", "%25").replace(":", "%3A").replace("{", "%7B").replace("}", "%7D")


def idempotency(user_id: str, client_order_id: str) -> str:
    """`client_order_id` → order_id of the first request (the order router's retry guard).

    `idem:USER:COID` with USER passed through `_escaped`: user ids (a JWT `sub` is any string,
    a test-mode id may hold `:`) and client order ids may both contain `:`, and user `a:x` with
    id `c` must not share a key with user `a` with id `x:c`. COID is last, so it is kept as is.
    """
    return f"idem:{_escaped(user_id)}:{client_order_id}"


def ws_conn(conn_id: str) -> str:
    return f"ws:{conn_id}"


def user_connections(user_id: str) -> str:
    return f"user:{user_id}:connections"


# Backup cache
def snapshot(symbol_or_shard: str) -> str:
    """`snapshot:SYM` — a symbol's book view at a checkpoint; `shard_snapshot` passes
    `STREAM/SHARD` here for the restorable snapshot of a whole shard."""
    return f"snapshot:{{{symbol_or_shard}}}"


#: SCAN pattern of every `snapshot:` key; a shard's has a `/` in its tag, a symbol's never does.
SNAPSHOT_PATTERN = "snapshot:{*}"


def prev_day(symbol: str) -> str:
    return f"prev:{_tag(symbol)}"


# Engine service (issue 4): one snapshot and one lease per shard of the orders stream. Both
# carry the same hash tag `{STREAM/SHARD}`, so the fenced snapshot write (a Lua script that
# checks the lease) touches a single cluster slot.
def shard_tag(stream: str, shard_id: str) -> str:
    return f"{stream}/{shard_id}"


def shard_snapshot(stream: str, shard_id: str) -> str:
    """`snapshot:{STREAM/SHARD}` — the shard's books plus its Kinesis checkpoint."""
    return snapshot(shard_tag(stream, shard_id))


def shard_lease(stream: str, shard_id: str) -> str:
    """`lease:{STREAM/SHARD}` — which engine process reads the shard (SET NX PX, renewed)."""
    return f"lease:{{{shard_tag(stream, shard_id)}}}"


def engine_members(stream: str) -> str:
    """Sorted set of live engine ids on a stream (score = heartbeat expiry, ms)."""
    return f"engines:{{{stream}}}"


def shard_emitted(stream: str, shard_id: str) -> str:
    """`emitted:{STREAM/SHARD}` — last Kinesis sequence number whose effects are all written."""
    return f"emitted:{{{shard_tag(stream, shard_id)}}}"


# SCAN (glob) patterns of the key families above, spelled here only. Each matches exactly the
# keys its function builds (tests/chalice_app/test_keys.py).
DEPTH_PATTERN = "depth:{*}"
TICKER_PATTERN = "ticker:{*}"
SYMBOL_MAIN_PATTERN = "symbol:{*}:main"
SYMBOL_SUB_PATTERN = "symbol:{*}:sub"
SYMBOL_FRESH_PATTERN = "symbol:{*}:fresh"
CONN_MAIN_PATTERN = "conn:*:main"
USER_CONNECTIONS_PATTERN = "user:*:connections"
#: every shard lease of every stream
LEASE_PATTERN = "lease:{*}"


def candle_pattern(interval: str = "1m") -> str:
    """Every symbol's open `candle:INTERVAL:{SYM}` hash."""
    return f"candle:{interval}:{{*}}"


def shard_snapshot_pattern(stream: str) -> str:
    """Every `snapshot:{STREAM/SHARD}` of one stream (not the per-symbol views)."""
    return shard_snapshot(stream, "*")


def shard_lease_pattern(stream: str) -> str:
    """Every `lease:{STREAM/SHARD}` of one stream."""
    return shard_lease(stream, "*")
