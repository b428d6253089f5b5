"""tools/bench/bench_chalice_app.py (make bench-chalice-app)."""

from __future__ import annotations

from tests.tools.bench.helpers import BenchRun, has


def test_sigterm_stops_the_four_services_it_started():
    run = BenchRun(["tools.bench.bench_chalice_app", "--orders", "10000000"])
    try:
        run.wait_for(lambda out, procs: has(procs, "emulator.js", 2) and has(procs, "moto.server")
                     and "POST /orders x" in out)
        assert run.terminate(signals=2) == []
    finally:
        run.cleanup()
