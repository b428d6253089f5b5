"""The load report's arithmetic and the ground-truth comparison, without a stack."""

from __future__ import annotations

from collections import Counter

import pytest

from tools.load.model import (
    TIER_ANONYMOUS,
    TIER_LOGGED_IN,
    ClientLog,
    LoadConfig,
    Recorder,
    SentOrder,
    build_report,
    percentile,
)
from tools.load.orders import plan
from tools.load.verify import ReplayResult, compare


def test_percentile_nearest_rank():
    values = sorted(float(x) for x in range(1, 101))
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0


def test_config_refuses_bad_values():
    with pytest.raises(ValueError):
        LoadConfig(mode="everyone")
    with pytest.raises(ValueError):
        LoadConfig(users=1)
    with pytest.raises(ValueError):
        LoadConfig(symbols=())
    cfg = LoadConfig(mode="mixed")
    assert [cfg.tier_of_client(i) for i in range(4)] == [TIER_LOGGED_IN, TIER_ANONYMOUS] * 2


def test_plan_alternates_makers_and_crossing_takers_of_other_users():
    cfg = LoadConfig(symbols=("AAA", "BBB"), users=4, mid_price=1000, run_id="x")
    orders = list(plan(cfg, 40))
    assert [o.symbol for o in orders[:4]] == ["AAA", "BBB", "AAA", "BBB"]
    assert len({o.body["client_order_id"] for o in orders}) == 40
    by_symbol: dict[str, list] = {}
    for o in orders:
        by_symbol.setdefault(o.symbol, []).append(o)
    for seq in by_symbol.values():
        for maker, taker in zip(seq[0::2], seq[1::2], strict=True):
            assert maker.kind == "maker" and maker.body["tif"] == "GTC"
            assert taker.kind == "taker" and taker.body["tif"] == "IOC"
            assert maker.body["side"] != taker.body["side"]
            assert maker.user_id != taker.user_id
            # the taker's limit crosses the maker's price
            if taker.body["side"] == "BUY":
                assert taker.body["price"] >= maker.body["price"]
            else:
                assert taker.body["price"] <= maker.body["price"]
    assert list(plan(cfg, 10)) == list(plan(cfg, 10))  # deterministic for a seed


def _rec() -> Recorder:
    rec = Recorder(config=LoadConfig(users=2), started_ms=1_000, flow_ended_ms=3_000)
    rec.orders = [
        SentOrder("o1", "u0", "TEST", "maker", 1_000, 202, 5.0),
        SentOrder("o2", "u1", "TEST", "taker", 1_100, 202, 7.0),
        SentOrder("o3", "u0", "TEST", "maker", 1_200, 202, 9.0),
        SentOrder(None, "u1", "TEST", "taker", 1_300, 400, 3.0, "HTTP 400 VALIDATION_ERROR"),
        SentOrder(None, "u1", "TEST", "taker", 1_400, None, None, "timeout"),
    ]
    trader0 = ClientLog(0, TIER_LOGGED_IN, "u0", "TEST")
    trader1 = ClientLog(1, TIER_LOGGED_IN, "u1", "TEST")
    anon = ClientLog(2, TIER_ANONYMOUS, None, "TEST")
    trader0.record(1_020, {"e": "order", "order_id": "o1", "status": "ACCEPTED", "seq": 1, "t": 1_000})
    trader0.record(1_130, {"e": "order", "order_id": "o1", "status": "FILLED", "seq": 3, "t": 1_100})
    trader1.record(1_125, {"e": "order", "order_id": "o2", "status": "FILLED", "seq": 2, "t": 1_100})
    trader0.record(1_140, {"e": "fill", "trade_id": "TEST-000000000003", "t": 1_100})
    # o3 stays open: ACCEPTED only
    trader0.record(1_230, {"e": "order", "order_id": "o3", "status": "ACCEPTED", "seq": 4, "t": 1_200})
    trader0.record(1_240, {"e": "d", "s": "TEST", "u": 4, "t": 1_200})
    trader1.record(1_250, {"e": "d", "s": "TEST", "u": 3, "t": 1_100})
    anon.record(1_700, {"e": "d", "s": "TEST", "u": 4, "t": 1_200})
    anon.messages.append((1_701, {"e": "error", "code": "BAD"}))
    anon.errors["error event BAD"] += 1
    rec.clients = [trader0, trader1, anon]
    return rec


