"""Benchmark of the engine service (issue 4) on local kinesalite + valkey-server.

    python -m tools.bench.bench_engine_service [--orders N] [--latency-samples N] [--replay N] [--profile]
        [--floor MS,...] [--idle-max MS,...] [--skip PHASES]

1. throughput: N orders pre-loaded on a fresh 4-shard orders stream, then
   `python -m engine_pkg` (a child process) reads them from TRIM_HORIZON; orders/s from the
   first to the last processed order (its /metrics), CPU seconds of the engine, kinesalite and
   valkey over that window, and (--profile) the engine's hottest functions from py-spy.
2. latency: PutRecord → `depth:{SYM}` updated, one order at a time with random 5–30 ms gaps:
   from just before the PutRecord call until a subscriber of `depth:changed` receives the
   PUBLISH naming the symbol (it follows the depth write in the same pipeline, so the key has
   changed by then). Local defaults, then once per extra `--floor` / `--idle-max` value.
3. replay: time for a fresh engine (no snapshot, like after `--dev` plus a crash) to rebuild the
   books from an R-record stream, and the time `Engine.process` alone needs for them.

Prints progress on stderr and the figures on stdout: a table (goal: PutRecord → depth p50 < 15 ms,
p99 < 50 ms), and with --json every figure as JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import orjson
import redis

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from chalice_app import keys  # noqa: E402
from chalice_app.config import ENV, Settings  # noqa: E402
from tools.bench.common import status, stop_on_sigterm, table  # noqa: E402
from tools.services import LOCAL_REGION, KinesisService, ValkeyService, free_port  # noqa: E402

SYMBOLS = [f"S{i:02d}" for i in range(16)]


def progress(msg: str) -> None:
    print(f"[bench-engine-service] {msg}", file=sys.stderr, flush=True)


def order_stream(n: int, seed: int = 1, symbols: list[str] = SYMBOLS) -> list[bytes]:
    """Limit orders around a drifting mid (about half cross), 10% cancels, 3% markets."""
    rnd = random.Random(seed)
    mid = {s: 10_000 for s in symbols}
    resting: dict[str, list[tuple[str, str]]] = {s: [] for s in symbols}
    out: list[bytes] = []
    t0 = int(time.time() * 1000)
    for i in range(n):
        s = symbols[rnd.randrange(len(symbols))]
        u = f"u{rnd.randrange(200)}"
        r = rnd.random()
        if r < 0.10 and resting[s]:
            oid, owner = resting[s].pop(rnd.randrange(len(resting[s])))
            cmd = {"action": "CANCEL", "symbol": s, "order_id": oid, "user_id": owner}
        elif r < 0.13:
            cmd = {"action": "ADD", "symbol": s, "order_id": f"o{i}", "user_id": u, "is_buy": rnd.random() < 0.5,
                   "quantity": rnd.randrange(1, 20), "type": "MARKET"}
        else:
            mid[s] += rnd.choice((-1, 0, 1))
            buy = rnd.random() < 0.5
            price = mid[s] + (rnd.randrange(-3, 8) * (-1 if buy else 1))
            cmd = {"action": "ADD", "symbol": s, "order_id": f"o{i}", "user_id": u, "is_buy": buy,
                   "price": price, "quantity": rnd.randrange(1, 100)}
            resting[s].append((f"o{i}", u))
            if len(resting[s]) > 2000:
                resting[s] = resting[s][-1000:]
        cmd["ts"] = t0 + i
        out.append(orjson.dumps(cmd))
    return out


def load(kinesis, stream: str, records: list[bytes], threads: int = 4) -> float:
    """PutRecords 500 at a time from a few threads; returns records/s."""
    def put(chunk: list[bytes]) -> None:
        pending = [{"Data": d, "PartitionKey": orjson.loads(d)["symbol"]} for d in chunk]
        while pending:
            resp = kinesis.put_records(StreamName=stream, Records=pending)
            pending = [r for r, x in zip(pending, resp["Records"], strict=True) if "ErrorCode" in x]
    # keep per-symbol order: one thread per group of symbols
    groups: dict[int, list[bytes]] = collections.defaultdict(list)
    for d in records:
        groups[hash(orjson.loads(d)["symbol"]) % threads].append(d)
    start = time.monotonic()
    done = [0]

    def run(group: list[bytes]) -> None:
        for i in range(0, len(group), 500):
            put(group[i:i + 500])
            done[0] += len(group[i:i + 500])
            if done[0] % 50_000 < 500:
                progress(f"loaded {done[0]:,}/{len(records):,}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, groups.values()))
    return len(records) / (time.monotonic() - start)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return -1
    for line in text.splitlines():
        if line.startswith(f"supernoba_engine_{name} "):
            return float(line.split()[1])
    return -1


class Stack:
    def __init__(self) -> None:
        # a 1,000,000-order replay keeps ~3.5 M records in kinesalite's in-memory store
        os.environ.setdefault("NODE_OPTIONS", "--max-old-space-size=8192")
        self.engines: list[subprocess.Popen] = []
        self._scratch: Path | None = None
        self.valkey = ValkeyService().start()
        try:
            self.kin = KinesisService(start_timeout=60).start()
        except BaseException:  # a failed or interrupted start (SIGTERM) leaves nothing running
            self.valkey.stop()
            raise
        self.env = {**os.environ, ENV.AWS_ENDPOINT_URL_KINESIS: self.kin.url, ENV.AWS_ACCESS_KEY_ID: "local",
                    ENV.AWS_SECRET_ACCESS_KEY: "local", ENV.AWS_REGION: LOCAL_REGION,
                    ENV.AWS_DEFAULT_REGION: LOCAL_REGION, ENV.DEPTH_CACHE_URL: self.valkey.depth_url,
                    ENV.BACKUP_CACHE_URL: self.valkey.backup_url, ENV.LOG_LEVEL: "WARNING"}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("AWS_", "DEPTH_", "BACKUP_"))})
        self.kinesis = boto3.client("kinesis", region_name=LOCAL_REGION)

    def streams(self, tag: str) -> Settings:
        env = {**self.env, ENV.KINESIS_ORDERS_STREAM: f"orders-{tag}", ENV.KINESIS_FILLS_STREAM: f"fills-{tag}",
               ENV.KINESIS_STATUS_STREAM: f"status-{tag}"}
        s = Settings.from_env(env)
        k = self.kinesis
        for name, shards in ((s.orders_stream, 4), (s.fills_stream, 2), (s.status_stream, 2)):
            k.create_stream(StreamName=name, ShardCount=shards)
            k.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
        return s

    def engine(self, s: Settings, *args: str, **env: str) -> tuple[subprocess.Popen, int]:
        port = free_port()
        full = {**self.env, ENV.KINESIS_ORDERS_STREAM: s.orders_stream, ENV.KINESIS_FILLS_STREAM: s.fills_stream,
                ENV.KINESIS_STATUS_STREAM: s.status_stream, ENV.ENGINE_HTTP_PORT: str(port), **env}
        proc = subprocess.Popen([sys.executable, "-m", "engine_pkg", *args], cwd=str(REPO), env=full,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.engines.append(proc)  # stopped by close() if a phase fails before stopping it
        deadline = time.monotonic() + 30
        while metric(port, "orders_total") < 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("engine did not start")
            time.sleep(0.1)
        return proc, port

    @staticmethod
    def stop_engine(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def scratch(self) -> Path:
        """A temporary folder (py-spy's output), removed by close()."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="bench-engine-service-"))
        return self._scratch

    def close(self) -> None:
        for proc in self.engines:
            self.stop_engine(proc)
        self.kin.stop()
        self.valkey.stop()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def drain(stack: Stack, s: Settings, n: int, profile: bool, label: str, *, flush: bool = True,
          kill9: bool = False, **env: str) -> dict:
    """Run an engine over a pre-loaded stream of n records; time from its start to the last order done
    (all its fills and statuses on Kinesis, depth written)."""
    if flush:
        redis.Redis.from_url(s.backup_cache_url).flushdb()
        redis.Redis.from_url(s.depth_cache_url).flushdb()
    proc, port = stack.engine(s, **env)
    spy = None
    if profile:
        out = stack.scratch() / f"profile-{label}.txt"
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(proc.pid),
                                "--format", "raw", "--output", str(out), "--rate", "200", "--threads",
                                "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids = {"engine": proc.pid, "kinesalite": stack.kin.proc.pid, "valkey": stack.valkey.proc.pid}
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    t_first = time.monotonic()  # the engine answers /metrics: leases taken, shards being read
    last_report = 0.0
    while True:
        done = metric(port, "orders_total")
        now = time.monotonic()
        if done >= n:
            break
        if now - last_report > 5:
            progress(f"{label}: {int(done):,}/{n:,} orders processed")
            last_report = now
        time.sleep(0.05)
    processed = time.monotonic() - t_first
    cpu = {k: round(cpu_seconds(p) - cpu0[k], 1) for k, p in pids.items()}
    top: list[tuple[str, float]] = []
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
        top = hot_functions(out)
    if kill9:
        time.sleep(1.0)  # let the last puts land and the emitted mark advance
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    else:  # graceful stop drains the in-flight Kinesis puts: count it in
        stack.stop_engine(proc)
    elapsed = time.monotonic() - t_first
    progress(f"{label}: {n:,} orders in {elapsed:.1f} s = {n / elapsed:,.0f}/s (matched+depth {processed:.1f} s)"
             f" cpu={cpu} load={os.getloadavg()[0]:.1f}")
    return {"orders": n, "seconds": round(elapsed, 2), "orders_per_s": round(n / elapsed), "cpu_s": cpu,
            "matched_and_depth_written_s": round(processed, 2), "top": top}


def hot_functions(path: Path, k: int = 12) -> list[tuple[str, float]]:
    """Self time per function (leaf frame) from py-spy's collapsed stacks, idle frames excluded."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        leaf = frames[-1]
        if any(w in leaf for w in ("wait (threading", "select (", "_wait_for_tstate_lock", "serve_forever",
                                   "poll (selectors", "sleep", "get (queue", "_worker (concurrent")):
            continue
        name, _, where = leaf.partition(" (")  # "func (path/to/file.py:123)" -> "func (file.py:123)"
        counts[f"{name} ({where.rsplit('/', 1)[-1]}" if where else name] += int(n)
        total += int(n)
    return [(f, round(100.0 * c / total, 1)) for f, c in counts.most_common(k)] if total else []


def latency(stack: Stack, samples: int, **env: str) -> dict:
    s = stack.streams(f"lat{int(time.time())}{random.randrange(1000)}")
    proc, port = stack.engine(s, "--dev", **env)
    time.sleep(1.5)  # leases taken, iterators at LATEST
    c0, k0, t_start = cpu_seconds(proc.pid), cpu_seconds(stack.kin.proc.pid), time.monotonic()
    sub = redis.Redis.from_url(s.depth_cache_url).pubsub()
    sub.subscribe(keys.DEPTH_CHANGED_CHANNEL)
    sub.get_message(timeout=1)
    cache = redis.Redis.from_url(s.depth_cache_url)
    rnd = random.Random(3)
    lat: list[float] = []
    put_ms: list[float] = []
    to_write: list[float] = []   # PutRecord start → the engine's depth write (depth `t`, wall ms)
    to_seen: list[float] = []    # the engine's depth write → the notification received here
    for i in range(samples):
        sym = SYMBOLS[i % len(SYMBOLS)]
        cmd = orjson.dumps({"action": "ADD", "symbol": sym, "order_id": f"l{i}", "user_id": "u1", "is_buy": True,
                            "price": 100 + rnd.randrange(50), "quantity": 1, "ts": int(time.time() * 1000)})
        t0 = time.perf_counter()
        w0 = time.time() * 1000
        stack.kinesis.put_record(StreamName=s.orders_stream, Data=cmd, PartitionKey=sym)
        put_ms.append((time.perf_counter() - t0) * 1000)
        while True:
            msg = sub.get_message(ignore_subscribe_messages=True, timeout=2)
            if msg is None:
                raise RuntimeError(f"no depth update for order {i}")
            if sym in json.loads(msg["data"]):
                break
        lat.append((time.perf_counter() - t0) * 1000)
        seen = time.time() * 1000
        written = json.loads(cache.get(keys.depth(sym)))["t"]
        to_write.append(written - w0)
        to_seen.append(seen - written)
        if i == 0:
            assert cache.get(keys.depth(sym))
        time.sleep(rnd.uniform(0.005, 0.030))
    cpu, kcpu = cpu_seconds(proc.pid) - c0, cpu_seconds(stack.kin.proc.pid) - k0
    wall = time.monotonic() - t_start
    stack.stop_engine(proc)
    # where the slowest 5% of the samples spent their time (means over those samples)
    slow = sorted(range(len(lat)), key=lat.__getitem__)[-max(1, len(lat) // 20):]
    slowest_5pct = {"total_ms": round(statistics.fmean(lat[i] for i in slow), 1),
                    "put_record_call_ms": round(statistics.fmean(put_ms[i] for i in slow), 1),
                    "put_to_engine_write_ms": round(statistics.fmean(to_write[i] for i in slow), 1),
                    "engine_write_to_notified_ms": round(statistics.fmean(to_seen[i] for i in slow), 1)}
    lat.sort()
    q = statistics.quantiles(lat, n=100)
    progress(f"latency {env or 'defaults'}: p50 {q[49]:.1f} p99 {q[98]:.1f} ms, load {os.getloadavg()[0]:.1f}")
    return {"samples": samples, "p50_ms": round(q[49], 1), "p90_ms": round(q[89], 1), "p99_ms": round(q[98], 1),
            "max_ms": round(lat[-1], 1), "put_record_call_p50_ms": round(statistics.median(put_ms), 1),
            "put_record_call_p99_ms": round(statistics.quantiles(put_ms, n=100)[98], 1),
            "put_to_engine_write_p50_ms": round(statistics.median(to_write), 1),
            "put_to_engine_write_p99_ms": round(statistics.quantiles(to_write, n=100)[98], 1),
            "engine_write_to_notified_p50_ms": round(statistics.median(to_seen), 1),
            "engine_write_to_notified_p99_ms": round(statistics.quantiles(to_seen, n=100)[98], 1),
            "slowest_5pct_mean": slowest_5pct,
            "engine_cpu_s_per_s": round(cpu / wall, 3), "kinesalite_cpu_s_per_s": round(kcpu / wall, 3),
            "env": env}


def engine_only(records: list[bytes]) -> float:
    from engine_pkg import Engine

    eng = Engine(clock=lambda: 0)
    t0 = time.perf_counter()
    for i in range(0, len(records), 10_000):
        eng.process(records[i:i + 10_000])
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.bench_engine_service", description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=100_000, help="throughput run size (default 100,000)")
    p.add_argument("--latency-samples", type=int, default=500, help="latency samples (default 500)")
    p.add_argument("--replay", type=int, default=200_000,
                   help="replay stream size (default 200,000; 1,000,000 for the full figure)")
    p.add_argument("--profile", action="store_true", help="py-spy the engine during the throughput run")
    p.add_argument("--skip", default="",
                   help="comma list of phases to skip: throughput,latency,replay,recovery")
    p.add_argument("--idle-max", default="",
                   help="comma list of extra ENGINE_POLL_IDLE_MAX_MS values for the latency phase (default none)")
    p.add_argument("--json", action="store_true", help="also print every figure as JSON")
    p.add_argument("--floor", default="",
                   help="comma list of extra ENGINE_POLL_FLOOR_MS values for the latency phase (default none)")
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    stop_on_sigterm()
    stack = Stack()
    results: dict = {"machine": f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}",
                     "load_before": round(os.getloadavg()[0], 1)}
    try:
        if "latency" not in skip:
            local = Settings.from_env(stack.env)
            progress(f"latency: local defaults (floor {local.engine_poll_floor_ms} ms, idle max "
                     f"{local.engine_poll_idle_max_ms} ms, hot window {local.engine_poll_hot_ms} ms)")
            results["latency_default"] = latency(stack, args.latency_samples)
            for floor in filter(None, args.floor.split(",")):
                progress(f"latency: floor {floor} ms")
                results[f"latency_floor{floor}"] = latency(stack, args.latency_samples, ENGINE_POLL_FLOOR_MS=floor)
            for idle in filter(None, args.idle_max.split(",")):
                progress(f"latency: idle max {idle} ms")
                results[f"latency_idle{idle}"] = latency(stack, args.latency_samples, ENGINE_POLL_IDLE_MAX_MS=idle)
        if "throughput" not in skip:
            s = stack.streams("tp")
            records = order_stream(args.orders)
            progress(f"throughput: loading {len(records):,} orders")
            results["load_rate_per_s"] = round(load(stack.kinesis, s.orders_stream, records))
            results["throughput"] = drain(stack, s, len(records), args.profile, "throughput")
            results["throughput"]["engine_process_only_s"] = round(engine_only(records), 2)
        if "replay" not in skip:
            s = stack.streams("rp")
            records = order_stream(args.replay, seed=2)
            progress(f"replay: loading {len(records):,} orders")
            results["replay_load_rate_per_s"] = round(load(stack.kinesis, s.orders_stream, records))
            results["replay"] = drain(stack, s, len(records), False, "replay")
            results["replay"]["engine_process_only_s"] = round(engine_only(records), 2)
            results["replay"]["extrapolated_1m_s"] = round(results["replay"]["seconds"] * 1_000_000 / len(records))
        if "replay" not in skip and "recovery" not in skip:
            # crash recovery: only the first batch's snapshot exists, the emitted mark is at the end
            progress("recovery: run with one early snapshot, kill -9, restart")
            never = {ENV.ENGINE_SNAPSHOT_RECORDS: "100000000", ENV.ENGINE_SNAPSHOT_SECONDS: "100000"}
            drain(stack, s, len(records), False, "recovery-first-run", kill9=True, **never)
            from engine_pkg.service.snapshots import Snapshot

            snaps = redis.Redis.from_url(s.backup_cache_url)
            behind = 0
            for k in snaps.scan_iter(keys.shard_snapshot_pattern(s.orders_stream)):
                behind += Snapshot.decode(snaps.get(k)).records
            for k in snaps.scan_iter(keys.LEASE_PATTERN):  # as if the dead engine's leases had expired
                snaps.delete(k)
            rec = drain(stack, s, len(records) - behind, False, "recovery", flush=False, **never)
            rec["records_replayed"] = len(records) - behind
            rec["extrapolated_1m_s"] = round(rec["seconds"] * 1_000_000 / max(1, len(records) - behind))
            results["recovery_silent_replay"] = rec
    finally:
        stack.close()
    results["load_after"] = round(os.getloadavg()[0], 1)
    print(report(results))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


LATENCY_GOAL = "p50 < 15 ms, p99 < 50 ms"


def report(results: dict) -> str:
    """The figure table (and the engine's hottest functions when profiled) of one run's results."""
    rows: list[list[object]] = []
    for key, lat in results.items():
        if not key.startswith("latency_"):
            continue
        default = key == "latency_default"
        label = "defaults" if default else ", ".join(f"{k}={v}" for k, v in lat["env"].items())
        rows.append([f"PutRecord -> depth:{{SYM}} notified, {label}: p50 / p90 / p99 / max (ms, {lat['samples']} samples)",
                     f"{lat['p50_ms']} / {lat['p90_ms']} / {lat['p99_ms']} / {lat['max_ms']}",
                     LATENCY_GOAL if default else "",
                     status(lat["p50_ms"] < 15 and lat["p99_ms"] < 50) if default else ""])
        if default:
            rows.append(["  of which the PutRecord call, p50 / p99 (ms)",
                         f"{lat['put_record_call_p50_ms']} / {lat['put_record_call_p99_ms']}"])
            rows.append(["  put -> the engine's depth write, p50 / p99 (ms)",
                         f"{lat['put_to_engine_write_p50_ms']} / {lat['put_to_engine_write_p99_ms']}"])
            rows.append(["  depth write -> notification received, p50 / p99 (ms)",
                         f"{lat['engine_write_to_notified_p50_ms']} / {lat['engine_write_to_notified_p99_ms']}"])
            rows.append(["  CPU while 4 shards are hot: engine / kinesalite (cores)",
                         f"{lat['engine_cpu_s_per_s']} / {lat['kinesalite_cpu_s_per_s']}"])

    def cpu(run: dict) -> str:
        return ", ".join(f"{k} {v} s" for k, v in run["cpu_s"].items())

    if "throughput" in results:
        tp = results["throughput"]
        rows.append([f"throughput, {tp['orders']:,} pre-loaded orders (orders/s)",
                     f"{tp['orders_per_s']:,} ({tp['seconds']} s; CPU {cpu(tp)})"])
        rows.append(["  Engine.process alone on the same orders (s)", tp["engine_process_only_s"]])
    if "replay" in results:
        rp = results["replay"]
        rows.append([f"replay after --dev (no snapshot, every event re-emitted), {rp['orders']:,} orders (orders/s)",
                     f"{rp['orders_per_s']:,} ({rp['seconds']} s, ≈ {rp['extrapolated_1m_s']} s per 1 M; CPU {cpu(rp)})"])
    if "recovery_silent_replay" in results:
        rc = results["recovery_silent_replay"]
        rows.append([f"silent recovery replay after kill -9, {rc['records_replayed']:,} records (orders/s)",
                     f"{rc['orders_per_s']:,} ({rc['seconds']} s, ≈ {rc['extrapolated_1m_s']} s per 1 M)"])
    out = [f"Engine service benchmark (issue 4) -- {results['machine']}, load average {results['load_before']} "
           f"before / {results.get('load_after', '?')} after", "",
           table(["measure", "result", "goal", "status"], rows)]
    top = results.get("throughput", {}).get("top")
    if top:
        out += ["", "Engine self time during the throughput run (py-spy, idle frames left out):", "",
                table(["function", "% of samples"], top)]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
