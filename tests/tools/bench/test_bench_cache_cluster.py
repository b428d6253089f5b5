"""tools/bench/bench_cache_cluster.py (make bench-cache-cluster)."""

from __future__ import annotations

from tests.tools.bench.helpers import BenchRun, has


def test_sigterm_stops_the_single_node_and_the_cluster_it_started():
    run = BenchRun(["tools.bench.bench_cache_cluster", "--symbols", "100", "--rounds", "10000000"])
    try:
        run.wait_for(lambda out, procs: has(procs, "valkey-server", 4))
        assert run.terminate(signals=2) == []
    finally:
        run.cleanup()
