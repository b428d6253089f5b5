"""tools/bench/bench_scaling.py (make bench-scaling)."""

from __future__ import annotations

from tests.tools.bench.helpers import BenchRun, has


def test_repeated_sigterms_do_not_cut_the_clean_up_short():
    """`timeout make` delivers two, the process group's and make's own a moment later (the second
    once stopped the clean-up before it had signalled every engine); a stream of them, 2 ms apart,
    lands in every part of the clean-up."""
    run = BenchRun(["tools.bench.bench_scaling", "--engines", "4", "--orders", "30000"])
    try:
        run.wait_for(lambda out, procs: has(procs, "engine_pkg", 4))
        assert run.terminate(signals=2000, gap=0.002) == []
    finally:
        run.cleanup()
