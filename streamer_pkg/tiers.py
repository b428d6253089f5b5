"""The streamer service: two tiers pushing the depth cache to WebSocket connections.

    realtime tier   logged-in connections (`realtime:connections`); a full read every 50 ms,
                    and at once when the engine PUBLISHes on `depth:changed` — then only the
                    symbols it named (a JSON list, or one plain symbol; any other payload
                    means "read everything"). Each tick reads the depth cache once
                    (reader.py), updates the roll-ups (rollups.py), and queues what changed
                    (diff.py) on the fan-out.
    anonymous tier  every other subscribed connection; a tick every 500 ms, served from the
                    realtime tier's last snapshot — no Valkey reads of its own. Its last-push
                    markers (the "anonymous-tier cache") are mirrored to `streamer:anon:cache`
                    (`keys.STREAMER_ANON_CACHE`) so a restart does not resend unchanged data;
                    `--init` clears it.
    membership      subscriber sets are cached by the reader and re-read when the ws handlers
                    PUBLISH on `connections:changed` (which also wakes the realtime tier, so a
                    new subscriber gets its snapshot at once) and every second anyway.
    snapshots       the streamer is the only source of a subscriber's initial state: a
                    connection new to a symbol's sets, or named in its `symbol:{SYM}:fresh`
                    marker (a repeated subscribe), gets the current state on its tier's next
                    tick (realtime: the re-read's tick; anonymous: the next 500 ms tick, so its
                    2 updates/s hold with the snapshot counted), ordered with the later diffs.

States: `StreamerState` below. Errors: a Valkey failure in a tick is logged, counted
(`redis`) and the tick is retried on the next period; it never stops the process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from dataclasses import dataclass

import orjson
import redis

from chalice_app import cache, keys
from chalice_app.config import Settings
from streamer_pkg.diff import Send, SymbolState, TierState, diff_tier
from streamer_pkg.fanout import Fanout
from streamer_pkg.http import OpsServer
from streamer_pkg.metrics import Metrics
from streamer_pkg.reader import Reader, Snapshot
from streamer_pkg.rollups import MINUTES, Rollups
from streamer_pkg.transport import DEFAULT_CONCURRENCY, Transport, build_transport

log = logging.getLogger("supernoba.streamer")

#: Valkey hash: symbol → JSON {"u","candle","ticker"} last pushed to the anonymous tier.
ANON_CACHE_KEY = keys.STREAMER_ANON_CACHE
#: while Valkey fails, one `tick_failed` line (with the count) per this many seconds
TICK_FAILURE_LOG_EVERY_S = 5.0


class StreamerState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class StreamerOptions:
    """Tunables. From the STREAMER_* settings; the defaults of those that are settings are
    `Settings`' (chalice_app/config.py), the others (wake gap, slow lane threshold) are the design's."""

    realtime_interval: float = Settings.streamer_realtime_ms / 1000
    anon_interval: float = Settings.streamer_anon_ms / 1000
    min_wake_gap: float = 0.005
    concurrency: int = Settings.streamer_concurrency  # fan-out workers; 0 = the transport's default (DEFAULT_CONCURRENCY)
    slow_concurrency: int = Settings.streamer_slow_concurrency
    slow_after: float = 0.25
    send_timeout: float = Settings.streamer_send_timeout_s
    retries: int = Settings.streamer_retries
    transport: str = Settings.streamer_transport
    membership_every: float = Settings.streamer_membership_ms / 1000
    http_port: int = Settings.streamer_http_port
    http_host: str = Settings.streamer_http_host

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamerOptions:
        """Raises ValueError for settings that cannot run (the process exits with code 2)."""
        for name in ("streamer_realtime_ms", "streamer_anon_ms", "streamer_send_timeout_s", "streamer_membership_ms"):
            if not getattr(settings, name) > 0:
                raise ValueError(f"{name.upper()} must be positive, got {getattr(settings, name)!r}")
        return cls(
            realtime_interval=settings.streamer_realtime_ms / 1000,
            anon_interval=settings.streamer_anon_ms / 1000,
            concurrency=settings.streamer_concurrency,
            slow_concurrency=settings.streamer_slow_concurrency,
            send_timeout=settings.streamer_send_timeout_s,
            retries=settings.streamer_retries,
            transport=settings.streamer_transport,
            membership_every=settings.streamer_membership_ms / 1000,
            http_port=settings.streamer_http_port,
            http_host=settings.streamer_http_host,
        )


class Streamer:
    def __init__(
        self,
        settings: Settings,
        options: StreamerOptions | None = None,
        *,
        transport: Transport | None = None,
        init: bool = False,
        serve_http: bool = True,
    ) -> None:
        self.settings = settings
        self.opts = options or StreamerOptions.from_settings(settings)
        if self.opts.concurrency <= 0:
            self.opts = dataclasses.replace(self.opts, concurrency=DEFAULT_CONCURRENCY.get(self.opts.transport, 32))
        self.init = init
        self.serve_http = serve_http
        self.metrics = Metrics()
        self.state = StreamerState.NEW
        # cluster-mode caches too (chalice_app.cache); redis-py's cluster pubsub takes classic
        # SUBSCRIBE on one node, which gets every node's PUBLISH
        mode = settings.cache_cluster_mode
        self.aredis = cache.async_client(settings.depth_cache_url, mode, decode_responses=True)
        self.sync_redis = cache.client(settings.depth_cache_url, mode, decode_responses=True)
        if transport is None:
            if not settings.websocket_endpoint:
                raise ValueError("WEBSOCKET_ENDPOINT is not set")
            # one sender thread / pooled socket per fan-out worker (fast and slow lanes), so a
            # worker never waits for a thread and a slow-lane send never delays a fast one
            workers = self.opts.concurrency + self.opts.slow_concurrency
            transport = build_transport(
                self.opts.transport, settings.websocket_endpoint, self.sync_redis, region=settings.aws_region,
                timeout=self.opts.send_timeout, threads=workers, max_connections=workers,
            )
        self.transport = transport
        self.fanout = Fanout(
            transport, self.metrics, concurrency=self.opts.concurrency,
            slow_concurrency=self.opts.slow_concurrency, slow_after=self.opts.slow_after,
            retries=self.opts.retries,
        )
        self.reader = Reader(self.aredis, on_bad_data=self.metrics.error,
                             membership_every=self.opts.membership_every)
        self._counted_membership = -1
        self.rollups = Rollups()
        self.realtime = TierState("realtime")
        self.anon = TierState("anonymous")
        self.snapshot: Snapshot | None = None
        self.closed: dict[str, dict] = {}  # symbol -> last closed 1m candle (final values)
        self._anon_seed: dict[str, dict] = {}
        # symbol -> re-subscribed connections (the reader's `Snapshot.fresh`, taken from Valkey):
        # read but not yet handed to the tiers (a tick that failed after its read keeps them) ...
        self._fresh: dict[str, set[str]] = {}
        # ... and, per tier, owed the current state at that tier's next diff of the symbol
        self._owed_rt: dict[str, set[str]] = {}
        self._owed_anon: dict[str, set[str]] = {}
        self._wake = asyncio.Event()
        self._notified: set[str] = set()  # symbols the engine named since the last realtime read
        self._notified_all = False  # a notification that named no readable symbol list
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.http: OpsServer | None = None
        self._last_ok = 0.0
        self._tick_failures = 0
        self._tick_failure_logged = -1e9
        self.wakeups = 0
        self.failed = False

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._load_anon_cache()
        except (redis.RedisError, OSError) as exc:  # start anyway: the ticks wait for Valkey
            self.metrics.error("redis")
            log.warning("event=anon_cache_unavailable key=%s error=%r", ANON_CACHE_KEY, exc)
        self.fanout.start()
        self._tasks = [
            asyncio.create_task(self._listen(), name="listen"),
            asyncio.create_task(self._realtime_loop(), name="realtime"),
            asyncio.create_task(self._anon_loop(), name="anonymous"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        if self.serve_http:
            self.http = OpsServer(self.opts.http_port, self.health, self.render_metrics, host=self.opts.http_host)
            await self.http.start()
        self.state = StreamerState.RUNNING
        log.info("event=streamer_start transport=%s concurrency=%d realtime_ms=%d anon_ms=%d init=%s",
                 self.opts.transport, self.opts.concurrency, self.opts.realtime_interval * 1000,
                 self.opts.anon_interval * 1000, self.init)

    async def _load_anon_cache(self) -> None:
        if self.init:
            await self.aredis.delete(ANON_CACHE_KEY)
            log.info("event=anon_cache_reset key=%s", ANON_CACHE_KEY)
            return
        raw = await self.aredis.hgetall(ANON_CACHE_KEY)
        for sym, js in raw.items():
            try:
                self._anon_seed[sym] = orjson.loads(js)
            except orjson.JSONDecodeError:
                log.warning("event=bad_data key=%s symbol=%s", ANON_CACHE_KEY, sym)

    async def stop(self, drain: float = 5.0) -> None:
        self.state = StreamerState.STOPPING
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=2.0)
            for t in stuck:
                log.warning("event=stop_task_stuck task=%s", t.get_name())
        await self.fanout.drain(drain)
        await self.fanout.stop()
        try:
            await self.reader.flush_writes()
        except redis.RedisError:
            log.exception("event=final_flush_failed")
        if self.http is not None:
            await self.http.stop()
        await self.transport.aclose()
        await self.aredis.aclose()
        self.sync_redis.close()
        self.state = StreamerState.STOPPED
        log.info("event=streamer_stop sends=%d", self.metrics.sends)

    async def run_forever(self) -> None:
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    def _task_done(self, task: asyncio.Task) -> None:
        """A tier loop must never end on its own: log the bug and stop (systemd restarts us)."""
        if task.cancelled() or self.state is not StreamerState.RUNNING:
            return
        log.error("event=task_crashed task=%s error=%r", task.get_name(), task.exception(),
                  exc_info=task.exception())
        self.failed = True
        self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()

    # -- change notifications ------------------------------------------------
    async def _listen(self) -> None:
        """Wake the realtime tier on every message of DEPTH_CHANGED_CHANNEL; on
        CONNECTIONS_CHANGED_CHANNEL also have the reader re-read the subscriber sets
        (reconnects on error; after a reconnect the sets are re-read, a message may be lost)."""
        while True:
            pubsub = self.aredis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.DEPTH_CHANGED_CHANNEL, keys.CONNECTIONS_CHANGED_CHANNEL)
                self.reader.mark_dirty()
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is not None:
                        if msg.get("channel") == keys.CONNECTIONS_CHANGED_CHANNEL:
                            self.reader.mark_dirty()
                        else:
                            log.debug("event=depth_changed data=%s", msg.get("data"))
                            self._note_changed(msg.get("data"))
                        self.wakeups += 1
                        self._wake.set()
            except (redis.RedisError, OSError, ValueError) as exc:  # ValueError: undecodable data
                self.metrics.error("redis")
                log.warning("event=pubsub_error error=%r", exc)
                await asyncio.sleep(0.5)
            finally:
                await pubsub.aclose()

    def _note_changed(self, data: object) -> None:
        """Remember which symbols a `depth:changed` message named (a JSON list, or one plain
        symbol); anything else means "look at everything"."""
        try:
            value = orjson.loads(data) if isinstance(data, str | bytes) else None
        except orjson.JSONDecodeError:
            value = cache.as_str(data)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and value and all(keys.is_valid_symbol(v) for v in value):
            self._notified.update(value)
        else:
            self._notified_all = True

    # -- realtime tier ---------------------------------------------------------
    async def _realtime_loop(self) -> None:
        """A full read every `period`; in between, a read of just the symbols the engine named,
        at once (at most every `min_wake_gap`)."""
        period = self.opts.realtime_interval
        last_full = -1e9
        last = 0.0
        while not self._stop.is_set():
            next_at = last_full + period
            timeout = next_at - time.monotonic()
            if self.fanout.pending() > self.opts.concurrency * 4:
                # backlog: wake-ups would only re-read what coalescing will merge; keep the period
                self._wake.clear()
            if timeout > 0 and not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
            gap = self.opts.min_wake_gap - (time.monotonic() - last)
            if gap > 0:
                await asyncio.sleep(gap)
            self._wake.clear()
            last = time.monotonic()
            only: set[str] | None = None
            if last - last_full < period and self._notified and not self._notified_all:
                only = self._notified
            self._notified, self._notified_all = set(), False
            snap = await self.realtime_tick(only)
            if snap is None or not snap.partial:
                last_full = last

    async def realtime_tick(self, only: set[str] | None = None) -> Snapshot | None:
        """Read (everything, or the symbols in `only`), update roll-ups, queue what changed.
        Returns the snapshot read, None when Valkey failed."""
        started = time.perf_counter()
        try:
            snap = await self.reader.read(time.time(), only)
            for sym, conns in snap.fresh.items():  # taken from Valkey: kept if this tick fails
                self._fresh.setdefault(sym, set()).update(conns)
            await self._handle_rollovers(snap)
        except (redis.RedisError, OSError, ValueError) as exc:  # ValueError: undecodable data
            self.metrics.error("redis")
            self._tick_failures += 1
            now = time.monotonic()
            if now - self._tick_failure_logged >= TICK_FAILURE_LOG_EVERY_S:  # not 20 lines a second
                log.warning("event=tick_failed tier=realtime failures=%d error=%r", self._tick_failures, exc)
                self._tick_failure_logged, self._tick_failures = now, 0
            return None
        self._last_ok = time.time()
        if snap.partial and self.snapshot is not None:  # the anonymous tier needs a full view
            merged = dict(self.snapshot.symbols)
            merged.update(snap.symbols)
            self.snapshot = Snapshot(snap.read_at, snap.realtime, merged, snap.membership)
        else:
            self.snapshot = snap
        rt = snap.realtime
        if self._fresh:  # with the snapshot that has their subscription (the anonymous tier's too)
            self._owe(self._fresh, rt)
            self._fresh = {}
        sends = diff_tier(self.realtime, snap, rt.__contains__, self.closed, rt, self._owed_rt)
        self._submit("rt", sends)
        if snap.membership != self._counted_membership:  # O(connections): only when sets changed
            self._counted_membership = snap.membership
            everyone = {c for d in snap.symbols.values() for c in (d.main | d.sub)}
            self.metrics.connections["realtime"] = len(everyone & rt)
            self.metrics.connections["anonymous"] = len(everyone - rt)
        self.metrics.tick("realtime", time.perf_counter() - started)
        self.metrics.pending = self.fanout.pending()
        return snap

    def _owe(self, fresh: dict[str, set[str]], realtime: frozenset[str]) -> None:
        """Hand re-subscribed connections to the tier each belongs to."""
        for sym, conns in fresh.items():
            rt = conns & realtime
            if rt:
                self._owed_rt.setdefault(sym, set()).update(rt)
            if len(rt) < len(conns):
                self._owed_anon.setdefault(sym, set()).update(conns - rt)

    async def _handle_rollovers(self, snap: Snapshot) -> None:
        """Closed minutes (final values from the engine) and roll-up updates for this snapshot."""
        rolled, fresh = [], []
        # a symbol whose SymbolData is the previous snapshot's object (the reader reuses it when
        # nothing changed) has the candle the roll-ups and the realtime state already saw
        seen = self.snapshot.symbols if self.snapshot is not None else {}
        changed = [(sym, data) for sym, data in snap.symbols.items() if seen.get(sym) is not data]
        for sym in snap.symbols:
            if sym not in self.rollups.loaded:
                fresh.append(sym)
        for sym, data in changed:
            prev = self.realtime.symbols.get(sym)
            if prev is None or prev.candle is None:
                continue
            if data.candle and data.candle["t"] > prev.candle[5]:
                rolled.append(sym)  # a later minute's trade closed it
            elif data.candle is None and data.closed_t is not None and data.closed_t >= prev.candle[5]:
                rolled.append(sym)  # the engine closed it by time (diff.py sends the close)
        if not snap.partial:
            for sym in [s for s in self.rollups.loaded if s not in snap.symbols]:
                self.rollups.forget(sym)
        if fresh:
            pipe = self.aredis.pipeline(transaction=False)
            for sym in fresh:
                for interval in MINUTES:
                    pipe.hgetall(keys.candle(sym, interval))
            res = iter(await pipe.execute())
            for sym in fresh:
                self.rollups.load(sym, {interval: next(res) for interval in MINUTES})
        if rolled:
            found = await self.reader.closed_candles(rolled)
            for sym in rolled:
                want = self.realtime.symbols[sym].candle[5]  # type: ignore[index]
                match = next((c for c in reversed(found.get(sym, [])) if str(c.get("t")) == want), None)
                if match is not None:
                    self.closed[sym] = match
        writes: dict[str, dict[str, str]] = {}
        for sym, data in changed:
            if data.candle:
                prev = self.realtime.symbols.get(sym)
                if prev is not None and prev.candle == tuple(str(data.candle[f]) for f in ("o", "h", "l", "c", "v", "t")):
                    continue
                # the final values of the roll-up's previous minute, also when it closed by time
                # ticks ago (fold() uses them only for that very minute)
                writes.update(self.rollups.update(sym, data.candle, self.closed.get(sym)))
        if writes:
            def op(pipe, w=writes):  # noqa: ANN001
                for key, mapping in w.items():
                    pipe.hset(key, mapping=mapping)
            self.reader.queue_write(op)

    def _submit(self, tier: str, sends: list[Send]) -> None:
        """Queue a tick's sends. Coalescing keys are per tier (`(tier, key)`): an anonymous
        connection's pending depth must not pick up the realtime tier's newer data."""
        submit = self.fanout.submit_many
        for s in sends:
            submit(s.recipients, (tier, s.key) if s.key is not None else None, s.data, s.born)

    # -- anonymous tier --------------------------------------------------------
    async def _anon_loop(self) -> None:
        period = self.opts.anon_interval
        while not self._stop.is_set():
            await asyncio.sleep(period)
            self.anon_tick()

    def anon_tick(self) -> list[Send]:
        started = time.perf_counter()
        snap = self.snapshot
        if snap is None:
            return []
        rt = snap.realtime

        def member(c: str) -> bool:
            return c not in rt

        if self._anon_seed:
            self._seed_anon(snap, member)
        sends = diff_tier(self.anon, snap, member, self.closed, rt, self._owed_anon)
        self._submit("anon", sends)
        self._mirror_anon(sends)
        self.metrics.tick("anonymous", time.perf_counter() - started)
        self.fanout.prune()
        self.metrics.slow = self.fanout.slow_connections()
        return sends

    def _seed_anon(self, snap: Snapshot, member) -> None:  # noqa: ANN001
        """After a restart without --init: assume current anonymous subscribers hold the cached state."""
        for sym, data in snap.symbols.items():
            seed = self._anon_seed.pop(sym, None)
            if seed is None:
                continue
            main = frozenset(c for c in data.main if member(c))
            self.anon.symbols[sym] = SymbolState(
                u=seed.get("u"),
                candle=tuple(seed["candle"]) if seed.get("candle") else None,
                ticker=tuple(seed["ticker"]) if seed.get("ticker") else None,
                served_main=main,
                served_ticker=main | frozenset(c for c in data.sub if member(c)),
            )
        self._anon_seed.clear()

    def _mirror_anon(self, sends: list[Send]) -> None:
        # a candle closed by time sends only its candle_close: its symbol's state changed too
        changed = {s.key[1] for s in sends if isinstance(s.key, tuple) and s.key[0] in ("d", "c", "t")}
        changed.update(s.symbol for s in sends if s.symbol)
        if not changed:
            return
        rows = {}
        for sym in changed:
            st = self.anon.symbols.get(sym)
            if st is not None:
                rows[sym] = orjson.dumps({"u": st.u, "candle": st.candle, "ticker": st.ticker}).decode()
        if rows:
            self.reader.queue_write(lambda pipe, r=rows: pipe.hset(ANON_CACHE_KEY, mapping=r))

    # -- ops -------------------------------------------------------------------
    def health(self) -> tuple[bool, dict]:
        now = time.time()
        started = self.metrics.started
        rt_age = now - self.metrics.last_tick_at.get("realtime", started)
        anon_age = now - self.metrics.last_tick_at.get("anonymous", started)
        ok = (self.state is StreamerState.RUNNING and rt_age < 2.0 and anon_age < 5.0
              and now - self._last_ok < 5.0)
        return ok, {
            "state": self.state.value,
            "realtime_tick_age_s": round(rt_age, 3),
            "anonymous_tick_age_s": round(anon_age, 3),
            "valkey_ok_age_s": round(now - self._last_ok, 3),
            "symbols": len(self.snapshot.symbols) if self.snapshot else 0,
            "pending": self.fanout.pending(),
        }

    def render_metrics(self) -> str:
        self.metrics.pending = self.fanout.pending()
        self.metrics.slow = self.fanout.slow_connections()
        return self.metrics.render()
