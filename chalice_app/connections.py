"""The WebSocket connection registry on the depth cache (SPEC §4).

One module owns every key a connection touches, so that the `$connect` / `$default` /
`$disconnect` handlers, the stale-connection job, the Kinesis notify handlers and the
streamer agree on them:

    ws:CONNID                    {"userId","isLoggedIn","connectedAt"} with a TTL
    conn:CONNID:user             the user id (no TTL: cleanup needs it after ws: expired)
    conn:CONNID:main             the connection's main symbol
    conn:CONNID:sub              set of its sub symbols
    connections:all              every registered connection id
    user:USERID:connections      a user's connection ids (all devices)
    realtime:connections         logged-in connection ids (50 ms tier)
    symbol:{SYM}:main / :sub     subscribers of a symbol
    subscribed:symbols           symbols with at least one subscriber
    symbol:{SYM}:fresh           connections that (re)subscribed to SYM and are owed its current
                                 state once; the streamer reads and deletes it (short TTL); a
                                 connection leaving SYM (unsubscribe, cleanup) leaves it too
    connections:changed          pub/sub: PUBLISHed (payload: the connection id) with every change
                                 above, so the streamer re-reads the subscriber sets it caches

Every function takes a redis client (either `decode_responses` mode works). Only
plain commands are used — no multi-key Lua, no multi-key DEL — so the module also works on a
cluster-mode ElastiCache, where one connection's keys and one symbol's keys live in
different slots (the change notification goes through `cache.execute_and_publish`: redis-py
refuses PUBLISH inside a cluster pipeline). `remove_connection` is THE cleanup: it is idempotent and safe to
call for ids that were never registered.

Errors::

    ValueError          a symbol that fails SYMBOL_RE (raised by chalice_app.keys)
    SubscriptionLimit   subscribing would exceed MAX_SUB_SYMBOLS
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson
import redis

from chalice_app import cache, keys
from chalice_app.cache import as_str

log = logging.getLogger("supernoba.connections")

#: API Gateway closes a WebSocket after 2 h at most; a little slack on top.
CONNECTION_TTL_SECONDS = 2 * 3600 + 600
#: Ticker-only (`sub`) symbols one connection may hold at once (the main symbol is extra).
MAX_SUB_SYMBOLS = 20
#: a connection's subscribe/unsubscribe lock: how long it is held at most, and waited for
CONN_LOCK_MS = 2000
CONN_LOCK_WAIT_S = 2.0
#: `symbol:{SYM}:fresh` outlives the streamer's slowest re-read of the subscriber sets
#: (STREAMER_MEMBERSHIP_MS, 1 s) many times over; it only expires when no streamer runs.
FRESH_TTL_SECONDS = 60


class SubscriptionLimit(Exception):
    """Subscribing would give the connection more than MAX_SUB_SYMBOLS sub symbols."""


@dataclass(frozen=True)
class ConnectionInfo:
    conn_id: str
    user_id: str | None
    is_logged_in: bool
    connected_at: int
    main: str | None = None
    subs: frozenset[str] = field(default_factory=frozenset)


def register_connection(
    r: redis.Redis,
    conn_id: str,
    user_id: str | None,
    *,
    is_logged_in: bool,
    now_ms: int | None = None,
    ttl_seconds: int = CONNECTION_TTL_SECONDS,
) -> None:
    """Record a new connection: `ws:CONNID`, the user's set, the realtime tier set."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    info = {"userId": user_id, "isLoggedIn": bool(is_logged_in), "connectedAt": now_ms}
    pipe = r.pipeline(transaction=False)
    pipe.set(keys.ws_conn(conn_id), orjson.dumps(info), ex=ttl_seconds)
    pipe.sadd(keys.ALL_CONNECTIONS, conn_id)
    if user_id:
        pipe.set(keys.conn_user(conn_id), user_id)
        pipe.sadd(keys.user_connections(user_id), conn_id)
    if is_logged_in:
        pipe.sadd(keys.REALTIME_CONNECTIONS, conn_id)
    cache.execute_and_publish(r, pipe, keys.CONNECTIONS_CHANGED_CHANNEL, conn_id)  # the streamer's cached sets
    log.info("event=ws_register conn=%s user=%s logged_in=%s", conn_id, user_id, is_logged_in)


