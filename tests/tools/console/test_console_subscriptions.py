"""Subscription acknowledgements on the console page against a fake backend that misbehaves
on demand (tests/tools/console/helpers.py `FakeBackend`, extended here).

The page applies a subscription only on the server's `subscribed` ack; whatever happens to
the requests in flight (several refused at once, the socket dropped before an answer, an
error code that is not a subscribe code, a Lambda error without an `e` field, acks out of
order), the page and the server must end on the same subscription. Scenarios from the
review's console_races.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from tests.tools.console.helpers import FakeBackend, PageWatch
from tests.waiting import wait_until
from tools.console.serve import serve

LAMBDA_ERROR = {"message": "Internal server error", "connectionId": "c1", "requestId": "r1"}


class RaceBackend(FakeBackend):
    """`swallow`: subscribes (by main) never answered; `fail`: subscribes answered with the
    given message instead (once); `hold`: subscribes applied at once but answered only after
    the next subscribe's answer (API Gateway running two messages concurrently)."""

    def __init__(self) -> None:
        super().__init__()
        self.swallow: set[str] = set()
        self.fail: dict[str, dict] = {}
        self.hold: set[str] = set()
        self.states: list[dict[str, Any]] = []  # every connection's server-side state, newest last

    async def _ws_handler(self, ws: ServerConnection) -> None:
        self.ws_paths.append(ws.request.path)
        self._clients.add(ws)
        state: dict[str, Any] = {"main": None, "subs": set()}
        self.states.append(state)
        held: list[dict] = []
        try:
            async for raw in ws:
                msg = json.loads(raw)
                self.ws_received.append(msg)
                main = msg.get("main") if msg.get("action") == "subscribe" else None
                if main in self.swallow:
                    self.swallow.discard(main)
                    continue
                if main in self.fail:
                    await ws.send(json.dumps(self.fail.pop(main)))
                    continue
                reply = self._answer(msg, state)
                if main in self.hold:
                    self.hold.discard(main)
                    held.append(reply)
                    continue
                if reply is not None:
                    await ws.send(json.dumps(reply))
                if main is not None:
                    for r in held:
                        await ws.send(json.dumps(r))
                    held.clear()
        finally:
            self._clients.discard(ws)


@pytest.fixture
def backend() -> Iterator[RaceBackend]:
    with RaceBackend() as fb:
        fb.active_symbols = {"TEST", "AAA", "BBB", "CCC"}
        yield fb


@pytest.fixture
def console(backend: RaceBackend) -> Iterator[Any]:
    with serve("127.0.0.1", 0, backend.rest_url, backend.ws_url, None) as srv:
        yield srv


def open_on_test(new_page: Any, console: Any) -> tuple[Any, PageWatch]:
    """The page acknowledged on main TEST with sub AAA, BBB."""
    page = new_page()
    watch = PageWatch(page)
    page.goto(console.url + "?main=TEST&sub=AAA,BBB&user=u_race")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector("#event-log li.ok:has-text('subscribed main=TEST')")
    assert shown(page) == ("TEST", ["TEST", "AAA", "BBB"])
    return page, watch


def shown(page: Any) -> tuple[str, list[str]]:
    return (page.inner_text("#entry-symbol"),
            page.eval_on_selector_all("#ticker-strip .tick", "els => els.map(e => e.dataset.symbol)"))


def submit(page: Any, *requests: tuple[str, str]) -> None:
    """Submit the subscribe form once per (main, sub), all in one go (no answer in between)."""
    page.evaluate("""(reqs) => {
      const f = document.querySelector('#sub-form');
      for (const [main, sub] of reqs) {
        document.querySelector('#main-symbol').value = main;
        document.querySelector('#sub-symbols').value = sub;
        f.requestSubmit();
      }
    }""", [list(r) for r in requests])


def settled(page: Any) -> bool:
    return page.evaluate("() => supernoba.conn.pending.length === 0")


def server_state(backend: RaceBackend) -> dict[str, Any]:
    return {"main": backend.states[-1]["main"], "subs": set(backend.states[-1]["subs"])}


TEST_AAA_BBB = {"main": "TEST", "subs": {"AAA", "BBB"}}


def test_several_refused_subscribes_in_flight_restore_the_acknowledged_one(
        new_page: Any, console: Any, backend: RaceBackend) -> None:
    page, watch = open_on_test(new_page, console)
    submit(page, ("NOPE1", "AAA"), ("NOPE2", "AAA"))  # both drop BBB first, both refused
    page.wait_for_selector("#sub-error:has-text('UNKNOWN_SYMBOL')")
    wait_until(lambda: server_state(backend) == TEST_AAA_BBB and settled(page),
               what="the server back on TEST, AAA, BBB", timeout=5)
    assert shown(page) == ("TEST", ["TEST", "AAA", "BBB"])
    assert page.evaluate("() => supernoba.conn.subscription") == {"main": "TEST", "sub": ["AAA", "BBB"]}
    assert "still on TEST" in page.inner_text("#sub-error")
    assert [e for e in watch.errors if "status of 400" not in e] == []


