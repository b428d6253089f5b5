"""Subscription acknowledgements on the console page against a fake backend that misbehaves
on demand (tests/tools/console/helpers.py `FakeBackend`, extended here).

The page applies a subscription only on the server's `subscribed` ack; whatever happens to
the requests in flight (several refused at once, the socket dropped before an answer, an
error code that is not a subscribe code, a Lambda error without an `e` field, answers out of
order, an error answering an `unsubscribe` or `ping`, an answer that never comes), the page
and the server must end on the same subscription. The page keeps one request in flight per
socket, so every answer pairs with exactly one request. Scenarios from the reviews'
console_races.py and console_ooo.py.
"""

from __future__ import annotations

import asyncio
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
    given message instead (once); `fail_action`: the same for an `unsubscribe` / `ping` (by
    action, once); `slow`: subscribes (by main) applied at once but answered after that many
    seconds, each answer from its own task (API Gateway running two messages of one connection
    concurrently, a Lambda slow to post its answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.swallow: set[str] = set()
        self.fail: dict[str, dict] = {}
        self.fail_action: dict[str, dict] = {}
        self.slow: dict[str, float] = {}
        self.states: list[dict[str, Any]] = []  # every connection's server-side state, newest last
        self.overlapped: list[dict] = []  # messages received while an earlier one was unanswered

    async def _ws_handler(self, ws: ServerConnection) -> None:
        self.ws_paths.append(ws.request.path)
        self._clients.add(ws)
        state: dict[str, Any] = {"main": None, "subs": set()}
        self.states.append(state)
        tasks: set[asyncio.Task] = set()  # answers not sent yet

        async def send(reply: dict, delay: float) -> None:
            await asyncio.sleep(delay)
            await ws.send(json.dumps(reply))

        try:
            async for raw in ws:
                msg = json.loads(raw)
                self.ws_received.append(msg)
                if tasks:
                    self.overlapped.append(msg)
                action = msg.get("action")
                main = msg.get("main") if action == "subscribe" else None
                if main in self.swallow:
                    self.swallow.discard(main)
                    continue
                if main in self.fail:
                    reply: dict | None = self.fail.pop(main)
                elif action in self.fail_action:
                    reply = self.fail_action.pop(action)
                else:
                    reply = self._answer(msg, state)
                if reply is not None:
                    task = asyncio.create_task(send(reply, self.slow.get(main, 0.0) if main else 0.0))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
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
    # a slow ack (two messages could run concurrently): the next request waits for it, so the
    # page and the server end on the last request without a restoring subscribe
    backend.slow["BBB"] = 0.5
    submit(page, ("BBB", "TEST"), ("CCC", "AAA"))
    wait_until(lambda: settled(page) and server_state(backend) == {"main": "CCC", "subs": {"AAA"}}
               and shown(page) == ("CCC", ["CCC", "AAA"]), what="CCC on both sides", timeout=5)
    assert [m["main"] for m in backend.subscribes()[-2:]] == ["BBB", "CCC"]
    assert page.inner_text("#sub-error") == ""
    # a reconnect resubscribes what the page shows
    n = len(backend.states)
    backend.drop_clients()
    wait_until(lambda: len(backend.states) > n and settled(page)
               and server_state(backend) == {"main": "CCC", "subs": {"AAA"}}, what="resubscribed", timeout=8)
    assert backend.subscribes()[-1] == {"action": "subscribe", "main": "CCC", "sub": ["AAA"]}
    assert shown(page) == ("CCC", ["CCC", "AAA"])
    watch.screenshot("page_subscription_races")
    assert [e for e in watch.errors if "WebSocket" not in e] == []


def in_flight(page: Any) -> int:
    return page.evaluate("() => supernoba.conn.inflight ? 1 : 0")


def test_answers_out_of_order_pair_with_their_own_requests(
        new_page: Any, console: Any, backend: RaceBackend) -> None:
    """console_ooo.py: a valid subscribe answered slowly, then an invalid one the server would
    refuse at once; concurrent, the error would arrive first. One request in flight at a time:
    the error answers the invalid request, the valid one is applied, both sides agree."""
    page, watch = open_on_test(new_page, console)
    backend.slow["AAA"] = 0.5
    backend.slow["CCC"] = 0.5
    submit(page, ("AAA", "TEST"), ("NOPE", "TEST"))
    page.wait_for_selector("#sub-error:has-text('UNKNOWN_SYMBOL')")
    wait_until(lambda: settled(page) and not in_flight(page) and server_state(backend) == {"main": "AAA", "subs": {"TEST"}}
               and shown(page) == ("AAA", ["AAA", "TEST"]), what="AAA on both sides", timeout=5)
    assert page.evaluate("() => supernoba.conn.acked") == {"main": "AAA", "sub": ["TEST"]}
    assert "still on AAA" in page.inner_text("#sub-error")
    # a valid subscribe answered slowly, then a refused one that drops TEST first
    submit(page, ("CCC", "TEST, BBB"), ("NOPE2", "BBB"))
    page.wait_for_selector("#sub-error:has-text('NOPE2')")
    wait_until(lambda: settled(page) and not in_flight(page)
               and server_state(backend) == {"main": "CCC", "subs": {"TEST", "BBB"}}
               and shown(page) == ("CCC", ["CCC", "TEST", "BBB"]), what="CCC on both sides", timeout=5)
    assert page.evaluate("() => supernoba.conn.subscription") == {"main": "CCC", "sub": ["TEST", "BBB"]}
    # the queue still flows
    submit(page, ("BBB", "CCC"))
    wait_until(lambda: settled(page) and shown(page) == ("BBB", ["BBB", "CCC"]), what="BBB applied", timeout=5)
    assert page.inner_text("#sub-error") == ""
    # never two requests in flight: each message went out after the previous one was answered
    assert backend.overlapped == []
    watch.screenshot("page_subscription_out_of_order")
    assert [e for e in watch.errors if "WebSocket" not in e] == []


def test_an_error_answering_an_unsubscribe_or_ping_refuses_no_subscribe(
        new_page: Any, console: Any, backend: RaceBackend) -> None:
    page, watch = open_on_test(new_page, console)
    cache_down = {"e": "error", "code": "CACHE_UNAVAILABLE", "message": "the cache is unavailable; retry"}
    # AAA, TEST drops AAA and BBB first; that unsubscribe fails, the subscribe itself is acknowledged
    backend.fail_action["unsubscribe"] = dict(cache_down)
    submit(page, ("AAA", "TEST"))
    page.wait_for_selector("#event-log li.ok:has-text('subscribed main=AAA')")
    wait_until(lambda: settled(page) and not in_flight(page) and shown(page)[0] == "AAA", what="AAA applied", timeout=5)
    assert page.inner_text("#sub-error") == ""
    # the server kept BBB (its unsubscribe failed): the page shows what the server acknowledged
    assert server_state(backend) == {"main": "AAA", "subs": {"AAA", "BBB", "TEST"}}
    assert shown(page) == ("AAA", ["AAA", "TEST", "BBB"])
    # a ping answered by an error, with a subscribe right behind it
    backend.fail_action["ping"] = dict(cache_down)
    page.evaluate("() => supernoba.conn.ping()")
    submit(page, ("CCC", "AAA, TEST, BBB"))
    page.wait_for_selector("#event-log li.ok:has-text('subscribed main=CCC')")
    wait_until(lambda: settled(page) and not in_flight(page) and shown(page) == ("CCC", ["CCC", "AAA", "TEST", "BBB"]),
               what="CCC applied", timeout=5)
    assert page.inner_text("#sub-error") == ""
    assert server_state(backend) == {"main": "CCC", "subs": {"AAA", "BBB", "TEST"}}
    assert {"action": "ping"} in backend.ws_received
    assert [e for e in watch.errors if "WebSocket" not in e] == []


def test_a_lost_answer_does_not_block_the_queue(new_page: Any, console: Any, backend: RaceBackend) -> None:
    page, watch = open_on_test(new_page, console)
    page.evaluate("() => { supernoba.conn.answerTimeoutMs = 1000; }")
    backend.swallow.add("CCC")  # never answered (and not applied)
    submit(page, ("CCC", "AAA, BBB"), ("BBB", "AAA"))
    # CCC counts as refused after 1 s, then BBB goes out and is acknowledged
    page.wait_for_selector("#event-log li:has-text('NO_ANSWER')")
    wait_until(lambda: settled(page) and not in_flight(page) and shown(page) == ("BBB", ["BBB", "AAA"])
               and server_state(backend) == {"main": "BBB", "subs": {"AAA"}}, what="BBB on both sides", timeout=5)
    assert page.evaluate("() => supernoba.conn.subscription") == {"main": "BBB", "sub": ["AAA"]}
    # a lost answer alone: refused, the acknowledged subscription is restored
    backend.swallow.add("CCC")
    submit(page, ("CCC", "AAA"))
    page.wait_for_selector("#sub-error:has-text('NO_ANSWER')")
    wait_until(lambda: settled(page) and not in_flight(page) and server_state(backend) == {"main": "BBB", "subs": {"AAA"}},
               what="back on BBB", timeout=5)
    assert shown(page) == ("BBB", ["BBB", "AAA"])
    assert "still on BBB" in page.inner_text("#sub-error")
    assert [e for e in watch.errors if "WebSocket" not in e] == []


def test_a_first_subscribe_answered_after_its_timeout_is_still_the_pages(
        new_page: Any, console: Any, backend: RaceBackend) -> None:
    """Nothing acknowledged yet and nothing asked since: the late ack is the server's state, so it
    becomes the page's (before, the page showed nothing while the server pushed TEST)."""
    page = new_page()
    watch = PageWatch(page)
    page.goto(console.url + "?auto=0&user=u_late")
    page.wait_for_selector("body[data-ready=true]")
    page.evaluate("() => { supernoba.conn.answerTimeoutMs = 1000; }")
    backend.slow["TEST"] = 1.5  # a cold Lambda
    submit(page, ("TEST", "AAA"))
    page.wait_for_selector("#event-log li:has-text('NO_ANSWER')")
    wait_until(lambda: settled(page) and shown(page) == ("TEST", ["TEST", "AAA"]), what="the late ack adopted",
               timeout=5)
    assert server_state(backend) == {"main": "TEST", "subs": {"AAA"}}
    assert page.evaluate("() => supernoba.conn.subscription") == {"main": "TEST", "sub": ["AAA"]}
    assert page.inner_text("#sub-error") == ""
    assert [e for e in watch.errors if "WebSocket" not in e] == []
