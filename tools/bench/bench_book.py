"""Engine-core benchmark (issue 3): the C book alone, Engine.process with JSON, liquibook, memory.

Workload A is Liquibook's pt_order_book pattern (alternating buy/sell, buy 1880 + r%10,
sell 1884 + r%10, quantity (r%10 + 1) * 100); B adds 30% cancels, 10% replaces and 5% market
orders.  The same xorshift64 generator as tools/bench/book_bench.c gives both sides the same
orders.  Throughput figures are orders per wall-clock second of the timed loop: the engine
parses big batches on a second thread while it matches (docs/engine.md, "The parse thread"),
so its CPU time is not its speed.  What it costs is printed beside: orders per CPU-second of
the whole process (both threads), and the same engine with the parse thread off.

Engine.process and the liquibook loops are measured the same way, each in its own fresh child
process (``--child``), --runs times (default 5; the median is printed, so that one or two
children caught by a stall of this shared VM do not set it): "fresh" times a new engine/book in a new
process (its memory is faulted in as it grows, as for an engine that just started); "warm" then
times a second new engine/book in the same process (the allocator reuses the first one's
memory). The ratio to liquibook is given for both; each fresh run is also its own process so
that one contender's memory does not warm the other's.

Two liquibook loops run: the ratio's reference builds each ``SimpleOrder`` from the order's
values and adds it (Engine.process is likewise timed from each order's bytes to its events);
the other only adds orders built before the timer starts, a stricter reference printed beside.

    python -m tools.bench.bench_book [--orders N] [--batch 500] [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "engine_pkg" / "csrc"
MASK64 = (1 << 64) - 1


def log(msg: str) -> None:
    print(f"[bench-engine] {msg}", file=sys.stderr, flush=True)


def gen(n: int, mixed: bool) -> list[tuple[int, int, int, int, int, int, int]]:
    """(action, is_buy, type, user, id, price, qty) per command; mirrors book_bench.c:gen()."""
    s = 88172645463325252
    out: list[tuple[int, int, int, int, int, int, int]] = []
    adds: list[int] = []

    def rnd() -> int:
        nonlocal s
        s ^= (s << 13) & MASK64
        s ^= s >> 7
        s ^= (s << 17) & MASK64
        return s >> 33

    for i in range(n):
        r = rnd()
        k = rnd() % 100 if mixed else 99
        is_buy = 1 if i % 2 == 0 else 0
        user, oid = i % 997, i
        price = 1880 + r % 10 if is_buy else 1884 + r % 10
        qty = (r % 10 + 1) * 100
        if k < 30 and adds:
            t = out[adds[rnd() % len(adds)]]
            out.append((1, is_buy, 0, t[3], t[4], price, qty))
        elif k < 40 and adds:
            t = out[adds[rnd() % len(adds)]]
            price = 1880 + r % 10 if t[1] else 1884 + r % 10
            out.append((2, is_buy, 0, t[3], t[4], price, qty))
        else:
            out.append((0, is_buy, 1 if k < 45 else 0, user, oid, price, qty))
            adds.append(i)
    return out


def to_json(cmds: list[tuple[int, int, int, int, int, int, int]]) -> list[bytes]:
    recs = []
    for action, is_buy, typ, user, oid, price, qty in cmds:
        if action == 0:
            recs.append(
                b'{"action":"ADD","symbol":"BENCH","order_id":"o%d","user_id":"u%d","is_buy":%s,"price":%d,'
                b'"quantity":%d,"type":"%s"}'
                % (oid, user, b"true" if is_buy else b"false", price, qty, b"MARKET" if typ else b"LIMIT")
            )
        elif action == 1:
            recs.append(
                b'{"action":"CANCEL","symbol":"BENCH","order_id":"o%d","user_id":"u%d"}' % (oid, user)
            )
        else:
            recs.append(
                b'{"action":"REPLACE","symbol":"BENCH","order_id":"o%d","user_id":"u%d","price":%d,"quantity":%d}'
                % (oid, user, price, qty)
            )
    return recs


def run_c_driver(n: int) -> dict | None:
    """Compile and run book_bench.c (C core alone, latency, C-side memory)."""
    out = Path(tempfile.mkdtemp(prefix="sn-bench-")) / "book_bench"
    cc = os.environ.get("CC", "gcc")
    cmd = [
        cc,
        "-O3",
        "-march=native",
        "-std=c11",
        "-I",
        str(CSRC),
        str(REPO / "tools/bench/book_bench.c"),
        str(CSRC / "book.c"),
        "-o",
        str(out),
    ]
    log("compiling the C driver: " + " ".join(cmd))
    if subprocess.run(cmd, check=False).returncode != 0:
        log("C driver failed to compile")
        return None
    log(f"C core: workloads A and B x3, latency, memory ({n:,} orders)...")
    p = subprocess.run([str(out), str(n)], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        log("C driver failed: " + p.stderr)
        return None
    return json.loads(p.stdout)


def bench_engine(recs: list[bytes], batch: int, iterate: bool, parse_thread: bool) -> tuple[float, float, int]:
    """Engine.process over batches; returns (orders per CPU second, per wall second, events).

    ``iterate=False`` times ``process()`` alone: the result's event lists are lazy views over
    the copied C buffers (what a consumer that forwards ``EventList.raw`` pays).  ``iterate=True``
    also touches every fill, status and status user as a Python object (``bytes``/``str``),
    which makes the views split their buffers: what a per-event consumer pays.
    """
    from engine_pkg import Engine

    eng = Engine(clock=lambda: 0, parse_thread=parse_thread)
    batches = [recs[i : i + batch] for i in range(0, len(recs), batch)]
    gc.collect()
    gc.freeze()  # the benchmark's own million input objects must not make every GC pass slower
    events = 0
    c0, w0 = time.process_time(), time.perf_counter()
    if iterate:
        for b in batches:
            res = eng.process(b)
            for _f in res.fills:
                events += 1
            for _s, _u in zip(res.statuses, res.status_users, strict=True):
                events += 1
    else:
        for b in batches:
            res = eng.process(b)
            events += len(res.fills) + len(res.statuses)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return len(recs) / cpu, len(recs) / wall, events


def bench_liquibook(cmds: list[tuple[int, int, int, int, int, int, int]], build: bool) -> tuple[float, float] | str:
    """The PyPI liquibook binding's insert-only loop on the same orders (limit adds only).

    ``build=True`` times ``book.add(SimpleOrder(is_buy, price, qty))`` per order: from the order's
    values to the book, as Engine.process is timed from the order's bytes to its events.
    ``build=False`` times ``book.add(o)`` alone over orders built before the timer starts.
    (The book keeps the orders it holds alive: the loop need not keep a reference.)
    """
    try:
        import liquibook  # type: ignore[import-not-found]
    except ImportError as exc:
        return f"liquibook not installed ({exc}); pip install liquibook"
    book = liquibook.liquibook_book_OrderBook()
    order = liquibook.SimpleOrder
    values = [(bool(c[1]), c[5], c[6]) for c in cmds if c[0] == 0 and c[2] == 0]
    orders = [] if build else [order(*v) for v in values]
    gc.collect()
    gc.freeze()
    c0, w0 = time.process_time(), time.perf_counter()
    if build:
        for is_buy, price, qty in values:
            book.add(order(is_buy, price, qty))
    else:
        for o in orders:
            book.add(o)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return len(values) / cpu, len(values) / wall


#: The liquibook loops of the table: order built in the loop (the ratio's reference), pre-built.
LIQUIBOOK_LOOPS = {
    "liquibook-build": "liquibook SimpleOrder built + add per order",
    "liquibook": "liquibook add of pre-built orders",
}


def child(what: str, workload: str, n: int, batch: int) -> dict:
    """One contender in this (fresh) process: a fresh run, then a warm run on a second object."""
    cmds = gen(n, workload == "B")
    if what in LIQUIBOOK_LOOPS:
        prime_memory()
        fresh = bench_liquibook(cmds, build=what == "liquibook-build")
        if isinstance(fresh, str):
            return {"error": fresh}
        warm = bench_liquibook(cmds, build=what == "liquibook-build")
        assert not isinstance(warm, str)
        return {"fresh": fresh[1], "fresh_cpu": fresh[0], "warm": warm[1], "warm_cpu": warm[0]}
    recs = to_json(cmds)
    del cmds
    pt = what == "engine"
    prime_memory()
    fresh_cpu, fresh_wall, events = bench_engine(recs, batch, iterate=False, parse_thread=pt)
    warm_cpu, warm_wall, _ = bench_engine(recs, batch, iterate=False, parse_thread=pt)
    it_cpu, it_wall, _ = bench_engine(recs, batch, iterate=True, parse_thread=pt)
    return {"fresh": fresh_wall, "fresh_cpu": fresh_cpu, "warm": warm_wall, "warm_cpu": warm_cpu,
            "iter": it_wall, "iter_cpu": it_cpu, "events": events}


#: MiB the child touches and frees just before its fresh run (prime_memory).
PRIME_MB = 384


def prime_memory() -> None:
    """Touch PRIME_MB MiB of huge pages, then free them, just before a fresh run.

    This VM (a Firecracker guest with virtio-balloon free page reporting) hands free 2 MiB
    blocks back to the hypervisor about two seconds after they are freed; the first touch of
    such a block faults in the host as well, and costs several times a re-touch.  A child whose
    fresh run started within two seconds of the previous child's exit reused that child's
    blocks, the others got reported ones: fresh runs of the same build differed by 30-45%
    depending on which contender ran before (docs/benchmarks.md, ninth session).  Each fresh
    run (every contender alike) now starts on blocks this process has just freed, as a process
    would on a host that backs all of its memory."""
    n = PRIME_MB << 20
    # private anonymous memory, as the engine's (mmap's default, shared memory, takes no huge pages)
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        m.madvise(mmap.MADV_HUGEPAGE)
    for off in range(0, n, 4096):
        m[off] = 1
    m.close()


def run_children(what: str, workload: str, n: int, batch: int) -> dict:
    p = subprocess.run(
        [sys.executable, "-m", "tools.bench.bench_book", "--child", what, workload, "--orders", str(n),
         "--batch", str(batch)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )
    if p.returncode != 0:
        return {"error": f"{what} child failed: {p.stderr.strip()[-300:]}"}
    return json.loads(p.stdout)


RSS_SCRIPT = """
import sys
from engine_pkg import Engine
n = int(sys.argv[1])
eng = Engine(clock=lambda: 0)
B = 5000
for s in range(0, n, B):
    eng.process([b'{"action":"ADD","symbol":"BENCH","order_id":"r%d","user_id":"u%d","is_buy":true,'
                 b'"price":%d,"quantity":100}' % (i, i % 997, 1000 + i % 1000) for i in range(s, min(n, s + B))])
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (big) forking parent across exec
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(eng.open_orders(), hwm)
"""


def bench_rss(n: int) -> tuple[int, int]:
    """Peak RSS (KiB) of a fresh Python process holding n resting orders in an Engine."""
    p = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(n)], capture_output=True, text=True, cwd=REPO, check=True
    )
    resting, kb = p.stdout.split()
    return int(resting), int(kb)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.bench_book", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=1_000_000, help="orders per workload (default 1,000,000)")
    ap.add_argument("--batch", type=int, default=500, help="Engine.process batch size (default 500)")
    ap.add_argument("--quick", action="store_true", help="100,000 orders: a smoke run")
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per contender and workload (default 5)")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    ap.add_argument("--child", nargs=2, metavar=("engine|engine-1thread|liquibook|liquibook-build", "A|B"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n = 100_000 if args.quick else args.orders
    sys.path.insert(0, str(REPO))
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], n, args.batch)))
        return 0

    c = run_c_driver(n)
    rows: list[tuple[str, str, str, str]] = []
    figures: dict[str, object] = {"orders": n, "c": c}
    if c:
        for w in ("a", "b"):
            ops = c[f"core_{w}_ops"]
            rows.append(
                (
                    f"C core alone (handles), {w.upper()} (orders/s)",
                    f"{ops:,.0f}",
                    ">= 20,000,000",
                    "ok" if ops >= 20e6 else "MISSED",
                )
            )
        for w in ("a", "b"):
            rows.append((f"C core + string-id layer, {w.upper()} (orders/s)", f"{c[f'{w}_ops']:,.0f}", "", ""))
    med = statistics.median
    for name in ("A", "B"):
        log(f"workload {name}: Engine.process (batches of {args.batch}) and liquibook, {args.runs} fresh "
            f"processes each, interleaved...")
        eng_runs: list[dict] = []
        one_runs: list[dict] = []
        lb_runs: dict[str, list[dict]] = {loop: [] for loop in LIQUIBOOK_LOOPS}
        for _ in range(args.runs):
            eng_runs.append(run_children("engine", name, n, args.batch))
            one_runs.append(run_children("engine-1thread", name, n, args.batch))
            for loop, runs in lb_runs.items():
                runs.append(run_children(loop, name, n, args.batch))
        bad = [r["error"] for r in eng_runs + one_runs if "error" in r]
        if bad:
            rows.append((f"Engine.process JSON, {name}", bad[0], "", "MISSED"))
            continue
        fresh, warm, it, warm_cpu = (med(r[k] for r in eng_runs) for k in ("fresh", "warm", "iter", "warm_cpu"))
        figures[f"engine_{name}"] = eng_runs
        figures[f"engine-1thread_{name}"] = one_runs
        rows.append((f"Engine.process JSON, {name}, fresh process (orders/s)", f"{fresh:,.0f}", ">= 2,500,000",
                     "ok" if fresh >= 2.5e6 else "MISSED"))
        rows.append((f"Engine.process JSON, {name}, warm (orders/s)", f"{warm:,.0f}", ">= 2,500,000",
                     "ok" if warm >= 2.5e6 else "MISSED"))
        rows.append((f"Engine.process JSON, {name}, warm, + every event as bytes (orders/s)", f"{it:,.0f}", "", ""))
        rows.append(("  the same, warm, per CPU-second of both threads (orders/s)", f"{warm_cpu:,.0f}", "", ""))
        one_fresh, one_warm = med(r["fresh"] for r in one_runs), med(r["warm"] for r in one_runs)
        rows.append(("  the same, parse thread off, fresh process; warm (orders/s)",
                     f"{one_fresh:,.0f}; {one_warm:,.0f}", "", ""))
        for loop, runs in lb_runs.items():
            label = LIQUIBOOK_LOOPS[loop]
            lb_bad = [r["error"] for r in runs if "error" in r]
            if lb_bad:
                rows.append((f"{label}, {name}", lb_bad[0], "", ""))
                continue
            figures[f"{loop}_{name}"] = runs
            lb_fresh, lb_warm = med(r["fresh"] for r in runs), med(r["warm"] for r in runs)
            rows.append((f"{label}, {name}, fresh process; warm (orders/s)",
                         f"{lb_fresh:,.0f}; {lb_warm:,.0f}", "", ""))
            r_fresh, r_warm = fresh / lb_fresh, warm / lb_warm
            met = "ok" if min(r_fresh, r_warm) >= 2 else "MISSED"
            rows.append((f"  ratio Engine.process / that loop, {name} (fresh; warm)", f"{r_fresh:.2f}x; {r_warm:.2f}x",
                         ">= 2x" if loop == "liquibook-build" else "(reference)",
                         met if loop == "liquibook-build" else ""))
            if loop == "liquibook-build":
                rows.append((f"  ratio with the parse thread off, {name} (fresh; warm)",
                             f"{one_fresh / lb_fresh:.2f}x; {one_warm / lb_warm:.2f}x", "", ""))
    if c:
        rows.append(
            (
                "C core latency p50 / p99 / p99.9 / max (ns)",
                f"{c['core_p50_ns']:.0f} / {c['core_p99_ns']:.0f} / {c['core_p999_ns']:.0f} / {c['core_max_ns']:.0f}",
                "p99 < 1000",
                "ok" if c["core_p99_ns"] < 1000 else "MISSED",
            )
        )
        rows.append(
            (
                "C core + id layer latency p50 / p99 / p99.9 / max (ns)",
                f"{c['p50_ns']:.0f} / {c['p99_ns']:.0f} / {c['p999_ns']:.0f} / {c['max_ns']:.0f}",
                "",
                "",
            )
        )
        delta_mb = (c["rss_kb"] - c["rss_base_kb"]) / 1024
        rows.append((f"C book memory, {c['resting']:,} resting (MB)", f"{delta_mb:.0f}", "", ""))
    log(f"RSS of a Python process with {n:,} resting orders...")
    resting, kb = bench_rss(n)
    figures["rss_kb"] = kb
    rows.append(
        (
            f"Python process RSS, {resting:,} resting (MB)",
            f"{kb / 1024:.0f}",
            "<= 200",
            "ok" if kb / 1024 <= 200 else "MISSED",
        )
    )

    load = os.getloadavg()[0]
    print(
        f"\nEngine core benchmark (issue 3) -- {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}, load avg {load:.1f}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    w = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    print(f"{'measure':<{w}}  {'result':<{w2}}  {'goal':<13}  status")
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:<{w2}}  {r[2]:<13}  {r[3]}")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