def touch(r: redis.Redis, conn_id: str, ttl_seconds: int = CONNECTION_TTL_SECONDS) -> bool:
    """Extend the connection's TTL; False when `ws:CONNID` is gone (expired or removed)."""
    return bool(r.expire(keys.ws_conn(conn_id), ttl_seconds))


def get_connection(r: redis.Redis, conn_id: str) -> ConnectionInfo | None:
    """The connection's record and subscriptions, or None when `ws:CONNID` is gone."""
    pipe = r.pipeline(transaction=False)
    pipe.get(keys.ws_conn(conn_id))
    pipe.get(keys.conn_main(conn_id))
    pipe.smembers(keys.conn_subs(conn_id))
    raw, main, subs = pipe.execute()
    if raw is None:
        return None
    try:
        info = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("event=ws_bad_record conn=%s", conn_id)
        return None
    return ConnectionInfo(
        conn_id=conn_id,
        user_id=info.get("userId"),
        is_logged_in=bool(info.get("isLoggedIn")),
        connected_at=int(info.get("connectedAt") or 0),
        main=as_str(main) if main is not None else None,
        subs=frozenset(as_str(x) for x in subs),
    )


def user_connection_ids(r: redis.Redis, user_id: str) -> set[str]:
    """All connection ids of one user (every device)."""
    return {as_str(x) for x in r.smembers(keys.user_connections(user_id))}


def _has_subscribers(r: redis.Redis, symbol: str) -> bool:
    pipe = r.pipeline(transaction=False)
    pipe.scard(keys.symbol_main(symbol))
    pipe.scard(keys.symbol_sub(symbol))
    main_n, sub_n = pipe.execute()
    return (main_n + sub_n) > 0


def _release_symbols(r: redis.Redis, symbols: Iterable[str]) -> list[str]:
    """Drop from `subscribed:symbols` every symbol left without subscribers.

    Race-safe against a concurrent subscribe without Lua: remove, then re-check, and put
    it back if a subscriber arrived in between (a subscriber always adds itself to the
    symbol's set before adding the symbol to `subscribed:symbols`).
    """
    dropped = []
    for symbol in set(symbols):
        if not keys.is_valid_symbol(symbol):
            r.srem(keys.SUBSCRIBED_SYMBOLS, symbol)
            continue
        if _has_subscribers(r, symbol):
            continue
        r.srem(keys.SUBSCRIBED_SYMBOLS, symbol)
        if _has_subscribers(r, symbol):
            r.sadd(keys.SUBSCRIBED_SYMBOLS, symbol)
        else:
            dropped.append(symbol)
    return dropped


_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@contextlib.contextmanager
def _connection_lock(r: redis.Redis, conn_id: str) -> Iterator[None]:
    """Serialise the set changes of one connection: API Gateway may run two messages of the same
    connection at once, and a main-symbol swap is several keys in different cluster slots (no
    MULTI). A holder that died frees it after CONN_LOCK_MS; a waiter gives up after
    CONN_LOCK_WAIT_S and goes ahead (the stale-connection job repairs what a race leaves)."""
    key, token = keys.conn_lock(conn_id), uuid.uuid4().hex
    deadline = time.monotonic() + CONN_LOCK_WAIT_S
    held = bool(r.set(key, token, nx=True, px=CONN_LOCK_MS))
    while not held and time.monotonic() < deadline:
        time.sleep(0.005)
        held = bool(r.set(key, token, nx=True, px=CONN_LOCK_MS))
    if not held:
        log.warning("event=ws_lock_timeout conn=%s", conn_id)
    try:
        yield
    finally:
        if held:
            r.eval(_RELEASE_LOCK, 1, key, token)


