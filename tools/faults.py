"""Fault injection during load (issue 10): each fault is a script that runs alongside a load.

    engine-kill9       kill -9 the engine mid-flow, restart it after a pause
    valkey-restart     stop valkey-server (append-only file on) and start it on the same port
    streamer-kill9     kill -9 the streamer, restart it
    slow-reader        one client stops reading for a while; everyone else must keep flowing
    drop-no-close      some clients vanish without a close frame; the registry must forget them
    kinesis-restart    stop the Kinesis emulator (data kept on disk) and start it again
    depth-cache-loss   the depth cache loses every key the engine writes; the engine must write
                       the books back, a quiet symbol's (no order since) included

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
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import httpx
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


#: The depth-cache-loss fault's quiet symbol: one resting order, and no other order until the
#: check, so only the engine's rebuild (not a batch) can bring its depth back.
QUIET_SYMBOL = "QUIETDC"
#: SCAN patterns of SPEC §4's depth-cache keys the engine writes (`depth`, `ticker`, the open
#: and the closed 1-minute candles).
ENGINE_KEY_PATTERNS = (keys.DEPTH_PATTERN, keys.TICKER_PATTERN, keys.candle_pattern("1m"), keys.CANDLE_CLOSED_PATTERN)


def _delete_matching(cache: redis.Redis, patterns: Iterable[str]) -> int:
    """DEL every key matching the patterns (one key per DEL: on a cluster they live on other nodes)."""
    n = 0
    for pattern in patterns:
        for key in list(cache.scan_iter(match=pattern, count=1000)):
            n += cache.delete(key)
    return n


def _all_exist(cache: redis.Redis, names: list[str]) -> bool:
    try:
        return all(cache.exists(k) for k in names)
    except redis.RedisError:
        return False


async def _rest_depth(ctx: LoadContext, symbol: str) -> dict[str, Any]:
    """GET /depth/{symbol}; {} when the REST server did not answer with JSON."""
    try:
        return (await ctx.http.get(f"/depth/{symbol}")).json()
    except (httpx.HTTPError, ValueError):
        return {}


async def _quiet_order(ctx: LoadContext, user: str, timeout: float) -> tuple[str, dict[str, Any]]:
    """Activate QUIET_SYMBOL, rest one BUY on it; (order id, its depth over REST once it shows)."""
    http, cfg = ctx.http, ctx.cfg
    if not cfg.admin_key:
        raise FaultError("depth-cache-loss needs the admin key to activate its quiet symbol")
    resp = await http.post("/admin/symbols", json={"symbol": QUIET_SYMBOL}, headers={"X-Admin-Key": cfg.admin_key})
    if resp.status_code >= 400 and resp.status_code != 409:
        raise FaultError(f"cannot activate {QUIET_SYMBOL}: HTTP {resp.status_code} {resp.text[:200]}")
    before = await _rest_depth(ctx, QUIET_SYMBOL)
    body = {"symbol": QUIET_SYMBOL, "side": "BUY", "price": cfg.mid_price // 2, "quantity": 3, "type": "LIMIT",
            "tif": "GTC", "client_order_id": f"{user}-1"}
    resp = await http.post("/orders", json=body, headers={"X-Test-User": user})
    if resp.status_code != 202:
        raise FaultError(f"the quiet order was refused: HTTP {resp.status_code} {resp.text[:200]}")
    order_id = resp.json()["order_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        depth = await _rest_depth(ctx, QUIET_SYMBOL)
        if depth.get("u", 0) > before.get("u", 0) and [cfg.mid_price // 2, 3] in depth.get("b", []):
            return order_id, depth
        await asyncio.sleep(0.05)
    raise FaultError(f"the quiet order did not reach the depth of {QUIET_SYMBOL} within {timeout:.0f}s")


async def depth_cache_loss(ctx: LoadContext, stack: StackControl, timeout: float = 15.0) -> None:
    """Every key the engine writes to the depth cache is deleted at once, as a depth cache that
    restarted without persistence (or was flushed) loses them. The engine must write the books
    back from memory (engine_pkg/service/depth_rebuild.py): the quiet symbol, which takes no
    order until the check, must serve over REST exactly the depth it served before (same `u`,
    levels and `t`), and every load symbol must have its depth again, all within `timeout`.
    The rest of a real flush (connection registry, the admin's symbols) is not the engine's to
    rebuild (docs/deploy.md), so it is left in place and the load goes on."""
    await _at(ctx, 0.3)
    user = f"quiet{ctx.cfg.run_id}"
    try:
        order_id, before = await _quiet_order(ctx, user, timeout)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise FaultError(f"cannot place the quiet order: {exc!r}") from exc
    cache = cache_client(stack.depth_cache_url, "auto", socket_timeout=2)
    try:
        t0 = now_ms()
        try:
            deleted = await asyncio.to_thread(_delete_matching, cache, ENGINE_KEY_PATTERNS)
        except redis.RedisError as exc:
            raise FaultError(f"cannot empty the depth cache: {exc}") from exc
        deadline = time.monotonic() + timeout
        got: dict[str, Any] = {}
        rebuilt_ms = None
        while time.monotonic() < deadline:
            got = await _rest_depth(ctx, QUIET_SYMBOL)
            if got == before:
                rebuilt_ms = now_ms() - t0
                break
            await asyncio.sleep(0.05)
        if rebuilt_ms is None:
            raise FaultError(f"depth of {QUIET_SYMBOL} not rebuilt within {timeout:.0f}s: before {before}, now {got}")
        while time.monotonic() < deadline:
            if await asyncio.to_thread(_all_exist, cache, [keys.depth(s) for s in ctx.cfg.symbols]):
                break
            await asyncio.sleep(0.05)
        else:
            raise FaultError(f"the load symbols' depth not back within {timeout:.0f}s")
        _note(ctx, "depth-cache-loss", t0, deleted=deleted, quiet_rebuilt_ms=rebuilt_ms, quiet_equal=True)
    finally:
        cache.close()
        # the quiet book is left empty for later scenarios (its cancel is an ordinary batch)
        try:
            await ctx.http.delete(f"/orders/{order_id}", params={"symbol": QUIET_SYMBOL},
                                  headers={"X-Test-User": user})
        except httpx.HTTPError as exc:
            log.warning("event=quiet_cancel_failed order=%s error=%s", order_id, exc)


FAULTS: dict[str, FaultScript] = {
    "engine-kill9": engine_kill9,
    "valkey-restart": valkey_restart,
    "streamer-kill9": streamer_kill9,
    "slow-reader": slow_reader,
    "drop-no-close": drop_no_close,
    "kinesis-restart": kinesis_restart,
    "depth-cache-loss": depth_cache_loss,
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
