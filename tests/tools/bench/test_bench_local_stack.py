"""tools/bench/bench_local_stack.py (make bench-local-stack)."""

from __future__ import annotations

from tests.tools.bench.helpers import BenchRun, has


def _res(after_return: list[float], missed: int = 0) -> dict:
    n = len(after_return) + missed
    return {"orders": n, "missed": missed, "seconds": 1.0, "depth_messages": len(after_return),
            "depth_after_return": after_return, "depth_after_send": [x + 3 for x in after_return],
            "post": [3.0] * len(after_return)}


def _row(text: str, measure: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {measure} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_table_has_goal_and_status_columns_and_counts_orders_without_depth_as_missed():
    from tools.bench.bench_local_stack import report

    fast = report(_res([5.0] * 100))
    assert "| measure | p50 ms | p90 ms | p99 ms | max ms | min ms | goal | status |" in fast
    assert _row(fast, "POST /orders returned -> depth at client")[1:] == [
        "5.0", "5.0", "5.0", "5.0", "5.0", "p50 < 30 ms, p99 < 100 ms", "met"]
    assert _row(fast, "POST /orders round trip")[-2:] == ["", ""]
    # 2 of 100 orders never produced their depth message: their p99 is past any goal
    assert _row(report(_res([5.0] * 98, missed=2)), "POST /orders returned -> depth at client")[-1] == "MISSED"
    assert _row(report(_res([40.0] * 100)), "POST /orders returned -> depth at client")[-1] == "MISSED"


def test_sigterm_while_the_stack_starts_stops_the_whole_stack():
    run = BenchRun(["tools.bench.bench_local_stack", "--orders", "10000000"])
    try:
        run.wait_for(lambda out, procs: has(procs, "tools.dev") and has(procs, "valkey-server"))
        assert run.terminate(signals=2) == []
    finally:
        run.cleanup()
