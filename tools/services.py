"""Starts and stops the real backing services on free loopback ports.

The one launcher used by both the pytest fixtures and `make dev`:

- `ValkeyService`  — `valkey-server`; logical DB 0 is the depth cache, DB 1 the backup cache
- `ValkeyClusterService` — 3 cluster-mode `valkey-server` primaries (CACHE_CLUSTER_MODE tests)
- `KinesisService` — kinesalite (npm), through `tools/node/emulator.js` bound to 127.0.0.1
- `DynamoService`  — dynalite (npm), same launcher
- `S3Service`      — moto's server (`python -m moto.server`)

Each `start()` waits until the service answers; each `stop()` ends exactly the process
group it started. `data_dir=None` keeps emulator data in memory (tests); a folder keeps
it across restarts (`make dev`).

    ServiceError
     └── ServiceStartError   the process died or never answered
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from chalice_app.config import ENV, Settings

log = logging.getLogger("supernoba.services")

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = REPO_ROOT / "tools"
EMULATOR_JS = NODE_DIR / "node" / "emulator.js"
#: the local stack runs in the default region of Settings (chalice_app/config.py)
LOCAL_REGION = Settings.aws_region


class ServiceError(RuntimeError):
    """A backing service could not be run."""


class ServiceStartError(ServiceError):
    """The process exited early or never answered on its port."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def stop_process_group(proc: subprocess.Popen | None, timeout: float = 10.0, *, name: str = "") -> bool:
    """SIGTERM the process group `proc` leads (started with `start_new_session=True`), SIGKILL
    it if it has not exited within `timeout`. False when there was nothing running to stop."""
    if proc is None or proc.poll() is not None:
        return False
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("process=%s pid=%d event=kill reason=no_exit_after_sigterm", name, proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    return True


def kill_process_group(proc: subprocess.Popen | None, timeout: float = 10.0) -> bool:
    """SIGKILL the process group `proc` leads and reap it (fault injection). False when it was
    not running."""
    if proc is None or proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=timeout)
    return True


@dataclass
class Service:
    """One child process on one loopback port."""

    name: str
    port: int = 0
    data_dir: Path | None = None
    log_dir: Path | None = None
    start_timeout: float = 30.0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def command(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def ready(self) -> bool:
        return port_open(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        if self.port == 0:
            self.port = free_port()
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        out = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the child
        cmd = self.command()
        log.info("service=%s event=starting port=%d cmd=%s", self.name, self.port, " ".join(cmd))
        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(NODE_DIR), start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServiceStartError(f"{self.name} exited with code {self.proc.returncode}: {' '.join(cmd)}")
                if self.ready():
                    log.info("service=%s event=ready url=%s", self.name, self.url)
                    return self
                time.sleep(0.05)
            raise ServiceStartError(f"{self.name} did not answer on port {self.port} within {self.start_timeout}s")
        except BaseException:  # never answered, or the wait was interrupted (Ctrl-C, SIGTERM): leave nothing running
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if stop_process_group(proc, timeout, name=self.name):
            log.info("service=%s event=stopped", self.name)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        proc, self.proc = self.proc, None
        kill_process_group(proc)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ValkeyService(Service):
    name: str = "valkey"
    appendonly: bool = False
    depth_db: int = 0
    backup_db: int = 1
    cluster: bool = False  # a node of ValkeyClusterService (needs data_dir for its nodes.conf)
    cluster_port: int = 0  # its cluster bus port (free port when 0)

    def command(self) -> list[str]:
        binary = shutil.which("valkey-server") or "/usr/bin/valkey-server"
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--protected-mode", "yes", "--databases", "16"]
        if self.cluster:
            # the bus port defaults to port + 10000, which may be past 65535 or taken
            self.cluster_port = self.cluster_port or free_port()
            cmd += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(self.cluster_port), "--cluster-node-timeout", "5000"]
        if self.data_dir is not None:
            cmd += ["--dir", str(self.data_dir), "--appendonly", "yes" if self.appendonly else "no"]
        else:
            cmd += ["--appendonly", "no"]
        return cmd

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def depth_url(self) -> str:
        return f"{self.url}/{self.depth_db}"

    @property
    def backup_url(self) -> str:
        return f"{self.url}/{self.backup_db}"


#: The slot ranges of a 3-primary cluster (what `valkey-cli --cluster create` assigns).
CLUSTER_SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))


