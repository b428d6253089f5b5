"""What a load run is configured with, what it recorded, and the report built from it.

Everything here is pure (no I/O), so the arithmetic of the report is unit-tested without a
stack: `Recorder` collects orders sent and messages received; `build_report` turns it into
a `Report` (orders accepted/final, messages expected/delivered, latency percentiles per
tier, errors by kind); `Report.table()` prints it.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from chalice_app.messages import E_CANDLE, E_DEPTH, E_FILL, E_ORDER, E_TICKER, FINAL_STATUSES
from tools.ports import REST_URL, WS_URL

TIER_LOGGED_IN = "logged-in"
TIER_ANONYMOUS = "anonymous"

#: the events a subscription starts with a snapshot of (the current depth and ticker, whose `t`
#: is the time of the last change, maybe long before the subscription)
SNAPSHOT_EVENTS = (E_DEPTH, E_TICKER)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class LoadConfig:
    """One load run. Every loop it drives is bounded by these numbers."""

    rest_url: str = REST_URL
    ws_url: str = WS_URL
    clients: int = 20
    mode: str = "mixed"  # logged-in | anonymous | mixed
    rate: float = 20.0  # orders per second
    duration: float = 10.0  # seconds of order flow
    symbols: tuple[str, ...] = ("TEST",)
    users: int = 8  # distinct trading users
    drain: float = 15.0  # seconds to wait for final statuses after the flow ends
    concurrency: int = 64  # REST requests in flight at most
    admin_key: str = ""  # to make the symbols active (POST /admin/symbols)
    mid_price: int = 10_000
    seed: int = 1
    connect_timeout: float = 10.0
    max_reconnects: int = 50  # per client, over the whole run
    run_id: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ("logged-in", "anonymous", "mixed"):
            raise ValueError(f"mode must be logged-in, anonymous or mixed, not {self.mode!r}")
        if self.clients < 0 or self.rate < 0 or self.duration < 0 or self.users < 2:
            raise ValueError("clients, rate and duration must be >= 0 and users >= 2")
        if not self.symbols:
            raise ValueError("at least one symbol")

    def tier_of_client(self, index: int) -> str:
        if self.mode == "logged-in":
            return TIER_LOGGED_IN
        if self.mode == "anonymous":
            return TIER_ANONYMOUS
        return TIER_LOGGED_IN if index % 2 == 0 else TIER_ANONYMOUS

    def user_id(self, index: int) -> str:
        return f"load{self.run_id}-u{index % self.users}"


@dataclass
class SentOrder:
    order_id: str | None
    user_id: str
    symbol: str
    kind: str  # maker | taker | cancel
    sent_ms: int
    http_status: int | None = None
    rest_ms: float | None = None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.http_status == 202 and bool(self.order_id)


@dataclass
class ClientLog:
    """Everything one WebSocket client saw."""

    index: int
    tier: str
    user_id: str | None
    symbol: str
    messages: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (recv ms, event)
    subscribed_ms: list[int] = field(default_factory=list)  # when each subscribe was sent, in order
    raw_errors: int = 0  # frames that were not JSON objects
    connects: int = 0
    reconnects: int = 0
    errors: Counter = field(default_factory=Counter)
    last_connect_ms: int = 0
    dropped_on_purpose: bool = False  # a fault closed it without a close frame / stopped reading

    def record(self, recv_ms: int, event: dict[str, Any]) -> None:
        self.messages.append((recv_ms, event))

    def subscribing(self, sent_ms: int) -> None:
        """Note that a subscribe is being sent (on connect, and again after a silence)."""
        self.subscribed_ms.append(sent_ms)

    def subscribed_before(self, recv_ms: int) -> int | None:
        """When the last subscribe sent at or before ``recv_ms`` was sent; None if none was."""
        i = bisect.bisect_right(self.subscribed_ms, recv_ms)
        return self.subscribed_ms[i - 1] if i else None


@dataclass
class Recorder:
    """All orders sent and all clients' logs of one run."""

    config: LoadConfig
    orders: list[SentOrder] = field(default_factory=list)
    clients: list[ClientLog] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    started_ms: int = 0
    flow_ended_ms: int = 0
    ended_ms: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an already sorted list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class LatencyRow:
    tier: str
    event: str
    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


