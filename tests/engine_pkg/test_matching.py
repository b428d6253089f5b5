"""Matching rules (SPEC section 2, 3a): price-time priority, tif, MARKET, FOK, self-trade."""

from __future__ import annotations

from tests.engine_pkg.helpers import Book, cmd, fills, kinds, statuses


def test_gtc_without_counterparty_rests_and_sends_only_accepted() -> None:
    b = Book()
    ev = b.buy("b1", 100, 10)
    assert kinds(ev) == ["ACCEPTED"]
    assert ev[0]["remaining"] == 10 and ev[0]["filled"] == 0 and ev[0]["price"] == 100
    b.assert_depth(bids=[(100, 10)], asks=[])


def test_bids_high_to_low_asks_low_to_high_aggregated() -> None:
    b = Book()
    b.buy("b1", 99, 1)
    b.buy("b2", 101, 2)
    b.buy("b3", 100, 3)
    b.buy("b4", 101, 4)
    b.sell("s1", 105, 5)
    b.sell("s2", 103, 6)
    b.sell("s3", 104, 7)
    b.assert_depth(bids=[(101, 6), (100, 3), (99, 1)], asks=[(103, 6), (104, 7), (105, 5)])
    assert b.depth(2) == {"b": [[101, 6], [100, 3]], "a": [[103, 6], [104, 7]]}


def test_trade_at_resting_makers_price() -> None:
    b = Book()
    b.sell("s1", 100, 10)
    ev = b.buy("b1", 105, 10)
    assert fills(ev) == [("s1", "b1", 100, 10)]
    assert kinds(ev) == ["ACCEPTED", "fill", "FILLED", "FILLED"]
    b.assert_depth(bids=[], asks=[])


def test_sell_taker_trades_at_bid_price() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    ev = b.sell("s1", 90, 4)
    assert fills(ev) == [("b1", "s1", 100, 4)]
    fill = ev[1]
    assert fill["taker_side"] == "SELL"
    b.assert_depth(bids=[(100, 6)], asks=[])


def test_time_priority_within_a_level() -> None:
    b = Book()
    b.sell("s1", 100, 5, user="u1")
    b.sell("s2", 100, 5, user="u2")
    b.sell("s3", 100, 5, user="u3")
    ev = b.buy("b1", 100, 7)
    assert fills(ev) == [("s1", "b1", 100, 5), ("s2", "b1", 100, 2)]
    b.assert_depth(bids=[], asks=[(100, 8)])
    ev = b.buy("b2", 100, 8)
    assert fills(ev) == [("s2", "b2", 100, 3), ("s3", "b2", 100, 5)]


def test_price_priority_sweeps_levels_best_first() -> None:
    b = Book()
    b.sell("s3", 102, 5)
    b.sell("s1", 100, 5)
    b.sell("s2", 101, 5)
    ev = b.buy("b1", 101, 12)
    assert fills(ev) == [("s1", "b1", 100, 5), ("s2", "b1", 101, 5)]
    assert kinds(ev) == ["ACCEPTED", "fill", "FILLED", "fill", "FILLED", "PARTIALLY_FILLED"]
    assert ev[-1]["remaining"] == 2 and ev[-1]["filled"] == 10
    b.assert_depth(bids=[(101, 2)], asks=[(102, 5)])


def test_maker_partial_fill_status() -> None:
    b = Book()
    b.sell("s1", 100, 10)
    ev = b.buy("b1", 100, 3)
    maker = ev[2]
    assert (maker["order_id"], maker["status"], maker["filled"], maker["remaining"]) == (
        "s1",
        "PARTIALLY_FILLED",
        3,
        7,
    )
    assert maker["user_id"] == "bob" and maker["price"] == 100


