"""Helpers for the engine service tests: put orders, read streams, run the service."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from chalice_app.config import Settings
from engine_pkg.service.main import EngineService

REPO = Path(__file__).resolve().parents[3]

FAST = {
    "engine_poll_floor_ms": 5,
    "engine_poll_idle_max_ms": 20,
    "engine_snapshot_records": 200,
    "engine_snapshot_seconds": 0.5,
    "engine_lease_ttl_ms": 4000,  # generous: a loaded CI machine can starve the renewal thread
}


class StandInHandler(http.server.BaseHTTPRequestHandler):
    """Base of the tests' stand-in servers: no access log, one call to answer."""

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class QuietHTTPServer(http.server.ThreadingHTTPServer):
    """A stand-in HTTP server for the tests; a client that timed out and hung up is expected."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port; yields the base URL."""
    server = QuietHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def fast(settings: Settings, **over) -> Settings:
    return dataclasses.replace(settings, **{**FAST, **over})


def fast_env(settings: Settings, **over: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "KINESIS_ORDERS_STREAM": settings.orders_stream,
            "KINESIS_FILLS_STREAM": settings.fills_stream,
            "KINESIS_STATUS_STREAM": settings.status_stream,
            "DEPTH_CACHE_URL": settings.depth_cache_url,
            "BACKUP_CACHE_URL": settings.backup_cache_url,
            "ENGINE_POLL_FLOOR_MS": "5",
            "ENGINE_POLL_IDLE_MAX_MS": "20",
            "ENGINE_SNAPSHOT_RECORDS": "200",
            "ENGINE_SNAPSHOT_SECONDS": "0.5",
            "ENGINE_LEASE_TTL_MS": "3000",
            "ENGINE_HTTP_PORT": "0",
        }
    )
    env.update(over)
    return env


def put_orders(kinesis, stream: str, commands: list[dict | bytes], chunk: int = 250) -> None:
    """PutRecords in order, partition key = symbol (retrying failed records)."""
    recs = []
    for c in commands:
        if isinstance(c, bytes):
            data, key = c, "POISON"
        else:
            data, key = orjson.dumps(c), str(c.get("symbol") or "POISON")
        recs.append({"Data": data, "PartitionKey": key})
    for i in range(0, len(recs), chunk):
        pending = recs[i : i + chunk]
        while pending:
            resp = kinesis.put_records(StreamName=stream, Records=pending)
            pending = [r for r, res in zip(pending, resp["Records"], strict=True) if "ErrorCode" in res]


def read_stream(kinesis, stream: str) -> list[dict]:
    """Every record of every shard, decoded JSON, shard by shard in order."""
    out: list[dict] = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        it = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            resp = kinesis.get_records(ShardIterator=it, Limit=10000)
            out += [orjson.loads(r["Data"]) | {"_key": r["PartitionKey"]} for r in resp["Records"]]
            if not resp["Records"]:
                break
            it = resp.get("NextShardIterator")
    return out


def order_flow(
    n: int,
    symbols: list[str],
    seed: int = 7,
    t0: int = 1_733_896_380_000,
    step_ms: int = 50,
    prefix: str = "o",
) -> list[dict]:
    """A deterministic mix of crossing limit orders, cancels, replaces and markets."""
    rnd = random.Random(seed)
    cmds: list[dict] = []
    open_ids: dict[str, list[tuple[str, str]]] = {s: [] for s in symbols}
    for i in range(n):
        sym = rnd.choice(symbols)
        user = f"u{rnd.randrange(8)}"
        ts = t0 + i * step_ms
        r = rnd.random()
        if r < 0.1 and open_ids[sym]:
            oid, owner = rnd.choice(open_ids[sym])
            cmds.append({"action": "CANCEL", "symbol": sym, "order_id": oid, "user_id": owner, "ts": ts})
        elif r < 0.15 and open_ids[sym]:
            oid, owner = rnd.choice(open_ids[sym])
            cmds.append(
                {
                    "action": "REPLACE",
                    "symbol": sym,
                    "order_id": oid,
                    "user_id": owner,
                    "price": 1000 + rnd.randrange(-5, 6),
                    "quantity": rnd.randrange(1, 50),
                    "ts": ts,
                }
            )
        elif r < 0.2:
            cmds.append(
                {
                    "action": "ADD",
                    "symbol": sym,
                    "order_id": f"{prefix}{i}",
                    "user_id": user,
                    "is_buy": rnd.random() < 0.5,
                    "quantity": rnd.randrange(1, 30),
                    "type": "MARKET",
                    "ts": ts,
                }
            )
        else:
            oid = f"{prefix}{i}"
            cmds.append(
                {
                    "action": "ADD",
                    "symbol": sym,
                    "order_id": oid,
                    "user_id": user,
                    "is_buy": rnd.random() < 0.5,
                    "price": 1000 + rnd.randrange(-5, 6),
                    "quantity": rnd.randrange(1, 50),
                    "ts": ts,
                }
            )
            open_ids[sym].append((oid, user))
    return cmds


@contextlib.contextmanager
def running_service(settings: Settings, *, dev: bool = False) -> Iterator[EngineService]:
    """The service in this process (HTTP on a free port), stopped gracefully afterwards."""
    svc = EngineService(settings, dev=dev, http_port=0).start()
    try:
        yield svc
    finally:
        svc.stop()


def all_reading(svc: EngineService, n: int = 4) -> bool:
    return len(svc.workers) == n and all(w.state.value == "reading" for w in svc.workers.values())


class EngineProcess:
    """`python -m engine_pkg` as a child process (its own process group)."""

    def __init__(self, env: dict[str, str], *args: str, log_path: Path | None = None) -> None:
        self.log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine_pkg", *args],
            cwd=str(REPO),
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def term(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill9()
        if hasattr(self.log, "close"):
            self.log.close()


class Producer(threading.Thread):
    """Keeps putting `commands` in small chunks until done (for the crash test)."""

    def __init__(
        self, kinesis, stream: str, commands: list[dict], chunk: int = 20, pause: float = 0.01
    ) -> None:
        super().__init__(daemon=True)
        self.kinesis, self.stream, self.commands, self.chunk, self.pause = (
            kinesis,
            stream,
            commands,
            chunk,
            pause,
        )
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(0, len(self.commands), self.chunk):
                put_orders(self.kinesis, self.stream, self.commands[i : i + self.chunk])
                self.sent = min(len(self.commands), i + self.chunk)
                time.sleep(self.pause)
        except BaseException as exc:  # surfaced by the test
            self.error = exc
