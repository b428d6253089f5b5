"""What cluster mode costs the two hot Valkey paths: one valkey-server vs a 3-primary cluster.

    python -m tools.bench.bench_cache_cluster [--symbols 1,10,100] [--rounds 200]

Both caches run on this machine (tools/services.py: `ValkeyService`, `ValkeyClusterService`),
so the figures show the client-side cost of cluster mode (a pipeline split into one round
trip per node, a GET per key instead of MGET, the PUBLISH after the pipeline), not network:

- engine: `DepthWriter.write` of one batch touching N symbols (candles.lua per symbol + PUBLISH);
- streamer: `Reader.read` of N subscribed symbols (steady state: depth, ticker and candle of
  every symbol, subscriber sets cached), on redis.asyncio.

Prints the median and p90 per call in ms, and the 1-minute load average before each part;
progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

from chalice_app import cache, connections, keys
from engine_pkg.service.depth_writer import DepthWriter, SymbolUpdate
from streamer_pkg.reader import Reader
from tools.bench.common import stop_on_sigterm, table
from tools.services import ValkeyClusterService, ValkeyService


def log(msg: str) -> None:
    print(f"[bench_cache_cluster] {msg}", file=sys.stderr, flush=True)


def _symbols(n: int) -> list[str]:
    return [f"S{i:03d}" for i in range(n)]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_writer(url: str, n: int, rounds: int) -> list[float]:
    writer = DepthWriter(cache.client(url, "auto"))
    out = []
    for r in range(1, rounds + 1):
        ups = [SymbolUpdate(s, r, b'{"e":"d","u":%d}' % r, b'{"e":"t"}', [(r, "202601010000", 100, 1)])
               for s in _symbols(n)]
        t0 = time.perf_counter()
        writer.write(ups)
        out.append((time.perf_counter() - t0) * 1000)
    writer.client.close()
    return out


async def _bench_reader(url: str, n: int, rounds: int) -> list[float]:
    sync = cache.client(url, "auto", decode_responses=True)
    for s in _symbols(n):
        connections.register_connection(sync, f"c-{s}", "u", is_logged_in=True)
        connections.subscribe(sync, f"c-{s}", main=s)
        sync.set(keys.depth(s), '{"e":"d","u":1}')
        sync.set(keys.ticker(s), '{"e":"t"}')
        sync.hset(keys.candle(s), mapping={"o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "t": "202601010000"})
    sync.close()
    client = cache.async_client(url, "auto", decode_responses=True)
    reader = Reader(client, membership_every=3600.0)
    await reader.read(time.time())  # membership read
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        snap = await reader.read(time.time())
        out.append((time.perf_counter() - t0) * 1000)
        assert len(snap.symbols) == n
    await client.aclose()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.bench_cache_cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", default="1,10,100", help="symbol counts per batch / tick (default 1,10,100)")
    ap.add_argument("--rounds", type=int, default=200, help="calls measured per case (default 200)")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.symbols.split(",")]
    stop_on_sigterm()
    single = cluster = None
    out: list[str] = []  # printed once every part is measured, so that progress lines do not split it
    try:
        log("starting one valkey-server and a 3-primary cluster")
        single = ValkeyService().start()
        cluster = ValkeyClusterService().start()
        targets = {"single": f"{single.url}/0", "cluster3": cluster.url}
        for part, fn in (("engine DepthWriter.write", bench_writer),
                         ("streamer Reader.read", lambda u, n, r: asyncio.run(_bench_reader(u, n, r)))):
            load = os.getloadavg()[0]
            rows = []
            for n in counts:
                row: list[object] = [n]
                for name, url in targets.items():
                    log(f"{part}: {n} symbols, {name}, {args.rounds} calls")
                    (cluster.flush() if name == "cluster3" else cache.client(url, "off").flushdb())
                    xs = fn(url, n, args.rounds)
                    row.append(f"{statistics.median(xs):.2f} / {_pct(xs, 0.9):.2f}")
                rows.append(row)
            out.append(f"{part} — load {load:.2f} before; ms per call, median / p90 ({args.rounds} calls)\n\n"
                       + table(["symbols", *(f"{k} (median / p90 ms)" for k in targets)], rows))
    finally:
        if cluster is not None:
            cluster.stop()
        if single is not None:
            single.stop()
    print("\n" + "\n\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