def test_ioc_partial_fill_expires_remainder() -> None:
    b = Book()
    b.sell("s1", 100, 4)
    ev = b.buy("b1", 100, 10, tif="IOC")
    assert kinds(ev) == ["ACCEPTED", "fill", "FILLED", "EXPIRED"]
    assert ev[-1]["filled"] == 4 and ev[-1]["remaining"] == 0
    b.assert_depth(bids=[], asks=[])


def test_ioc_that_cannot_trade_is_accepted_then_expired() -> None:
    b = Book()
    b.sell("s1", 101, 4)
    ev = b.buy("b1", 100, 10, tif="IOC")
    assert kinds(ev) == ["ACCEPTED", "EXPIRED"]
    assert ev[1]["filled"] == 0 and ev[1]["remaining"] == 0
    b.assert_depth(bids=[], asks=[(101, 4)])


def test_ioc_fully_filled() -> None:
    b = Book()
    b.sell("s1", 100, 10)
    assert kinds(b.buy("b1", 100, 10, tif="IOC")) == ["ACCEPTED", "fill", "FILLED", "FILLED"]


def test_fok_unfillable_rejected_and_book_unchanged() -> None:
    b = Book()
    b.sell("s1", 100, 5)
    b.sell("s2", 102, 5)
    ev = b.buy("b1", 101, 6, tif="FOK")
    assert statuses(ev) == [("b1", "REJECTED", "FOK_UNFILLABLE")]
    assert ev[0]["filled"] == 0 and ev[0]["remaining"] == 0 and ev[0]["price"] == 101
    b.assert_depth(bids=[], asks=[(100, 5), (102, 5)])


def test_fok_fillable_fills_completely() -> None:
    b = Book()
    b.sell("s1", 100, 5)
    b.sell("s2", 101, 5)
    ev = b.buy("b1", 101, 8, tif="FOK")
    assert kinds(ev) == ["ACCEPTED", "fill", "FILLED", "fill", "PARTIALLY_FILLED", "FILLED"]
    b.assert_depth(bids=[], asks=[(101, 2)])


def test_fok_does_not_count_own_orders_and_refusal_cancels_nothing() -> None:
    b = Book()
    b.sell("own", 100, 5, user="alice")
    b.sell("s1", 100, 5, user="bob")
    ev = b.buy("b1", 100, 6, user="alice", tif="FOK")
    assert statuses(ev) == [("b1", "REJECTED", "FOK_UNFILLABLE")]
    b.assert_depth(bids=[], asks=[(100, 10)])
    ev = b.buy("b2", 100, 5, user="alice", tif="FOK")
    assert kinds(ev) == ["ACCEPTED", "CANCELLED", "fill", "FILLED", "FILLED"]
    assert ev[1]["reason"] == "SELF_TRADE" and ev[1]["order_id"] == "own"
    b.assert_depth(bids=[], asks=[])


def test_market_against_empty_side_is_no_liquidity() -> None:
    b = Book()
    b.buy("b0", 100, 5)  # same side: does not count
    ev = b.buy("m1", None, 5, type="MARKET")
    assert statuses(ev) == [("m1", "REJECTED", "NO_LIQUIDITY")]
    assert ev[0]["price"] is None
    b.assert_depth(bids=[(100, 5)], asks=[])


def test_market_fok_against_empty_side_is_no_liquidity() -> None:
    b = Book()
    ev = b.sell("m1", None, 5, type="MARKET", tif="FOK")
    assert statuses(ev) == [("m1", "REJECTED", "NO_LIQUIDITY")]


def test_market_sweeps_any_price_and_expires_rest() -> None:
    b = Book()
    b.sell("s1", 100, 5)
    b.sell("s2", 10**12, 5)
    ev = b.buy("m1", None, 20, type="MARKET")
    assert fills(ev) == [("s1", "m1", 100, 5), ("s2", "m1", 10**12, 5)]
    assert kinds(ev)[-1] == "EXPIRED"
    assert all(e["price"] is None for e in ev if e["e"] == "order" and e["order_id"] == "m1")
    assert ev[-1]["filled"] == 10
    b.assert_depth(bids=[], asks=[])