def test_report_counts_orders_messages_latency_and_errors():
    rep = build_report(_rec(), final_depth_u={"TEST": 4})
    assert (rep.orders_sent, rep.orders_accepted, rep.orders_final, rep.orders_open, rep.orders_lost) == (5, 3, 2, 1, 0)
    assert rep.orders_rate == pytest.approx(1.5)
    # one final status expected per accepted order per owner connection: o1, o2, o3
    assert rep.messages_expected["order-final"] == 3
    assert rep.messages_delivered["order-final"] == 2
    # three subscribers; trader1 stopped at u=3
    assert rep.messages_expected["depth-final"] == 3
    assert rep.messages_delivered["depth-final"] == 2
    assert rep.lost_messages == 2
    rows = {(r.tier, r.event): r for r in rep.latency}
    assert rows[(TIER_ANONYMOUS, "depth")].p50 == 500.0
    assert rows[(TIER_LOGGED_IN, "order")].count == 4
    assert rows[(TIER_LOGGED_IN, "order")].max == 30.0
    assert rows[("rest", "POST /orders")].count == 4
    assert rep.errors == {"rest HTTP 400 VALIDATION_ERROR": 1, "rest timeout": 1, "ws error event BAD": 1}
    text = rep.table()
    assert "no status (lost)" in text and "depth-final" in text and "rest timeout" in text


def test_connections_count_clients_that_connected_not_clients_configured():
    rec = _rec()
    rec.clients[0].connects, rec.clients[1].connects = 1, 3  # the anonymous one never got in
    assert build_report(rec, final_depth_u={"TEST": 4}).connections == {TIER_LOGGED_IN: 2}


def test_report_with_stream_truth_counts_every_status_and_fill_per_connection():
    rec = _rec()
    truth = [
        {"user_id": "u0", "order_id": "o1", "status": "ACCEPTED", "seq": 1},
        {"user_id": "u0", "order_id": "o1", "status": "FILLED", "seq": 3},
        {"user_id": "u1", "order_id": "o2", "status": "ACCEPTED", "seq": 2},  # never delivered
        {"user_id": "u1", "order_id": "o2", "status": "FILLED", "seq": 2},
        {"user_id": "nobody", "order_id": "x", "status": "ACCEPTED", "seq": 9},  # no connection: not expected
    ]
    fills = [{"trade_id": "TEST-000000000003", "maker_user_id": "u0", "taker_user_id": "u1"}]
    rep = build_report(rec, status_truth=truth, fill_truth=fills)
    assert rep.messages_expected == {"order": 4, "fill": 2}
    assert rep.messages_delivered == {"order": 3, "fill": 1}


def test_dropped_clients_are_not_expected_to_receive():
    rec = _rec()
    rec.clients[1].dropped_on_purpose = True
    rep = build_report(rec, final_depth_u={"TEST": 4})
    assert rep.messages_expected["depth-final"] == 2
    assert rep.messages_delivered["depth-final"] == 2


def _replayed() -> ReplayResult:
    return ReplayResult(
        fills=[{"e": "fill", "trade_id": "T-1", "p": 10, "q": 2, "maker_order_id": "a", "taker_order_id": "b"}],
        statuses=[
            {"e": "order", "order_id": "a", "status": "ACCEPTED", "seq": 1, "filled": 0, "remaining": 2},
            {"e": "order", "order_id": "a", "status": "FILLED", "seq": 3, "filled": 2, "remaining": 0},
            {"e": "order", "order_id": "b", "status": "FILLED", "seq": 2, "filled": 2, "remaining": 0},
        ],
        depth={"T": {"e": "d", "s": "T", "u": 3, "b": [], "a": [[11, 1]]}},
    )


def test_compare_passes_when_live_equals_replay_even_with_duplicate_stream_records():
    r = _replayed()
    v = compare(r, accepted_order_ids=["a", "b"], status_stream=r.statuses + r.statuses[:1],
                fill_stream=r.fills * 2, depth_cache={"T": {"u": 3, "b": [], "a": [[11, 1]]}},
                trade_counts=Counter({"T-1": 1}))
    assert v.ok, v.details
    assert v.trades == 1 and v.symbols == ["T"]


