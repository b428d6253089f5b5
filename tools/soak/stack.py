"""The local stack in a child process that obeys fault commands (for `make soak`).

The stack is `tools.dev.LocalStack` — exactly what `make dev` runs — started in a child
process (multiprocessing, spawn) on free ports with its own data folder, so the load
generator in the parent has a core's worth of GIL to itself and the stack's own threads
(REST, gateway, pump) are not slowed by it. The parent talks to it over a pipe:

    kill_engine / start_engine       SIGKILL the engine's process group / wait for the
    kill_streamer / start_streamer   stack's supervisor to restart it (start it if not), healthy
    restart_valkey                   stop valkey-server (append-only file on) and start it on
                                     the same port and data folder
    restart_kinesis                  the same for kinesalite (data kept on disk)
    status                           the stack's status table rows

`StackProcess` implements `tools.faults.StackControl`.

    StackError   the stack did not start, or a command failed or timed out
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.services import kill_process_group

log = logging.getLogger("supernoba.soak.stack")


class StackError(RuntimeError):
    """The stack did not start, or a fault command failed."""


@dataclass
class StackInfo:
    rest_url: str
    ws_url: str
    admin_key: str
    env: dict[str, str]
    log_dir: str


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - loopback only
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait_child(stack: Any, name: str, timeout: float) -> None:
    """Wait until the supervisor restarted child `name` and it is healthy; start it if not."""
    child = stack.children[name]
    deadline = time.monotonic() + timeout
    started_myself = False
    while time.monotonic() < deadline:
        if child.alive() and _healthy(child.health_url):
            return
        if not child.alive() and not started_myself and time.monotonic() > deadline - timeout / 2:
            with child._lock:  # the supervisor gave up or is slow: start it ourselves
                if not child.alive():
                    child.start()
            started_myself = True
        time.sleep(0.1)
    raise StackError(f"{name} not healthy {timeout:.0f}s after the fault (see {child.log_path})")


def _kill(stack: Any, name: str) -> None:
    child = stack.children[name]
    if not kill_process_group(child.proc):
        raise StackError(f"{name} is not running")


def _restart_service(svc: Any) -> None:
    svc.stop()
    svc.start()


def _serve(conn: Any, data_dir: str, log_level: str) -> None:
    """Child process: start the stack, report its URLs, then run commands until 'stop'."""
    from tools.dev import DevConfig, LocalStack, setup_logging

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    ports = {"rest": 0, "ws": 0, "console": 0, "engine": 0, "streamer": 0}
    cfg = DevConfig(data_dir=Path(data_dir), ports=ports, console=False, quiet=True, log_level=log_level)
    setup_logging(Path(data_dir).resolve() / "logs", log_level)  # as `make dev` does: one log per part
    stack = LocalStack(cfg)
    try:
        stack.start()
    except Exception as exc:  # the layer boundary: the parent gets the reason as text
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", StackInfo(stack.rest_url, stack.ws_url, stack.admin_key, dict(stack.env), str(stack.log_dir))))
    commands = {
        "kill_engine": lambda: _kill(stack, "engine"),
        "start_engine": lambda: _wait_child(stack, "engine", 30.0),
        "kill_streamer": lambda: _kill(stack, "streamer"),
        "start_streamer": lambda: _wait_child(stack, "streamer", 30.0),
        "restart_valkey": lambda: _restart_service(stack.services.valkey),
        "restart_kinesis": lambda: _restart_service(stack.services.kinesis),
        "status": lambda: [(s.name, s.healthy, s.detail) for s in stack.status()],
    }
    try:
        while True:
            if not conn.poll(1.0):
                continue
            cmd = conn.recv()
            if cmd == "stop":
                break
            fn = commands.get(cmd)
            if fn is None:
                conn.send(("error", f"unknown command {cmd!r}"))
                continue
            try:
                conn.send(("ok", fn()))
            except Exception as exc:  # reported to the parent, which fails the fault
                conn.send(("error", f"{cmd}: {type(exc).__name__}: {exc}"))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        stack.stop()
        try:
            conn.send(("ok", "stopped"))
        except OSError:
            pass


class StackProcess:
    """The parent's handle; implements `tools.faults.StackControl`."""

    def __init__(self, data_dir: Path, *, log_level: str = "INFO", start_timeout: float = 180.0) -> None:
        self.data_dir = data_dir
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.info: StackInfo | None = None
        self._proc: Any = None
        self._conn: Any = None

    @property
    def depth_cache_url(self) -> str:
        assert self.info is not None
        return self.info.env["DEPTH_CACHE_URL"]

    def start(self) -> StackProcess:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, str(self.data_dir), self.log_level),
                                 name="supernoba-stack", daemon=False)
        self._proc.start()
        self._conn = parent
        if not parent.poll(self.start_timeout):
            self.stop()
            raise StackError(f"the stack did not start within {self.start_timeout:.0f}s")
        status, payload = parent.recv()
        if status != "ok":
            self.stop()
            raise StackError(f"the stack did not start: {payload}")
        self.info = payload
        return self

    def call(self, cmd: str, timeout: float = 60.0) -> Any:
        if self._conn is None:
            raise StackError("the stack is not running")
        self._conn.send(cmd)
        if not self._conn.poll(timeout):
            raise StackError(f"{cmd} did not answer within {timeout:.0f}s")
        status, payload = self._conn.recv()
        if status != "ok":
            raise StackError(payload)
        return payload

    def kill_engine(self) -> None:
        self.call("kill_engine")

    def start_engine(self) -> None:
        self.call("start_engine")

    def kill_streamer(self) -> None:
        self.call("kill_streamer")

    def start_streamer(self) -> None:
        self.call("start_streamer")

    def restart_valkey(self) -> None:
        self.call("restart_valkey")

    def restart_kinesis(self) -> None:
        self.call("restart_kinesis")

    def status(self) -> list[tuple[str, bool, str]]:
        return self.call("status")

    def stop(self, timeout: float = 60.0) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            try:
                conn.send("stop")
                conn.poll(timeout)
            except (OSError, EOFError):
                pass
        if proc is not None:
            proc.join(timeout)
            if proc.is_alive():
                log.warning("event=stack_kill reason=no_exit pid=%s", proc.pid)
                proc.kill()
                proc.join(10)

    def __enter__(self) -> StackProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