def subscribe(
    r: redis.Redis,
    conn_id: str,
    main: str | None = None,
    subs: Iterable[str] = (),
    *,
    max_subs: int = MAX_SUB_SYMBOLS,
) -> ConnectionInfo | None:
    """Subscribe to a main symbol (replacing the previous one) and/or add sub symbols.

    Raises ValueError for a malformed symbol and SubscriptionLimit past `max_subs`; in
    both cases nothing is changed. Returns the connection's new state.

    Every symbol named is marked owed (`symbol:{SYM}:fresh`, written before the sets): the
    streamer sends the connection that symbol's current state once, also when the connection
    was subscribed already (a repeated subscribe), which the sets do not show.
    """
    subs = list(dict.fromkeys(subs))
    main_key = keys.symbol_main(main) if main is not None else None  # validates
    sub_keys = [keys.symbol_sub(s) for s in subs]  # validates
    current = {as_str(x) for x in r.smembers(keys.conn_subs(conn_id))}
    if len(current | set(subs)) > max_subs:
        raise SubscriptionLimit(f"at most {max_subs} sub symbols per connection")
    released: list[str] = []
    added = list(dict.fromkeys(([main] if main is not None else []) + subs))
    with _connection_lock(r, conn_id):
        pipe = r.pipeline(transaction=False)
        for symbol in added:
            # owed before joining: a streamer read that takes the marker before it sees the
            # connection in the set wastes it (the connection is then new to the set, which sends
            # the state too); the other way round, a read in between would send the state twice
            pipe.sadd(keys.symbol_fresh(symbol), conn_id)
            pipe.expire(keys.symbol_fresh(symbol), FRESH_TTL_SECONDS)
        if main_key is not None:
            pipe.sadd(main_key, conn_id)  # join the new set before naming it (readers never miss it)
        for symbol, key in zip(subs, sub_keys, strict=True):
            pipe.sadd(key, conn_id)
            pipe.sadd(keys.conn_subs(conn_id), symbol)
        if added:
            pipe.sadd(keys.SUBSCRIBED_SYMBOLS, *added)
        pipe.execute()
        pipe = r.pipeline(transaction=False)
        if main is not None:
            old = r.set(keys.conn_main(conn_id), main, get=True)
            old_main = as_str(old) if old is not None else None
            if old_main and old_main != main and keys.is_valid_symbol(old_main):
                pipe.srem(keys.symbol_main(old_main), conn_id)
                released.append(old_main)
        cache.execute_and_publish(r, pipe, keys.CONNECTIONS_CHANGED_CHANNEL, conn_id)
    _release_symbols(r, released)
    log.info("event=ws_subscribe conn=%s main=%s subs=%s", conn_id, main, ",".join(subs))
    return get_connection(r, conn_id)


def unsubscribe(
    r: redis.Redis,
    conn_id: str,
    main: str | bool | None = None,
    subs: Iterable[str] | None = None,
) -> ConnectionInfo | None:
    """Remove subscriptions. `main` = the symbol (or True) drops the main subscription;
    `subs` names sub symbols to drop. With neither, every subscription is dropped."""
    subs = list(subs) if subs is not None else None
    everything = main is None and subs is None
    released: list[str] = []
    with _connection_lock(r, conn_id):
        cur_raw = r.get(keys.conn_main(conn_id))
        cur_main = as_str(cur_raw) if cur_raw is not None else None
        cur_subs = {as_str(x) for x in r.smembers(keys.conn_subs(conn_id))}
        pipe = r.pipeline(transaction=False)
        drop_main = bool(cur_main) and (everything or main is True or main == cur_main)
        if cur_main and drop_main:
            pipe.srem(keys.symbol_main(cur_main), conn_id)
            pipe.delete(keys.conn_main(conn_id))
            released.append(cur_main)
        if everything:
            subs = sorted(cur_subs)
        for symbol in subs or ():
            pipe.srem(keys.symbol_sub(symbol), conn_id)  # validates
            pipe.srem(keys.conn_subs(conn_id), symbol)
            released.append(symbol)
        held = cur_subs - set(subs or ())
        if cur_main and not drop_main:
            held.add(cur_main)
        for symbol in set(released) - held:  # a symbol it left (in both roles) is no longer owed
            pipe.srem(keys.symbol_fresh(symbol), conn_id)
        cache.execute_and_publish(r, pipe, keys.CONNECTIONS_CHANGED_CHANNEL, conn_id)
    _release_symbols(r, released)
    log.info("event=ws_unsubscribe conn=%s released=%s", conn_id, ",".join(released))
    return get_connection(r, conn_id)