def test_compare_counts_the_price_levels_it_compared():
    r = _replayed()
    r.depth["U"] = {"e": "d", "s": "U", "u": 7, "b": [[5, 1], [4, 2]], "a": []}
    v = compare(r, accepted_order_ids=[], status_stream=r.statuses, fill_stream=r.fills,
                depth_cache={"T": {"u": 3, "b": [], "a": [[11, 1]]}, "U": {"u": 7, "b": [[5, 1], [4, 2]], "a": []}},
                trade_counts=Counter({"T-1": 1}))
    assert v.ok and v.levels_compared == 3
    empty = ReplayResult(depth={"T": {"e": "d", "s": "T", "u": 9, "b": [], "a": []}})
    assert compare(empty, accepted_order_ids=[], status_stream=[], fill_stream=[],
                   depth_cache={"T": {"u": 9, "b": [], "a": []}}, trade_counts=Counter()).levels_compared == 0


def test_compare_counts_every_kind_of_loss():
    r = _replayed()
    v = compare(r, accepted_order_ids=["a", "b", "c"], status_stream=r.statuses[1:],
                fill_stream=[], depth_cache={"T": {"u": 2, "b": [], "a": [[11, 1]]}},
                trade_counts=Counter({"T-1": 2, "T-9": 1}))
    assert v.orders_without_final == 1  # c
    assert v.books_differing == ["T"]
    assert v.statuses_missing == 1
    assert v.fills_missing == 1
    assert v.trades_duplicated == 1
    assert v.trades_unknown == 1
    assert v.lost == 6
    missing = compare(r, accepted_order_ids=[], status_stream=r.statuses, fill_stream=r.fills,
                      depth_cache={"T": None}, trade_counts=Counter())
    assert missing.trades_missing == 1 and missing.books_differing == ["T"]


def test_latency_counts_only_messages_caused_by_the_loads_own_events():
    rec = Recorder(config=LoadConfig(users=2), started_ms=100_000, flow_ended_ms=110_000)
    anon = ClientLog(0, TIER_ANONYMOUS, None, "TEST")
    anon.subscribing(99_500)  # before the load, as the runner does
    # the subscription's snapshot, received once the load ran: its t is 24 s before the load
    anon.record(100_004, {"e": "d", "s": "TEST", "u": 7, "t": 76_000})
    anon.record(100_005, {"e": "t", "s": "TEST", "t": 76_000, "p": 10, "c": 0.0, "yc": None})
    anon.record(100_300, {"e": "d", "s": "TEST", "u": 8, "t": 100_250})  # the load's first change
    anon.record(100_320, {"e": "t", "s": "TEST", "t": 100_250, "p": 11, "c": 1.0, "yc": None})
    # reconnected mid-run: the new subscription's snapshot is 2 s old, then a fresh change
    anon.subscribing(104_000)
    anon.record(104_010, {"e": "d", "s": "TEST", "u": 20, "t": 102_000})
    anon.record(104_400, {"e": "d", "s": "TEST", "u": 21, "t": 104_100})
    trader = ClientLog(1, TIER_LOGGED_IN, "u0", "TEST")
    trader.subscribing(99_500)
    trader.record(100_050, {"e": "order", "order_id": "old", "status": "CANCELLED", "seq": 1, "t": 90_000})
    trader.record(104_050, {"e": "order", "order_id": "o1", "status": "ACCEPTED", "seq": 2, "t": 104_000})
    trader.subscribing(105_000)  # an order event is never a snapshot: a later subscribe changes nothing
    trader.record(105_020, {"e": "order", "order_id": "o1", "status": "FILLED", "seq": 3, "t": 104_900})
    rec.clients = [anon, trader]
    rep = build_report(rec)
    rows = {(r.tier, r.event): r for r in rep.latency}
    assert (rows[(TIER_ANONYMOUS, "depth")].count, rows[(TIER_ANONYMOUS, "depth")].max) == (2, 300.0)
    assert (rows[(TIER_ANONYMOUS, "ticker")].count, rows[(TIER_ANONYMOUS, "ticker")].max) == (1, 70.0)
    assert (rows[(TIER_LOGGED_IN, "order")].count, rows[(TIER_LOGGED_IN, "order")].max) == (2, 120.0)
    assert rep.messages_total == 9  # left out of latency, still received


def test_client_log_knows_the_subscribe_before_a_message():
    c = ClientLog(0, TIER_ANONYMOUS, None, "TEST")
    assert c.subscribed_before(5) is None
    c.subscribing(10)
    c.subscribing(20)
    assert [c.subscribed_before(t) for t in (9, 10, 19, 20, 99)] == [None, 10, 10, 20, 20]