@dataclass
class ValkeyClusterService:
    """A cluster-mode Valkey of 3 primaries (no replicas) on free loopback ports, like a
    cluster-mode-enabled ElastiCache with 3 shards (docs/deploy.md, CACHE_CLUSTER_MODE).

    Each node is a `valkey-server --cluster-enabled yes` with its own folder (its
    `nodes.conf`); `start()` gives each primary a third of the 16384 slots
    (CLUSTER ADDSLOTSRANGE), joins them (CLUSTER MEET) and waits for `cluster_state:ok` on
    every node and for a PUBLISH on any node to reach subscribers on all of them. There is one
    logical database (0): `url` is the seed node's `redis://…/0`.
    """

    name: str = "valkey-cluster"
    data_dir: Path | None = None
    log_dir: Path | None = None
    start_timeout: float = 20.0
    nodes: list[ValkeyService] = field(default_factory=list)
    _tmp: Path | None = field(default=None, repr=False)

    def start(self) -> ValkeyClusterService:
        import tempfile

        import redis

        root = self.data_dir
        if root is None:
            self._tmp = root = Path(tempfile.mkdtemp(prefix="valkey-cluster-"))
        try:
            self.nodes = []
            for i in range(len(CLUSTER_SLOT_RANGES)):  # one by one: stop() below must see every started node
                self.nodes.append(ValkeyService(name=f"{self.name}-{i}", data_dir=root / f"node{i}",
                                                log_dir=self.log_dir, cluster=True).start())
            clients = [redis.Redis(port=n.port, socket_timeout=5) for n in self.nodes]
            for c, (lo, hi) in zip(clients, CLUSTER_SLOT_RANGES, strict=True):
                c.execute_command("CLUSTER ADDSLOTSRANGE", lo, hi)
            for c in clients[1:]:
                c.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port, self.nodes[0].cluster_port)
            deadline = time.monotonic() + self.start_timeout
            while not all(self._ok(c) for c in clients):
                if time.monotonic() > deadline:
                    raise ServiceStartError(f"{self.name} did not reach cluster_state:ok within {self.start_timeout}s")
                time.sleep(0.05)
            while not self._pubsub_spans_nodes(clients):
                if time.monotonic() > deadline:
                    raise ServiceStartError(f"{self.name}: PUBLISH did not reach every node within {self.start_timeout}s")
            for c in clients:
                c.close()
        except BaseException:
            self.stop()
            raise
        log.info("service=%s event=ready ports=%s", self.name, ",".join(str(p) for p in self.ports))
        return self

    @staticmethod
    def _pubsub_spans_nodes(clients: list) -> bool:
        """cluster_state:ok comes before every bus link is up; until then a PUBLISH on one node
        can miss subscribers on another (seen as a lost first `depth:changed`). Probe it."""
        subs = [c.pubsub(ignore_subscribe_messages=True) for c in clients]
        try:
            for sub in subs:
                sub.subscribe("cluster:ready-probe")
                sub.get_message(timeout=1.0)  # the subscribe confirmation: subscribed before publishing
            for i, c in enumerate(clients):
                c.publish("cluster:ready-probe", str(i))
            for sub in subs:
                heard: set[bytes] = set()
                until = time.monotonic() + 0.5
                while len(heard) < len(clients) and time.monotonic() < until:
                    msg = sub.get_message(timeout=0.05)
                    if msg:
                        heard.add(msg["data"])
                if len(heard) < len(clients):
                    return False
            return True
        finally:
            for sub in subs:
                sub.close()

    @staticmethod
    def _ok(client) -> bool:
        info = client.cluster("info")
        return info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == len(
            CLUSTER_SLOT_RANGES)

    def stop(self, timeout: float = 10.0) -> None:
        for node in reversed(self.nodes):
            node.stop(timeout)
        self.nodes = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def node_of(self, key: str) -> int:
        """Index in `nodes` of the primary that serves `key` (by its hash slot)."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        return next(i for i, (lo, hi) in enumerate(CLUSTER_SLOT_RANGES) if lo <= slot <= hi)

    def flush(self) -> None:
        """FLUSHALL on every primary (tests start from an empty cluster)."""
        import redis

        for port in self.ports:
            with redis.Redis(port=port, socket_timeout=5) as c:
                c.flushall()

    @property
    def url(self) -> str:
        """A seed node; cluster clients discover the others (CLUSTER SLOTS)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def __enter__(self) -> ValkeyClusterService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class _NodeEmulator(Service):
    kind: str = ""

    def command(self) -> list[str]:
        if not (NODE_DIR / "node_modules" / self.name).is_dir():
            raise ServiceStartError(f"{self.name} is not installed in {NODE_DIR / 'node_modules'}: run `make setup` "
                                    "(or `npm ci` in tools/)")
        node = shutil.which("node") or "/usr/bin/node"
        cmd = [node, str(EMULATOR_JS), self.kind, str(self.port)]
        if self.data_dir is not None:
            cmd.append(str(self.data_dir))
        return cmd


