"""Connection registry and the ws_send module against a real Valkey and a local @connections server."""

from __future__ import annotations

import threading

import orjson
import pytest
from botocore.exceptions import BotoCoreError

from chalice_app import connections as conns
from chalice_app import keys
from chalice_app.ws_send import SendResult, WsSender, WsSendError


def test_register_writes_every_key_with_ttl(cache):
    conns.register_connection(cache, "c1", "u1", is_logged_in=True, now_ms=123)
    raw = cache.get(keys.ws_conn("c1"))
    assert orjson.loads(raw) == {"userId": "u1", "isLoggedIn": True, "connectedAt": 123}
    assert 0 < cache.ttl(keys.ws_conn("c1")) <= conns.CONNECTION_TTL_SECONDS
    assert cache.smembers("user:u1:connections") == {"c1"}
    assert cache.sismember("realtime:connections", "c1")
    conns.register_connection(cache, "anon", None, is_logged_in=False)
    assert not cache.sismember("realtime:connections", "anon")


def test_subscribe_replaces_main_and_cleanup_drops_last_subscriber(cache):
    r = cache
    conns.register_connection(r, "c1", "u1", is_logged_in=True)
    conns.register_connection(r, "c2", None, is_logged_in=False)
    conns.subscribe(r, "c1", "AAA", ["BBB", "CCC"])
    conns.subscribe(r, "c2", "AAA")
    assert r.smembers("subscribed:symbols") == {"AAA", "BBB", "CCC"}
    info = conns.subscribe(r, "c1", "DDD")
    assert info.main == "DDD" and info.subs == {"BBB", "CCC"}
    assert r.smembers("symbol:{AAA}:main") == {"c2"}
    assert r.get("conn:c1:main") == "DDD"
    conns.unsubscribe(r, "c1", subs=["CCC"])
    assert "CCC" not in r.smembers("subscribed:symbols")
    conns.remove_connection(r, "c1")
    assert r.smembers("subscribed:symbols") == {"AAA"}
    assert not r.exists("ws:c1", "conn:c1:main", "conn:c1:sub", "conn:c1:user", "user:u1:connections")
    assert not r.sismember("realtime:connections", "c1")
    conns.remove_connection(r, "c1")  # idempotent
    conns.remove_connection(r, "c2")
    assert r.smembers("subscribed:symbols") == set()


def test_subscribe_cap_and_bad_symbols_change_nothing(cache):
    r = cache
    conns.register_connection(r, "c1", None, is_logged_in=False)
    with pytest.raises(conns.SubscriptionLimit):
        conns.subscribe(r, "c1", None, [f"S{i}" for i in range(conns.MAX_SUB_SYMBOLS + 1)])
    with pytest.raises(ValueError):
        conns.subscribe(r, "c1", "X}:*", ["AAA"])
    assert r.smembers("subscribed:symbols") == set()
    assert r.smembers("conn:c1:sub") == set()
    assert r.keys("symbol:*:fresh") == [], "nothing owed either"


def test_subscribe_marks_each_symbol_named_as_owed_also_when_repeated(cache):
    """`symbol:{SYM}:fresh`: the streamer sends these connections the symbol's state once (a
    repeated subscribe changes no set; only the marker shows it). Short TTL."""
    r = cache
    conns.register_connection(r, "c1", None, is_logged_in=False)
    conns.register_connection(r, "c2", "u2", is_logged_in=True)
    conns.subscribe(r, "c1", "AAA", ["BBB", "AAA"])
    conns.subscribe(r, "c2", None, ["BBB"])
    assert r.smembers(keys.symbol_fresh("AAA")) == {"c1"}
    assert r.smembers(keys.symbol_fresh("BBB")) == {"c1", "c2"}
    assert all(0 < r.ttl(keys.symbol_fresh(s)) <= conns.FRESH_TTL_SECONDS for s in ("AAA", "BBB"))
    r.delete(keys.symbol_fresh("AAA"), keys.symbol_fresh("BBB"))  # what the streamer's read does
    conns.subscribe(r, "c1", "AAA")  # the same main again
    assert r.smembers(keys.symbol_fresh("AAA")) == {"c1"} and not r.exists(keys.symbol_fresh("BBB"))
    conns.unsubscribe(r, "c1")
    assert not r.exists(keys.symbol_fresh("AAA")), "an unsubscribe takes it back"


def test_a_connection_leaving_a_symbol_leaves_its_fresh_set(cache):
    """unsubscribe, remove_connection ($disconnect) and the stale cleanup remove the id from
    `symbol:{SYM}:fresh` of every symbol it leaves, not only from the subscriber sets."""
    r = cache
    for c in ("c1", "c2", "c3", "c4"):
        conns.register_connection(r, c, None, is_logged_in=False)
    conns.subscribe(r, "c1", "AAA", ["BBB", "AAA"])
    conns.subscribe(r, "c2", "AAA", ["BBB"])
    conns.subscribe(r, "c3", "AAA")
    conns.unsubscribe(r, "c1", subs=["AAA", "BBB"])  # still holds AAA as its main
    assert r.smembers(keys.symbol_fresh("AAA")) == {"c1", "c2", "c3"}
    assert r.smembers(keys.symbol_fresh("BBB")) == {"c2"}
    conns.unsubscribe(r, "c1", main=True)
    assert r.smembers(keys.symbol_fresh("AAA")) == {"c2", "c3"}
    conns.remove_connection(r, "c2")
    assert r.smembers(keys.symbol_fresh("AAA")) == {"c3"} and not r.exists(keys.symbol_fresh("BBB"))
    r.delete(keys.ws_conn("c3"))  # its TTL ran out
    r.sadd(keys.symbol_fresh("CCC"), "c4", "gone")  # an id only a fresh set still holds
    assert conns.remove_stale_connections(r) == ["c3", "gone"]
    assert not r.exists(keys.symbol_fresh("AAA"))
    assert r.smembers(keys.symbol_fresh("CCC")) == {"c4"}


