"""tools/bench/bench_engine_service.py (make bench-engine-service)."""

from __future__ import annotations

from tests.tools.bench.helpers import BenchRun, has


def _latency(p50: float, p99: float) -> dict:
    return {"samples": 500, "p50_ms": p50, "p90_ms": p50 + 1, "p99_ms": p99, "max_ms": p99 + 10,
            "put_record_call_p50_ms": 2.0, "put_record_call_p99_ms": 8.0, "put_to_engine_write_p50_ms": 6.0,
            "put_to_engine_write_p99_ms": 15.0, "engine_write_to_notified_p50_ms": 1.0,
            "engine_write_to_notified_p99_ms": 2.0, "engine_cpu_s_per_s": 0.2, "kinesalite_cpu_s_per_s": 0.25,
            "env": {}}


def _status(text: str, measure_start: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {measure_start}"))
    return [c.strip() for c in line.strip("|").split("|")][-2:]


def test_the_table_gives_the_latency_goal_and_whether_it_was_met():
    from tools.bench.bench_engine_service import report

    base = {"machine": "2 cores", "load_before": 0.5, "load_after": 1.0}
    met = report({**base, "latency_default": _latency(7.5, 16.5),
                  "throughput": {"orders": 100_000, "seconds": 17.6, "orders_per_s": 5675,
                                 "cpu_s": {"engine": 4.8}, "engine_process_only_s": 0.05,
                                 "top": [["SocketIO.readinto (socket.py:706)", 23.9]]}})
    assert "| measure | result | goal | status |" in met
    assert _status(met, "PutRecord -> depth:{SYM} notified, defaults") == ["p50 < 15 ms, p99 < 50 ms", "met"]
    assert "| SocketIO.readinto (socket.py:706) | 23.9 |" in met
    missed = report({**base, "latency_default": _latency(7.5, 60.0)})
    assert _status(missed, "PutRecord -> depth:{SYM} notified, defaults") == ["p50 < 15 ms, p99 < 50 ms", "MISSED"]


def test_sigterm_stops_the_engine_and_the_services_it_started():
    run = BenchRun(["tools.bench.bench_engine_service", "--skip", "throughput,replay,recovery",
                    "--latency-samples", "10000000"])
    try:
        run.wait_for(lambda out, procs: has(procs, "engine_pkg") and has(procs, "emulator.js"))
        assert run.terminate(signals=2) == []
    finally:
        run.cleanup()


def test_hot_functions_name_each_leaf_once_with_its_file_and_line(tmp_path):
    from tools.bench.bench_engine_service import hot_functions

    raw = tmp_path / "profile.txt"
    raw.write_text("main (a.py:1);SocketIO.readinto (socket.py:706) 30\n"
                   "main (a.py:1);uuid4 (/usr/lib/python3.11/uuid.py:723) 10\n"
                   "main (a.py:1);sleep (time.py:1) 60\n")
    assert hot_functions(raw) == [("SocketIO.readinto (socket.py:706)", 75.0), ("uuid4 (uuid.py:723)", 25.0)]


def test_sigterm_during_the_profiled_throughput_run_leaves_no_profile_folder(tmp_path):
    run = BenchRun(["tools.bench.bench_engine_service", "--skip", "latency,replay,recovery", "--orders", "200000",
                    "--profile"], env={"TMPDIR": str(tmp_path)})
    try:
        run.wait_for(lambda out, procs: has(procs, "py-spy"), timeout=180)
        assert run.terminate(signals=2) == []
        assert list(tmp_path.iterdir()) == []
    finally:
        run.cleanup()
