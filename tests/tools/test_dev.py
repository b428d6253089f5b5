"""tools.dev: a second stack on a data folder that a live stack uses is refused, and the refused
instance leaves every file of the running stack as it was (`make invoke` reads its run/env.json).

No service is started: the running stack is faked by its run/ files, with a live process (a
`sleep` child of the test) as the pid in run/dev.pid.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.dev import AlreadyRunning, DevConfig, DevProcess, LocalStack
from tools.services import REPO_ROOT


@pytest.fixture
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _fake_running_stack(data_dir: Path, pid: int) -> dict[str, bytes]:
    """The run/ files and a log of a stack with pid ``pid``; returns every file's bytes."""
    run = data_dir / "run"
    run.mkdir(parents=True)
    (data_dir / "logs").mkdir()
    (data_dir / "logs" / "dev.log").write_text("the running stack's log\n")
    info = {"pid": pid, "env": {"ADMIN_API_KEY": "k"}, "urls": {"control": "http://127.0.0.1:1/"}}
    (run / "dev.pid").write_text(str(pid))
    (run / "env.json").write_text(json.dumps(info))
    (run / "stack.json").write_text(json.dumps(info))
    (run / "children.json").write_text("{}")
    return _files(data_dir)


def _files(data_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}


def test_a_refused_start_leaves_the_running_stacks_files_alone(tmp_path: Path, live_pid: int) -> None:
    before = _fake_running_stack(tmp_path, live_pid)
    stack = LocalStack(DevConfig(data_dir=tmp_path, quiet=True))
    with pytest.raises(AlreadyRunning, match=f"pid {live_pid}"):
        stack.start()
    stack.stop()  # a second stop() (as `with` / main's finally would) changes nothing either
    assert _files(tmp_path) == before


def test_python_m_tools_dev_on_a_running_stacks_folder_exits_1_and_deletes_nothing(tmp_path: Path,
                                                                                   live_pid: int) -> None:
    before = _fake_running_stack(tmp_path, live_pid)
    out = subprocess.run([sys.executable, "-m", "tools.dev", "--data-dir", str(tmp_path), "--no-console"],
                         capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert out.returncode == 1, out.stderr
    assert f"error: a local stack (pid {live_pid}) already uses" in out.stderr
    after = _files(tmp_path)
    assert {name: after.get(name) for name in before} == before, "a file of the running stack changed"


def test_a_dev_process_interrupted_while_starting_stops_its_child(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or a benchmark's SIGTERM) while `with DevProcess(...)` waits for the stack: __exit__
    never runs, so start() itself must stop the child it spawned."""
    dev = DevProcess(tmp_path / "data")
    dev.args = [sys.executable, "-c", "import time; time.sleep(300)"]  # a stack that never comes up
    children: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):  # type: ignore[no-untyped-def]
        children.append(real_popen(*args, **kwargs))
        return children[-1]

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr("tools.dev.time", types.SimpleNamespace(monotonic=time.monotonic, sleep=interrupt))
    try:
        with pytest.raises(KeyboardInterrupt):
            with dev:
                pass
        assert len(children) == 1 and children[0].poll() is not None
    finally:
        for child in children:
            child.kill()
            child.wait()
