"""CANCEL and REPLACE rules (SPEC section 2, 3a 'Cancel and replace')."""

from __future__ import annotations

from tests.engine_pkg.helpers import Book, fills, kinds, statuses


def test_cancel_open_order() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    ev = b.cancel("b1", "alice")
    assert statuses(ev) == [("b1", "CANCELLED", None)]
    assert (ev[0]["filled"], ev[0]["remaining"], ev[0]["price"]) == (0, 0, 100)
    b.assert_depth(bids=[], asks=[])


def test_cancel_partially_filled_reports_filled() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    b.sell("s1", 100, 4)
    ev = b.cancel("b1", "alice")
    assert (ev[0]["status"], ev[0]["filled"], ev[0]["remaining"]) == ("CANCELLED", 4, 0)


def test_cancel_keeps_other_orders_of_the_level_in_order() -> None:
    b = Book()
    b.buy("b1", 100, 1, user="u1")
    b.buy("b2", 100, 2, user="u2")
    b.buy("b3", 100, 3, user="u3")
    b.cancel("b2", "u2")
    b.assert_depth(bids=[(100, 4)], asks=[])
    ev = b.sell("s1", 100, 4)
    assert fills(ev) == [("b1", "s1", 100, 1), ("b3", "s1", 100, 3)]


def test_cancel_unknown_order() -> None:
    b = Book()
    ev = b.cancel("nope", "alice")
    assert statuses(ev) == [("nope", "REJECTED", "UNKNOWN_ORDER")]
    assert (ev[0]["filled"], ev[0]["remaining"], ev[0]["price"]) == (0, 0, None)


def test_cancel_twice_is_unknown_order() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    b.cancel("b1", "alice")
    assert statuses(b.cancel("b1", "alice")) == [("b1", "REJECTED", "UNKNOWN_ORDER")]


def test_cancel_filled_order_is_unknown_order() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    b.sell("s1", 100, 10)
    assert statuses(b.cancel("b1", "alice")) == [("b1", "REJECTED", "UNKNOWN_ORDER")]


def test_cancel_expired_ioc_is_unknown_order() -> None:
    b = Book()
    b.buy("b1", 100, 10, tif="IOC")
    assert statuses(b.cancel("b1", "alice")) == [("b1", "REJECTED", "UNKNOWN_ORDER")]


def test_cancel_on_another_symbol_is_unknown_order() -> None:
    b = Book("AAA")
    b.buy("b1", 100, 10)
    other = Book("BBB", engine=b.engine)
    assert statuses(other.cancel("b1", "alice")) == [("b1", "REJECTED", "UNKNOWN_ORDER")]
    b.assert_depth(bids=[(100, 10)], asks=[])


def test_cancel_by_another_user_is_not_owner_sent_to_sender() -> None:
    b = Book()
    b.buy("b1", 100, 10, user="alice")
    ev = b.cancel("b1", "mallory", price=100)
    assert statuses(ev) == [("b1", "REJECTED", "NOT_OWNER")]
    assert ev[0]["user_id"] == "mallory" and ev[0]["price"] == 100
    b.assert_depth(bids=[(100, 10)], asks=[])


def test_replace_size_down_same_price_keeps_priority() -> None:
    b = Book()
    b.buy("b1", 100, 10, user="u1")
    b.buy("b2", 100, 10, user="u2")
    ev = b.replace("b1", "u1", qty=6)
    assert statuses(ev) == [("b1", "REPLACED", None)]
    assert (ev[0]["remaining"], ev[0]["price"], ev[0]["filled"]) == (6, 100, 0)
    b.assert_depth(bids=[(100, 16)], asks=[])
    assert fills(b.sell("s1", 100, 6))[0][0] == "b1"


def test_replace_same_price_and_size_keeps_priority() -> None:
    b = Book()
    b.buy("b1", 100, 10, user="u1")
    b.buy("b2", 100, 10, user="u2")
    assert statuses(b.replace("b1", "u1", price=100, qty=10)) == [("b1", "REPLACED", None)]
    assert fills(b.sell("s1", 100, 1))[0][0] == "b1"


def test_replace_size_up_loses_priority() -> None:
    b = Book()
    b.buy("b1", 100, 10, user="u1")
    b.buy("b2", 100, 10, user="u2")
    ev = b.replace("b1", "u1", qty=12)
    assert kinds(ev) == ["REPLACED"] and ev[0]["remaining"] == 12
    b.assert_depth(bids=[(100, 22)], asks=[])
    assert fills(b.sell("s1", 100, 1))[0][0] == "b2"


