"""The engine's parse thread (csrc/book.c, "the parse thread"): a second thread parses a batch's
records while the first matches them; the events must be exactly those of the one-thread engine,
whoever parsed each record, and the thread must come and go with the engine.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_pkg import Engine, engine
from engine_pkg.engine import PARSE_THREAD_MIN_BATCH
from tests.engine_pkg.helpers import cmd
from tests.engine_pkg.strategies import SYMBOLS, command

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "engine_pkg" / "csrc"


def parse_threads() -> set[str]:
    """Task ids of this process's parse threads (named by book.c; other tests' threads may come
    and go meanwhile)."""
    out = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            if Path(f"/proc/self/task/{tid}/comm").read_text().strip() == "sb-parse":
                out.add(tid)
        except FileNotFoundError:  # a thread that ended while we looked
            pass
    return out


def n_parse_threads() -> int:
    """How many parse threads this process has."""
    return len(parse_threads())


def outcome(eng: Engine, batch: list[bytes]) -> tuple[Any, ...]:
    r = eng.process(batch)
    return (r.events, list(r.status_users), r.touched, r.dropped)


def threaded(min_batch: int = 1) -> Engine:
    """An engine whose batches of ``min_batch`` records or more go through the parse thread."""
    eng = Engine(clock=lambda: 7, parse_thread=True)
    eng._book.set_parse_thread(min_batch)
    return eng


def crossing_flow(n: int) -> list[bytes]:
    """ADDs that cross, CANCELs and REPLACEs of earlier ids, escaped strings, unreadable records."""
    out = []
    for i in range(n):
        k = i % 10
        if k < 6:
            out.append(cmd(action="ADD", symbol=SYMBOLS[i % 2], order_id=f"o{i}", user_id=f"u{i % 13}",
                           is_buy=i % 3 == 0, price=100 + (i * 7919) % 11, quantity=1 + i % 9))
        elif k == 6:
            out.append(cmd(action="CANCEL", symbol=SYMBOLS[i % 2], order_id=f"o{i - 6}", user_id=f"u{(i - 6) % 13}"))
        elif k == 7:
            out.append(cmd(action="REPLACE", symbol=SYMBOLS[i % 2], order_id=f"o{i - 4}",
                           user_id=f"u{(i - 4) % 13}", price=101, quantity=3))
        elif k == 8:
            out.append(b'{"action":"ADD","symbol":"AAA","order_id":"q\\"%d\\u00e9","user_id":"w\\\\1",'
                       b'"is_buy":false,"price":104,"quantity":2}' % i)
        else:
            out.append(b'{"action":"ADD","symbol":' if i % 20 == 9 else b'{"action":"NOPE","symbol":"AAA"}')
    return out


def test_a_big_batch_gives_the_one_thread_engines_events() -> None:
    batch = crossing_flow(5000)
    one = Engine(clock=lambda: 7, parse_thread=False)
    two = threaded(PARSE_THREAD_MIN_BATCH)
    for part in (batch[:2000], batch[2000:], batch[:700]):  # the last: every id a duplicate now
        assert outcome(two, part) == outcome(one, part)
    assert two.snapshot() == one.snapshot()
    for s in SYMBOLS:
        assert two.depth(s, 50) == one.depth(s, 50)


@given(st.lists(st.lists(command(junk=True, router_order=True) | command(junk=True), max_size=40),
                min_size=1, max_size=6))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_batches_give_the_one_thread_engines_events(batches: list[list[bytes]]) -> None:
    one = Engine(clock=lambda: 7, parse_thread=False)
    two = threaded(1)  # every batch, however small, goes through the thread
    assert [outcome(two, b) for b in batches] == [outcome(one, b) for b in batches]
    assert two.snapshot() == one.snapshot()


def test_the_thread_starts_with_the_first_big_batch_and_ends_with_the_engine() -> None:
    before = n_parse_threads()
    eng = Engine(clock=lambda: 7, parse_thread=True)
    eng.process(crossing_flow(PARSE_THREAD_MIN_BATCH - 1))
    assert n_parse_threads() == before  # a small batch is parsed inline: no thread yet
    ids = parse_threads()
    eng.process(crossing_flow(PARSE_THREAD_MIN_BATCH))
    assert n_parse_threads() == before + 1
    (new,) = parse_threads() - ids
    status = Path(f"/proc/self/task/{new}/status").read_text()
    blocked = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)
    assert blocked & (1 << (signal.SIGINT - 1)) and blocked & (1 << (signal.SIGTERM - 1))  # signals stay with Python
    eng.process(crossing_flow(3 * PARSE_THREAD_MIN_BATCH))
    assert n_parse_threads() == before + 1  # one thread an engine, reused batch after batch
    del eng
    assert n_parse_threads() == before


def test_switching_the_thread_off_stops_it_and_on_again_starts_a_new_one() -> None:
    before = n_parse_threads()
    flow = crossing_flow(900)
    one = Engine(clock=lambda: 7, parse_thread=False)
    eng = threaded(1)
    assert outcome(eng, flow[:300]) == outcome(one, flow[:300])
    assert n_parse_threads() == before + 1
    eng._book.set_parse_thread(0)
    assert n_parse_threads() == before
    assert outcome(eng, flow[300:600]) == outcome(one, flow[300:600])
    assert n_parse_threads() == before
    # the new thread must not take the slots the old one filled for records of this batch
    eng._book.set_parse_thread(1)
    assert outcome(eng, flow[600:]) == outcome(one, flow[600:])
    assert n_parse_threads() == before + 1


def test_a_restored_engine_keeps_its_parse_thread_setting() -> None:
    flow = crossing_flow(400)
    src = Engine(clock=lambda: 7, parse_thread=False)
    src.process(flow[:200])
    before = n_parse_threads()
    eng = Engine(clock=lambda: 7, parse_thread=True)
    eng.restore(src.snapshot())
    assert eng.parse_thread
    assert outcome(eng, flow[200:]) == outcome(src, flow[200:])
    assert n_parse_threads() == before + 1
    off = Engine.from_snapshot(src.snapshot(), clock=lambda: 7, parse_thread=False)
    off.process(flow[:300])
    assert n_parse_threads() == before + 1


def test_a_fork_child_parses_with_a_thread_of_its_own() -> None:
    """A fork copies the engine but not its thread: the child's first big batch starts one."""
    flow = crossing_flow(600)
    eng = threaded(PARSE_THREAD_MIN_BATCH)
    eng.process(flow[:300])
    one = Engine(clock=lambda: 7, parse_thread=False)
    one.process(flow[:300])
    want = outcome(one, flow[300:])
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its events are the one-thread engine's
        ok = outcome(eng, flow[300:]) == want and n_parse_threads() == 1  # its own, none of the parent's
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert outcome(eng, flow[300:]) == want  # the parent's thread still serves it


