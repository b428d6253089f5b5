"""tools/bench/bench_streamer.py (make bench-streamer)."""

from __future__ import annotations

from tests.tools.bench.helpers import BenchRun, has


def _cells(text: str, run: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {run}"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_table_gives_each_goal_and_whether_it_was_met():
    from tools.bench.bench_streamer import report

    cpu = {"cpu_pct": {"streamer": 58.0}, "tick_ms": 2.0}
    rows = [{"conns": 1000, "sends_per_s": 26939.0, "frames_per_s": 26900.0, **cpu},
            {"conns": 5000, "sends_per_s": 4000.0, "frames_per_s": 3990.0, **cpu}]
    lat = {"p50_ms": 4.6, "p90_ms": 6.5, "p99_ms": 80.0, "max_ms": 90.0, "receipts": 1170, "expected": 1170, **cpu}
    fan = {"p50_ms": 29.5, "p99_ms": 62.8, "writes": 11, "first_ms_median": 3.7, "last_ms_median": 43.7, **cpu}
    out = report(rows, lat, fan)
    assert out.splitlines()[0].endswith("| goal | status |")
    assert _cells(out, "1000 conns, 10 symbols")[-2:] == [">= 5,000 sends/s", "met"]
    assert _cells(out, "5000 conns, 10 symbols")[-2:] == [">= 5,000 sends/s", "MISSED"]
    assert _cells(out, "latency, 1000 conns / 100 symbols")[-2:] == ["p50 < 10 ms, p99 < 60 ms", "MISSED"]
    assert _cells(out, "latency, 1000 conns / 1 symbol")[-2:] == ["", ""]  # no goal for the fan-out


def test_sigterm_during_a_run_stops_valkey_the_gateway_and_the_clients():
    run = BenchRun(["tools.bench.bench_streamer", "--conns", "200", "--seconds", "600"])
    try:
        run.wait_for(lambda out, procs: has(procs, "valkey-server") and "throughput: 200 connections" in out)
        assert run.terminate(signals=2) == []
    finally:
        run.cleanup()
