"""``python -m engine_pkg replay FILE|-``: replay JSON Lines order commands through a fresh engine.

Writes every fill and order-status event (SPEC section 3) in the order they happened, then
one depth line per symbol that took a seq, in order of first appearance:
``{"e":"d","s":SYM,"u":seq,"b":[[p,q],...],"a":[[p,q],...]}``.  Commands without a ``ts``
are stamped 0, so the output is deterministic.  Blank lines are skipped; unreadable lines are
reported on stderr and counted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from chalice_app.messages import DEPTH_LEVELS, E_DEPTH
from engine_pkg.engine import Engine

BATCH = 4096


def _batches(lines: Iterable[bytes], size: int = BATCH) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in lines:
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def depth_line(engine: Engine, symbol: str, levels: int) -> bytes:
    """The final depth line of one symbol (compact JSON, no newline). Not
    `messages.depth_message`: a replay line has no time `t` (the output is deterministic) and
    as many levels as `--depth` asks, not at most DEPTH_LEVELS."""
    d = engine.depth(symbol, levels)
    obj = {"e": E_DEPTH, "s": symbol, "u": engine.last_seq(symbol), "b": d["b"], "a": d["a"]}
    return json.dumps(obj, separators=(",", ":")).encode()


def replay(src: BinaryIO, out: BinaryIO, depth: int = DEPTH_LEVELS) -> int:
    """Replay ``src`` into ``out``; returns the number of dropped (unreadable) commands."""
    engine = Engine(clock=lambda: 0)
    for batch in _batches(src):
        events = engine.process(batch).events
        if events:
            out.write(b"\n".join(events))
            out.write(b"\n")
    for sym in engine.symbols():
        out.write(depth_line(engine, sym, depth) + b"\n")
    out.flush()
    return engine.dropped_total


def main(path: str, depth: int = DEPTH_LEVELS) -> int:
    """Entry point of the ``replay`` subcommand; returns the process exit code."""
    if depth < 0:
        print("--depth must be >= 0", file=sys.stderr)
        return 2
    try:
        if path == "-":
            dropped = replay(sys.stdin.buffer, sys.stdout.buffer, depth)
        else:
            with open(path, "rb") as fh:
                dropped = replay(fh, sys.stdout.buffer, depth)
    except OSError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    if dropped:
        print(f"replay: {dropped} command(s) dropped (no status could be sent)", file=sys.stderr)
    return 0