@dataclass
class Report:
    """The figures of one run (see `build_report`)."""

    duration_s: float
    orders_sent: int
    orders_accepted: int
    orders_final: int
    orders_open: int  # accepted, last status still open (should be 0 after the drain)
    orders_lost: int  # accepted, no status at all
    orders_rate: float  # accepted orders per second of flow
    connections: dict[str, int]
    messages_expected: dict[str, int]
    messages_delivered: dict[str, int]
    messages_total: int
    latency: list[LatencyRow]
    errors: dict[str, int]
    resumed_clients: int = 0
    reconnects: int = 0

    @property
    def lost_messages(self) -> int:
        return sum(max(0, self.messages_expected[k] - self.messages_delivered.get(k, 0)) for k in self.messages_expected)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["latency"] = [r.__dict__ for r in self.latency]
        d["lost_messages"] = self.lost_messages
        return d

    def table(self) -> str:
        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        lines = [
            f"load: {self.duration_s:.1f}s of flow, connections {self.connections}, reconnects {self.reconnects}",
            "",
            f"{'orders':<28}{'count':>10}",
            f"{'  sent':<28}{self.orders_sent:>10}",
            f"{'  accepted (202)':<28}{self.orders_accepted:>10}",
            f"{'  final status seen':<28}{self.orders_final:>10}",
            f"{'  still open':<28}{self.orders_open:>10}",
            f"{'  no status (lost)':<28}{self.orders_lost:>10}",
            f"{'  accepted per second':<28}{self.orders_rate:>10.1f}",
            "",
            f"{'messages':<28}{'expected':>10}{'delivered':>11}",
        ]
        for kind in sorted(self.messages_expected):
            lines.append(f"{'  ' + kind:<28}{self.messages_expected[kind]:>10}{self.messages_delivered.get(kind, 0):>11}")
        lines.append(f"{'  all received':<28}{'':>10}{self.messages_total:>11}")
        lines += ["", f"{'latency ms (tier, event)':<34}{'n':>8}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}"]
        for r in self.latency:
            lines.append(
                f"{'  ' + r.tier + ' ' + r.event:<34}{r.count:>8}{fmt(r.p50):>9}{fmt(r.p90):>9}{fmt(r.p99):>9}{fmt(r.max):>9}"
            )
        lines += ["", "errors by kind" + ("" if self.errors else ": none")]
        for kind, n in sorted(self.errors.items()):
            lines.append(f"  {kind:<40}{n:>8}")
        return "\n".join(lines)


def _latency_rows(samples: dict[tuple[str, str], list[float]]) -> list[LatencyRow]:
    rows = []
    for (tier, event), values in sorted(samples.items()):
        values.sort()
        rows.append(LatencyRow(tier, event, len(values), percentile(values, 50), percentile(values, 90),
                               percentile(values, 99), values[-1] if values else None))
    return rows


def order_statuses(rec: Recorder) -> dict[str, list[dict[str, Any]]]:
    """Every distinct order event seen by any client, per order id, in seq order."""
    seen: dict[str, dict[tuple, dict[str, Any]]] = defaultdict(dict)
    for c in rec.clients:
        for _, ev in c.messages:
            if ev.get("e") == "order" and isinstance(ev.get("order_id"), str):
                seen[ev["order_id"]][(ev.get("status"), ev.get("seq"), ev.get("filled"), ev.get("reason"))] = ev
    return {
        oid: sorted(evs.values(), key=lambda e: (e.get("seq") is None, e.get("seq") or 0))
        for oid, evs in seen.items()
    }


