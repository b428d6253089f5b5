"""tools/bench/bench_book.py (make bench-engine): its children time the same work either way."""

from __future__ import annotations

import pytest

from tools.bench import bench_book


@pytest.mark.parametrize("workload", ["A", "B"])
def test_the_engine_children_with_and_without_the_parse_thread_do_the_same_work(workload: str) -> None:
    two = bench_book.child("engine", workload, 3000, 500)
    one = bench_book.child("engine-1thread", workload, 3000, 500)
    assert two["events"] == one["events"] > 3000  # every order has a status, and some fill
    for run in (one, two):
        assert all(run[k] > 0 for k in ("fresh", "warm", "iter", "fresh_cpu", "warm_cpu", "iter_cpu"))


@pytest.mark.parametrize("loop", list(bench_book.LIQUIBOOK_LOOPS))
def test_the_liquibook_children_time_wall_and_cpu(loop: str) -> None:
    run = bench_book.child(loop, "A", 3000, 500)
    assert "error" not in run
    assert all(run[k] > 0 for k in ("fresh", "warm", "fresh_cpu", "warm_cpu"))