def test_a_refused_resubscribe_after_a_reconnect_falls_back_to_the_acknowledged_one(
        new_page: Any, console: Any, backend: RaceBackend) -> None:
    page, watch = open_on_test(new_page, console)
    backend.swallow.add("NOPE")  # its answer is lost with the socket
    submit(page, ("NOPE", "AAA, BBB"))
    wait_until(lambda: any(m.get("main") == "NOPE" for m in backend.subscribes()), what="NOPE sent")
    backend.drop_clients()
    wait_until(lambda: len(backend.states) == 2, what="the reconnect", timeout=8)
    # the new socket asks for NOPE again (refused), then re-establishes TEST, AAA, BBB
    wait_until(lambda: server_state(backend) == TEST_AAA_BBB and settled(page),
               what="the new connection on TEST, AAA, BBB", timeout=5)
    assert backend.subscribes()[-2:] == [{"action": "subscribe", "main": "NOPE", "sub": ["AAA", "BBB"]},
                         {"action": "subscribe", "main": "TEST", "sub": ["AAA", "BBB"]}]
    assert shown(page) == ("TEST", ["TEST", "AAA", "BBB"])
    assert "still on TEST" in page.inner_text("#sub-error")
    assert [e for e in watch.errors if "WebSocket" not in e] == []


def test_any_error_answers_a_subscribe_and_acks_are_matched_by_content(
        new_page: Any, console: Any, backend: RaceBackend) -> None:
    page, watch = open_on_test(new_page, console)
    # CACHE_UNAVAILABLE (not a subscribe code) answers BBB: refused, the page stays on TEST
    backend.fail["BBB"] = {"e": "error", "code": "CACHE_UNAVAILABLE", "message": "the cache is unavailable; retry"}
    submit(page, ("BBB", "AAA"))
    page.wait_for_selector("#sub-error:has-text('CACHE_UNAVAILABLE')")
    wait_until(lambda: server_state(backend) == TEST_AAA_BBB and settled(page), what="back on TEST", timeout=5)
    assert shown(page) == ("TEST", ["TEST", "AAA", "BBB"])
    # the next acknowledged subscribe is the page's (not paired with the BBB request)
    submit(page, ("AAA", "TEST"))
    page.wait_for_selector("#event-log li.ok:has-text('subscribed main=AAA')")
    wait_until(lambda: shown(page) == ("AAA", ["AAA", "TEST"]) and settled(page), what="AAA applied", timeout=5)
    assert page.inner_text("#sub-error") == ""
    assert server_state(backend) == {"main": "AAA", "subs": {"TEST"}}
    # an API Gateway / Lambda failure comes back without an `e`: refused too
    backend.fail["CCC"] = LAMBDA_ERROR
    submit(page, ("CCC", "TEST"))
    page.wait_for_selector("#sub-error:has-text('Internal server error')")
    wait_until(lambda: settled(page), what="settled", timeout=5)
    assert shown(page) == ("AAA", ["AAA", "TEST"])
    assert server_state(backend) == {"main": "AAA", "subs": {"TEST"}}
    # a refused one afterwards keeps AAA
    submit(page, ("NOPE", "TEST"))
    page.wait_for_selector("#sub-error:has-text('UNKNOWN_SYMBOL')")
    wait_until(lambda: settled(page), what="settled", timeout=5)
    assert shown(page) == ("AAA", ["AAA", "TEST"])
    # acks out of order (two messages run concurrently): the page and the server end on the last request
    backend.hold.add("BBB")
    submit(page, ("BBB", "TEST"), ("CCC", "AAA"))
    wait_until(lambda: settled(page) and server_state(backend) == {"main": "CCC", "subs": {"AAA"}}
               and shown(page) == ("CCC", ["CCC", "AAA"]), what="CCC on both sides", timeout=5)
    # BBB's ack came last, so CCC was asked for once more (the page had shown BBB meanwhile)
    assert [m["main"] for m in backend.subscribes()[-3:]] == ["BBB", "CCC", "CCC"]
    # a reconnect resubscribes what the page shows
    n = len(backend.states)
    backend.drop_clients()
    wait_until(lambda: len(backend.states) > n and settled(page)
               and server_state(backend) == {"main": "CCC", "subs": {"AAA"}}, what="resubscribed", timeout=8)
    assert backend.subscribes()[-1] == {"action": "subscribe", "main": "CCC", "sub": ["AAA"]}
    assert shown(page) == ("CCC", ["CCC", "AAA"])
    watch.screenshot("page_subscription_races")
    assert [e for e in watch.errors if "WebSocket" not in e] == []
