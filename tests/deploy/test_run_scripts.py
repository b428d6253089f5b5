"""tools/run_engine.sh and tools/run_streamer.sh, as systemd runs them on EC2: from an
environment file, against the real local services; SIGTERM stops them gracefully (the
engine snapshots its shards and releases its leases). Also the unit files themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
import redis

from chalice_app import keys
from engine_pkg import Engine
from engine_pkg.service.snapshots import Snapshot
from tests.waiting import wait_until
from tools.services import free_port

REPO = Path(__file__).resolve().parents[2]
BARE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


def _write_env_file(path: Path, values: dict[str, str]) -> Path:
    lines = ["# written by tests/deploy/test_run_scripts.py", ""]
    lines += [f'{k}="{v}"' if " " in v else f"{k}={v}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """`wait_until` that also fails at once when `proc` exits; OSError/ValueError (not
    listening yet, or a half-written answer) count as "not yet"."""
    def check() -> object:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode} while waiting for {what}:\n{_drain(proc)}")
        return predicate()
    return wait_until(check, timeout, 0.1, what, ignore=(OSError, ValueError))


def _drain(proc: subprocess.Popen) -> str:
    try:
        out, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        return "(still running)"
    return out[-4000:]


def _stop(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


@pytest.fixture
def started():
    """Popen objects started by a test; killed at teardown if the test did not stop them."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_run_engine_from_env_file_serves_orders_and_snapshots_on_sigterm(settings, service_env, backup_cache,
                                                                         depth_cache, tmp_path, started):
    port = free_port()
    env_file = _write_env_file(tmp_path / "engine.env", {
        **service_env,
        "KINESIS_ORDERS_STREAM": settings.orders_stream,
        "KINESIS_FILLS_STREAM": settings.fills_stream,
        "KINESIS_STATUS_STREAM": settings.status_stream,
        "ENGINE_HTTP_PORT": str(port),
        "ENGINE_ID": "deploy-test-engine",
        "LOG_LEVEL": "INFO",
    })
    # the process environment carries nothing of Supernoba: everything comes from the file
    proc = subprocess.Popen([str(REPO / "tools" / "run_engine.sh"), "--dev", "--env-file", str(env_file)],
                            env=BARE_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started.append(proc)
    shards = boto3.Session(region_name=settings.aws_region).client("kinesis").list_shards(
        StreamName=settings.orders_stream)["Shards"]
    health = _wait_for(
        lambda: (h := _get_json(f"http://127.0.0.1:{port}/health"))[0] == 200 and len(h[1]["shards"]) == len(shards)
        and h[1], 60, "engine /health with every shard owned", proc)
    assert health["engine"] == "deploy-test-engine" and health["stream"] == settings.orders_stream

    kinesis = boto3.Session(region_name=settings.aws_region).client("kinesis")
    order = {"action": "ADD", "symbol": "DEPLOY", "order_id": "ord_deploy_1", "user_id": "u_deploy", "is_buy": True,
             "price": 15000, "quantity": 7, "type": "LIMIT", "tif": "GTC", "ts": 1733896438267}
    kinesis.put_record(StreamName=settings.orders_stream, Data=json.dumps(order).encode(), PartitionKey="DEPLOY")
    depth = _wait_for(lambda: depth_cache.get(keys.depth("DEPLOY")), 30, "depth:{DEPLOY}", proc)
    assert json.loads(depth)["b"] == [[15000, 7]]

    code, out = _stop(proc)
    assert code == 0, out
    assert "run_engine: exec" in out and str(env_file) in out
    raw = redis.Redis.from_url(settings.backup_cache_url)
    books = {}
    for shard in shards:
        data = raw.get(keys.shard_snapshot(settings.orders_stream, shard["ShardId"]))
        assert data is not None, f"no snapshot of {shard['ShardId']} after SIGTERM"
        snap = Snapshot.decode(data)
        if snap.seq is not None:  # the shard that carried the order has a checkpoint
            engine = Engine()
            engine.restore(snap.engine)
            books[shard["ShardId"]] = engine.depth("DEPLOY")
    raw.close()
    assert list(books.values()) == [{"b": [[15000, 7]], "a": []}], books
    assert not any(backup_cache.exists(keys.shard_lease(settings.orders_stream, s["ShardId"])) for s in shards), (
        "leases not released on SIGTERM")


def test_run_streamer_from_env_file_starts_healthy_and_stops_on_sigterm(settings, service_env, tmp_path, started):
    port = free_port()
    env_file = _write_env_file(tmp_path / "streamer.env", {
        "DEPTH_CACHE_URL": service_env["DEPTH_CACHE_URL"],
        "WEBSOCKET_ENDPOINT": f"http://127.0.0.1:{free_port()}/api",
        "AWS_REGION": service_env["AWS_REGION"],
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "STREAMER_HTTP_PORT": str(port),
        "DEBUG_MODE": "false",
    })
    proc = subprocess.Popen([str(REPO / "tools" / "run_streamer.sh"), "--init", "--env-file", str(env_file)],
                            env=BARE_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started.append(proc)
    health = _wait_for(lambda: (h := _get_json(f"http://127.0.0.1:{port}/health"))[0] == 200 and h[1], 60,
                       "streamer /health", proc)
    assert health["status"] == "ok"
    code, out = _stop(proc, timeout=30)
    assert code == 0, out
    assert "run_streamer: exec" in out and "--init" in out


def test_run_scripts_refuse_bad_input_clearly(tmp_path):
    for script, bad_flag in (("run_engine.sh", "--init"), ("run_streamer.sh", "--dev")):
        proc = subprocess.run([str(REPO / "tools" / script), bad_flag], env=BARE_ENV, capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 2 and f"unknown option {bad_flag}" in proc.stderr
        proc = subprocess.run([str(REPO / "tools" / script), "--env-file", str(tmp_path / "missing.env")],
                              env=BARE_ENV, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and "cannot read environment file" in proc.stderr
        helptext = subprocess.run([str(REPO / "tools" / script), "--help"], env=BARE_ENV, capture_output=True,
                                  text=True, timeout=30)
        assert helptext.returncode == 0 and "--env-file" in helptext.stdout
    bad = tmp_path / "bad.env"
    bad.write_text("KINESIS_ORDERS_STREAM=x\nthis is not an assignment\n")
    proc = subprocess.run([str(REPO / "tools" / "run_engine.sh"), "--env-file", str(bad)], env=BARE_ENV,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and f"{bad}:2: not a KEY=VALUE line" in proc.stderr


def test_env_file_parsing_quotes_comments_and_precedence(tmp_path):
    """The file is read like systemd's EnvironmentFile; variables already set win."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nprintf "%s|%s|%s|%s\\n" "$A" "$B" "$C" "$*"\n')
    fake.chmod(0o755)
    env_file = tmp_path / "x.env"
    env_file.write_text("# comment\n\nA=plain\nexport B=\"two words\"\nC='single'\r\n")
    proc = subprocess.run([str(REPO / "tools" / "run_engine.sh"), "--debug", "--env-file", str(env_file)],
                          env={**BARE_ENV, "SUPERNOBA_PYTHON": str(fake), "C": "from-env"},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "plain|two words|from-env|-m engine_pkg --debug"


@pytest.mark.parametrize("part", ["engine", "streamer"])
def test_systemd_unit_is_valid_and_graceful(part, tmp_path):
    text = (REPO / "deploy" / "systemd" / f"supernoba-{part}.service").read_text()
    service = _section(text, "Service")
    assert service["EnvironmentFile"] == f"/etc/supernoba/{part}.env"
    assert service["ExecStart"].startswith(f"/opt/supernoba/tools/run_{part}.sh")
    assert "--dev" not in service["ExecStart"]
    assert service["Restart"] == "on-failure"
    assert _section(text, "Unit").get("StartLimitIntervalSec") == "0", "systemd must never stop restarting it"
    assert service["KillSignal"] == "SIGTERM"
    stop = int(service["TimeoutStopSec"])
    assert stop >= (60 if part == "engine" else 10), "the engine needs time to snapshot its shards"
    example = (REPO / "deploy" / f"{part}.env.example").read_text()
    assert all("=" in line for line in example.splitlines() if line and not line.startswith("#"))
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the static checks above still ran; verify needs systemd's tool
    unit = tmp_path / f"supernoba-{part}.service"
    env_file = tmp_path / f"{part}.env"
    env_file.write_text(example)
    unit.write_text(text.replace("/opt/supernoba", str(REPO)).replace(f"/etc/supernoba/{part}.env", str(env_file)))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if str(unit.name) in line]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def _section(text: str, name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == name:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _guide_etc_commands() -> list[str]:
    """The commands of docs/deploy.md's shell blocks that create or set the permissions of
    /etc/supernoba and its environment files, in the guide's order."""
    text = (REPO / "docs" / "deploy.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for cmd in line.split("#", 1)[0].split("&&"):
                cmd = cmd.strip()
                if cmd.split(" ", 1)[0] in ("mkdir", "install", "chown", "chgrp", "chmod") and "/etc/supernoba" in cmd:
                    commands.append(cmd)
    return commands


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to act as the service user")
def test_deploy_guide_lets_the_service_user_read_its_env_file():
    """Following docs/deploy.md step 7 (/etc/supernoba, then engine.env root:supernoba 640), the
    unit's `run_engine.sh --env-file /etc/supernoba/engine.env`, run as the service user, reads the
    file; nobody else may (it can hold SUPABASE/cache secrets). `nobody`/`nogroup` (65534) stand
    in for the `supernoba` user and group."""
    commands = _guide_etc_commands()
    assert any("/etc/supernoba/engine.env" in c for c in commands), commands
    base = Path(tempfile.mkdtemp(prefix="sn-guide-"))  # not under pytest's 0700 tmp: the user must reach it
    try:
        base.chmod(0o755)
        etc = base / "etc"
        etc.mkdir(mode=0o755)
        env_file = etc / "supernoba" / "engine.env"
        for cmd in commands:
            if "engine.env" in cmd and not env_file.exists():  # the guide copies the rendered file here
                env_file.write_text("GUIDE_CHECK=read-by-the-service-user\n")
            cmd = cmd.replace("/etc/supernoba", "@ETC@").replace("supernoba", "65534").replace("@ETC@", f"{etc}/supernoba")
            subprocess.run(["bash", "-c", cmd], check=True, timeout=30)
        fake = base / "python"
        fake.write_text('#!/bin/sh\necho "$GUIDE_CHECK"\n')
        fake.chmod(0o755)
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               str(REPO / "tools" / "run_engine.sh"), "--env-file", str(env_file)],
                              env={**BARE_ENV, "SUPERNOBA_PYTHON": str(fake)}, capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "read-by-the-service-user"
        assert env_file.stat().st_mode & 0o007 == 0, "the environment file must not be world-readable"
    finally:
        shutil.rmtree(base, ignore_errors=True)
