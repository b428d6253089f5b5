"""Benchmark of the streamer (issue 6): sends/s of one process, and write→receipt latency.

    python -m tools.bench.bench_streamer [--conns 1000,5000] [--seconds 5] [--transport http|chalice]

Starts its own valkey-server (tools/services.py) and an `@connections` management-API
server (tests/streamer_pkg/mgmt_server.py) in a separate process, so the streamer process
measured here does nothing but stream. Then:

1. throughput — N logged-in connections spread over 10 symbols; an engine-style writer
   changes every symbol's depth (+ PUBLISH) every 10 ms, more than the streamer can send, so
   the figure is the saturated sends/s of one process (coalescing absorbs the excess);
2. latency — 1,000 logged-in connections over 100 symbols (10 each); a depth write +
   PUBLISH to one symbol every 50 ms (random symbol), receipt time at each of its 10
   subscribers minus the write time (same clock: one machine);
3. latency fan-out — the same with all 1,000 connections on ONE symbol (first/median/last).

Prints progress to stderr and a figure table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import orjson
import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from chalice_app import keys  # noqa: E402
from chalice_app.config import Settings  # noqa: E402
from streamer_pkg.tiers import Streamer, StreamerOptions  # noqa: E402
from tools.services import ValkeyService, free_port  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench_streamer] {msg}", file=sys.stderr, flush=True)


def _server_proc(conn) -> None:  # noqa: ANN001
    from tests.streamer_pkg.mgmt_server import MgmtServer
    srv = MgmtServer().start()
    conn.send(srv.port)
    while True:
        cmd, arg = conn.recv()
        if cmd == "count":
            conn.send(srv.posts)
        elif cmd == "clear":
            srv.clear()
            conn.send(True)
        elif cmd == "times":  # [(conn_id, recv_time, u)]
            with srv.lock:
                out = [(c, t, orjson.loads(b).get("u")) for c in arg for t, b in srv.received.get(c, [])]
            conn.send(out)
        elif cmd == "stop":
            srv.stop()
            conn.send(True)
            return


class ServerHandle:
    def __init__(self) -> None:
        self.parent, child = mp.Pipe()
        self.proc = mp.get_context("fork").Process(target=_server_proc, args=(child,), daemon=True)
        self.proc.start()
        self.port = self.parent.recv()

    def ask(self, cmd: str, arg: object = None) -> object:
        self.parent.send((cmd, arg))
        return self.parent.recv()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def stop(self) -> None:
        self.ask("stop")
        self.proc.join(5)


def setup_connections(r: redis.Redis, n: int, symbols: list[str]) -> dict[str, list[str]]:
    r.flushdb()
    by_sym: dict[str, list[str]] = {s: [] for s in symbols}
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        cid = f"bench{i:05d}="
        sym = symbols[i % len(symbols)]
        by_sym[sym].append(cid)
        pipe.sadd(keys.REALTIME_CONNECTIONS, cid)
        pipe.sadd(keys.symbol_main(sym), cid)
        pipe.set(keys.conn_main(cid), sym)
    pipe.sadd(keys.SUBSCRIBED_SYMBOLS, *symbols)
    pipe.execute()
    return by_sym


def write_depth(r: redis.Redis, sym: str, u: int) -> float:
    t = time.time()
    d = {"e": "d", "s": sym, "t": int(t * 1000), "u": u, "b": [[1000 + u % 7, 10], [999, 20]], "a": [[1001, 5]]}
    pipe = r.pipeline(transaction=False)
    pipe.set(keys.depth(sym), orjson.dumps(d))
    pipe.publish(keys.DEPTH_CHANGED_CHANNEL, orjson.dumps([sym]))
    pipe.execute()
    return t


async def run_streamer_for(settings: Settings, opts: StreamerOptions, seconds: float, driver) -> Streamer:  # noqa: ANN001
    s = Streamer(settings, opts, serve_http=False)
    await s.start()
    stop = threading.Event()
    th = threading.Thread(target=driver, args=(stop,), daemon=True)
    th.start()
    await asyncio.sleep(seconds)
    stop.set()
    th.join(5)
    await asyncio.sleep(0.5)
    await s.stop(drain=2.0)
    return s


def throughput(settings: Settings, opts: StreamerOptions, srv: ServerHandle, n: int, seconds: float) -> dict:
    r = redis.Redis.from_url(settings.depth_cache_url)
    symbols = [f"SYM{i}" for i in range(10)]
    setup_connections(r, n, symbols)
    srv.ask("clear")
    marks: list[tuple[float, int]] = []

    def driver(stop: threading.Event) -> None:
        u = 0
        warm = time.time() + 1.0
        while not stop.is_set():
            u += 1
            for s in symbols:
                write_depth(r, s, u)
            if time.time() >= warm and not marks:
                marks.append((time.time(), srv.ask("count")))
            time.sleep(0.01)
        marks.append((time.time(), srv.ask("count")))

    s = asyncio.run(run_streamer_for(settings, opts, seconds + 1.0, driver))
    (t0, c0), (t1, c1) = marks[0], marks[-1]
    rate = (c1 - c0) / (t1 - t0)
    return {"conns": n, "sends_per_s": rate, "errors": dict(s.metrics.errors), "streamer_sends": s.metrics.sends}


def latency(settings: Settings, opts: StreamerOptions, srv: ServerHandle, n: int, nsym: int, seconds: float) -> dict:
    r = redis.Redis.from_url(settings.depth_cache_url)
    symbols = [f"LAT{i}" for i in range(nsym)]
    by_sym = setup_connections(r, n, symbols)
    srv.ask("clear")
    for sym in symbols:
        write_depth(r, sym, 1)
    writes: dict[tuple[str, int], float] = {}

    def driver(stop: threading.Event) -> None:
        time.sleep(1.0)  # initial snapshots out of the way
        u = 1
        rnd = random.Random(6)
        while not stop.is_set():
            u += 1
            sym = rnd.choice(symbols)
            writes[(sym, u)] = write_depth(r, sym, u)
            time.sleep(0.05 if nsym > 1 else 0.5)

    asyncio.run(run_streamer_for(settings, opts, seconds + 1.0, driver))
    conn_sym = {c: s for s, cs in by_sym.items() for c in cs}
    lat = []
    per_write: dict[tuple[str, int], list[float]] = {}
    for cid, t, u in srv.ask("times", list(conn_sym)):
        w = writes.get((conn_sym[cid], u))
        if w is not None:
            lat.append((t - w) * 1000)
            per_write.setdefault((conn_sym[cid], u), []).append((t - w) * 1000)
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0] * 99
    out = {"conns": n, "symbols": nsym, "writes": len(writes), "receipts": len(lat),
           "p50_ms": q[49], "p99_ms": q[98], "max_ms": lat[-1] if lat else 0}
    if nsym == 1 and per_write:
        firsts = [min(v) for v in per_write.values()]
        lasts = [max(v) for v in per_write.values()]
        out["first_ms_median"] = statistics.median(firsts)
        out["last_ms_median"] = statistics.median(lasts)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", default="1000,5000", help="connection counts for the throughput run")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--transport", default="http", choices=["http", "chalice"])
    p.add_argument("--concurrency", type=int, default=128)
    args = p.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    valkey = ValkeyService(port=free_port()).start()
    srv = ServerHandle()
    try:
        settings = Settings.from_env({**os.environ, "DEPTH_CACHE_URL": valkey.depth_url,
                                      "WEBSOCKET_ENDPOINT": srv.endpoint, "AWS_REGION": "ap-northeast-2"})
        opts = StreamerOptions(transport=args.transport, concurrency=args.concurrency)
        rows = []
        for n in (int(x) for x in args.conns.split(",")):
            log(f"throughput: {n} connections, {args.seconds}s, transport={args.transport}")
            res = throughput(settings, opts, srv, n, args.seconds)
            log(f"  -> {res['sends_per_s']:.0f} sends/s errors={res['errors']}")
            rows.append(res)
        log("latency: 1000 connections over 100 symbols")
        lat = latency(settings, opts, srv, 1000, 100, args.seconds)
        log(f"  -> {lat}")
        log("latency: 1000 connections on one symbol")
        fan = latency(settings, opts, srv, 1000, 1, args.seconds)
        log(f"  -> {fan}")
    finally:
        srv.stop()
        valkey.stop()
    print(f"## streamer bench ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"load avg {os.getloadavg()[0]:.1f}, transport={args.transport}, concurrency={args.concurrency})")
    print("| connections | sends/s (one process) |")
    print("|---|---|")
    for row in rows:
        print(f"| {row['conns']} | {row['sends_per_s']:.0f} |")
    print(f"| latency, 1000 conns / 100 symbols | p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
          f"max {lat['max_ms']:.1f} ms ({lat['receipts']} receipts) |")
    print(f"| latency, 1000 conns / 1 symbol | p50 {fan['p50_ms']:.1f} ms, p99 {fan['p99_ms']:.1f} ms; "
          f"first receipt {fan.get('first_ms_median', 0):.1f} ms, last {fan.get('last_ms_median', 0):.1f} ms "
          f"(medians over {fan['writes']} writes) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
