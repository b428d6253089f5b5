"""Property tests: random command streams through the C engine and the reference model.

Identical event bytes, dropped records, touched seqs and depth after every batch; plus
invariants (book never crossed, events reconstruct the depth, fills conserve quantity,
seq gap-free) and the snapshot/restore property.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_pkg import Engine
from tests.engine_pkg.model import Model, parse
from tests.engine_pkg.strategies import SYMBOLS, command

NOW = 1_000

batches = st.lists(st.lists(command(junk=True), min_size=0, max_size=25), min_size=1, max_size=8)


class EventLedger:
    """Rebuilds every book from the event stream alone, as a downstream consumer would."""

    def __init__(self) -> None:
        self.side: dict[str, bool] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.fill_sum: dict[str, int] = defaultdict(int)

    def feed(self, record: bytes, events: list[bytes]) -> None:
        """One command and the events it caused."""
        c = parse(record)
        for raw in events:
            e = json.loads(raw)
            if e["e"] == "fill":
                self.fill_sum[e["maker_order_id"]] += e["q"]
                self.fill_sum[e["taker_order_id"]] += e["q"]
            elif e["status"] != "REJECTED":
                if e["status"] == "ACCEPTED" and c is not None:
                    self.side[e["order_id"]] = c["is_buy"]
                self.last[e["order_id"]] = e
                assert e["filled"] == self.fill_sum[e["order_id"]], e

    def depth(self, symbol: str) -> dict[str, list[list[int]]]:
        levels: dict[bool, dict[int, int]] = {True: defaultdict(int), False: defaultdict(int)}
        for oid, e in self.last.items():
            if (
                e["s"] == symbol
                and e["status"] in ("ACCEPTED", "PARTIALLY_FILLED", "REPLACED")
                and e["remaining"]
            ):
                levels[self.side[oid]][e["price"]] += e["remaining"]
        return {
            "b": [[p, levels[True][p]] for p in sorted(levels[True], reverse=True)],
            "a": [[p, levels[False][p]] for p in sorted(levels[False])],
        }


def check_batch(eng: Engine, model: Model, batch: list[bytes], prev_seq: dict[str, int]) -> None:
    res = eng.process(batch)
    exp = model.process(batch, NOW)
    assert res.events == exp.events
    assert [d[0] for d in res.dropped] == [d[0] for d in exp.dropped]
    assert res.touched == exp.touched
    assert len(res.status_users) == len(res.statuses)
    for raw, user in zip(res.statuses, res.status_users, strict=True):
        assert json.loads(raw)["user_id"] == user
    for sym in SYMBOLS:
        d = eng.depth(sym, 50)
        assert d == model.depth(sym, 50)
        if d["b"] and d["a"]:
            assert d["b"][0][0] < d["a"][0][0], "crossed book"
    # seq gap-free: one per command with a valid symbol, one per fill
    for sym, last in res.touched.items():
        n_cmds = sum(1 for r in batch if (c := parse(r)) is not None and c.get("symbol") == sym)
        n_fills = sum(1 for f in res.fills if json.loads(f)["s"] == sym)
        assert last - prev_seq.get(sym, 0) == n_cmds + n_fills
        fill_seqs = [json.loads(f)["seq"] for f in res.fills if json.loads(f)["s"] == sym]
        assert fill_seqs == sorted(set(fill_seqs))
        prev_seq[sym] = last
    assert eng.open_orders() == model.open_orders()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_engine_matches_reference_model(stream: list[list[bytes]]) -> None:
    eng = Engine(clock=lambda: NOW)
    model = Model()
    ledger = EventLedger()
    prev: dict[str, int] = {}
    for batch in stream:
        check_batch(eng, model, batch, prev)
    # replaying the whole stream in one engine gives the same events as batch by batch
    eng2 = Engine(clock=lambda: NOW)
    all_events = [e for b in stream for e in eng2.process(b).events]
    eng3 = Engine(clock=lambda: NOW)
    one_by_one = []
    for rec in (r for b in stream for r in b):
        events = eng3.process([rec]).events
        ledger.feed(rec, events)
        one_by_one.extend(events)
    assert all_events == one_by_one
    for sym in SYMBOLS:
        assert ledger.depth(sym) == eng.depth(sym, 100)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches, st.data())
def test_snapshot_restore_behaves_like_the_original(stream: list[list[bytes]], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(stream)))
    eng = Engine(clock=lambda: NOW)
    for batch in stream[:cut]:
        eng.process(batch)
    snap = eng.snapshot()
    restored = Engine(clock=lambda: NOW)
    restored.restore(snap)
    assert restored.snapshot() == snap
    assert restored.symbols() == eng.symbols()
    for sym in eng.symbols():
        assert restored.last_seq(sym) == eng.last_seq(sym)
        assert restored.depth(sym, 100) == eng.depth(sym, 100)
    for batch in stream[cut:]:
        a, b = eng.process(batch), restored.process(batch)
        assert a.events == b.events and a.touched == b.touched
    assert eng.snapshot() == restored.snapshot()


@settings(max_examples=25, deadline=None)
@given(batches)
def test_active_symbols_model(stream: list[list[bytes]]) -> None:
    active = {"AAA"}
    eng = Engine(clock=lambda: NOW, active_symbols=active)
    model = Model(active=active)
    for batch in stream:
        res = eng.process(batch)
        assert res.events == model.process(batch, NOW).events
