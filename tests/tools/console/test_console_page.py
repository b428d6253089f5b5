"""Page-only behaviour of the console against a tiny fake backend (tests/tools/console/helpers.py).

What the real stack cannot easily stage on demand: a depth event with a gap in `u`, a
dropped WebSocket, hand-made 1-minute candles to check the in-page timeframe aggregation.
The console against the real local stack is in test_console_stack.py.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.tools.console.helpers import FakeBackend, PageWatch
from tests.waiting import wait_until
from tools.console.serve import serve


def enter_order(page: Any, side: str, price: str, qty: str) -> None:
    """Type a price and a quantity into the order entry and press Buy or Sell."""
    page.fill("#order-price", price)
    page.fill("#order-qty", qty)
    page.click("#btn-buy" if side == "BUY" else "#btn-sell")


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    with FakeBackend() as fb:
        yield fb


@pytest.fixture
def console(backend: FakeBackend) -> Iterator[Any]:
    with serve("127.0.0.1", 0, backend.rest_url, backend.ws_url, None) as srv:
        yield srv


def open_page(new_page: Any, console: Any, query: str = "") -> tuple[Any, PageWatch]:
    page = new_page()
    watch = PageWatch(page)
    page.goto(console.url + query)
    page.wait_for_selector("body[data-ready=true]")
    return page, watch


def yyyymmddhhmm(epoch: int) -> str:
    return time.strftime("%Y%m%d%H%M", time.gmtime(epoch))


def test_ladder_renders_depth_and_refetches_on_gap(new_page: Any, console: Any, backend: FakeBackend) -> None:
    page, watch = open_page(new_page, console)
    page.wait_for_selector("#conn-state[data-state=open]")
    wait_until(lambda: backend.subscribes(), what="subscribe")
    assert backend.subscribes()[-1] == {"action": "subscribe", "main": "TEST", "sub": []}
    bids = [[1000 - i, 10 * (i + 1)] for i in range(12)]
    asks = [[1001 + i, 5] for i in range(12)]
    backend.push({"e": "d", "s": "TEST", "t": 1, "u": 5, "b": bids, "a": asks})
    page.wait_for_selector("#ladder[data-u='5']")
    assert page.locator("[data-testid=bid-row]").count() == 10
    assert page.locator("[data-testid=ask-row]").count() == 10
    # best ask sits next to the spread (bottom of the ask block), best bid at the top of the bids
    assert page.locator("[data-testid=ask-row]").last.get_attribute("data-price") == "1001"
    assert page.locator("[data-testid=bid-row]").first.get_attribute("data-price") == "1000"
    assert page.inner_text("#ladder-spread") == "spread 1"
    # size bars are proportional to the largest visible level (100)
    widths = page.eval_on_selector_all("[data-testid=bid-row] .bar", "els => els.map(e => e.style.width)")
    assert widths[0] == "10%" and widths[9] == "100%"

    before = len(backend.calls("GET", "/depth/TEST"))
    backend.depth["TEST"] = {"e": "d", "s": "TEST", "t": 2, "u": 9, "b": [[990, 1]], "a": [[1010, 2]]}
    backend.push({"e": "d", "s": "TEST", "t": 2, "u": 6, "b": [[999, 3]], "a": [[1002, 4]]})  # no gap
    page.wait_for_selector("#ladder[data-u='6']")
    assert len(backend.calls("GET", "/depth/TEST")) == before
    backend.push({"e": "d", "s": "TEST", "t": 3, "u": 8, "b": [[998, 3]], "a": [[1003, 4]]})  # gap 6 -> 8
    wait_until(lambda: len(backend.calls("GET", "/depth/TEST")) == before + 1, what="refetch on gap")
    page.wait_for_selector("#ladder[data-u='9']")  # the REST snapshot (newer) is shown
    assert page.locator("[data-testid=bid-row]").first.get_attribute("data-price") == "990"
    backend.push({"e": "d", "s": "TEST", "t": 4, "u": 7, "b": [[1, 1]], "a": []})  # stale: dropped
    page.wait_for_timeout(200)
    assert page.get_attribute("#ladder", "data-u") == "9"
    watch.screenshot("page_ladder")
    assert watch.errors == []


def test_login_guard_blocks_anonymous_ordering(new_page: Any, console: Any, backend: FakeBackend) -> None:
    page, watch = open_page(new_page, console)
    page.wait_for_selector("#conn-state[data-state=open]")
    assert page.is_visible("#login-guard")
    assert page.is_disabled("#btn-buy") and page.is_disabled("#btn-sell")
    assert page.get_attribute("#order-form", "data-guard") == "blocked"
    page.locator("#btn-buy").click(force=True)
    code = page.evaluate(
        "() => supernoba.api.placeOrder({symbol:'TEST', side:'BUY', price:1, quantity:1}).then(() => 'sent', e => e.code)"
    )
    assert code == "LOGIN_REQUIRED"
    page.wait_for_timeout(200)
    assert backend.calls("POST", "/orders") == []
    # logging in as a test-mode user opens the form, and the WS connect carries the user
    page.select_option("#conn-mode", "test")
    page.fill("#user-id", "u_guard")
    page.click("#btn-connect")
    page.wait_for_selector("#order-form[data-guard=open]")
    assert page.is_enabled("#btn-buy")
    wait_until(lambda: any("testMode=true" in p and "userId=u_guard" in p for p in backend.ws_paths), what="test-mode connect")
    watch.screenshot("page_login_guard")
    assert watch.errors == []


def test_server_validation_error_is_shown_next_to_the_field(new_page: Any, console: Any, backend: FakeBackend) -> None:
    page, watch = open_page(new_page, console)
    page.select_option("#conn-mode", "test")
    page.fill("#user-id", "u_val")
    page.click("#btn-connect")
    enter_order(page, "SELL", "12.5", "3")
    page.wait_for_selector("#err-price:not(:empty)")
    assert "BAD_PRICE" in page.inner_text("#err-price")
    method, path, headers, body = backend.calls("POST", "/orders")[-1]
    assert headers["x-test-user"] == "u_val"
    assert body == {"symbol": "TEST", "side": "SELL", "quantity": 3, "type": "LIMIT", "tif": "GTC", "price": "12.5"}
    page.fill("#order-price", "1000")
    page.click("#btn-sell")
    page.wait_for_selector("[data-testid=order-row][data-status=QUEUED]")
    assert page.inner_text("#err-price") == ""
    watch.screenshot("page_validation")
    # 400 is an expected answer here; the browser logs it as a failed resource
    assert [e for e in watch.errors if "400" not in e] == []


def test_my_orders_follow_order_events_with_cancel_and_replace(new_page: Any, console: Any, backend: FakeBackend) -> None:
    page, watch = open_page(new_page, console, "?auto=0")
    page.select_option("#conn-mode", "test")
    page.fill("#user-id", "u_me")
    page.click("#btn-connect")
    page.click("#btn-subscribe")
    page.wait_for_selector("#conn-state[data-state=open]")
    enter_order(page, "BUY", "1000", "10")
    row = page.locator("[data-testid=order-row][data-status=QUEUED]")
    row.wait_for()
    oid = row.get_attribute("data-order-id")
    ev = {"e": "order", "user_id": "u_me", "order_id": oid, "s": "TEST", "reason": None, "price": 1000, "t": 1}
    backend.push({**ev, "status": "ACCEPTED", "filled": 0, "remaining": 10, "seq": 3})
    backend.push({**ev, "status": "PARTIALLY_FILLED", "filled": 4, "remaining": 6, "seq": 4})
    row = page.locator(f"[data-order-id='{oid}']")
    page.wait_for_selector(f"[data-order-id='{oid}'][data-status=PARTIALLY_FILLED]")
    backend.push({**ev, "status": "ACCEPTED", "filled": 0, "remaining": 10, "seq": 3})  # older: ignored
    backend.push({"e": "fill", "s": "TEST", "trade_id": "TEST-000000000004", "p": 1000, "q": 4, "maker_order_id": oid,
                  "maker_user_id": "u_me", "taker_order_id": "x", "taker_user_id": "u_other", "taker_side": "SELL",
                  "t": 1_700_000_000_000, "seq": 4})
    page.wait_for_selector("[data-testid=fill-row]")
    assert page.locator("[data-testid=fill-row] td").nth(2).inner_text() == "BUY"
    assert page.locator("[data-testid=fill-row] td").nth(5).inner_text() == "maker"
    assert row.get_attribute("data-status") == "PARTIALLY_FILLED"

    row.locator("[data-testid=replace]").click()
    row.locator("[data-testid=replace-price]").fill("1001")
    row.locator("[data-testid=replace-qty]").fill("8")
    row.locator("[data-testid=replace-send]").click()
    wait_until(lambda: backend.calls("PATCH", f"/orders/{oid}"), what="PATCH")
    assert backend.calls("PATCH", f"/orders/{oid}")[-1][3] == {"symbol": "TEST", "price": 1001, "quantity": 8}
    backend.push({**ev, "status": "REPLACED", "price": 1001, "filled": 4, "remaining": 4, "seq": 6})
    page.wait_for_selector(f"[data-order-id='{oid}'][data-status=REPLACED]")
    assert row.locator("td").nth(3).inner_text() == "1001"

    row.locator("[data-testid=cancel]").click()
    wait_until(lambda: backend.calls("DELETE", f"/orders/{oid}"), what="DELETE")
    assert backend.calls("DELETE", f"/orders/{oid}")[-1][2]["symbol"] == "TEST"
    backend.push({**ev, "status": "CANCELLED", "price": 1001, "filled": 4, "remaining": 0, "seq": 7})
    page.wait_for_selector(f"[data-order-id='{oid}'][data-status=CANCELLED]")
    assert row.locator("[data-testid=cancel]").count() == 0
    # a rejected cancel of a closed order is a note, not a new status
    backend.push({**ev, "status": "REJECTED", "reason": "UNKNOWN_ORDER", "filled": 0, "remaining": 0, "seq": 8})
    page.wait_for_selector(f"[data-order-id='{oid}'] [data-testid=order-note]:has-text('UNKNOWN_ORDER')")
    assert row.get_attribute("data-status") == "CANCELLED"
    watch.screenshot("page_my_orders")
    assert watch.errors == []


def test_higher_timeframes_aggregate_one_minute_events(new_page: Any, console: Any, backend: FakeBackend) -> None:
    t0 = (int(time.time()) // 300) * 300 - 600  # an aligned 5-minute bucket
    backend.charts[("TEST", "5m")] = [
        {"time": t0 - 300, "open": 90, "high": 99, "low": 88, "close": 95, "volume": 7},
        {"time": t0, "open": 100, "high": 110, "low": 95, "close": 105, "volume": 10},
    ]
    backend.charts[("TEST", "1m")] = [{"time": t0 + 60, "open": 104, "high": 106, "low": 103, "close": 105, "volume": 3}]
    page, watch = open_page(new_page, console)
    page.wait_for_selector("#chart[data-state=ready]")
    page.click("[data-testid=tf-5m]")
    page.wait_for_selector("#chart[data-tf='5m'][data-loads='2']")
    assert page.get_attribute("#chart", "data-bars") == "2"
    assert ("GET", "/chart") == backend.calls("GET", "/chart")[-1][:2]
    intervals = [c[2]["interval"] for c in backend.calls("GET", "/chart")]
    assert "5m" in intervals

    def candle(epoch: int, o: int, h: int, low: int, c: int, v: int, e: str = "candle") -> dict:
        return {"e": e, "s": "TEST", "o": str(o), "h": str(h), "l": str(low), "c": str(c), "v": str(v),
                "t": yyyymmddhhmm(epoch)}

    def last() -> dict:
        return page.evaluate("() => { const b = supernoba.chart.bars; return b[b.length - 1]; }")

    backend.push(candle(t0 + 60, 104, 108, 103, 107, 5))  # the minute open at load, grown
    wait_until(lambda: last()["close"] == 107, what="aggregated update")
    assert last() == {"time": t0, "open": 100, "high": 110, "low": 95, "close": 107, "volume": 12}
    backend.push(candle(t0 + 60, 104, 108, 103, 107, 5, "candle_close"))  # repeated state: no double count
    backend.push(candle(t0 + 120, 107, 112, 90, 111, 2))
    wait_until(lambda: last()["close"] == 111, what="second minute")
    assert last() == {"time": t0, "open": 100, "high": 112, "low": 90, "close": 111, "volume": 14}
    backend.push(candle(t0 + 300, 111, 111, 109, 110, 1))  # next 5-minute bucket
    wait_until(lambda: last()["time"] == t0 + 300, what="new bucket")
    assert last() == {"time": t0 + 300, "open": 111, "high": 111, "low": 109, "close": 110, "volume": 1}
    assert page.get_attribute("#chart", "data-bars") == "3"

    # the one conversion: YYYYMMDDHHMM (UTC) -> epoch seconds, and garbage refused
    conv = page.evaluate("""async () => {
        const m = await import('./js/candles.js');
        let bad = null; try { m.candleTimeToEpoch('202513011200'); } catch (e) { bad = e.message; }
        return [m.candleTimeToEpoch('202512161420'), m.candleTimeToEpoch(202401010000), bad,
                m.bucketStart(m.candleTimeToEpoch('202512161427'), '4h')];
    }""")
    assert conv[0] == calendar.timegm((2025, 12, 16, 14, 20, 0))
    assert conv[1] == calendar.timegm((2024, 1, 1, 0, 0, 0))
    assert conv[2] and "bad candle time" in conv[2]
    assert conv[3] == calendar.timegm((2025, 12, 16, 12, 0, 0))
    watch.screenshot("page_aggregation")
    assert watch.errors == []


def test_reconnects_with_backoff_and_resubscribes(new_page: Any, console: Any, backend: FakeBackend) -> None:
    page, watch = open_page(new_page, console, "?main=TEST&sub=AAA,BBB&user=u_rc")
    page.wait_for_selector("#conn-state[data-state=open]")
    wait_until(lambda: backend.subscribes(), what="subscribe")
    assert backend.subscribes()[-1] == {"action": "subscribe", "main": "TEST", "sub": ["AAA", "BBB"]}
    backend.push({"e": "t", "s": "AAA", "p": 1000, "c": 2.5, "yc": -1.2})
    page.wait_for_selector("[data-testid=ticker-AAA][data-price='1000']")
    assert page.inner_text("[data-testid=ticker-AAA] .t-change") == "+2.50%"
    assert page.inner_text("[data-testid=ticker-AAA] .t-prev") == "prev -1.20%"
    n = len(backend.subscribes())
    backend.drop_clients()
    page.wait_for_selector("#conn-state[data-state=reconnecting]")
    page.wait_for_selector("#conn-state[data-state=open]", timeout=5000)
    wait_until(lambda: len(backend.subscribes()) > n, what="resubscribe")
    assert backend.subscribes()[-1] == {"action": "subscribe", "main": "TEST", "sub": ["AAA", "BBB"]}
    assert page.evaluate("() => supernoba.conn.opens") == 2
    # ?user= opened the page as a test-mode user, and the reconnect kept the user
    assert len(backend.ws_paths) == 2
    assert all("testMode=true" in p and "userId=u_rc" in p for p in backend.ws_paths)
    assert page.get_attribute("#order-form", "data-guard") == "open"
    delays = page.evaluate("async () => { const m = await import('./js/ws.js');"
                           " return [0, 1, 2, 3, 10].map(n => m.backoffDelay(n, () => 0.5)); }")
    assert delays == [500, 1000, 2000, 4000, 15000]
    watch.screenshot("page_reconnect")
    assert watch.errors == []


def test_a_ticker_that_arrives_before_the_subscribe_ack_is_shown(new_page: Any, console: Any,
                                                                 backend: FakeBackend) -> None:
    """The server's streamer may push a new subscription's state before the ws handler's
    `subscribed` ack arrives (two senders): the ticker cell made on the ack shows it."""
    page, watch = open_page(new_page, console, "?main=TEST&user=u_early")
    page.wait_for_selector("#event-log li.ok:has-text('subscribed main=TEST')")
    backend.push({"e": "t", "s": "BBB", "p": 700, "c": 1.5, "yc": -0.5})  # not shown yet: no cell
    backend.push({"e": "t", "s": "TEST", "p": 1000, "c": 0.0, "yc": 0.0})
    page.wait_for_selector("[data-testid=ticker-TEST][data-price='1000']")  # so BBB's was handled too
    assert page.locator("[data-testid=ticker-BBB]").count() == 0
    page.fill("#sub-symbols", "BBB")
    page.click("#btn-subscribe")
    page.wait_for_selector("#event-log li.ok:has-text('subscribed main=TEST sub=[BBB]')")
    page.wait_for_selector("[data-testid=ticker-BBB]")
    assert page.get_attribute("[data-testid=ticker-BBB]", "data-price") == "700"
    assert page.inner_text("[data-testid=ticker-BBB] .t-change") == "+1.50%"
    assert page.inner_text("[data-testid=ticker-BBB] .t-prev") == "prev -0.50%"
    assert watch.errors == []


def test_admin_panel_only_with_admin_key(new_page: Any, console: Any, backend: FakeBackend) -> None:
    page, watch = open_page(new_page, console)
    assert page.is_hidden("#admin-panel")
    page.fill("#admin-key", "k3y")
    page.click("#btn-connect")
    page.wait_for_selector("[data-testid=admin-symbol-TEST]")
    page.fill("#admin-new-symbol", "new1")
    page.click("#btn-admin-add")
    page.wait_for_selector("[data-testid=admin-symbol-NEW1]")
    assert backend.calls("POST", "/admin/symbols")[-1][3]["symbol"] == "NEW1"
    page.click("[data-testid=admin-remove-NEW1]")
    page.wait_for_selector("[data-testid=admin-symbol-NEW1]", state="detached")
    assert backend.admin_symbols == ["TEST"]
    page.fill("#admin-new-symbol", "bad sym")  # the server refuses it: its error stays in the panel
    page.click("#btn-admin-add")
    page.wait_for_function("document.querySelector('#admin-error').textContent.startsWith('INVALID_SYMBOL')")
    page.wait_for_timeout(300)
    assert page.text_content("#admin-error").startswith("INVALID_SYMBOL")
    watch.screenshot("page_admin")
    assert [e for e in watch.errors if "status of 400" not in e] == []  # the refused symbol


def test_jwt_session_sends_the_token_and_shows_admin_for_admin_role(new_page: Any, console: Any,
                                                                    backend: FakeBackend) -> None:
    import base64
    import json

    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    token = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64({'sub': 'u_jwt', 'app_metadata': {'role': 'admin'}})}.sig"
    page, watch = open_page(new_page, console)
    page.select_option("#conn-mode", "jwt")
    page.fill("#jwt", token)
    page.click("#btn-connect")
    page.wait_for_selector("#order-form[data-guard=open]")
    assert page.inner_text("#whoami") == "as u_jwt"
    wait_until(lambda: any(f"token={token}" in p for p in backend.ws_paths), what="connect with ?token=")
    assert page.is_visible("#admin-panel")  # role admin in the token; the server still decides
    page.wait_for_selector("#admin-error:has-text('FORBIDDEN')")
    enter_order(page, "BUY", "5", "1")
    page.wait_for_selector("[data-testid=order-row][data-status=QUEUED]")
    assert backend.calls("POST", "/orders")[-1][2]["authorization"] == f"Bearer {token}"
    assert "x-test-user" not in backend.calls("POST", "/orders")[-1][2]
    watch.screenshot("page_jwt")
    assert [e for e in watch.errors if "status of 403" not in e] == []


def test_exported_static_site_talks_to_the_api_directly(new_page: Any, backend: FakeBackend, tmp_path: Any) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from tools.console.serve import export

    out = export(tmp_path / "site", backend.rest_url, backend.ws_url, stage="dev")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        backend.depth["TEST"] = {"e": "d", "s": "TEST", "t": 1, "u": 3, "b": [[50, 2]], "a": [[51, 1]]}
        page = new_page()
        watch = PageWatch(page)
        page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/")
        page.wait_for_selector("#ladder[data-u='3']")  # GET /depth straight to the API (CORS)
        page.select_option("#conn-mode", "test")
        page.fill("#user-id", "u_static")
        page.click("#btn-connect")
        enter_order(page, "SELL", "50", "1")
        page.wait_for_selector("[data-testid=order-row][data-status=QUEUED]")
        assert backend.calls("POST", "/orders")[-1][2]["x-test-user"] == "u_static"
        watch.screenshot("page_exported")
        assert watch.errors == []
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("bad", ["bad user!", "ü", "u" * 300])
def test_invalid_test_mode_user_id_is_refused_on_the_page(new_page: Any, console: Any, backend: FakeBackend,
                                                          bad: str) -> None:
    page, watch = open_page(new_page, console)
    page.wait_for_selector("#conn-state[data-state=open]")  # anonymous
    page.select_option("#conn-mode", "test")
    page.fill("#user-id", bad)
    page.click("#btn-connect")
    page.wait_for_selector("#user-id-error:not(:empty)")
    assert "[A-Za-z0-9_.@:-]{1,64}" in page.inner_text("#user-id-error")
    assert not page.inner_text("#whoami").startswith("as ")
    assert page.get_attribute("#order-form", "data-guard") == "blocked"
    assert page.evaluate("() => supernoba.session.mode") == "anonymous"
    assert not any("userId=" in p for p in backend.ws_paths)
    page.fill("#user-id", "u_ok.1@x:y-z")  # a good id clears the message and logs in
    page.click("#btn-connect")
    page.wait_for_selector("#order-form[data-guard=open]")
    assert page.inner_text("#user-id-error") == ""
    assert page.inner_text("#whoami") == "as u_ok.1@x:y-z"
    assert watch.errors == []


def test_invalid_user_id_in_the_query_does_not_log_in(new_page: Any, console: Any, backend: FakeBackend) -> None:
    page, watch = open_page(new_page, console, "?user=bad%20user!")
    page.wait_for_selector("#user-id-error:not(:empty)")
    page.wait_for_timeout(300)
    assert not page.inner_text("#whoami").startswith("as ")
    assert page.get_attribute("#order-form", "data-guard") == "blocked"
    assert not any("userId=" in p for p in backend.ws_paths)
    assert watch.errors == []


def test_refused_handshake_stops_retrying_and_says_what_was_refused(new_page: Any, console: Any,
                                                                   backend: FakeBackend) -> None:
    backend.refuse_users.add("u_banned")
    page, watch = open_page(new_page, console, "?user=u_banned")
    page.wait_for_selector("#conn-state[data-state=closed]")
    state = page.inner_text("#conn-state")
    assert "refused" in state and "u_banned" in state, state
    assert "gateway down" not in state
    page.wait_for_timeout(2500)  # no retry with backoff
    assert len(backend.refused_paths) == 1
    assert page.get_attribute("#conn-state", "data-state") == "closed"
    assert not page.inner_text("#whoami").startswith("as ")
    assert page.is_disabled("#btn-buy")
    watch.screenshot("page_refused_handshake")
    assert [e for e in watch.errors if "WebSocket" not in e] == []


def test_unreachable_gateway_keeps_retrying_and_says_so(new_page: Any, console: Any, backend: FakeBackend) -> None:
    page, watch = open_page(new_page, console, "?user=u_down&ws=ws://127.0.0.1:9/api")
    page.wait_for_selector("#conn-state[data-state=reconnecting]:has-text('retry in')")
    state = page.inner_text("#conn-state")
    assert "unreachable" in state and "refused" not in state, state
    assert [e for e in watch.errors if "WebSocket" not in e] == []


def test_a_refused_subscription_keeps_the_previous_symbols(new_page: Any, console: Any, backend: FakeBackend) -> None:
    backend.active_symbols = {"TEST", "AAA"} | {f"S{i:02d}" for i in range(40)}
    page, watch = open_page(new_page, console, "?main=TEST&sub=AAA&user=u_subs")
    page.wait_for_selector("#event-log li.ok:has-text('subscribed main=TEST')")
    page.wait_for_selector("#order-form[data-guard=open]")

    def shown() -> tuple[str, str, str, list[str]]:
        return (page.inner_text("#entry-symbol"), page.inner_text("#chart-title"),
                page.get_attribute("#ladder", "data-symbol"),
                page.eval_on_selector_all("#ticker-strip .tick", "els => els.map(e => e.dataset.symbol)"))

    assert shown() == ("TEST", "TEST", "TEST", ["TEST", "AAA"])
    for main, sub, code in [("nope", "AAA", "UNKNOWN_SYMBOL"), ("<script>", "AAA", "INVALID_SYMBOL"),
                            ("TEST, TEST", "AAA", "INVALID_SYMBOL"),
                            ("TEST", ", ".join(f"S{i:02d}" for i in range(40)), "TOO_MANY_SUBSCRIPTIONS")]:
        page.fill("#main-symbol", main)
        page.fill("#sub-symbols", sub)
        page.click("#btn-subscribe")
        page.wait_for_selector(f"#sub-error:has-text('{code}')")
        page.wait_for_timeout(200)
        assert shown() == ("TEST", "TEST", "TEST", ["TEST", "AAA"]), (main, code)
        page.evaluate("() => document.querySelector('#sub-error').textContent = ''")
    # the 40-symbol request had unsubscribed AAA first: the previous subscription is restored
    wait_until(lambda: backend.subscribes()[-1] == {"action": "subscribe", "main": "TEST", "sub": ["AAA"]},
               what="restoring subscribe")
    assert page.evaluate("() => supernoba.conn.subscription") == {"main": "TEST", "sub": ["AAA"]}
    enter_order(page, "BUY", "5", "1")
    wait_until(lambda: backend.calls("POST", "/orders"), what="POST /orders")
    assert backend.calls("POST", "/orders")[-1][3]["symbol"] == "TEST"
    # an acknowledged change is applied
    page.fill("#main-symbol", "aaa")
    page.fill("#sub-symbols", "S01")
    page.click("#btn-subscribe")
    page.wait_for_selector("#event-log li.ok:has-text('subscribed main=AAA')")
    wait_until(lambda: shown() == ("AAA", "AAA", "AAA", ["AAA", "S01"]), what="new main applied")
    assert page.inner_text("#sub-error") == ""
    watch.screenshot("page_refused_subscription")
    assert [e for e in watch.errors if "status of 400" not in e] == []


def test_order_entry_errors_clear_when_the_symbol_changes(new_page: Any, console: Any, backend: FakeBackend) -> None:
    backend.order_refused_symbols.add("AAA")
    page, watch = open_page(new_page, console, "?main=AAA&user=u_stale")
    page.wait_for_selector("#event-log li.ok:has-text('subscribed main=AAA')")
    enter_order(page, "BUY", "5", "1")
    page.wait_for_selector("#err-symbol:has-text('INVALID_SYMBOL')")
    page.click("[data-testid=ticker-AAA]")  # same symbol: the error stays
    page.fill("#main-symbol", "TEST")
    page.click("#btn-subscribe")
    page.wait_for_selector("#entry-symbol:has-text('TEST')")
    assert page.inner_text("#err-symbol") == ""
    assert page.get_attribute("#err-symbol", "data-code") is None
    page.fill("#order-price", "x")  # a field error goes too
    page.click("#btn-buy")
    page.wait_for_selector("#err-price:has-text('BAD_PRICE')")
    page.fill("#main-symbol", "AAA")
    page.click("#btn-subscribe")
    page.wait_for_selector("#entry-symbol:has-text('AAA')")
    assert page.inner_text("#err-price") == ""
    assert [e for e in watch.errors if "status of 400" not in e] == []


def test_order_form_and_order_buttons_are_off_while_disconnected(new_page: Any, console: Any,
                                                                 backend: FakeBackend) -> None:
    page, watch = open_page(new_page, console, "?user=u_off")
    page.wait_for_selector("#order-form[data-guard=open]")
    enter_order(page, "BUY", "5", "1")
    page.wait_for_selector("[data-testid=order-row][data-status=QUEUED]")
    row = page.locator("[data-testid=order-row]").first
    assert row.locator("[data-testid=cancel]").is_enabled()
    row.locator("[data-testid=replace]").click()  # an open replace editor is switched off too
    page.click("#btn-disconnect")
    page.wait_for_selector("#conn-state[data-state=closed]")
    assert page.get_attribute("#order-form", "data-guard") == "offline"
    assert page.is_visible("#login-guard") and "connect" in page.inner_text("#login-guard").lower()
    assert page.is_disabled("#btn-buy") and page.is_disabled("#btn-sell") and page.is_disabled("#order-price")
    assert row.locator("[data-testid=replace-send]").is_disabled()
    row.locator("[data-testid=replace-cancel]").click()
    assert row.locator("[data-testid=cancel]").is_disabled()
    assert row.locator("[data-testid=replace]").is_disabled()
    n_posts = len(backend.calls("POST", "/orders"))
    page.locator("#btn-buy").click(force=True)
    page.wait_for_timeout(300)
    assert len(backend.calls("POST", "/orders")) == n_posts
    page.click("#btn-connect")  # back on: enabled again
    page.wait_for_selector("#order-form[data-guard=open]")
    assert page.is_enabled("#btn-buy") and row.locator("[data-testid=cancel]").is_enabled()
    backend.drop_clients()  # a dropped connection switches it off until the reconnect
    page.wait_for_selector("#order-form[data-guard=offline]")
    assert page.is_disabled("#btn-sell") and row.locator("[data-testid=cancel]").is_disabled()
    page.wait_for_selector("#order-form[data-guard=open]", timeout=5000)
    assert page.is_enabled("#btn-sell") and row.locator("[data-testid=cancel]").is_enabled()
    watch.screenshot("page_offline_guard")
    assert watch.errors == []
