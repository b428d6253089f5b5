"""The console against the real local stack (`python -m tools.dev`, as `make dev` runs it).

One stack for the module (started on free ports in a fresh data folder); each test trades
its own symbol, added through the admin API, so tests do not see each other's books.
Chromium drives the page the way a person would; every test saves a screenshot into
artifacts/console/.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.tools.console.helpers import DevStack, PageWatch
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("console-stack") / "data") as s:
        yield s


@pytest.fixture
def symbol(stack: DevStack) -> str:
    sym = "C" + uuid.uuid4().hex[:6].upper()
    stack.add_symbol(sym)
    return sym


def open_console(new_page: Any, stack: DevStack, symbol: str, user: str | None = None,
                 sub: str = "") -> tuple[Any, PageWatch]:
    page = new_page()
    watch = PageWatch(page)
    page.goto(f"{stack.urls['console']}?main={symbol}&sub={sub}" + (f"&user={user}" if user else ""))
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector("#conn-state[data-state=open]")
    page.wait_for_selector("#order-form[data-guard=open]" if user else "#order-form[data-guard=blocked]")
    page.wait_for_selector(f"#event-log li.ok:has-text('subscribed main={symbol}')")
    return page, watch


def place(page: Any, side: str, price: int, qty: int) -> str:
    page.fill("#order-price", str(price))
    page.fill("#order-qty", str(qty))
    before = page.locator("[data-testid=order-row]").count()
    page.click("#btn-buy" if side == "BUY" else "#btn-sell")
    wait_until(lambda: page.locator("[data-testid=order-row]").count() > before, what=f"{side} row")
    return page.locator("[data-testid=order-row]").first.get_attribute("data-order-id")


def ladder(page: Any, side: str) -> list[tuple[int, int]]:
    rows = page.eval_on_selector_all(
        f"[data-testid={side}-row]", "els => els.map(e => [e.dataset.price, e.querySelector('.qty').textContent])")
    return [(int(p), int(q)) for p, q in rows]


def test_page_loads_without_errors_and_subscribing_shows_the_ladder(new_page: Any, stack: DevStack, symbol: str) -> None:
    stack.order("u_seed_a", symbol, "SELL", 1010, 7)
    stack.order("u_seed_b", symbol, "BUY", 990, 3)
    page, watch = open_console(new_page, stack, symbol)
    page.wait_for_selector("[data-testid=ask-row][data-price='1010']")
    assert ladder(page, "ask") == [(1010, 7)]
    assert ladder(page, "bid") == [(990, 3)]
    assert page.inner_text("#ladder-spread") == "spread 20"
    stack.order("u_seed_a", symbol, "SELL", 1005, 2)  # a live update
    page.wait_for_selector("[data-testid=ask-row][data-price='1005']")
    assert ladder(page, "ask") == [(1010, 7), (1005, 2)]  # best ask next to the spread
    watch.screenshot("stack_ladder")
    assert watch.errors == []


def test_crossing_orders_fill_and_show_everywhere(new_page: Any, stack: DevStack, symbol: str) -> None:
    seller, seller_watch = open_console(new_page, stack, symbol, user="u_sell_" + symbol)
    buyer, buyer_watch = open_console(new_page, stack, symbol, user="u_buy_" + symbol)
    sell_id = place(seller, "SELL", 1000, 10)
    place(seller, "SELL", 1005, 5)
    seller.wait_for_selector(f"[data-order-id='{sell_id}'][data-status=ACCEPTED]")
    buyer.wait_for_selector("[data-testid=ask-row][data-price='1000']")
    assert ladder(buyer, "ask") == [(1005, 5), (1000, 10)]

    buy_id = place(buyer, "BUY", 1000, 10)
    buyer.wait_for_selector(f"[data-order-id='{buy_id}'][data-status=FILLED]")
    seller.wait_for_selector(f"[data-order-id='{sell_id}'][data-status=FILLED]")
    # the ladder lost the filled level
    wait_until(lambda: ladder(seller, "ask") == [(1005, 5)], what="ladder update")
    # fills on both sides, with each user's own side and role
    buyer.wait_for_selector("[data-testid=fill-row]")
    seller.wait_for_selector("[data-testid=fill-row]")
    assert buyer.locator("[data-testid=fill-row] td").nth(2).inner_text() == "BUY"
    assert buyer.locator("[data-testid=fill-row] td").nth(5).inner_text() == "taker"
    assert seller.locator("[data-testid=fill-row] td").nth(2).inner_text() == "SELL"
    assert seller.locator("[data-testid=fill-row] td").nth(5).inner_text() == "maker"
    # the chart shows the trade's candle
    seller.wait_for_selector("#chart[data-last-close='1000']")
    assert int(seller.get_attribute("#chart", "data-bars")) >= 1
    assert seller.get_attribute("#chart", "data-last-volume") == "10"
    # my orders: cancel the resting 1005 from the page
    rest_row = seller.locator("[data-testid=order-row][data-status=ACCEPTED]")
    rest_row.locator("[data-testid=cancel]").click()
    seller.wait_for_selector("[data-testid=order-row][data-status=CANCELLED]")
    wait_until(lambda: ladder(buyer, "ask") == [], what="ladder empty after cancel")
    seller_watch.screenshot("stack_cross_seller")
    buyer_watch.screenshot("stack_cross_buyer")
    assert seller_watch.errors == [] and buyer_watch.errors == []


def test_switching_to_5m_calls_the_chart_api_and_redraws(new_page: Any, stack: DevStack, symbol: str) -> None:
    stack.order("u_m5_a", symbol, "SELL", 2000, 4)
    stack.order("u_m5_b", symbol, "BUY", 2000, 4)
    wait_until(lambda: (stack.rest("GET", f"/chart?symbol={symbol}&interval=1m")[1] or {}).get("data"),
               what="1m candle in /chart")
    page, watch = open_console(new_page, stack, symbol)
    page.wait_for_selector("#chart[data-last-close='2000']")
    loads = int(page.get_attribute("#chart", "data-loads"))
    with page.expect_request(lambda r: "/chart?" in r.url and "interval=5m" in r.url and f"symbol={symbol}" in r.url):
        page.click("[data-testid=tf-5m]")
    page.wait_for_selector(f"#chart[data-tf='5m'][data-loads='{loads + 1}']")
    assert page.get_attribute("#chart", "data-last-close") == "2000"
    assert page.get_attribute("#chart", "data-last-volume") == "4"
    t5 = int(page.get_attribute("#chart", "data-last-time"))
    assert t5 % 300 == 0
    # a live trade updates the 5-minute bar from the 1-minute events
    stack.order("u_m5_a", symbol, "SELL", 2010, 1)
    stack.order("u_m5_b", symbol, "BUY", 2010, 1)
    page.wait_for_selector("#chart[data-last-close='2010']")
    if int(page.get_attribute("#chart", "data-last-time")) == t5:  # same 5-minute bucket
        assert page.get_attribute("#chart", "data-last-volume") == "5"
    watch.screenshot("stack_chart_5m")
    assert watch.errors == []


def test_login_guard_blocks_ordering_when_anonymous(new_page: Any, stack: DevStack, symbol: str) -> None:
    page, watch = open_console(new_page, stack, symbol)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    assert page.is_visible("#login-guard")
    assert page.is_disabled("#btn-buy") and page.is_disabled("#btn-sell")
    page.locator("#btn-sell").click(force=True)
    code = page.evaluate("() => supernoba.api.placeOrder({symbol: supernoba.session && 'X', side: 'SELL',"
                         " price: 1, quantity: 1}).then(() => 'sent', e => e.code)")
    assert code == "LOGIN_REQUIRED"
    page.wait_for_timeout(300)
    assert posts == []
    # and the server agrees: no credentials, no order
    status, body = stack.rest("POST", "/orders", {"symbol": symbol, "side": "SELL", "price": 1, "quantity": 1})
    assert status == 401 and body["code"]
    watch.screenshot("stack_login_guard")
    assert watch.errors == []


def test_server_validation_errors_show_next_to_the_field(new_page: Any, stack: DevStack, symbol: str) -> None:
    page, watch = open_console(new_page, stack, symbol, user="u_val")
    page.fill("#order-price", "10.5")
    page.fill("#order-qty", "1")
    page.click("#btn-buy")
    page.wait_for_selector("#err-price:not(:empty)")
    assert "price" in page.inner_text("#err-price")
    assert page.inner_text("#err-quantity") == ""
    page.fill("#order-price", "10")
    page.fill("#order-qty", "0")
    page.click("#btn-buy")
    page.wait_for_selector("#err-quantity:not(:empty)")
    assert page.inner_text("#err-price") == ""
    watch.screenshot("stack_validation")
    assert [e for e in watch.errors if "status of 400" not in e] == []


def test_a_refused_jwt_handshake_stops_and_says_so(new_page: Any, stack: DevStack, symbol: str) -> None:
    page, watch = open_console(new_page, stack, symbol)
    page.select_option("#conn-mode", "jwt")
    page.fill("#jwt", "not.a.jwt")
    page.click("#btn-connect")
    page.wait_for_selector("#conn-state[data-state=closed]")
    state = page.inner_text("#conn-state")
    assert "refused" in state and "JWT" in state, state
    page.wait_for_timeout(1500)
    assert page.get_attribute("#conn-state", "data-state") == "closed"  # no retry loop
    assert page.is_disabled("#btn-buy")
    watch.screenshot("stack_refused_jwt")
    assert [e for e in watch.errors if "WebSocket" not in e] == []


def test_a_refused_subscription_keeps_the_main_symbol(new_page: Any, stack: DevStack, symbol: str) -> None:
    page, watch = open_console(new_page, stack, symbol, user="u_nope")
    for bad, code in [("nope", "UNKNOWN_SYMBOL"), ("<script>", "INVALID_SYMBOL")]:
        page.fill("#main-symbol", bad)
        page.click("#btn-subscribe")
        page.wait_for_selector(f"#sub-error:has-text('{code}')")
        assert page.inner_text("#entry-symbol") == symbol
        assert page.get_attribute("#ladder", "data-symbol") == symbol
    place(page, "BUY", 10, 1)
    page.wait_for_selector("[data-testid=order-row][data-status=ACCEPTED]")
    assert page.locator("[data-testid=order-row] td").nth(1).inner_text() == symbol
    watch.screenshot("stack_refused_subscription")
    assert watch.errors == []