@dataclass
class KinesisService(_NodeEmulator):
    name: str = "kinesalite"
    kind: str = "kinesis"


@dataclass
class DynamoService(_NodeEmulator):
    name: str = "dynalite"
    kind: str = "dynamodb"


@dataclass
class S3Service(Service):
    name: str = "moto-s3"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]


@dataclass
class LocalServices:
    """The four backing services together, plus the environment that points at them.

    `valkey_cluster=True` also starts a `ValkeyClusterService` (in memory, whatever `data_dir`)
    and points both caches at it with CACHE_CLUSTER_MODE=on."""

    data_dir: Path | None = None
    log_dir: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    valkey_cluster: bool = False
    cluster: ValkeyClusterService | None = field(init=False, default=None)
    valkey: ValkeyService = field(init=False)
    kinesis: KinesisService = field(init=False)
    dynamodb: DynamoService = field(init=False)
    s3: S3Service = field(init=False)

    def __post_init__(self) -> None:
        def sub(name: str) -> Path | None:
            return None if self.data_dir is None else self.data_dir / name

        self.valkey = ValkeyService(port=self.ports.get("valkey", 0), data_dir=sub("valkey"),
                                    log_dir=self.log_dir, appendonly=self.data_dir is not None)
        self.kinesis = KinesisService(port=self.ports.get("kinesis", 0), data_dir=sub("kinesis"), log_dir=self.log_dir)
        self.dynamodb = DynamoService(port=self.ports.get("dynamodb", 0), data_dir=sub("dynamodb"), log_dir=self.log_dir)
        self.s3 = S3Service(port=self.ports.get("s3", 0), log_dir=self.log_dir)
        if self.valkey_cluster:
            self.cluster = ValkeyClusterService(log_dir=self.log_dir)

    @property
    def all(self) -> list[Service]:
        """Every running process (a cluster's nodes one by one)."""
        nodes = self.cluster.nodes if self.cluster is not None else []
        return [self.valkey, *nodes, self.kinesis, self.dynamodb, self.s3]

    def start(self) -> LocalServices:
        try:
            for svc in self.all:
                svc.start()
            if self.cluster is not None:
                self.cluster.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        for svc in reversed(self.all):
            svc.stop()

    def env(self) -> dict[str, str]:
        """Environment variables (SPEC §8) that point every Supernoba part at these services."""
        return {
            ENV.AWS_ENDPOINT_URL_KINESIS: self.kinesis.url,
            ENV.AWS_ENDPOINT_URL_DYNAMODB: self.dynamodb.url,
            ENV.AWS_ENDPOINT_URL_S3: self.s3.url,
            ENV.AWS_ACCESS_KEY_ID: "local",
            ENV.AWS_SECRET_ACCESS_KEY: "local",
            ENV.AWS_REGION: LOCAL_REGION,
            ENV.AWS_DEFAULT_REGION: LOCAL_REGION,
            ENV.DEPTH_CACHE_URL: self.cluster.url if self.cluster else self.valkey.depth_url,
            ENV.BACKUP_CACHE_URL: self.cluster.url if self.cluster else self.valkey.backup_url,
            ENV.CACHE_CLUSTER_MODE: "on" if self.cluster else "off",
        }

    def __enter__(self) -> LocalServices:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(
        prog="python -m tools.services",
        description="A library, not a command: the launcher of the real backing services (Valkey, "
        "kinesalite, dynalite, moto's S3) on free loopback ports, used by the test fixtures and by "
        "`make dev` (python -m tools.dev). See the module docstring.",
    ).parse_args()
    print("tools.services is a library; run `make dev` (python -m tools.dev) for a local stack", file=sys.stderr)
    sys.exit(2)

