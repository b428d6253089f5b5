"""Prometheus text-format metrics of the engine service (no client library needed).

Counters, gauges (optionally labelled by shard) and one histogram, all thread-safe; the
HTTP server renders them with `render()`. `orders_per_second` is computed over a sliding
10-second window so a human reading `/metrics` sees a rate without PromQL.
"""

from __future__ import annotations

import threading
import time
from collections import deque

BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PREFIX = "supernoba_engine_"


class Metrics:
    """Every metric of one engine process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, float] = {
            "orders_total": 0, "fills_total": 0, "statuses_total": 0, "batches_total": 0,
            "dropped_records_total": 0, "publish_retries_total": 0, "publish_reordered_total": 0,
            "snapshots_total": 0, "lease_takeovers_total": 0, "errors_total": 0,
            "get_records_timeouts_total": 0, "depth_rebuilt_total": 0,
        }
        self.shard_gauges: dict[str, dict[str, float]] = {
            "millis_behind_latest": {}, "snapshot_age_seconds": {}, "records_since_snapshot": {},
            "lease_owned": {}, "get_limit": {},
        }
        self._hist_counts = [0] * (len(BATCH_BUCKETS) + 1)
        self._hist_sum = 0.0
        self._window: deque[tuple[float, int]] = deque()

    def inc(self, name: str, value: float = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + value

    def set_shard(self, name: str, shard_id: str, value: float) -> None:
        with self._lock:
            self.shard_gauges.setdefault(name, {})[shard_id] = value

    def observe_batch(self, seconds: float, orders: int) -> None:
        now = time.monotonic()
        with self._lock:
            i = 0
            while i < len(BATCH_BUCKETS) and seconds > BATCH_BUCKETS[i]:
                i += 1
            self._hist_counts[i] += 1
            self._hist_sum += seconds
            self.counters["orders_total"] += orders
            self.counters["batches_total"] += 1
            self._window.append((now, orders))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._window and now - self._window[0][0] > 10.0:
            self._window.popleft()

    def orders_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return sum(n for _, n in self._window) / 10.0

    def render(self) -> str:
        rate = self.orders_per_second()
        lines: list[str] = []
        with self._lock:
            lines += [f"# TYPE {PREFIX}orders_per_second gauge", f"{PREFIX}orders_per_second {rate:.3f}"]
            for name, value in sorted(self.counters.items()):
                lines += [f"# TYPE {PREFIX}{name} counter", f"{PREFIX}{name} {value:g}"]
            for name, per_shard in sorted(self.shard_gauges.items()):
                lines.append(f"# TYPE {PREFIX}{name} gauge")
                for shard, value in sorted(per_shard.items()):
                    lines.append(f'{PREFIX}{name}{{shard="{shard}"}} {value:g}')
            name = f"{PREFIX}batch_seconds"
            lines.append(f"# TYPE {name} histogram")
            cum = 0
            for bound, count in zip(BATCH_BUCKETS, self._hist_counts, strict=False):
                cum += count
                lines.append(f'{name}_bucket{{le="{bound}"}} {cum}')
            cum += self._hist_counts[-1]
            lines += [f'{name}_bucket{{le="+Inf"}} {cum}', f"{name}_sum {self._hist_sum:.6f}", f"{name}_count {cum}"]
        return "\n".join(lines) + "\n"