def build_report(
    rec: Recorder,
    *,
    final_depth_u: dict[str, int] | None = None,
    status_truth: list[dict[str, Any]] | None = None,
    fill_truth: list[dict[str, Any]] | None = None,
) -> Report:
    """Turn what was recorded into figures.

    Messages expected/delivered, per kind:

    - `order`: with `status_truth` (every status on the status stream), one per status per
      live connection of its owner; without it, one final status per accepted order per
      connection of its owner.
    - `fill`: with `fill_truth`, one per fill per connection of the maker and of the taker.
    - `depth-final`: every main subscriber of a symbol ends on the depth whose `u` is the
      final `u` of that symbol (`final_depth_u`, read from the depth cache at the end).

    Latency (per tier and event) is receive time minus the event's `t`, counted only for
    messages caused by the load's own events: an event with `t` before the load started
    (`started_ms`) is left out, and so is a depth or ticker with `t` before the client's last
    subscribe sent before it arrived, i.e. the subscription's initial state (a snapshot whose
    `t` is the last change, maybe long before; its age is not delivery latency).
    Such messages still count as received and for the expected/delivered figures.
    """
    flow_s = max(0.001, (rec.flow_ended_ms - rec.started_ms) / 1000.0)
    accepted = [o for o in rec.orders if o.accepted and o.kind != "cancel"]
    statuses = order_statuses(rec)
    final = open_ = lost = 0
    for o in accepted:
        evs = statuses.get(o.order_id or "")
        if not evs:
            lost += 1
        elif any(e.get("status") in FINAL_STATUSES for e in evs):
            final += 1
        else:
            open_ += 1

    conns_by_user: dict[str, list[ClientLog]] = defaultdict(list)
    for c in rec.clients:
        if c.user_id and c.tier == TIER_LOGGED_IN and not c.dropped_on_purpose:
            conns_by_user[c.user_id].append(c)

    expected: Counter = Counter()
    delivered: Counter = Counter()

    # per client: the order events (order_id, status, seq), final order ids and trade ids it got
    got_status: dict[int, set] = {}
    got_final: dict[int, set] = {}
    got_fill: dict[int, set] = {}
    for c in rec.clients:
        st, fi, fl = set(), set(), set()
        for _, ev in c.messages:
            if ev.get("e") == "order":
                st.add((ev.get("order_id"), ev.get("status"), ev.get("seq")))
                if ev.get("status") in FINAL_STATUSES:
                    fi.add(ev.get("order_id"))
            elif ev.get("e") == "fill":
                fl.add(ev.get("trade_id"))
        got_status[c.index], got_final[c.index], got_fill[c.index] = st, fi, fl

    if status_truth is not None:
        for st in status_truth:
            key = (st.get("order_id"), st.get("status"), st.get("seq"))
            for c in conns_by_user.get(st.get("user_id", ""), []):
                expected["order"] += 1
                delivered["order"] += key in got_status[c.index]
    else:
        for o in accepted:
            for c in conns_by_user.get(o.user_id, []):
                expected["order-final"] += 1
                delivered["order-final"] += o.order_id in got_final[c.index]

    if fill_truth is not None:
        for f in fill_truth:
            for u in {f.get("maker_user_id"), f.get("taker_user_id")}:
                for c in conns_by_user.get(u or "", []):
                    expected["fill"] += 1
                    delivered["fill"] += f.get("trade_id") in got_fill[c.index]

    if final_depth_u is not None:
        for c in rec.clients:
            if c.dropped_on_purpose or c.symbol not in final_depth_u:
                continue
            expected["depth-final"] += 1
            depths = [ev for _, ev in c.messages if ev.get("e") == "d" and ev.get("s") == c.symbol]
            if depths and max(int(ev.get("u") or 0) for ev in depths) >= final_depth_u[c.symbol]:
                delivered["depth-final"] += 1

    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    for o in rec.orders:
        if o.rest_ms is not None:
            samples[("rest", "POST /orders" if o.kind != "cancel" else "DELETE /orders")].append(o.rest_ms)
    names = {E_DEPTH: "depth", E_TICKER: "ticker", E_ORDER: "order", E_FILL: "fill", E_CANDLE: "candle"}
    total = 0
    for c in rec.clients:
        total += len(c.messages)
        for recv_ms, ev in c.messages:
            name = names.get(ev.get("e"))
            t = ev.get("t")
            if not name or not isinstance(t, int) or isinstance(t, bool) or t <= 0 or recv_ms < rec.started_ms:
                continue
            if t < rec.started_ms:  # an event from before the load: not the load's own
                continue
            if ev.get("e") in SNAPSHOT_EVENTS:
                sub = c.subscribed_before(recv_ms)
                if sub is not None and t < sub:  # the subscription's initial state
                    continue
            samples[(c.tier, name)].append(float(recv_ms - t))

    errors: Counter = Counter(rec.errors)
    for c in rec.clients:
        errors.update({f"ws {k}": v for k, v in c.errors.items()})
        if c.raw_errors:
            errors["ws non-JSON frame"] += c.raw_errors
    for o in rec.orders:
        if o.error:
            errors[f"rest {o.error}"] += 1
        elif o.http_status is not None and o.http_status != 202:
            errors[f"rest HTTP {o.http_status}"] += 1

    connections = Counter(c.tier for c in rec.clients if c.connects > 0)  # connected at least once
    resumed = sum(1 for c in rec.clients if c.reconnects and any(m[0] >= c.last_connect_ms for m in c.messages))
    return Report(
        duration_s=flow_s,
        orders_sent=len([o for o in rec.orders if o.kind != "cancel"]),
        orders_accepted=len(accepted),
        orders_final=final,
        orders_open=open_,
        orders_lost=lost,
        orders_rate=len(accepted) / flow_s,
        connections=dict(connections),
        messages_expected=dict(expected),
        messages_delivered=dict(delivered),
        messages_total=total,
        latency=_latency_rows(samples),
        errors=dict(errors),
        resumed_clients=resumed,
        reconnects=sum(c.reconnects for c in rec.clients),
    )
