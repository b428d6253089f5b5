"""Fault injection during load (issue 10): each fault is a script that runs alongside a load.

    engine-kill9       kill -9 the engine mid-flow, restart it after a pause
    valkey-restart     stop valkey-server (append-only file on) and start it on the same port
    streamer-kill9     kill -9 the streamer, restart it
    slow-reader        one client stops reading for a while; everyone else must keep flowing
    drop-no-close      some clients vanish without a close frame; the registry must forget them
    kinesis-restart    stop the Kinesis emulator (data kept on disk) and start it again

A fault script gets the `LoadContext` of `tools.load.runner` and a `StackControl` (the handles
on the stack's processes); it records what it did in `rec.faults` (name, start and end in
ms, and what it checked). After the load, `check_fault` adds what only the recording can
tell: whether every client that was connected through the fault received data after it
(resubscribed and resumed). The book / order / trade checks are `tools.load.verify`'s.

Every wait is bounded.

    FaultError   a fault could not be injected or its recovery did not happen in time
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis

from chalice_app import keys
from chalice_app.cache import client as cache_client
from tools.load.model import now_ms
from tools.load.runner import LoadContext

log = logging.getLogger("supernoba.faults")


class FaultError(RuntimeError):
    """A fault could not be injected, or the stack did not recover within its bound."""


class StackControl(Protocol):
    """What fault scripts need from a running local stack (see `tools.soak.DevStackControl`)."""

    depth_cache_url: str

    def kill_engine(self) -> None: ...
    def start_engine(self) -> None: ...
    def kill_streamer(self) -> None: ...
    def start_streamer(self) -> None: ...
    def restart_valkey(self) -> None: ...
    def restart_kinesis(self) -> None: ...


FaultScript = Callable[[LoadContext, StackControl], Awaitable[None]]


async def _at(ctx: LoadContext, fraction: float) -> None:
    """Sleep until `fraction` of the flow has passed (or the flow ended)."""
    target = ctx.rec.started_ms + fraction * ctx.cfg.duration * 1000
    while now_ms() < target and not ctx.flow_done.is_set():
        await asyncio.sleep(0.05)


def _note(ctx: LoadContext, name: str, started: int, **extra: Any) -> dict[str, Any]:
    entry = {"fault": name, "start_ms": started, "end_ms": now_ms(), **extra}
    ctx.rec.faults.append(entry)
    log.info("event=fault_done fault=%s took_ms=%d %s", name, entry["end_ms"] - started,
             " ".join(f"{k}={v}" for k, v in extra.items()))
    return entry


async def engine_kill9(ctx: LoadContext, stack: StackControl) -> None:
    await _at(ctx, 0.3)
    t0 = now_ms()
    await asyncio.to_thread(stack.kill_engine)
    await asyncio.sleep(1.0)  # orders keep arriving on the stream meanwhile
    await asyncio.to_thread(stack.start_engine)
    _note(ctx, "engine-kill9", t0)


async def streamer_kill9(ctx: LoadContext, stack: StackControl) -> None:
    await _at(ctx, 0.3)
    t0 = now_ms()
    await asyncio.to_thread(stack.kill_streamer)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(stack.start_streamer)
    _note(ctx, "streamer-kill9", t0)


async def valkey_restart(ctx: LoadContext, stack: StackControl) -> None:
    await _at(ctx, 0.3)
    t0 = now_ms()
    await asyncio.to_thread(stack.restart_valkey)
    _note(ctx, "valkey-restart", t0)


async def kinesis_restart(ctx: LoadContext, stack: StackControl) -> None:
    await _at(ctx, 0.3)
    t0 = now_ms()
    await asyncio.to_thread(stack.restart_kinesis)
    _note(ctx, "kinesis-restart", t0)


async def slow_reader(ctx: LoadContext, stack: StackControl, pause_s: float = 5.0) -> None:
    """One logged-in client stops reading for `pause_s`; the others' delivery is measured."""
    await _at(ctx, 0.2)
    victim = next((c for c in ctx.clients if c.log.tier == "logged-in" and c.log.index >= ctx.cfg.users),
                  ctx.clients[-1])
    t0 = now_ms()
    before = {c.log.index: len(c.log.messages) for c in ctx.clients}
    await victim.pause(pause_s)
    others = [c for c in ctx.clients if c is not victim and not c.log.dropped_on_purpose]
    starved = [c.log.index for c in others if len(c.log.messages) == before[c.log.index]]
    _note(ctx, "slow-reader", t0, victim=victim.log.index, others_starved=len(starved))


async def drop_no_close(ctx: LoadContext, stack: StackControl, count: int = 3, timeout: float = 10.0) -> None:
    """`count` clients abort their TCP connection; the connection registry must shrink by as many."""
    await _at(ctx, 0.2)
    cache = cache_client(stack.depth_cache_url, "auto", socket_timeout=2)
    victims = [c for c in ctx.clients if c.log.index >= ctx.cfg.users][:count]
    try:
        before = cache.scard(keys.ALL_CONNECTIONS)
    except redis.RedisError as exc:
        raise FaultError(f"cannot read the connection registry: {exc}") from exc
    t0 = now_ms()
    for c in victims:
        c.drop()
    deadline = time.monotonic() + timeout
    after = before
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        try:
            after = cache.scard(keys.ALL_CONNECTIONS)
        except redis.RedisError:
            continue
        if after <= before - len(victims):
            break
    cache.close()
    _note(ctx, "drop-no-close", t0, dropped=len(victims), registry_before=before, registry_after=after,
          cleaned=before - after >= len(victims))


FAULTS: dict[str, FaultScript] = {
    "engine-kill9": engine_kill9,
    "valkey-restart": valkey_restart,
    "streamer-kill9": streamer_kill9,
    "slow-reader": slow_reader,
    "drop-no-close": drop_no_close,
    "kinesis-restart": kinesis_restart,
}


def resumed_after(ctx_rec, fault: dict[str, Any], *, grace_ms: int = 0) -> tuple[int, int]:
    """(clients that got a depth message after the fault ended, clients that should have)."""
    end = fault["end_ms"] + grace_ms
    should = [c for c in ctx_rec.clients if not c.dropped_on_purpose and c.connects > 0]
    got = [c for c in should if any(t > end and ev.get("e") == "d" for t, ev in c.messages)]
    return len(got), len(should)


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.faults [--help]`: the faults are run by the soak, not on their own."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m tools.faults", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run them with: python -m tools.soak --faults NAME[,NAME...] "
                                       "(make soak runs every one).")
    p.add_argument("--list", action="store_true", help="print the fault names, one per line")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(FAULTS))
        return 0
    p.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