def test_the_default_follows_the_cpus_the_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert Engine().parse_thread
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda _pid: {0})
    assert not Engine().parse_thread
    assert Engine(parse_thread=True).parse_thread
    # a container held to 1.5 CPUs on a 2-CPU host: no thread; given 2, one
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(engine, "cgroup_cpu_limit", lambda: 1.5)
    assert not Engine().parse_thread
    monkeypatch.setattr(engine, "cgroup_cpu_limit", lambda: 2.0)
    assert Engine().parse_thread


@pytest.mark.parametrize(
    ("files", "want"),
    [
        pytest.param({"cpu.max": "150000 100000\n"}, 1.5, id="v2 limited"),
        pytest.param({"cpu.max": "max 100000\n"}, None, id="v2 unlimited"),
        pytest.param({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0,
                     id="v1 limited"),
        pytest.param({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None,
                     id="v1 unlimited"),
        pytest.param({"cpu.max": "garbage"}, None, id="unreadable"),
        pytest.param({}, None, id="no cgroup files"),
    ],
)
def test_the_cgroup_cpu_limit_is_read_from_v2_or_v1(tmp_path: Path, files: dict[str, str],
                                                    want: float | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert engine.cgroup_cpu_limit(tmp_path) == want


def test_thread_sanitizer_finds_no_race(tmp_path: Path) -> None:
    """tools/fuzz/tsan_parse_thread.c under gcc's ThreadSanitizer: batches through an inline
    engine and a parse-thread engine, identical events, no data race reported."""
    exe = tmp_path / "tsan_parse_thread"
    subprocess.run(["gcc", "-g", "-O1", "-fsanitize=thread", "-std=c11", "-I", str(CSRC),
                    str(REPO / "tools/fuzz/tsan_parse_thread.c"), str(CSRC / "book.c"), "-o", str(exe)],
                   check=True)
    p = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TSAN_OPTIONS": "exitcode=66"})
    assert "ThreadSanitizer" not in p.stderr, p.stderr[-3000:]
    assert (p.returncode, p.stdout.strip()) == (0, "ok")