def test_replace_price_change_goes_to_back_of_new_level() -> None:
    b = Book()
    b.buy("b1", 100, 10, user="u1")
    b.buy("b2", 99, 10, user="u2")
    ev = b.replace("b1", "u1", price=99)
    assert kinds(ev) == ["REPLACED"] and ev[0]["price"] == 99
    b.assert_depth(bids=[(99, 20)], asks=[])
    assert fills(b.sell("s1", 99, 1))[0][0] == "b2"


def test_replace_quantity_is_new_total_size_including_filled() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    b.sell("s1", 100, 4)
    ev = b.replace("b1", "alice", qty=7)
    assert (ev[0]["status"], ev[0]["filled"], ev[0]["remaining"]) == ("REPLACED", 4, 3)
    b.assert_depth(bids=[(100, 3)], asks=[])


def test_replace_at_or_below_filled_cancels_remainder() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    b.sell("s1", 100, 4)
    ev = b.replace("b1", "alice", qty=4)
    assert statuses(ev) == [("b1", "CANCELLED", None)]
    assert (ev[0]["filled"], ev[0]["remaining"]) == (4, 0)
    b.assert_depth(bids=[], asks=[])
    assert statuses(b.cancel("b1", "alice")) == [("b1", "REJECTED", "UNKNOWN_ORDER")]


def test_replace_quantity_zero_is_bad_order() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    assert statuses(b.replace("b1", "alice", qty=0)) == [("b1", "REJECTED", "BAD_ORDER")]
    b.assert_depth(bids=[(100, 10)], asks=[])


def test_replace_without_price_and_quantity_is_bad_order() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    assert statuses(b.replace("b1", "alice")) == [("b1", "REJECTED", "BAD_ORDER")]
    assert statuses(b.replace("b1", "alice", price=None, quantity=None)) == [("b1", "REJECTED", "BAD_ORDER")]


def test_replace_null_keeps_value() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    ev = b.replace("b1", "alice", price=101, quantity=None)
    assert (ev[0]["price"], ev[0]["remaining"]) == (101, 10)


def test_crossing_replace_trades_as_taker() -> None:
    b = Book()
    b.sell("s1", 101, 4)
    b.buy("b1", 100, 10)
    ev = b.replace("b1", "alice", price=101)
    assert kinds(ev) == ["REPLACED", "fill", "FILLED", "PARTIALLY_FILLED"]
    assert (ev[0]["price"], ev[0]["remaining"]) == (101, 10)
    assert fills(ev) == [("s1", "b1", 101, 4)]
    assert ev[1]["taker_side"] == "BUY"
    assert (ev[-1]["filled"], ev[-1]["remaining"], ev[-1]["seq"]) == (4, 6, ev[0]["seq"])
    b.assert_depth(bids=[(101, 6)], asks=[])


def test_crossing_replace_fully_filled() -> None:
    b = Book()
    b.sell("s1", 101, 10)
    b.buy("b1", 100, 10)
    ev = b.replace("b1", "alice", price=102)
    assert kinds(ev) == ["REPLACED", "fill", "FILLED", "FILLED"]
    assert ev[-1]["order_id"] == "b1" and ev[-1]["price"] == 102
    b.assert_depth(bids=[], asks=[])


def test_crossing_replace_self_trade_without_fills_sends_no_final_status() -> None:
    b = Book()
    b.sell("own", 101, 4, user="alice")
    b.buy("b1", 100, 10, user="alice")
    ev = b.replace("b1", "alice", price=101)
    assert kinds(ev) == ["REPLACED", "CANCELLED"]
    assert ev[1]["reason"] == "SELF_TRADE"
    b.assert_depth(bids=[(101, 10)], asks=[])


def test_replace_never_changes_side() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    b.replace("b1", "alice", price=200, is_buy=False)
    b.assert_depth(bids=[(200, 10)], asks=[])


def test_replace_by_another_user_is_not_owner() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    ev = b.replace("b1", "mallory", qty=1)
    assert statuses(ev) == [("b1", "REJECTED", "NOT_OWNER")] and ev[0]["user_id"] == "mallory"
    b.assert_depth(bids=[(100, 10)], asks=[])


def test_replace_unknown_order() -> None:
    b = Book()
    assert statuses(b.replace("zz", "alice", qty=1)) == [("zz", "REJECTED", "UNKNOWN_ORDER")]


def test_replaced_order_can_be_cancelled_and_ids_stay_unique() -> None:
    b = Book()
    b.buy("b1", 100, 10)
    b.replace("b1", "alice", price=90)
    assert statuses(b.cancel("b1", "alice")) == [("b1", "CANCELLED", None)]
    assert statuses(b.buy("b1", 100, 1)) == [("b1", "REJECTED", "DUPLICATE_ORDER_ID")]
