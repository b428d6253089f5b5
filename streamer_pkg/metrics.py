"""In-process counters, gauges and histograms of the streamer, rendered as Prometheus text.

Single-threaded use from the event loop (no locks). Exposed by `streamer_pkg.http`:

    streamer_sends_total{}                     counter   messages delivered (2xx)
    streamer_sends_per_second                  gauge     over the last 10 s
    streamer_send_errors_total{kind=...}       counter   gone, timeout, connection, throttled,
                                                         http_5xx, http_4xx codes, dropped, dropped_overflow,
                                                         bad_data, redis
    streamer_tick_duration_seconds{tier=...}   histogram read + diff + enqueue of one tick
    streamer_connections{tier=...}             gauge     subscribed connections per tier
    streamer_push_lag_seconds                  histogram engine write (`t` of the data) → delivered
    streamer_outbox_pending                    gauge     messages queued in the fan-out
"""

from __future__ import annotations

import time
from collections import defaultdict, deque

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TICK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
                break

    def render(self, name: str, labels: str = "") -> list[str]:
        out = []
        cum = 0
        sep = "," if labels else ""
        for b, c in zip(self.buckets, self.counts, strict=True):
            cum += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{b}"}} {cum}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        lab = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{lab} {self.sum:.6f}")
        out.append(f"{name}_count{lab} {self.total}")
        return out


class Metrics:
    def __init__(self) -> None:
        self.started = time.time()
        self.sends = 0
        self.errors: dict[str, int] = defaultdict(int)
        self.counters: dict[str, int] = defaultdict(int)
        self.ticks: dict[str, Histogram] = defaultdict(lambda: Histogram(TICK_BUCKETS))
        self.tick_count: dict[str, int] = defaultdict(int)
        self.connections: dict[str, int] = {"realtime": 0, "anonymous": 0}
        self.lag = Histogram(LAG_BUCKETS)
        self._window: deque[tuple[float, int]] = deque()
        self.last_tick_at: dict[str, float] = {}
        self.pending = 0
        self.slow = 0

    def sent(self, born: float = 0.0) -> None:
        self.sends += 1
        if born:
            self.lag.observe(max(0.0, time.time() - born))

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def tick(self, tier: str, seconds: float) -> None:
        self.ticks[tier].observe(seconds)
        self.tick_count[tier] += 1
        self.last_tick_at[tier] = time.time()

    def sends_per_second(self) -> float:
        now = time.monotonic()
        self._window.append((now, self.sends))
        while len(self._window) > 1 and now - self._window[0][0] > 10.0:
            self._window.popleft()
        t0, s0 = self._window[0]
        return (self.sends - s0) / (now - t0) if now > t0 else 0.0

    def render(self) -> str:
        lines = [
            "# HELP streamer_sends_total Messages delivered to WebSocket connections.",
            "# TYPE streamer_sends_total counter",
            f"streamer_sends_total {self.sends}",
            "# HELP streamer_sends_per_second Delivery rate over the last 10 seconds.",
            "# TYPE streamer_sends_per_second gauge",
            f"streamer_sends_per_second {self.sends_per_second():.1f}",
            "# HELP streamer_send_errors_total Failed or abandoned sends by kind.",
            "# TYPE streamer_send_errors_total counter",
        ]
        lines += [f'streamer_send_errors_total{{kind="{k}"}} {v}' for k, v in sorted(self.errors.items())]
        lines += ["# HELP streamer_tick_duration_seconds One tier tick: read, diff, enqueue.",
                  "# TYPE streamer_tick_duration_seconds histogram"]
        for tier, h in sorted(self.ticks.items()):
            lines += h.render("streamer_tick_duration_seconds", f'tier="{tier}"')
        lines += ["# HELP streamer_connections Subscribed connections per tier.",
                  "# TYPE streamer_connections gauge"]
        lines += [f'streamer_connections{{tier="{k}"}} {v}' for k, v in sorted(self.connections.items())]
        lines += ["# HELP streamer_push_lag_seconds Engine write (data t) to delivery.",
                  "# TYPE streamer_push_lag_seconds histogram"]
        lines += self.lag.render("streamer_push_lag_seconds")
        lines += ["# TYPE streamer_outbox_pending gauge", f"streamer_outbox_pending {self.pending}",
                  "# TYPE streamer_slow_connections gauge", f"streamer_slow_connections {self.slow}"]
        for name, v in sorted(self.counters.items()):
            lines += [f"# TYPE {name} counter", f"{name} {v}"]
        return "\n".join(lines) + "\n"
