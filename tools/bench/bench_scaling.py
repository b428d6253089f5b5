"""Scaling benchmark (issue 9): 1, 2 and 4 engine processes on one 8-shard orders stream.

For each engine count K, on the real local services (kinesalite, valkey-server; started
here on free ports, in memory):

1. create a fresh orders stream with 8 shards (fills and status with 2, as provisioned);
2. preload N order commands (ADD, crossing prices, spread over many symbols so every
   shard gets work) with PutRecords;
3. start K `python -m engine_pkg` processes (no `--dev`: a new stream is read from
   TRIM_HORIZON) and sample the sum of their `supernoba_engine_orders_total` every
   100 ms until all N are processed — orders/s is measured between 10 % and 90 % done,
   so process start-up, lease balancing and the tail are not counted;
4. for K >= 2, once the leases are balanced: `kill -9` one engine and measure (a) the time
   until the survivors own all 8 shards and (b) the time until an order put on one of
   the dead engine's shards right after the kill is matched (its `depth:{SYM}` appears);
   for K = 4 also a graceful stop (SIGTERM), which releases the leases at once.

    python -m tools.bench.bench_scaling [--engines 1,2,4] [--orders 30000] [--json FILE]

Figures are printed (and optionally written as JSON); nothing is asserted. Run it on an
otherwise idle machine: every engine, kinesalite and valkey share the same cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import redis

from chalice_app import keys
from chalice_app.config import ENV
from tools.bench.common import stop_on_sigterm
from tools.services import LocalServices, free_port

REPO = Path(__file__).resolve().parents[2]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class EngineProc:
    index: int
    port: int
    proc: subprocess.Popen
    log_path: Path

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(f"supernoba_engine_{name} "):
                    return float(line.split()[1])
        return 0.0

    def owned(self) -> set[str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                shards = json.loads(resp.read())["shards"]
        except urllib.error.HTTPError as exc:
            shards = json.loads(exc.read() or b"{}").get("shards", {})
        return {sid for sid, s in shards.items() if s["state"] in ("starting", "reading")}

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Run:
    engines: int
    orders: int
    preload_s: float = 0.0
    orders_per_s: float = 0.0
    wall_s: float = 0.0
    balance_s: float | None = None
    kill_takeover_s: float | None = None
    kill_resume_s: float | None = None
    term_takeover_s: float | None = None
    cpu_percent: dict[str, float] = field(default_factory=dict)
    load_average: float = 0.0
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, services: LocalServices, args: argparse.Namespace, log_dir: Path) -> None:
        self.services = services
        self.args = args
        self.log_dir = log_dir
        self.env = {**os.environ, **services.env(), ENV.LOG_LEVEL: "WARNING",
                    ENV.ENGINE_LEASE_TTL_MS: str(args.lease_ttl_ms), ENV.ENGINE_GET_LIMIT: str(args.get_limit)}
        self.session = boto3.Session(region_name=self.env[ENV.AWS_REGION])
        self.kinesis = self.session.client(
            "kinesis", endpoint_url=self.env[ENV.AWS_ENDPOINT_URL_KINESIS],
            aws_access_key_id="local", aws_secret_access_key="local")
        self.depth = redis.Redis.from_url(self.env[ENV.DEPTH_CACHE_URL], decode_responses=True)

    # -- streams and orders ------------------------------------------------------------
    def make_streams(self, tag: str) -> dict[str, str]:
        names = {ENV.KINESIS_ORDERS_STREAM: f"bench-orders-{tag}", ENV.KINESIS_FILLS_STREAM: f"bench-fills-{tag}",
                 ENV.KINESIS_STATUS_STREAM: f"bench-status-{tag}"}
        for var, name in names.items():
            self.kinesis.create_stream(StreamName=name, ShardCount=self.args.shards if var == ENV.KINESIS_ORDERS_STREAM else 2)
        for name in names.values():
            self.kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
        return names

    def delete_streams(self, names: dict[str, str]) -> None:
        for name in names.values():
            try:
                self.kinesis.delete_stream(StreamName=name)
            except self.kinesis.exceptions.ResourceNotFoundException:
                pass

    def shard_of(self, stream: str) -> dict[str, tuple[int, int]]:
        shards = self.kinesis.list_shards(StreamName=stream)["Shards"]
        return {s["ShardId"]: (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
                for s in shards}

    @staticmethod
    def shard_for_key(ranges: dict[str, tuple[int, int]], key: str) -> str:
        h = int(hashlib.md5(key.encode()).hexdigest(), 16)
        return next(sid for sid, (lo, hi) in ranges.items() if lo <= h <= hi)

    def preload(self, stream: str, n: int) -> float:
        rng = random.Random(42)
        symbols = [f"B{i:03d}" for i in range(self.args.symbols)]
        start = time.monotonic()
        batch: list[dict] = []
        for i in range(n):
            sym = symbols[i % len(symbols)]
            is_buy = rng.random() < 0.5
            cmd = {"action": "ADD", "symbol": sym, "order_id": f"o{i}", "user_id": f"u{rng.randrange(50)}",
                   "is_buy": is_buy, "price": 10000 + rng.randrange(-10, 11), "quantity": rng.randrange(1, 50),
                   "type": "LIMIT", "tif": "GTC", "ts": 1733896438267 + i}
            batch.append({"Data": json.dumps(cmd).encode(), "PartitionKey": sym})
            if len(batch) == 500 or i == n - 1:
                self._put_all(stream, batch)
                batch = []
            if (i + 1) % 20000 == 0:
                say(f"  preloaded {i + 1}/{n}")
        return time.monotonic() - start

    def _put_all(self, stream: str, records: list[dict]) -> None:
        while records:
            resp = self.kinesis.put_records(StreamName=stream, Records=records)
            records = [r for r, res in zip(records, resp["Records"], strict=True) if "ErrorCode" in res]
            if records:
                time.sleep(0.05)

    # -- engines -------------------------------------------------------------------------
    def start_engines(self, k: int, names: dict[str, str], tag: str) -> list[EngineProc]:
        procs = []
        for i in range(k):
            port = free_port()
            log_path = self.log_dir / f"engine-{tag}-{i}.log"
            env = {**self.env, **names, ENV.ENGINE_HTTP_PORT: str(port), ENV.ENGINE_ID: f"bench-{tag}-e{i}"}
            out = open(log_path, "wb")  # noqa: SIM115 - owned by the child
            proc = subprocess.Popen([sys.executable, "-m", "engine_pkg"], cwd=REPO, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(EngineProc(i, port, proc, log_path))
        return procs

    @staticmethod
    def stop_engines(procs: list[EngineProc]) -> None:
        for e in procs:
            if e.alive():
                e.proc.send_signal(signal.SIGTERM)
        for e in procs:
            try:
                e.proc.wait(30)
            except subprocess.TimeoutExpired:
                e.proc.kill()
                e.proc.wait(10)

    @staticmethod
    def total(procs: list[EngineProc], name: str = "orders_total") -> float:
        n = 0.0
        for e in procs:
            if e.alive():
                try:
                    n += e.metric(name)
                except OSError:
                    pass
        return n

    def wait_balanced(self, procs: list[EngineProc], shards: int, timeout: float = 120) -> float | None:
        """Seconds until the live engines own every shard, each at most its fair share."""
        live = [e for e in procs if e.alive()]
        fair = -(-shards // len(live))
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            owned = []
            for e in live:
                try:
                    owned.append(e.owned())
                except OSError:
                    owned.append(set())
            union = set().union(*owned)
            if len(union) == shards and sum(len(o) for o in owned) == shards and all(len(o) <= fair for o in owned):
                return time.monotonic() - start
            time.sleep(0.1)
        return None

    def wait_owned(self, survivors: list[EngineProc], shards: set[str], timeout: float) -> float | None:
        """The monotonic time at which `survivors` together own every shard of `shards`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            owned: set[str] = set()
            for e in survivors:
                try:
                    owned |= e.owned()
                except OSError:
                    pass
            if shards <= owned:
                return time.monotonic()
            time.sleep(0.05)
        return None

    # -- one run -------------------------------------------------------------------------
    def run(self, k: int) -> Run:
        tag = f"k{k}-{uuid.uuid4().hex[:6]}"
        result = Run(engines=k, orders=self.args.orders)
        names = self.make_streams(tag)
        orders_stream = names[ENV.KINESIS_ORDERS_STREAM]
        say(f"K={k}: preloading {self.args.orders} orders on {orders_stream} ({self.args.shards} shards)")
        result.preload_s = self.preload(orders_stream, self.args.orders)
        say(f"K={k}: preloaded in {result.preload_s:.1f}s; starting {k} engine(s)")
        procs = self.start_engines(k, names, tag)
        try:
            self._measure_throughput(procs, result)
            if k >= 2:
                self._measure_takeover(procs, names, result)
        finally:
            self.stop_engines(procs)
            self.delete_streams(names)
        return result

    def _cpu(self, procs: list[EngineProc]) -> dict[str, float]:
        out = {"kinesalite": cpu_seconds(self.services.kinesis.proc.pid),
               "valkey": cpu_seconds(self.services.valkey.proc.pid)}
        out["engines"] = sum(cpu_seconds(e.proc.pid) for e in procs)
        return out

    def _measure_throughput(self, procs: list[EngineProc], result: Run) -> None:
        n = self.args.orders
        start = time.monotonic()
        cpu0 = self._cpu(procs)
        samples: list[tuple[float, float]] = []
        last_report = start
        while True:
            now = time.monotonic()
            done = self.total(procs)
            samples.append((now, done))
            if done >= n:
                break
            if now - start > self.args.timeout:
                result.notes.append(f"timed out with {done:.0f}/{n} processed")
                break
            if any(not e.alive() for e in procs):
                raise SystemExit(f"an engine died; see {self.log_dir}")
            if now - last_report > 5:
                say(f"  {done:.0f}/{n} processed")
                last_report = now
            time.sleep(0.1)
        result.wall_s = samples[-1][0] - start
        cpu1 = self._cpu(procs)
        result.cpu_percent = {k: round(100 * (cpu1[k] - cpu0[k]) / max(result.wall_s, 1e-6)) for k in cpu0}
        result.load_average = os.getloadavg()[0]

        def t_at(fraction: float) -> float:
            return next(t for t, d in samples if d >= fraction * n)

        if samples[-1][1] >= n:
            t10, t90 = t_at(0.1), t_at(0.9)
            result.orders_per_s = 0.8 * n / max(t90 - t10, 1e-6)
        say(f"K={result.engines}: {result.orders_per_s:,.0f} orders/s (10-90 %), all done in {result.wall_s:.1f}s; "
            f"CPU % while processing: {result.cpu_percent}; load average {result.load_average:.1f}")

    def _measure_takeover(self, procs: list[EngineProc], names: dict[str, str], result: Run) -> None:
        shards = self.args.shards
        result.balance_s = self.wait_balanced(procs, shards)
        if result.balance_s is None:
            result.notes.append("leases never balanced; takeover not measured")
            return
        ranges = self.shard_of(names[ENV.KINESIS_ORDERS_STREAM])
        victim = procs[0]
        lost = victim.owned()
        survivors = [e for e in procs if e is not victim]
        # a symbol that lands on one of the victim's shards, not seen before
        sym = next(s for s in (f"KILL{i}" for i in range(10000)) if self.shard_for_key(ranges, s) in lost)
        say(f"K={result.engines}: kill -9 engine {victim.index} (owns {len(lost)} shards)")
        t_kill = time.monotonic()
        os.killpg(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)
        cmd = {"action": "ADD", "symbol": sym, "order_id": f"kill-{sym}", "user_id": "u_kill", "is_buy": True,
               "price": 777, "quantity": 1, "type": "LIMIT", "tif": "GTC", "ts": 1733896438267}
        self.kinesis.put_record(StreamName=names[ENV.KINESIS_ORDERS_STREAM], Data=json.dumps(cmd).encode(),
                                PartitionKey=sym)
        timeout = 6 * self.args.lease_ttl_ms / 1000 + 30
        owned_at = self.wait_owned(survivors, lost, timeout)
        result.kill_takeover_s = None if owned_at is None else owned_at - t_kill
        deadline = t_kill + timeout
        while time.monotonic() < deadline and not self.depth.exists(keys.depth(sym)):
            time.sleep(0.05)
        if self.depth.exists(keys.depth(sym)):
            result.kill_resume_s = time.monotonic() - t_kill
        say(f"K={result.engines}: survivors own the dead engine's shards after {_fmt(result.kill_takeover_s)}, "
            f"an order on them is matched after {_fmt(result.kill_resume_s)}")
        if len(survivors) >= 2:
            again = self.wait_balanced(survivors, shards)
            if again is None:
                result.notes.append("survivors never rebalanced; graceful stop not measured")
                return
            leaving = survivors[0]
            handed = leaving.owned()
            rest = survivors[1:]
            say(f"K={result.engines}: SIGTERM engine {leaving.index} (owns {len(handed)} shards)")
            t_term = time.monotonic()
            leaving.proc.send_signal(signal.SIGTERM)
            owned_at = self.wait_owned(rest, handed, timeout)
            result.term_takeover_s = None if owned_at is None else owned_at - t_term
            say(f"K={result.engines}: after SIGTERM the others own its shards after {_fmt(result.term_takeover_s)}"
                f" (process exited: {leaving.proc.wait(60)} after {time.monotonic() - t_term:.1f}s)")