def test_market_price_is_ignored_whatever_it_holds() -> None:
    b = Book()
    b.buy("b1", 100, 5)
    ev = b.send(
        cmd(
            action="ADD",
            symbol="TEST",
            order_id="m1",
            user_id="bob",
            is_buy=False,
            quantity=5,
            type="MARKET",
            price="not a number",
        )
    )
    assert kinds(ev) == ["ACCEPTED", "fill", "FILLED", "FILLED"]
    assert ev[0]["price"] is None


def test_market_gtc_means_ioc() -> None:
    b = Book()
    b.buy("b1", 100, 5)
    ev = b.sell("m1", 1, 8, type="MARKET", tif="GTC")
    assert kinds(ev)[-1] == "EXPIRED"
    b.assert_depth(bids=[], asks=[])


def test_market_fok_is_honoured() -> None:
    b = Book()
    b.buy("b1", 100, 5)
    ev = b.sell("m1", None, 8, type="MARKET", tif="FOK")
    assert statuses(ev) == [("m1", "REJECTED", "FOK_UNFILLABLE")]
    assert ev[0]["price"] is None
    ev = b.sell("m2", None, 5, type="MARKET", tif="FOK")
    assert kinds(ev) == ["ACCEPTED", "fill", "FILLED", "FILLED"]


def test_self_trade_cancels_resting_order_when_reached() -> None:
    b = Book()
    b.sell("s1", 100, 5, user="bob")
    b.sell("own", 100, 5, user="alice")
    b.sell("s2", 101, 5, user="carol")
    ev = b.buy("b1", 101, 20, user="alice")
    assert kinds(ev) == ["ACCEPTED", "fill", "FILLED", "CANCELLED", "fill", "FILLED", "PARTIALLY_FILLED"]
    cancel = ev[3]
    assert (cancel["order_id"], cancel["reason"], cancel["user_id"]) == ("own", "SELF_TRADE", "alice")
    assert cancel["remaining"] == 0 and cancel["seq"] == ev[0]["seq"]
    b.assert_depth(bids=[(101, 10)], asks=[])


def test_self_trade_leaves_unreached_own_orders() -> None:
    b = Book()
    b.sell("s1", 100, 5, user="bob")
    b.sell("own", 100, 5, user="alice")
    ev = b.buy("b1", 100, 5, user="alice")
    assert kinds(ev) == ["ACCEPTED", "fill", "FILLED", "FILLED"]
    b.assert_depth(bids=[], asks=[(100, 5)])


def test_self_trade_only_cancels_without_trading_then_rests() -> None:
    b = Book()
    b.sell("own", 100, 5, user="alice")
    ev = b.buy("b1", 100, 5, user="alice")
    assert kinds(ev) == ["ACCEPTED", "CANCELLED"]
    b.assert_depth(bids=[(100, 5)], asks=[])


def test_market_against_only_own_orders_cancels_them_and_expires() -> None:
    b = Book()
    b.sell("own", 100, 5, user="alice")
    ev = b.buy("m1", None, 5, user="alice", type="MARKET")
    assert kinds(ev) == ["ACCEPTED", "CANCELLED", "EXPIRED"]


def test_prices_and_sizes_at_the_limits() -> None:
    b = Book()
    b.sell("s1", 10**12, 10**12)
    b.sell("s2", 10**12, 10**12)
    b.sell("s3", 10**12, 10**12)
    b.assert_depth(bids=[], asks=[(10**12, 3 * 10**12)])  # level totals exceed 10^12
    ev = b.buy("b1", 10**12, 10**12)
    assert fills(ev) == [("s1", "b1", 10**12, 10**12)]
    b.buy("b2", 1, 1)
    b.assert_depth(bids=[(1, 1)], asks=[(10**12, 2 * 10**12)])
