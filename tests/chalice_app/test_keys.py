"""chalice_app.keys: each SCAN pattern matches the keys its key function builds, and no other
family's (Valkey's glob is fnmatch-like: `*` any run, braces literal)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from chalice_app import keys

SYM = "BTC-KRW"
STREAM = "supernoba-orders"
SHARD = "shardId-000000000001"

PATTERNS = {
    keys.DEPTH_PATTERN: keys.depth(SYM),
    keys.TICKER_PATTERN: keys.ticker(SYM),
    keys.candle_pattern("1m"): keys.candle(SYM, "1m"),
    keys.candle_pattern("5m"): keys.candle(SYM, "5m"),
    keys.CANDLE_CLOSED_PATTERN: keys.candle_closed(SYM),
    keys.SYMBOL_MAIN_PATTERN: keys.symbol_main(SYM),
    keys.SYMBOL_SUB_PATTERN: keys.symbol_sub(SYM),
    keys.SYMBOL_FRESH_PATTERN: keys.symbol_fresh(SYM),
    keys.CONN_MAIN_PATTERN: keys.conn_main("c1="),
    keys.USER_CONNECTIONS_PATTERN: keys.user_connections("u-1"),
    keys.SNAPSHOT_PATTERN: keys.snapshot(SYM),
    keys.shard_snapshot_pattern(STREAM): keys.shard_snapshot(STREAM, SHARD),
    keys.LEASE_PATTERN: keys.shard_lease(STREAM, SHARD),
    keys.shard_lease_pattern(STREAM): keys.shard_lease(STREAM, SHARD),
}

OTHER_KEYS = [
    keys.depth(SYM), keys.ticker(SYM), keys.candle(SYM, "1m"), keys.candle(SYM, "5m"), keys.candle_closed(SYM),
    keys.candle_dead(SYM), keys.symbol_main(SYM), keys.symbol_sub(SYM), keys.symbol_meta(SYM), keys.symbol_fresh(SYM),
    keys.conn_main("c1="), keys.conn_subs("c1="), keys.conn_user("c1="), keys.conn_lock("c1="),
    keys.user_connections("u-1"), keys.ws_conn("c1="), keys.prev_day(SYM), keys.shard_emitted(STREAM, SHARD),
    keys.engine_members(STREAM),
]


def test_each_pattern_matches_its_family_only() -> None:
    for pattern, key in PATTERNS.items():
        assert fnmatchcase(key, pattern), (pattern, key)
        others = [k for k in OTHER_KEYS if k != key and fnmatchcase(k, pattern)]
        assert others == [], (pattern, others)


def test_shard_snapshot_pattern_leaves_out_symbol_views_and_other_streams() -> None:
    pattern = keys.shard_snapshot_pattern(STREAM)
    assert not fnmatchcase(keys.snapshot(SYM), pattern)
    assert not fnmatchcase(keys.shard_snapshot("other", SHARD), pattern)


def test_rest_models_validate_symbols_with_the_keys_rule() -> None:
    import pydantic

    from chalice_app.models import Symbol

    adapter = pydantic.TypeAdapter(Symbol)
    for sym in ("A", "BTC-KRW", "X.Y_Z", "A" * 16, "", "a", "-A", "A" * 17, "A}:*", "A\n"):
        try:
            adapter.validate_python(sym)
            ok = True
        except pydantic.ValidationError:
            ok = False
        assert ok == keys.is_valid_symbol(sym), sym


def test_idempotency_keys_are_injective_and_carry_no_hash_tag() -> None:
    """User ids and client order ids may both hold `:`: (`a:x`, `c`) and (`a`, `x:c`) once made
    the same `idem:a:x:c`, so one user's order was dropped and she got the other's order_id."""
    pairs = [("alice:x", "c"), ("alice", "x:c"), ("alice", "x%3Ac"), ("alice%3Ax", "c"), ("alice%x", "c"),
             ("{TEST}", "c"), ("%7BTEST%7D", "c"), ("a", "b:c:d"), ("a:b", "c:d"), ("a:b:c", "d"), ("", "a:b")]
    built = {keys.idempotency(user, coid): (user, coid) for user, coid in pairs}
    assert len(built) == len(pairs), built
    for key in built:
        assert "{" not in key and "}" not in key, key
    assert keys.idempotency("0b9a6c1e-3f2d-4c55-9e1a-7d2f8b6e4a10", "c-1") == "idem:0b9a6c1e-3f2d-4c55-9e1a-7d2f8b6e4a10:c-1"
    assert keys.idempotency("u1", "retry:me") == "idem:u1:retry:me"
