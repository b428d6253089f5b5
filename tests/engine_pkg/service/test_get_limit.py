"""GetRecords pacing (issue 4 follow-up): a page too large for the read timeout cannot stall a
shard, and a hot shard polls fast while an idle one backs off.

The engine halves its GetRecords `Limit` on a read timeout (down to a floor) and doubles it
back after quick reads, instead of asking for the same too-large page forever.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest

from chalice_app import keys
from engine_pkg import Engine
from engine_pkg.service.shard_reader import GET_LIMIT_GROW_AFTER, GetLimit, poll_wait
from tests.engine_pkg.service.helpers import (
    StandInHandler,
    fast,
    http_server,
    put_orders,
    running_service,
)
from tests.waiting import wait_until

SLOW_ABOVE = 1_000  # the proxy answers a GetRecords asking for more than this many records late
SLOW_S = 0.5


class _SlowBigPages(StandInHandler):
    """Forwards every Kinesis call to kinesalite; a GetRecords with Limit > SLOW_ABOVE is answered
    after SLOW_S, so the read timeout is hit however fast the machine serves a big page."""

    protocol_version = "HTTP/1.1"
    upstream = ""
    big_pages = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("X-Amz-Target", "").endswith(".GetRecords") and orjson.loads(body).get("Limit", 0) > SLOW_ABOVE:
            type(self).big_pages += 1
            time.sleep(SLOW_S)
        up = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        conn.request("POST", self.path, body, {k: v for k, v in self.headers.items() if k.lower() != "connection"})
        resp = conn.getresponse()
        out = resp.read()
        conn.close()
        skip = ("connection", "transfer-encoding", "content-length", "date", "server")
        self.reply(resp.status, out, {k: v for k, v in resp.getheaders() if k.lower() not in skip})


@pytest.fixture
def slow_big_pages(aws, monkeypatch) -> Iterator[type[_SlowBigPages]]:
    """Kinesis clients built from here on (the engine's) reach kinesalite through the slow proxy."""
    _SlowBigPages.upstream = aws.client("kinesis").meta.endpoint_url
    _SlowBigPages.big_pages = 0
    with http_server(_SlowBigPages) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", url)
        yield _SlowBigPages


def test_limit_halves_on_timeouts_down_to_the_floor_and_grows_back_after_quick_reads():
    lim = GetLimit(10_000, timeout_s=1.0, floor=100)
    seen = [lim.value]
    while lim.timed_out():
        seen.append(lim.value)
    assert seen == [10_000, 5_000, 2_500, 1_250, 625, 312, 156, 100]
    assert lim.value == 100 and not lim.timed_out()  # stays at the floor
    # slow successes (>= timeout/4) never grow it; a slow one resets the quick streak
    for _ in range(10):
        assert not lim.succeeded(0.5)
    for _ in range(GET_LIMIT_GROW_AFTER - 1):
        assert not lim.succeeded(0.01)
    assert not lim.succeeded(0.3)
    for _ in range(GET_LIMIT_GROW_AFTER - 1):
        assert not lim.succeeded(0.01)
    assert lim.succeeded(0.01) and lim.value == 200
    while lim.value < 10_000:
        for _ in range(GET_LIMIT_GROW_AFTER):
            lim.succeeded(0.01)
    assert lim.value == 10_000 and not lim.succeeded(0.01)  # capped at the configured maximum
    assert GetLimit(50, timeout_s=1.0, floor=100).floor == 50  # floor never above the maximum


def test_a_read_timeout_shrinks_the_page_and_the_shard_keeps_going(settings, aws, depth_cache, slow_big_pages):
    """4,000 records behind the iterator, Limit 10,000, read timeout 120 ms, and pages of more
    than 1,000 records answered after 0.5 s: the first reads time out. Without the fallback the
    worker would ask for the same page forever; with it every order is matched."""
    kinesis = aws.client("kinesis")
    n, sym, t0 = 4000, "TMO", 1_733_896_380_000
    cmds = [{"action": "ADD", "symbol": sym, "order_id": f"t{i}", "user_id": "u1", "is_buy": True,
             "price": 900 + i % 50, "quantity": 1, "ts": t0 + i} for i in range(n)]
    put_orders(kinesis, settings.orders_stream, cmds, chunk=500)
    ref = Engine(clock=lambda: 0)
    ref.process([orjson.dumps(c) for c in cmds])
    st = fast(settings, engine_get_limit=10_000, engine_get_timeout_ms=120)
    with running_service(st) as svc:
        wait_until(lambda: svc.metrics.counters["orders_total"] >= n, 90, 0.1, "every order matched")
        assert svc.metrics.counters["get_records_timeouts_total"] >= 1
        assert slow_big_pages.big_pages >= 1
        w = svc.worker_for(sym)
        assert w is not None
        assert w.engine.last_seq(sym) == ref.last_seq(sym) == n
        assert w.engine.depth(sym, 10) == ref.depth(sym, 10)
        wait_until(lambda: depth_cache.get(keys.depth(sym)), 10, what="depth written")
        assert orjson.loads(depth_cache.get(keys.depth(sym)))["u"] == n


def test_poll_wait_stays_short_while_the_shard_is_hot_and_backs_off_when_idle():
    floor, idle_max = 0.010, 0.100
    assert poll_wait(True, 0, True, floor, idle_max) == floor
    assert poll_wait(True, 0, False, floor, idle_max) == floor
    hot = [poll_wait(False, i, True, floor, idle_max) for i in range(1, 8)]
    cold = [poll_wait(False, i, False, floor, idle_max) for i in range(1, 8)]
    assert hot == [floor] * 7  # a trading shard: one GetRecords per floor, empty or not
    assert cold == [0.020, 0.040, 0.080, 0.100, 0.100, 0.100, 0.100]  # doubling up to the idle max
    assert poll_wait(False, 50, False, 0.2, 1.0) == 1.0  # production: 200 ms floor, 1 s idle max
    assert poll_wait(False, 50, True, 0.2, 1.0) == 0.2  # production, hot: 5 calls/s, the Kinesis limit
