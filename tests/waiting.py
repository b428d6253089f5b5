"""Polling for a condition in tests: the one `wait_until` every test package uses.

The timeout is only a "give up waiting" limit for a test that would otherwise hang; it is
never the assertion (speed goals belong in the benchmarks, tools/bench). Pass generous values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    pred: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call `pred` until it returns something truthy, and return that value.

    Exceptions of the types in `ignore` count as "not yet" (e.g. OSError while a server is
    not listening yet). After `timeout` seconds: AssertionError naming `what` and the last
    value (or ignored exception) `pred` gave."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last: Any = pred()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
