"""What the benchmark scripts share: a clean stop on SIGTERM and the figure table.

- `stop_on_sigterm()`: the services a benchmark starts run in their own sessions (tools/services.py),
  so a SIGTERM meant for the benchmark (`timeout`, a cancelled CI job, `kill PID`) never reaches
  them; Python's default action would end the benchmark at once and leave them running. After
  this call the first SIGTERM unwinds the benchmark like Ctrl-C (KeyboardInterrupt), so its
  `with` / `finally` blocks stop what it started; later SIGTERMs are ignored so they cannot cut
  that clean-up short (`timeout make …` delivers two: one to the process group, one from make).
- `table()`: a Markdown table, the format every benchmark prints its figures in; `status()`
  fills the status column of a figure that has a goal (docs/benchmarks.md).
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Sequence
from types import FrameType


def _interrupt_once(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, _ignore)  # a Python handler, not SIG_IGN: exec'd children keep the default
    raise KeyboardInterrupt


def _ignore(signum: int, frame: FrameType | None) -> None:
    pass


def stop_on_sigterm() -> None:
    """Turn the first SIGTERM into KeyboardInterrupt (main thread), ignore the ones after it."""
    signal.signal(signal.SIGTERM, _interrupt_once)


def status(met: bool) -> str:
    return "met" if met else "MISSED"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; every row has as many cells as `headers` (missing ones are empty)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [str(c) for c in row] + [""] * (len(headers) - len(row))
        if len(cells) != len(headers):
            raise ValueError(f"row has {len(row)} cells, the table {len(headers)} columns: {row!r}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
