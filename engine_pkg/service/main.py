"""The engine service process: `python -m engine_pkg [--debug] [--dev]` → `main(args)`.

`EngineService` wires the parts: Kinesis and Valkey clients, the lease loop (which starts
and stops one `ShardWorker` per owned shard), the publishers, the depth writer, and the
HTTP endpoint. `main()` adds logging and signal handling (SIGTERM/SIGINT = graceful stop:
every worker finishes its batch, writes its snapshot and releases its lease).

Tests run `EngineService` in a thread (`start()` / `stop()`), or the whole process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

import boto3
import botocore.session
import redis
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalice_app import cache, keys
from chalice_app.config import Settings
from chalice_app.logs import setup_logging
from engine_pkg.service.depth_writer import DepthWriter, SymbolUpdate
from engine_pkg.service.errors import PublishError
from engine_pkg.service.get_records import GetRecordsClient
from engine_pkg.service.http import EngineHTTPServer
from engine_pkg.service.leases import LeaseManager
from engine_pkg.service.metrics import Metrics
from engine_pkg.service.publisher import Publisher
from engine_pkg.service.shard_reader import ShardState, ShardWorker
from engine_pkg.service.snapshots import AT_TIMESTAMP, Snapshot, SnapshotStore

log = logging.getLogger("supernoba.engine")

#: Depth-cache key patterns `--dev` clears (the open candle too: its seq guard restarts).
DEV_CLEAR_PATTERNS = (keys.DEPTH_PATTERN, keys.TICKER_PATTERN, keys.candle_pattern("1m"))
SHARD_REFRESH_SECONDS = 30.0


class EngineService:
    """One engine process on one orders stream."""

    def __init__(self, settings: Settings, *, dev: bool = False, http_port: int | None = None) -> None:
        self.settings = settings
        self.dev = dev
        self.dev_started_at_latest: set[str] = set()  # shards read from LATEST after --dev
        self.engine_id = settings.engine_id or f"{socket.gethostname()}-{os.getpid()}"
        self.token = f"{self.engine_id}:{uuid.uuid4().hex[:8]}"
        self.metrics = Metrics()
        self.stop_event = threading.Event()
        self.started_at = time.time()
        self.wall_clock = time.time  # the shard workers' clock for closing candles by time (tests set it)
        # Valkey writes that got through after a connection error; a change makes every shard
        # worker check its depth-cache keys at once (depth_rebuild). A lost increment between
        # two threads only delays that check to its next second.
        self.valkey_recoveries = 0
        mode = settings.cache_cluster_mode
        self.depth_cache = cache.client(settings.depth_cache_url, mode, socket_timeout=5, health_check_interval=30)
        self.backup_cache = cache.client(settings.backup_cache_url, mode, socket_timeout=5, health_check_interval=30)
        cfg = Config(retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=32,
                     connect_timeout=3, read_timeout=10, tcp_keepalive=True)
        self.kinesis = kinesis_client(settings.aws_region, cfg)
        # GetRecords: one GetRecordsClient per shard worker (get_records_client), signed with this
        # session's credentials and sent to the endpoint botocore resolved for self.kinesis
        self._aws = boto3.Session(region_name=settings.aws_region)
        self.depth_writer = DepthWriter(self.depth_cache)
        self.fills_publisher = Publisher(self.kinesis, settings.fills_stream, metrics=self.metrics, stop=self.stop_event)
        self.status_publisher = Publisher(self.kinesis, settings.status_stream, metrics=self.metrics,
                                          stop=self.stop_event)
        self.snapshots = SnapshotStore(self.backup_cache, settings.orders_stream)
        self.leases = LeaseManager(self.backup_cache, settings.orders_stream, self.engine_id, self.token,
                                   settings.engine_lease_ttl_ms)
        self.workers: dict[str, ShardWorker] = {}
        self.finished: set[str] = set()
        self._cooldown: dict[str, float] = {}
        self._shards: list[str] = []
        self._shards_at = 0.0
        self.live_engines = 1
        self.http = EngineHTTPServer(self, settings.engine_http_port if http_port is None else http_port,
                                     settings.engine_http_host)
        self._lease_thread = threading.Thread(target=self._lease_loop, name="leases", daemon=True)

    # -- side effects used by the workers ----------------------------------------------
    def load_prev(self, symbol: str) -> dict | None:
        try:
            raw = self.backup_cache.get(keys.prev_day(symbol))
            return json.loads(raw) if raw else None
        except (redis.RedisError, ValueError) as exc:
            log.warning("event=prev_unreadable symbol=%s error=%s", symbol, exc)
            return None

    def write_prev(self, symbol: str, record: dict) -> None:
        self._retry("prev", lambda: self.backup_cache.set(keys.prev_day(symbol), json.dumps(record)))
        log.info("event=day_rolled symbol=%s day=%s close=%s", symbol, record["d"], record["c"])

    def load_emitted(self, shard_id: str) -> str | None:
        raw = self.backup_cache.get(keys.shard_emitted(self.settings.orders_stream, shard_id))
        return raw.decode() if raw else None

    def save_emitted(self, shard_id: str, seq: str) -> None:
        key = keys.shard_emitted(self.settings.orders_stream, shard_id)
        self._retry("emitted", lambda: self.backup_cache.set(key, seq))

    def get_records_client(self) -> GetRecordsClient:
        """A shard worker's own GetRecords client. Its read timeout is ENGINE_GET_TIMEOUT_MS and it
        does not retry a timed-out read, so the worker sees the timeout at once and halves its
        Limit instead of asking for the same too-large page again (shard_reader.GetLimit)."""
        return GetRecordsClient(self.kinesis.meta.endpoint_url, self.settings.aws_region, self._aws.get_credentials(),
                                connect_timeout=3.0,
                                read_timeout=max(0.05, self.settings.engine_get_timeout_ms / 1000.0))

    def write_depth(self, updates: list[SymbolUpdate]) -> None:
        self._retry("depth", lambda: self.depth_writer.write(updates))

    def close_candles(self, symbols: list[str], cutoff: str, first: str = "") -> dict[str, str]:
        """Close the symbols' 1-minute candles of minutes in [first, cutoff) (DepthWriter.close_candles)."""
        return self._retry("candle_close", lambda: self.depth_writer.close_candles(symbols, cutoff, first))

    def _retry(self, what: str, fn) -> Any:
        attempt = 0
        while True:
            try:
                out = fn()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                attempt += 1
                log.warning("event=valkey_retry what=%s attempt=%d error=%s", what, attempt, exc)
                if self.stop_event.wait(min(2.0, 0.05 * 2 ** min(attempt, 6))) and attempt > 3:
                    raise PublishError(f"valkey {what} write failed while stopping") from exc
                continue
            if attempt:
                self.valkey_recoveries += 1
                log.info("event=valkey_recovered what=%s attempts=%d", what, attempt)
            return out

    # -- shards and leases ---------------------------------------------------------------
    def shard_ids(self) -> list[str]:
        now = time.monotonic()
        if not self._shards or now - self._shards_at > SHARD_REFRESH_SECONDS:
            shards: list[str] = []
            kwargs: dict[str, Any] = {"StreamName": self.settings.orders_stream}
            while True:
                resp = self.kinesis.list_shards(**kwargs)
                shards += [s["ShardId"] for s in resp["Shards"]]
                token = resp.get("NextToken")
                if not token:
                    break
                kwargs = {"NextToken": token}
            self._shards, self._shards_at = sorted(shards), now
        return self._shards

    def _lease_loop(self) -> None:
        interval = self.settings.engine_lease_ttl_ms / 3000.0
        while not self.stop_event.is_set():
            try:
                self._lease_tick()
            except (redis.RedisError, ClientError, BotoCoreError) as exc:
                log.warning("event=lease_tick_failed error=%s", exc)
            self.stop_event.wait(interval)

    def _lease_tick(self) -> None:
        tick_start = time.monotonic()
        self.live_engines = self.leases.heartbeat()
        shards = [s for s in self.shard_ids() if s not in self.finished]
        # reap workers that ended on their own
        for sid, w in list(self.workers.items()):
            if not w.is_alive():
                del self.workers[sid]
                if w.state is ShardState.FINISHED:
                    self.finished.add(sid)
                if w.state is not ShardState.LOST:
                    self.leases.release(sid)
                self._cooldown[sid] = time.monotonic() + 1.0
                self.metrics.set_shard("lease_owned", sid, 0)
                log.info("event=worker_ended shard=%s state=%s", sid, w.state.value)
        # renew what we hold
        for sid, w in list(self.workers.items()):
            if self.leases.renew(sid):
                w.lease_valid_until = tick_start + self.leases.valid_for
            else:
                log.warning("event=lease_renew_failed shard=%s holder=%s", sid, self.leases.holder(sid))
                w.lease_valid_until = 0.0
                w.request_stop()
        fair = max(1, math.ceil(len(shards) / max(1, self.live_engines)))
        # release the surplus so a newer engine gets its share
        owned = sorted(self.workers)
        for sid in owned[fair:]:
            log.info("event=lease_handoff shard=%s fair_share=%d engines=%d", sid, fair, self.live_engines)
            self.workers[sid].request_stop()  # the reaper above releases the lease after its snapshot
        # acquire up to the fair share
        now = time.monotonic()
        for sid in shards:
            if len(self.workers) >= fair:
                break
            if sid in self.workers or self._cooldown.get(sid, 0) > now:
                continue
            if self.leases.try_acquire(sid):
                w = ShardWorker(self, sid)
                w.lease_valid_until = tick_start + self.leases.valid_for
                self.workers[sid] = w
                self.metrics.inc("lease_takeovers_total")
                log.info("event=lease_acquired shard=%s engine=%s", sid, self.engine_id)
                w.start()

    # -- lifecycle -----------------------------------------------------------------------
    def clear_for_dev(self) -> None:
        """`--dev`: forget this stream's snapshots and leases and the depth cache keys (on a
        cluster, redis-py's scan_iter walks every primary)."""
        n_snap = self.snapshots.delete_all()
        for key in self.backup_cache.scan_iter(
                match=keys.shard_emitted(self.settings.orders_stream, "*"), count=500):
            self.backup_cache.delete(key)
        n_lease = self.leases.delete_all()
        n_keys = 0
        for pattern in DEV_CLEAR_PATTERNS:
            for key in self.depth_cache.scan_iter(match=pattern, count=1000):
                n_keys += self.depth_cache.delete(key)
        # "from each shard's LATEST position" as of now, durably: a restart before the shard's
        # first record must not read from a later LATEST and skip what arrived in between
        start = f"{AT_TIMESTAMP}:{int(time.time() * 1000)}"
        for sid in self.shard_ids():
            self.snapshots.save(Snapshot(shard_id=sid, seq=None, start=start, writer=self.engine_id), None)
        log.info("event=dev_clear snapshots=%d leases=%d depth_keys=%d", n_snap, n_lease, n_keys)

    def start(self) -> EngineService:
        if self.dev:
            self.clear_for_dev()
        self.http.start()
        self._lease_tick()
        self._lease_thread.start()
        log.info("event=engine_started engine=%s stream=%s http_port=%d dev=%s", self.engine_id,
                 self.settings.orders_stream, self.http.port, self.dev)
        return self

    def request_stop(self) -> None:
        self.stop_event.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop: every worker snapshots, then every lease is released."""
        self.stop_event.set()
        if self._lease_thread.is_alive():  # no lease tick may start a worker from now on
            self._lease_thread.join(10)
        for w in list(self.workers.values()):
            w.request_stop()
        deadline = time.monotonic() + timeout
        for sid, w in list(self.workers.items()):
            w.join(max(0.1, deadline - time.monotonic()))
            if w.state is not ShardState.LOST:
                try:
                    self.leases.release(sid)
                except redis.RedisError as exc:
                    log.warning("event=lease_release_failed shard=%s error=%s", sid, exc)
        self.workers.clear()
        try:
            self.leases.leave()
        except redis.RedisError as exc:
            log.warning("event=leave_failed error=%s", exc)
        self.http.stop()
        log.info("event=engine_stopped engine=%s", self.engine_id)

    def wait(self) -> None:
        while not self.stop_event.wait(0.5):
            pass

    def worker_for(self, symbol: str) -> ShardWorker | None:
        for w in list(self.workers.values()):
            if symbol in w.symbols():
                return w
        return None


def kinesis_client(region: str, cfg: Config):
    """A Kinesis client whose responses keep timestamps as epoch seconds (float).

    botocore turns every record's ApproximateArrivalTimestamp into a tz-aware datetime,
    which profiling showed to be a top cost per record; the engine needs only the number.
    """
    session = botocore.session.get_session()
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=float)
    return boto3.Session(botocore_session=session, region_name=region).client("kinesis", config=cfg)


def configure_logging(settings: Settings, debug: bool) -> None:
    level = logging.DEBUG if debug or settings.debug_mode else settings.log_level
    setup_logging(level, quiet_level=logging.INFO)


def main(args) -> int:
    """Run the service until SIGTERM/SIGINT; `args.debug`, `args.dev` as parsed by engine_pkg.
    Exit codes (as the streamer's): 0 clean stop, 1 could not start, 2 bad configuration."""
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # e.g. ENGINE_HTTP_PORT=abc: one line naming the variable, no traceback
        setup_logging(logging.INFO)
        log.error("event=bad_config error=%s", exc)
        return 2
    configure_logging(settings, bool(getattr(args, "debug", False)))
    try:
        svc = EngineService(settings, dev=bool(getattr(args, "dev", False)))
    except ValueError as exc:  # e.g. a DEPTH_CACHE_URL redis cannot parse
        log.error("event=bad_config error=%s", exc)
        return 2

    def _on_signal(signum, _frame) -> None:
        log.info("event=signal signal=%s action=graceful_stop", signal.Signals(signum).name)
        svc.request_stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        svc.start()
    except (ClientError, BotoCoreError, redis.RedisError, OSError) as exc:
        log.error("event=start_failed stream=%s error=%s", settings.orders_stream, exc)
        svc.stop(timeout=5)
        return 1
    svc.wait()
    svc.stop()
    return 0
