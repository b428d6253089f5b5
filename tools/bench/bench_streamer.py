"""Benchmark of the streamer (issue 6) against the real local gateway and real WebSocket clients.

    python -m tools.bench.bench_streamer [--conns 1000,5000] [--seconds 5] [--transport fast|chalice|aiohttp]
                                         [--concurrency N] [--profile DIR]

Processes (so that the measured streamer process does nothing but stream):

- valkey-server (tools/services.py);
- the gateway: `tools/gateway.Gateway` serving the repo's Chalice app (`tools.dev.load_app`,
  stage local: test mode on) — WebSocket clients and the `@connections` API on one port;
- the clients: asyncio WebSocket connections (aiohttp's client, or `websockets` with
  `--clients websockets`) to `?testMode=true&userId=…`, so the app's
  `$connect` registers each as a logged-in connection; they record every depth message's
  receive time;
- the writer: an engine-style `SET depth:{SYM}` + `PUBLISH depth:changed`;
- this process: one `Streamer` (streamer_pkg) with the chosen transport.

Subscriptions are written with the shared registry code (`chalice_app.connections.subscribe`)
for the gateway's connection ids. Runs:

1. throughput — N logged-in connections over 10 symbols; the writer re-writes every symbol
   every 10 ms, more than any streamer can send, so the figure is the saturated sends/s of one
   process (coalescing absorbs the excess); also frames received by the clients;
2. latency — 1,000 connections over 100 symbols (10 each); one write to a random symbol
   every 50 ms; receipt time at each subscriber minus the write time (one machine, one clock);
3. latency fan-out — 1,000 connections on ONE symbol, a write every 500 ms (first/last receipt).

Each run prints the CPU used by each process (% of one core), which names the bottleneck;
`--profile DIR` also samples the streamer, gateway and clients with py-spy during the largest
throughput run and prints their hottest functions. Progress goes to stderr, figures to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import redis

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalice_app import connections, keys  # noqa: E402
from chalice_app.config import ENV, Settings  # noqa: E402
from streamer_pkg.tiers import Streamer, StreamerOptions  # noqa: E402
from streamer_pkg.transport import DEFAULT_CONCURRENCY, TRANSPORTS  # noqa: E402
from tools.bench.common import status, stop_on_sigterm, table  # noqa: E402
from tools.services import LOCAL_REGION, ValkeyService, free_port  # noqa: E402

CTX = mp.get_context("spawn")
TICKS = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench_streamer] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# --------------------------------------------------------------------------- child processes
def _gateway_main(conn, port: int, env: dict[str, str]) -> None:  # noqa: ANN001
    os.environ.update(env)
    import logging

    from chalice_app.logs import setup_logging
    setup_logging(logging.WARNING)
    from tools.dev import load_app
    from tools.gateway import Gateway

    app = load_app("local")
    gw = Gateway(app, stage="api", port=port).start()
    conn.send(os.getpid())
    while True:
        cmd = conn.recv()
        if cmd == "ids":
            conn.send(gw.connection_ids())
        elif cmd == "stats":
            conn.send(gw.stats())
        elif cmd == "stop":
            gw.stop()
            conn.send(True)
            return


def _clients_main(conn, url: str, n: int, lib: str = "aiohttp") -> None:  # noqa: ANN001
    asyncio.run(_clients(conn, url, n, lib))


async def _clients(conn, url: str, n: int, lib: str) -> None:  # noqa: ANN001
    """`n` WebSocket clients in this process; `lib` = aiohttp (its C frame reader: about half the
    CPU per frame of websockets' pure-Python one, so the harness takes less of the 2 cores) or
    websockets."""
    import aiohttp
    import websockets

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    state = {"frames": 0, "open": 0, "failed": 0}
    records: list[tuple[float, str, int]] = []
    opening = asyncio.Semaphore(64)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) if lib == "aiohttp" else None

    def got(raw: str | bytes) -> None:
        t = time.time()
        state["frames"] += 1
        m = orjson.loads(raw)
        if m.get("e") == "d":
            records.append((t, m["s"], m["u"]))

    async def one_aiohttp(i: int) -> None:
        assert session is not None
        try:
            async with opening:
                ws = await session.ws_connect(f"{url}?testMode=true&userId=bench{i}", autoping=False,
                                              compress=0, max_msg_size=0)
            state["open"] += 1
        except (OSError, aiohttp.ClientError, TimeoutError):
            state["failed"] += 1
            return
        try:
            async for msg in ws:
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    got(msg.data)
        finally:
            state["open"] -= 1

    async def one(i: int) -> None:
        try:
            async with opening:
                ws = await websockets.connect(f"{url}?testMode=true&userId=bench{i}", compression=None,
                                              ping_interval=None, open_timeout=120, max_queue=None)
            state["open"] += 1
        except (OSError, websockets.WebSocketException, TimeoutError):
            state["failed"] += 1
            return
        try:
            async for raw in ws:
                got(raw)
        except websockets.WebSocketException:
            pass
        finally:
            state["open"] -= 1

    def control() -> None:
        while True:
            cmd = conn.recv()
            if cmd == "state":
                conn.send(dict(state))
            elif cmd == "records":
                conn.send(list(records))
            elif cmd == "clear":
                records.clear()
                conn.send(True)
            elif cmd == "stop":
                loop.call_soon_threadsafe(stop.set)
                return

    tasks = [asyncio.create_task(one_aiohttp(i) if lib == "aiohttp" else one(i)) for i in range(n)]
    threading.Thread(target=control, daemon=True).start()
    conn.send(os.getpid())
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if session is not None:
        await session.close()
    conn.send(True)


def _writer_main(conn, redis_url: str) -> None:  # noqa: ANN001
    r = redis.Redis.from_url(redis_url)
    conn.send(os.getpid())
    u = 1000
    while True:
        cmd, symbols, period = conn.recv()
        if cmd == "exit":
            return
        writes: dict[tuple[str, int], float] = {}
        rnd = random.Random(6)
        while not conn.poll(period):
            u += 1
            chosen = symbols if cmd == "flood" else [rnd.choice(symbols)]
            pipe = r.pipeline(transaction=False)
            t = time.time()
            for sym in chosen:
                d = {"e": "d", "s": sym, "t": int(t * 1000), "u": u, "b": [[1000 + u % 7, 10], [999, 20]],
                     "a": [[1001, 5]]}
                pipe.set(keys.depth(sym), orjson.dumps(d))
                writes[(sym, u)] = t
            pipe.publish(keys.DEPTH_CHANGED_CHANNEL, orjson.dumps(chosen))
            pipe.execute()
        conn.recv()  # the "stop"
        conn.send(writes if cmd == "latency" else len(writes))


class Child:
    def __init__(self, target, *args: object) -> None:  # noqa: ANN001
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        self.pid: int = self.conn.recv()

    def ask(self, cmd: object, timeout: float = 120.0) -> object:
        self.conn.send(cmd)
        if not self.conn.poll(timeout):
            raise TimeoutError(f"child {self.pid} did not answer {cmd!r}")
        return self.conn.recv()

    def stop(self, cmd: object = "stop") -> None:
        try:
            self.conn.send(cmd)
            self.conn.poll(30)
        except (OSError, EOFError):  # the child is gone already (e.g. the SIGTERM of `timeout` reached it too)
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


# --------------------------------------------------------------------------- setup
def subscribe(r: redis.Redis, ids: list[str], symbols: list[str]) -> dict[str, list[str]]:
    """Reset every main subscription, then subscribe ids[i] to symbols[i % len] (shared registry code)."""
    for key in [*r.scan_iter(match=keys.SYMBOL_MAIN_PATTERN, count=1000), *r.scan_iter(match=keys.CONN_MAIN_PATTERN, count=1000)]:
        r.delete(key)
    r.delete(keys.SUBSCRIBED_SYMBOLS)
    r.sadd(keys.ACTIVE_SYMBOLS, *symbols)
    by_sym: dict[str, list[str]] = collections.defaultdict(list)
    for i, cid in enumerate(ids):
        sym = symbols[i % len(symbols)]
        connections.subscribe(r, cid, main=sym)
        by_sym[sym].append(cid)
    return by_sym


class Stack:
    def __init__(self, max_conns: int, transport: str, concurrency: int, membership_ms: float,
                 client_lib: str = "aiohttp") -> None:
        os.environ.setdefault(ENV.AWS_ACCESS_KEY_ID, "local")
        os.environ.setdefault(ENV.AWS_SECRET_ACCESS_KEY, "local")
        self.gateway: Child | None = None
        self.writer: Child | None = None
        self.clients: Child | None = None
        self.valkey = ValkeyService(port=free_port()).start()
        try:
            self._start(max_conns, transport, concurrency, membership_ms, client_lib)
        except BaseException:  # a failed or interrupted start (SIGTERM) leaves nothing running
            self.close()
            raise

    def _start(self, max_conns: int, transport: str, concurrency: int, membership_ms: float, client_lib: str) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}/api"
        env = {ENV.DEPTH_CACHE_URL: self.valkey.depth_url, ENV.BACKUP_CACHE_URL: self.valkey.backup_url,
               ENV.WEBSOCKET_ENDPOINT: self.endpoint, ENV.AWS_REGION: LOCAL_REGION,
               ENV.AWS_ACCESS_KEY_ID: os.environ[ENV.AWS_ACCESS_KEY_ID],
               ENV.AWS_SECRET_ACCESS_KEY: os.environ[ENV.AWS_SECRET_ACCESS_KEY], ENV.LOG_LEVEL: "WARNING"}
        self.r = redis.Redis.from_url(self.valkey.depth_url, decode_responses=True)
        self.warmup = 1.0  # seconds of writing before a run's measured window
        self.gateway = Child(_gateway_main, self.port, env)
        self.writer = Child(_writer_main, self.valkey.depth_url)
        log(f"opening {max_conns} WebSocket clients (app $connect, test mode = logged in)")
        t0 = time.monotonic()
        self.clients = Child(_clients_main, f"ws://127.0.0.1:{self.port}/api", max_conns, client_lib)
        while True:
            st = self.clients.ask("state")
            if st["open"] + st["failed"] >= max_conns:
                break
            if time.monotonic() - t0 > 300:
                raise TimeoutError(f"clients did not connect: {st}")
            time.sleep(0.5)
        self.ids = sorted(self.gateway.ask("ids"))
        log(f"  {st['open']} open, {st['failed']} failed in {time.monotonic() - t0:.1f}s; "
            f"{self.r.scard(keys.REALTIME_CONNECTIONS)} in {keys.REALTIME_CONNECTIONS}")
        self.settings = Settings.from_env({**os.environ, **env})
        self.opts = StreamerOptions(transport=transport, concurrency=concurrency, http_port=0,
                                    membership_every=membership_ms / 1000)

    def pids(self) -> dict[str, int]:
        return {"streamer": os.getpid(), "gateway": self.gateway.pid, "clients": self.clients.pid,
                "writer": self.writer.pid, "valkey": self.valkey.proc.pid}  # type: ignore[union-attr]

    def close(self) -> None:
        if self.clients is not None:
            self.clients.stop()
        if self.gateway is not None:
            self.gateway.stop()
        if self.writer is not None:
            self.writer.stop(("exit", [], 0))
        self.valkey.stop()


class Sampler:
    """CPU of every process and counters at two instants."""

    def __init__(self, stack: Stack, streamer: Streamer) -> None:
        self.stack, self.streamer = stack, streamer

    def sample(self) -> dict:
        st = self.stack.clients.ask("state")
        return {"t": time.monotonic(), "sends": self.streamer.metrics.sends, "frames": st["frames"],
                "cpu": {k: cpu_seconds(p) for k, p in self.stack.pids().items()}}

    @staticmethod
    def rates(a: dict, b: dict) -> dict:
        dt = b["t"] - a["t"]
        return {"sends_per_s": (b["sends"] - a["sends"]) / dt, "frames_per_s": (b["frames"] - a["frames"]) / dt,
                "cpu_pct": {k: 100 * (b["cpu"][k] - a["cpu"][k]) / dt for k in a["cpu"]}}


def start_profiles(stack: Stack, seconds: float, out: Path) -> list[tuple[str, Path, subprocess.Popen]]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for name in ("streamer", "gateway", "clients"):
        path = out / f"{name}.txt"
        cmd = [spy, "record", "-p", str(stack.pids()[name]), "-d", str(int(seconds)), "-r", "97",
               "-f", "raw", "-o", str(path), "--gil"]
        procs.append((name, path, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return procs


def summarize_profile(path: Path, top: int = 8) -> list[str]:
    """Hottest functions by own samples (leaf frame) from py-spy's raw (collapsed) output,
    sampled with --gil: only the thread holding the GIL, i.e. where Python CPU time goes."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        return ["(no profile)"]
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        own[stack.split(";")[-1]] += n
    return [f"{100 * n / max(total, 1):5.1f}%  {name}" for name, n in own.most_common(top)]


async def _run(stack: Stack, seconds: float, writer_cmd: tuple, profile: Path | None) -> tuple[Streamer, dict, object]:
    s = Streamer(stack.settings, stack.opts, serve_http=False)
    await s.start()
    sampler = Sampler(stack, s)
    await asyncio.sleep(1.0)  # snapshots to every new subscriber out of the way
    stack.clients.ask("clear")
    stack.writer.conn.send(writer_cmd)
    await asyncio.sleep(stack.warmup)  # the rate climbs for the first seconds of a run
    a = sampler.sample()
    spies = start_profiles(stack, seconds, profile) if profile else []
    await asyncio.sleep(seconds)
    b = sampler.sample()
    stack.writer.conn.send("stop")
    written = await asyncio.get_running_loop().run_in_executor(None, stack.writer.conn.recv)
    await asyncio.sleep(1.0)
    await s.stop(drain=2.0)
    for _, _, p in spies:
        p.wait(timeout=30)
    res = Sampler.rates(a, b)
    res["spies"] = [(name, path) for name, path, _ in spies]
    return s, res, written


def throughput(stack: Stack, n: int, seconds: float, profile: Path | None) -> dict:
    symbols = [f"SYM{i}" for i in range(10)]
    subscribe(stack.r, stack.ids[:n], symbols)
    s, res, _ = asyncio.run(_run(stack, seconds, ("flood", symbols, 0.01), profile))
    res.update(tick_stats(s))
    res.update(conns=n, errors=dict(s.metrics.errors), membership_reads=s.reader.membership_reads)
    return res


def tick_stats(s: Streamer) -> dict:
    h = s.metrics.ticks["realtime"]
    return {"ticks": h.total, "tick_ms": 1000 * h.sum / max(h.total, 1)}


def latency(stack: Stack, n: int, nsym: int, seconds: float, profile: Path | None = None) -> dict:
    symbols = [f"LAT{i}" for i in range(nsym)]
    subscribe(stack.r, stack.ids[:n], symbols)
    period = 0.05 if nsym > 1 else 0.5
    s, res, writes = asyncio.run(_run(stack, seconds, ("latency", symbols, period), profile))
    res.update(tick_stats(s))
    lat: list[float] = []
    per_write: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    for t, sym, u in stack.clients.ask("records"):  # type: ignore[union-attr]
        w = writes.get((sym, u))  # type: ignore[union-attr]
        if w is not None:
            ms = (t - w) * 1000
            lat.append(ms)
            per_write[(sym, u)].append(ms)
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0.0] * 99
    expected = sum(n // nsym for _ in writes)  # type: ignore[union-attr]
    out = {"conns": n, "symbols": nsym, "writes": len(writes), "receipts": len(lat),  # type: ignore[arg-type]
           "expected": expected, "p50_ms": q[49], "p90_ms": q[89], "p99_ms": q[98],
           "max_ms": lat[-1] if lat else 0.0, **res}
    if nsym == 1 and per_write:
        out["first_ms_median"] = statistics.median(min(v) for v in per_write.values())
        out["last_ms_median"] = statistics.median(max(v) for v in per_write.values())
    return out


def cpu_text(res: dict) -> str:
    return ", ".join(f"{k} {v:.0f}%" for k, v in res["cpu_pct"].items())


SENDS_GOAL = 5000  # sends/s per streamer process (issue 6)


def report(rows: list[dict], lat: dict | None, fan: dict | None) -> str:
    """The figure table: goals (issue 6) on the saturated runs (>= 5,000 sends/s) and on the
    100-symbol latency run (p50 < 10 ms, p99 < 60 ms); the 1-symbol fan-out run has none."""
    out = []
    for row in rows:
        out.append([f"{row['conns']} conns, 10 symbols, saturated", f"{row['sends_per_s']:.0f}",
                    f"{row['frames_per_s']:.0f}", f"{row['tick_ms']:.2f} ms", cpu_text(row),
                    f">= {SENDS_GOAL:,} sends/s", status(row["sends_per_s"] >= SENDS_GOAL)])
    if lat is not None:
        out.append(["latency, 1000 conns / 100 symbols",
                    f"p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
                    f"max {lat['max_ms']:.1f} ms ({lat['receipts']}/{lat['expected']} receipts)", "",
                    f"{lat['tick_ms']:.2f} ms", cpu_text(lat), "p50 < 10 ms, p99 < 60 ms",
                    status(lat["receipts"] > 0 and lat["p50_ms"] < 10 and lat["p99_ms"] < 60)])
    if fan is not None:
        out.append(["latency, 1000 conns / 1 symbol",
                    f"p50 {fan['p50_ms']:.1f} ms, p99 {fan['p99_ms']:.1f} ms; first {fan.get('first_ms_median', 0):.1f} ms, "
                    f"last {fan.get('last_ms_median', 0):.1f} ms (medians over {fan['writes']} writes)", "",
                    f"{fan['tick_ms']:.2f} ms", cpu_text(fan), "", ""])
    return table(["run", "sends/s (streamer)", "frames/s (clients)", "realtime tick (mean)", "CPU % of one core",
                  "goal", "status"], out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.bench_streamer", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conns", default="1000,5000", help="connection counts for the throughput runs")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--transport", default=StreamerOptions.transport, choices=list(TRANSPORTS))
    p.add_argument("--concurrency", type=int, default=StreamerOptions.concurrency,
                   help="fan-out workers, 0 = the transport's default (chalice: + 8 slow-lane workers = sender threads)")
    p.add_argument("--clients", default="aiohttp", choices=["aiohttp", "websockets"],
                   help="WebSocket client library of the clients process (default aiohttp: less harness CPU)")
    p.add_argument("--profile", type=Path, default=None, help="py-spy the largest throughput run into DIR")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="seconds of writing before the measured window (default 1)")
    p.add_argument("--no-latency", action="store_true", help="throughput runs only")
    p.add_argument("--switch-ms", type=float, default=None,
                   help="sys.setswitchinterval for this (streamer) process, ms (default: Python's 5 ms)")
    p.add_argument("--membership-ms", type=float, default=StreamerOptions.membership_every * 1000,
                   help="re-read subscriber sets at least this often; 0 = every tick (the old behaviour)")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.conns.split(",") if x.strip() and int(x) > 0]
    if args.switch_ms is not None:
        sys.setswitchinterval(args.switch_ms / 1000)
    stop_on_sigterm()
    load_before = os.getloadavg()
    log(f"load average before: {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f}")
    stack = Stack(max(counts + [1000]), args.transport, args.concurrency, args.membership_ms, args.clients)
    stack.warmup = args.warmup
    rows, lat, fan = [], None, None
    try:
        for n in counts:
            log(f"throughput: {n} connections, {args.seconds}s, transport={args.transport}")
            prof = args.profile if args.profile and n == max(counts) else None
            res = throughput(stack, n, args.seconds, prof)
            log(f"  -> {res['sends_per_s']:.0f} sends/s, {res['frames_per_s']:.0f} frames/s at clients; "
                f"CPU {cpu_text(res)}; realtime tick {res['tick_ms']:.2f} ms x {res['ticks']}; "
                f"errors={res['errors']}")
            for name, path in res["spies"]:
                log(f"  py-spy {name} ({path}):")
                for line in summarize_profile(path):
                    log(f"      {line}")
            rows.append(res)
        if not args.no_latency:
            log("latency: 1000 connections over 100 symbols")
            lat = latency(stack, 1000, 100, args.seconds, None if counts else args.profile)
            log(f"  -> p50 {lat['p50_ms']:.1f} p99 {lat['p99_ms']:.1f} ms ({lat['receipts']}/{lat['expected']}); "
                f"CPU {cpu_text(lat)}")
            for name, path in lat["spies"]:
                log(f"  py-spy {name} ({path}):")
                for line in summarize_profile(path):
                    log(f"      {line}")
            log("latency: 1000 connections on one symbol")
            fan = latency(stack, 1000, 1, args.seconds)
            log(f"  -> p50 {fan['p50_ms']:.1f} p99 {fan['p99_ms']:.1f} ms; CPU {cpu_text(fan)}")
    finally:
        stack.close()
    load_after = os.getloadavg()
    print(f"## streamer bench ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load avg "
          f"{load_before[0]:.1f} before / {load_after[0]:.1f} after, transport={args.transport}, "
          f"concurrency={args.concurrency or DEFAULT_CONCURRENCY[args.transport]}, clients={args.clients}, membership re-read every {args.membership_ms:.0f} ms)")
    print()
    print(report(rows, lat, fan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
