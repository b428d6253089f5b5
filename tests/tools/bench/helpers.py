"""Running a benchmark script as a child and checking what it leaves behind after a SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[3]


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] != "Z"


def descendants(root: int) -> dict[int, str]:
    """Every live process below `root` (children in their own sessions included), pid -> command line."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[1] != "Z":
                parent[int(name)] = st[0]
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        p = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found:
                found[child] = cmdline(child)
                frontier.append(child)
    return found


@dataclass
class BenchRun:
    """A `python -m tools.bench.X ...` child; `seen` collects every process it started."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    proc: subprocess.Popen = field(init=False)
    lines: list[str] = field(default_factory=list)
    seen: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", *self.argv], cwd=str(REPO), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **self.env})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, ready: Callable[[str, dict[int, str]], bool], timeout: float = 120.0) -> None:
        """Until `ready(output so far, its processes)`; fails if the benchmark exits first."""
        def check() -> bool:
            now = descendants(self.proc.pid)
            self.seen.update(now)
            assert self.proc.poll() is None, f"the benchmark exited ({self.proc.returncode}):\n{self.output}"
            return ready(self.output, now)

        wait_until(check, timeout=timeout, interval=0.1, what=f"{self.argv[0]} to get going")

    def terminate(self, signals: int = 1, gap: float = 0.2, timeout: float = 120.0) -> list[str]:
        """SIGTERM it (`signals` times, `gap` s apart, while it runs: `timeout make` sends two), wait
        for it to exit, and return the processes it started that still run (after a short grace)."""
        self.seen.update(descendants(self.proc.pid))
        for i in range(signals):
            if i:
                time.sleep(gap)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        self._adopt()
        deadline = time.monotonic() + 5
        while any(alive(p) for p in self.seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        return [f"{p} {c}" for p, c in self.seen.items() if alive(p)]

    def _adopt(self) -> None:
        """Add what the processes seen so far started since (their parent may be gone by now)."""
        for pid in list(self.seen):
            self.seen.update(descendants(pid))

    def cleanup(self) -> None:
        """Whatever a failed test left: the benchmark and every process it started, by pid."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._adopt()
        for pid in self.seen:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def has(procs: dict[int, str], needle: str, n: int = 1) -> bool:
    return sum(needle in c for c in procs.values()) >= n