def test_stale_connections_are_removed_everywhere(cache):
    r = cache
    conns.register_connection(r, "old", "u9", is_logged_in=True, ttl_seconds=1)
    conns.register_connection(r, "live", "u9", is_logged_in=True)
    conns.subscribe(r, "old", "AAA", ["BBB"])
    conns.subscribe(r, "live", None, ["BBB"])
    r.delete(keys.ws_conn("old"))  # as if the TTL ran out
    assert conns.remove_stale_connections(r) == ["old"]
    assert r.smembers("user:u9:connections") == {"live"}
    assert r.smembers("subscribed:symbols") == {"BBB"}
    assert r.smembers("realtime:connections") == {"live"}



def test_racing_subscribes_leave_one_connection_in_exactly_one_main_set(cache):
    """Two subscribes with different mains at once on one connection (two tabs, a reconnect):
    the connection must end in the main set its `conn:` key names, and in no other."""
    r = cache
    ids = [f"race{i}" for i in range(60)]
    for c in ids:
        conns.register_connection(r, c, None, is_logged_in=False)
        conns.subscribe(r, c, "RA")

    def flip(main: str) -> None:
        for c in ids:
            conns.subscribe(r, c, main)

    threads = [threading.Thread(target=flip, args=(m,)) for m in ("RB", "RC", "RB", "RC")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    members = {m: r.smembers(f"symbol:{{{m}}}:main") for m in ("RA", "RB", "RC")}
    for c in ids:
        holding = [m for m, ms in members.items() if c in ms]
        assert holding == [r.get(f"conn:{c}:main")], (c, holding)
    assert not members["RA"]


def test_stale_cleanup_removes_ids_a_set_holds_without_their_conn_keys(cache):
    r = cache
    r.sadd("symbol:{ORPH}:main", "orphan")
    r.sadd("symbol:{ORPH}:sub", "orphan")
    r.sadd("user:u77:connections", "orphan2")
    r.sadd("subscribed:symbols", "ORPH")
    assert sorted(conns.remove_stale_connections(r)) == ["orphan", "orphan2"]
    assert not r.exists("symbol:{ORPH}:main", "symbol:{ORPH}:sub", "user:u77:connections")
    assert "ORPH" not in r.smembers("subscribed:symbols")
    assert conns.remove_stale_connections(r) == []


def test_ws_sender_sends_and_cleans_gone(cache, ws_server, app_settings):
    r = cache
    ws_server.open_ids.add("c1")
    conns.register_connection(r, "c1", "u1", is_logged_in=True)
    conns.register_connection(r, "c2", "u1", is_logged_in=True)
    conns.subscribe(r, "c2", "AAA")
    sender = WsSender(ws_server.endpoint, r, region=app_settings.aws_region)
    assert sender.send("c1", {"e": "order", "x": 1}) is SendResult.SENT
    assert ws_server.messages("c1") == [{"e": "order", "x": 1}]
    res = sender.send_many(["c1", "c2"], b'{"e":"fill"}')
    assert res == {"c1": SendResult.SENT, "c2": SendResult.GONE}
    assert r.smembers("user:u1:connections") == {"c1"}
    assert "AAA" not in r.smembers("subscribed:symbols")


def test_ws_sender_errors_are_typed(cache):
    with pytest.raises(WsSendError):
        WsSender("", cache).send("c1", {})
    sender = WsSender("http://127.0.0.1:9/api", cache, timeout=0.5)
    with pytest.raises(WsSendError) as err:  # nothing listens there
        sender.send("c1", {})
    assert isinstance(err.value.__cause__, BotoCoreError)
    assert sender.send_many(["c1", "c2"], {}) == {"c1": SendResult.FAILED, "c2": SendResult.FAILED}
    # a dead endpoint cannot hang the caller: the given timeout bounds each attempt, and the
    # attempts are few (checked on the client's settings, not with a wall clock)
    config = sender.api.session.client("apigatewaymanagementapi").meta.config
    assert (config.connect_timeout, config.read_timeout) == (0.5, 0.5)
    assert config.retries["total_max_attempts"] <= 3


def test_ws_message_with_valkey_down_is_an_error_event(app_settings):
    import redis as redis_lib

    from chalice_app.auth import Authenticator
    from chalice_app.symbols import SymbolRegistry
    from chalice_app.ws_handlers import WsService

    down = redis_lib.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    ws = WsService(down, Authenticator(app_settings), SymbolRegistry(down))
    [reply] = ws.message("c1", '{"action":"ping"}')
    assert reply["e"] == "error" and reply["code"] == "CACHE_UNAVAILABLE"