def remove_connection(redis_client: redis.Redis, conn_id: str) -> None:
    """Remove a connection from every set and key; idempotent.

    Used by `$disconnect`, the stale-connection job, the Kinesis notify handlers and the
    streamer (on GoneException). A symbol leaves `subscribed:symbols` when its last
    subscriber leaves.
    """
    r = redis_client
    pipe = r.pipeline(transaction=False)
    pipe.get(keys.conn_main(conn_id))
    pipe.smembers(keys.conn_subs(conn_id))
    pipe.get(keys.conn_user(conn_id))
    pipe.get(keys.ws_conn(conn_id))
    main, subs, user, raw = pipe.execute()
    user_id = as_str(user) if user is not None else None
    if user_id is None and raw is not None:
        try:
            user_id = orjson.loads(raw).get("userId")
        except (orjson.JSONDecodeError, AttributeError):
            user_id = None
    symbols: list[str] = []
    pipe = r.pipeline(transaction=False)
    if main is not None and keys.is_valid_symbol(as_str(main)):
        symbols.append(as_str(main))
        pipe.srem(keys.symbol_main(as_str(main)), conn_id)
    for s in subs:
        if keys.is_valid_symbol(as_str(s)):
            symbols.append(as_str(s))
            pipe.srem(keys.symbol_sub(as_str(s)), conn_id)
    for symbol in set(symbols):
        pipe.srem(keys.symbol_fresh(symbol), conn_id)
    if user_id:
        pipe.srem(keys.user_connections(user_id), conn_id)
    pipe.srem(keys.REALTIME_CONNECTIONS, conn_id)
    pipe.srem(keys.ALL_CONNECTIONS, conn_id)
    for key in (keys.ws_conn(conn_id), keys.conn_main(conn_id), keys.conn_subs(conn_id), keys.conn_user(conn_id)):
        pipe.delete(key)  # one key per DEL: they live in different cluster slots
    cache.execute_and_publish(r, pipe, keys.CONNECTIONS_CHANGED_CHANNEL, conn_id)
    dropped = _release_symbols(r, symbols)
    log.info(
        "event=ws_remove conn=%s user=%s symbols=%s dropped=%s",
        conn_id, user_id, ",".join(symbols), ",".join(dropped),
    )


def known_connection_ids(r: redis.Redis) -> dict[str, set[str]]:
    """Every connection id any registry set mentions, with the per-user and per-symbol sets
    that hold it (for the stale-connection job)."""
    ids: dict[str, set[str]] = {}
    for global_set in (keys.ALL_CONNECTIONS, keys.REALTIME_CONNECTIONS):
        for x in r.smembers(global_set):
            ids.setdefault(as_str(x), set())
    patterns = (keys.USER_CONNECTIONS_PATTERN, keys.SYMBOL_MAIN_PATTERN, keys.SYMBOL_SUB_PATTERN,
                keys.SYMBOL_FRESH_PATTERN)
    for pattern in patterns:
        for key in r.scan_iter(match=pattern, count=500):
            if as_str(r.type(key)) == "set":
                for x in r.smembers(key):
                    ids.setdefault(as_str(x), set()).add(as_str(key))
    return ids


def remove_stale_connections(r: redis.Redis) -> list[str]:
    """Remove every connection whose `ws:CONNID` key has expired; returns their ids.

    `remove_connection` finds a connection's sets through its `conn:` keys; an id a set still
    holds without them (a crash between two writes) is removed from the sets it was found in.
    """
    stale = []
    for conn_id, found_in in sorted(known_connection_ids(r).items()):
        if not r.exists(keys.ws_conn(conn_id)):
            remove_connection(r, conn_id)
            for key in found_in:
                r.srem(key, conn_id)
            stale.append(conn_id)
    # a symbol may sit in subscribed:symbols with nobody left (e.g. crash mid-cleanup)
    orphaned = _release_symbols(r, (as_str(x) for x in r.smembers(keys.SUBSCRIBED_SYMBOLS)))
    log.info("event=stale_cleanup removed=%d orphan_symbols=%d", len(stale), len(orphaned))
    return stale