def _fmt(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.1f}s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.bench_scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="1,2,4", help="engine counts to run, comma separated (default %(default)s)")
    p.add_argument("--shards", type=int, default=8, help="shards of the orders stream (default %(default)s)")
    p.add_argument("--orders", type=int, default=30000, help="orders preloaded per run (default %(default)s)")
    p.add_argument("--symbols", type=int, default=64, help="symbols the orders are spread over (default %(default)s)")
    p.add_argument("--lease-ttl-ms", type=int, default=10000, help="ENGINE_LEASE_TTL_MS (default %(default)s)")
    p.add_argument("--get-limit", type=int, default=1000,
                   help="ENGINE_GET_LIMIT, records per GetRecords (default %(default)s: kinesalite slows down "
                        "badly on 10,000-record reads; AWS does not)")
    p.add_argument("--timeout", type=float, default=600, help="give up a run after this many seconds")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    # clean up (engines, services) on Ctrl-C and on SIGTERM, also when started in the background
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stop_on_sigterm()  # the first SIGTERM unwinds; `timeout make` sends a second one, which must not cut the clean-up
    counts = [int(x) for x in args.engines.split(",") if x.strip()]
    log_dir = REPO / ".local" / "bench-scaling"
    log_dir.mkdir(parents=True, exist_ok=True)
    say(f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}; logs in {log_dir}")
    results: list[Run] = []
    with LocalServices(log_dir=log_dir) as services:
        bench = Bench(services, args, log_dir)
        for k in counts:
            results.append(bench.run(k))
    print()
    print(f"| engines | orders/s (10-90 %) | all {args.orders} done | leases balanced | kill -9: shards taken over "
          f"| kill -9: order matched | SIGTERM: shards taken over |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.engines} | {r.orders_per_s:,.0f} | {r.wall_s:.1f} s | {_fmt(r.balance_s)} | {_fmt(r.kill_takeover_s)} "
              f"| {_fmt(r.kill_resume_s)} | {_fmt(r.term_takeover_s)} |")
    print()
    print("| engines | CPU % kinesalite | CPU % valkey | CPU % engines (sum) | 1-min load average |")
    print("|---|---|---|---|---|")
    for r in results:
        c = r.cpu_percent
        print(f"| {r.engines} | {c.get('kinesalite', 0)} | {c.get('valkey', 0)} | {c.get('engines', 0)} "
              f"| {r.load_average:.1f} |")
    for r in results:
        for note in r.notes:
            print(f"note (K={r.engines}): {note}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
