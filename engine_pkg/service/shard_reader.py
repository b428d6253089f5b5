"""One shard of the orders stream: GetRecords → Engine.process → effects → snapshots.

A `ShardWorker` thread owns one `Engine` (restored from the shard's snapshot) and loops:

1. GetRecords (one response = one `Engine.process` batch, through this thread's own
   `GetRecordsClient`), adaptive pacing (`poll_wait`): one call per poll floor while records
   keep coming and while the shard had records within the last `engine_poll_hot_ms` (a
   trading shard stays responsive), backing off (doubling up to the idle maximum) once it
   has been idle that long (an idle shard is cheap). A read timeout halves the `Limit`
   (down to `GET_LIMIT_FLOOR`), and it grows back by doubling after quick successes
   (`GetLimit`), so a page too large to be served within the timeout can never stall the shard.
2. Depth cache: one Lua call per touched symbol + one PUBLISH, in one pipeline
   (`depth_writer`), synchronously — it is the latency users see.
3. Fills (key = symbol) and statuses (key = user_id) are handed to two single-thread
   publishers, so batch N is put on Kinesis while batch N+1 is read; FIFO per stream
   keeps per-key order. At most `MAX_INFLIGHT` batches are unacknowledged.
4. Every K records or T seconds (and when stopping gracefully), waits for the in-flight
   batches, then writes a fenced snapshot: engine + last sequence number + ticker state.
5. About once a second, once the shard is caught up, closes the 1-minute candles of past
   minutes by time (`candle_closer`, `candle_close.lua`): a quiet symbol's candle closes at
   the minute boundary, not only when a later trade arrives.
6. About once a second (at once after a Valkey connection error recovered), checks that the
   depth cache still holds `depth:{SYM}` / `ticker:{SYM}` of the shard's symbols and writes
   back what is missing from the engine's own state (`depth_rebuild`): a depth cache that
   lost its keys serves the books again without waiting for each symbol's next order.

A record the engine cannot read becomes a REJECTED/BAD_ORDER status or a logged drop
inside the engine; if `Engine.process` itself raises on a batch, the batch is re-run
record by record and only the record that raises is skipped (logged, counted).

States: STARTING → READING → (STOPPING → STOPPED | LOST | FINISHED | FAILED).
"""

from __future__ import annotations

import enum
import logging
import re
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
import redis
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

from chalice_app import messages
from engine_pkg import Engine
from engine_pkg.service.candle_closer import LIVE_SKEW_MS, CandleCloser, minute_of
from engine_pkg.service.depth_rebuild import DepthRebuilder
from engine_pkg.service.depth_writer import SymbolUpdate
from engine_pkg.service.errors import (
    CorruptSnapshot,
    EngineServiceError,
    LeaseLost,
    PublishError,
    SnapshotError,
)
from engine_pkg.service.snapshots import AT_TIMESTAMP, VIEW_LEVELS, Snapshot
from engine_pkg.service.ticker import TickerBook

if TYPE_CHECKING:
    from engine_pkg.service.main import EngineService

log = logging.getLogger("supernoba.engine.shard")

MAX_INFLIGHT = 3
#: The smallest GetRecords Limit a read timeout can shrink to.
GET_LIMIT_FLOOR = 100
#: Successive quick reads (< 1/4 of the read timeout) before the Limit doubles back.
GET_LIMIT_GROW_AFTER = 3
#: a status event holds this iff it is a rejection (chalice_app.messages; bytes, for a fast `in`)
REJECTED_NEEDLE = messages.REJECTED_NEEDLE
#: A batch whose records arrived further apart than this (a backlog) judges each traded
#: symbol's liveness by that symbol's own records.
WIDE_BATCH_MS = 60_000
#: A command whose events cannot depend on the engine clock: it carries an integer `ts` at the
#: top level. Only a `ts` that closes the object counts (the router writes it last): a `"ts"`
#: anywhere else may sit in a nested object of an ignored field. Other records take the
#: slower, equally correct path (runs by arrival ms).
_TS_OK = re.compile(rb'[,{]\s*"ts"\s*:\s*\d{1,15}\s*\}\s*\Z')


class ShardState(enum.Enum):
    STARTING = "starting"
    READING = "reading"
    STOPPING = "stopping"
    STOPPED = "stopped"      # graceful stop, snapshot written
    LOST = "lost"            # lease lost or expired locally: stopped without writing
    FINISHED = "finished"    # shard closed (resharded) and fully read
    FAILED = "failed"        # unexpected error; the service restarts it from the snapshot


@dataclass
class _Merged:
    """A BatchResult assembled from record-by-record processing (fallback path)."""

    fills: list[bytes] = field(default_factory=list)
    statuses: list[bytes] = field(default_factory=list)
    status_users: list[str | None] = field(default_factory=list)
    touched: dict[str, int] = field(default_factory=dict)
    dropped: list = field(default_factory=list)


class GetLimit:
    """The GetRecords `Limit` of one shard: halved on a read timeout (down to a floor), doubled
    back towards the configured maximum after `GET_LIMIT_GROW_AFTER` quick successes."""

    def __init__(self, maximum: int, timeout_s: float, floor: int = GET_LIMIT_FLOOR) -> None:
        self.maximum = max(1, maximum)
        self.floor = max(1, min(floor, self.maximum))
        self.value = self.maximum
        self.quick_after = timeout_s / 4
        self._quick = 0

    def timed_out(self) -> bool:
        """A read timed out; True when the Limit went down (False: already at the floor)."""
        self._quick = 0
        new = max(self.floor, self.value // 2)
        changed, self.value = new != self.value, new
        return changed

    def succeeded(self, seconds: float) -> bool:
        """A read took `seconds`; True when the Limit went up."""
        if self.value >= self.maximum:
            return False
        self._quick = self._quick + 1 if seconds < self.quick_after else 0
        if self._quick < GET_LIMIT_GROW_AFTER:
            return False
        self._quick = 0
        self.value = min(self.maximum, self.value * 2)
        return True


def poll_wait(got_records: bool, idle: int, hot: bool, floor: float, idle_max: float) -> float:
    """Seconds from the start of one GetRecords of a shard to the start of the next: the floor
    after records and while the shard is hot (records within the hot window: an order arriving
    on a trading shard waits at most one floor); after `idle` empty responses on a cold shard
    floor x 2^idle, capped at the idle maximum."""
    if got_records or hot:
        return floor
    return min(idle_max, floor * (2 ** min(idle, 10)))


class ShardWorker(threading.Thread):
    """Reads and matches one shard while this process holds its lease."""

    def __init__(self, svc: EngineService, shard_id: str) -> None:
        super().__init__(name=f"shard-{shard_id}", daemon=True)
        self.svc = svc
        self.shard_id = shard_id
        self.state = ShardState.STARTING
        self.lock = threading.Lock()  # guards the engine (HTTP /book reads it too)
        self.stop_event = threading.Event()
        self.lease_valid_until = time.monotonic() + svc.leases.valid_for
        self._batch_clock = 0
        self.engine = Engine(clock=self._clock, parse_thread=svc.settings.engine_parse_thread)
        self.ticker = TickerBook(svc.settings.market_tz, svc.load_prev)
        self.checkpoint: str | None = None
        self.start_type = "TRIM_HORIZON"
        self.skip_before_ms: int | None = None  # arrival ms before which records are skipped (--dev)
        self.records_since_snapshot = 0
        self.snapshot_missing_seq = True
        self.last_snapshot_mono = time.monotonic()
        self.last_snapshot_wall = 0.0
        self.millis_behind = 0
        self.reader = svc.get_records_client()  # this thread's own GetRecords connection
        self._fills_pool = ThreadPoolExecutor(1, thread_name_prefix=f"fills-{shard_id}")
        self._status_pool = ThreadPoolExecutor(1, thread_name_prefix=f"status-{shard_id}")
        self._inflight: deque[tuple[str, list[Future]]] = deque()
        self.emitted: str | None = None        # last sequence number whose effects are all written
        self._emitted_saved: str | None = None
        self.replay_until: int | None = None   # effects up to here were written before: re-apply silently
        self.candles = CandleCloser(svc.wall_clock)  # closes past minutes' candles by time
        self.rebuilder = DepthRebuilder()  # writes back depth-cache keys that went missing

    # -- helpers ---------------------------------------------------------------------
    def _clock(self) -> int:
        return self._batch_clock or int(time.time() * 1000)

    def symbols(self) -> list[str]:
        with self.lock:
            return self.engine.symbols()

    def book(self, symbol: str, levels: int) -> dict | None:
        with self.lock:
            seq = self.engine.last_seq(symbol)
            if seq is None:
                return None
            d = self.engine.depth(symbol, levels)
        return {"e": messages.E_DEPTH, "s": symbol, "u": seq, "b": d["b"], "a": d["a"]}

    def request_stop(self) -> None:
        self.stop_event.set()

    # -- lifecycle -------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._restore()
            self._loop()
        except LeaseLost as exc:
            self.state = ShardState.LOST
            log.warning("event=lease_lost shard=%s detail=%s", self.shard_id, exc)
        except (EngineServiceError, ClientError, BotoCoreError, redis.RedisError, OSError, ValueError) as exc:
            self.state = ShardState.FAILED
            self.svc.metrics.inc("errors_total")
            log.exception("event=shard_failed shard=%s error=%s", self.shard_id, exc)
        finally:
            self.reader.close()
            self._fills_pool.shutdown(wait=False, cancel_futures=True)
            self._status_pool.shutdown(wait=False, cancel_futures=True)
            self.svc.metrics.set_shard("lease_owned", self.shard_id, 0)

    def _restore(self) -> None:
        try:
            snap = self.svc.snapshots.load(self.shard_id)
            if snap is not None and snap.engine:
                self.engine.restore(snap.engine)
        except (CorruptSnapshot, ValueError) as exc:
            log.error("event=snapshot_corrupt shard=%s error=%s action=read_from_trim_horizon", self.shard_id, exc)
            self.engine = Engine(clock=self._clock, parse_thread=self.svc.settings.engine_parse_thread)
            snap = None
        if snap is not None:
            self.checkpoint = snap.seq
            self.start_type = snap.start
            self.ticker.load_state(snap.ticker)
            self.snapshot_missing_seq = snap.seq is None
            self.last_snapshot_wall = snap.written_ms / 1000.0
            mark = self.svc.load_emitted(self.shard_id)
            if mark is not None and snap.seq is not None and int(mark) > int(snap.seq):
                self.replay_until = int(mark)
                self.emitted = self._emitted_saved = mark
        self.candles.adopt(self.engine.symbols())  # a candle left open before a restart closes too
        log.info("event=shard_start shard=%s checkpoint=%s start=%s symbols=%d silent_until=%s", self.shard_id,
                 self.checkpoint, self.start_type if self.checkpoint is None else "AFTER_SEQUENCE_NUMBER",
                 len(self.engine.symbols()), self.replay_until)

    def _iterator(self) -> str:
        kin = self.svc.kinesis
        stream = self.svc.settings.orders_stream
        if self.checkpoint:
            return kin.get_shard_iterator(StreamName=stream, ShardId=self.shard_id,
                                          ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                          StartingSequenceNumber=self.checkpoint)["ShardIterator"]
        kind = self.start_type
        if kind.startswith(AT_TIMESTAMP + ":"):
            # the shard has read nothing since a `--dev` at that moment: the first reader in the
            # `--dev` process starts at LATEST (SPEC §10); any later one (a restart, a takeover)
            # reads from TRIM_HORIZON and skips what arrived before that moment, so nothing put
            # in between is lost. (Kinesis's own AT_TIMESTAMP iterator would do; kinesalite's
            # never answers while no record is that recent.)
            if self.shard_id not in self.svc.dev_started_at_latest and self.svc.dev:
                self.svc.dev_started_at_latest.add(self.shard_id)
                kind = "LATEST"
            else:
                self.skip_before_ms = int(kind.split(":", 1)[1])
                kind = "TRIM_HORIZON"
        return kin.get_shard_iterator(StreamName=stream, ShardId=self.shard_id,
                                      ShardIteratorType=kind)["ShardIterator"]

    def _loop(self) -> None:
        st = self.svc.settings
        floor = st.engine_poll_floor_ms / 1000.0
        idle_max = st.engine_poll_idle_max_ms / 1000.0
        hot_s = st.engine_poll_hot_ms / 1000.0
        last_records = float("-inf")
        timeout_s = st.engine_get_timeout_ms / 1000.0
        limit = GetLimit(st.engine_get_limit, timeout_s)
        iterator = self._iterator()
        reader = self.reader
        self.state = ShardState.READING
        self.svc.metrics.set_shard("lease_owned", self.shard_id, 1)
        self.svc.metrics.set_shard("get_limit", self.shard_id, limit.value)
        log.info("event=get_limit shard=%s limit=%d floor=%d read_timeout_ms=%d", self.shard_id, limit.value,
                 limit.floor, st.engine_get_timeout_ms)
        idle = 0
        errors = 0
        while not self.stop_event.is_set():
            if time.monotonic() > self.lease_valid_until:
                raise LeaseLost("lease not renewed in time; stopped matching")
            started = time.monotonic()
            started_ms, asked = self.candles.now_ms(), limit.value
            try:
                resp = reader.get_records(ShardIterator=iterator, Limit=asked)
                errors = 0
            except ReadTimeoutError:
                # the page was too large to be served in time: ask for a smaller one (same iterator)
                was = limit.value
                shrunk = limit.timed_out()
                self.svc.metrics.inc("get_records_timeouts_total")
                self.svc.metrics.set_shard("get_limit", self.shard_id, limit.value)
                log.warning("event=get_records_timeout shard=%s limit=%d next_limit=%d read_timeout_ms=%d",
                            self.shard_id, was, limit.value, st.engine_get_timeout_ms)
                if not shrunk:  # already at the floor: the emulator/stream is overloaded, back off a little
                    self.stop_event.wait(min(1.0, floor * 4))
                continue
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                errors += 1
                log.warning("event=get_records_error shard=%s code=%s attempt=%d", self.shard_id, code, errors)
                self.stop_event.wait(min(2.0, floor * 2 ** min(errors, 6)))
                if code in ("ExpiredIteratorException", "InvalidArgumentException") or errors > 3:
                    self._drain()
                    iterator = self._iterator()
                continue
            except BotoCoreError as exc:
                errors += 1
                log.warning("event=get_records_error shard=%s error=%s attempt=%d", self.shard_id, exc, errors)
                self.stop_event.wait(min(2.0, floor * 2 ** min(errors, 6)))
                continue
            if limit.succeeded(time.monotonic() - started):
                self.svc.metrics.set_shard("get_limit", self.shard_id, limit.value)
                log.info("event=get_limit_raised shard=%s limit=%d", self.shard_id, limit.value)
            records = resp.get("Records") or []
            self.millis_behind = int(resp.get("MillisBehindLatest") or 0)
            self.svc.metrics.set_shard("millis_behind_latest", self.shard_id, self.millis_behind)
            if records:
                self._handle(records)
                idle = 0
                last_records = time.monotonic()
            else:
                idle += 1
            self.candles.read(started_ms, len(records), asked, self.millis_behind)
            self._reap()
            self._maybe_snapshot()
            self._maybe_close_candles()
            self._maybe_rebuild_depth()
            nxt = resp.get("NextShardIterator")
            if nxt is None:
                self._snapshot()
                self.state = ShardState.FINISHED
                log.info("event=shard_closed shard=%s checkpoint=%s", self.shard_id, self.checkpoint)
                return
            iterator = nxt
            # records keep coming or the shard is hot (records within engine_poll_hot_ms): again one
            # floor after this call started; idle longer than that: back off up to the idle maximum
            wait = poll_wait(bool(records), idle, time.monotonic() - last_records < hot_s, floor, idle_max)
            self.stop_event.wait(max(0.0, wait - (time.monotonic() - started)))
        # graceful stop
        self.state = ShardState.STOPPING
        if time.monotonic() <= self.lease_valid_until:
            self._snapshot()
        self.state = ShardState.STOPPED
        log.info("event=shard_stopped shard=%s checkpoint=%s", self.shard_id, self.checkpoint)

    # -- one batch ---------------------------------------------------------------------
    def _process(self, datas: list[bytes]):
        try:
            return self.engine.process(datas)
        except (ValueError, TypeError, UnicodeError, MemoryError, RuntimeError) as exc:
            log.error("event=batch_failed shard=%s records=%d error=%r action=record_by_record",
                      self.shard_id, len(datas), exc)
        merged = _Merged()
        for i, data in enumerate(datas):
            try:
                r = self.engine.process([data])
            except (ValueError, TypeError, UnicodeError, MemoryError, RuntimeError) as exc:
                self.svc.metrics.inc("dropped_records_total")
                log.error("event=record_skipped shard=%s index=%d error=%r record=%.200r",
                          self.shard_id, i, exc, data)
                continue
            merged.fills += r.fills
            merged.statuses += r.statuses
            merged.status_users += r.status_users
            merged.touched.update(r.touched)
        return merged

    @staticmethod
    def _arrival_ms(record: dict) -> int:
        arrival = record.get("ApproximateArrivalTimestamp")
        if isinstance(arrival, (int, float)):
            return int(arrival * 1000)
        if arrival is not None:  # a datetime, from a default botocore client
            return int(arrival.timestamp() * 1000)
        return int(time.time() * 1000)

    def _process_records(self, records: list[dict]):
        """Engine.process over the batch; when some command lacks an integer `ts` (so the engine
        clock shows in its events), over runs of records with the same arrival ms instead, so
        the events do not depend on how GetRecords cut the stream into batches."""
        if all(_TS_OK.search(r["Data"]) for r in records):  # every command has its own ts: one call
            self._batch_clock = self._arrival_ms(records[-1])
            return self._process([r["Data"] for r in records])
        runs: list[tuple[int, int]] = []  # (start index, arrival ms)
        for i, r in enumerate(records):
            ms = self._arrival_ms(r)
            if not runs or runs[-1][1] != ms:
                runs.append((i, ms))
        if len(runs) == 1:
            self._batch_clock = runs[0][1]
            return self._process([r["Data"] for r in records])
        merged = _Merged()
        bounds = [i for i, _ in runs] + [len(records)]
        for (start, ms), end in zip(runs, bounds[1:], strict=True):
            self._batch_clock = ms
            r = self._process([x["Data"] for x in records[start:end]])
            merged.fills += r.fills
            merged.statuses += r.statuses
            merged.status_users += r.status_users
            merged.touched.update(r.touched)
            merged.dropped += [(start + i, why) for i, why in r.dropped]
        return merged

    def _handle(self, records: list[dict]) -> None:
        if self.skip_before_ms is not None:
            k = 0
            while k < len(records) and self._arrival_ms(records[k]) < self.skip_before_ms:
                k += 1
            if k:  # put before the --dev this shard starts after: not ours to match
                self.checkpoint = records[k - 1]["SequenceNumber"]
                self.svc.metrics.inc("dev_skipped_records_total", k)
                records = records[k:]
            if records:
                self.skip_before_ms = None
            if not records:
                return
        if self.replay_until is not None:
            k = 0
            while k < len(records) and int(records[k]["SequenceNumber"]) <= self.replay_until:
                k += 1
            if k:
                self._replay_silently(records[:k])
                records = records[k:]
            if records or k == 0:
                log.info("event=silent_replay_done shard=%s until=%s", self.shard_id, self.replay_until)
                self.replay_until = None
            if not records:
                return
        t0 = time.perf_counter()
        with self.lock:
            res = self._process_records(records)
            depths = {s: self.engine.depth(s, messages.DEPTH_LEVELS) for s in res.touched}
        if res.dropped:
            self.svc.metrics.inc("dropped_records_total", len(res.dropped))
            for idx, why in res.dropped:
                log.warning("event=record_dropped shard=%s seq_number=%s why=%s", self.shard_id,
                            records[idx].get("SequenceNumber"), why)

        trades: dict[str, list] = defaultdict(list)
        fill_items: list[tuple[bytes, str]] = []
        for f in res.fills:
            d = orjson.loads(f)
            trades[d["s"]].append((d["seq"], d["t"], d["p"], d["q"]))
            fill_items.append((f, d["s"]))
        status_items = [(s, u or "-") for s, u in zip(res.statuses, res.status_users, strict=False)]
        debug = log.isEnabledFor(logging.DEBUG)
        for st, _ in status_items:
            if debug or REJECTED_NEEDLE in st:  # bad input is logged; every status with --debug
                ev = orjson.loads(st)
                log.log(logging.DEBUG if ev.get("status") != messages.REJECTED else logging.INFO,
                        "event=order_status shard=%s symbol=%s order=%.64s user=%.64s status=%s reason=%s seq=%s",
                        self.shard_id, ev.get("s"), ev.get("order_id"), ev.get("user_id"), ev.get("status"),
                        ev.get("reason"), ev.get("seq"))

        now_ms = int(time.time() * 1000)
        arrived_ms = self._batch_clock or now_ms
        now_minute = minute_of(arrived_ms)  # where a late trade of a closed minute goes
        # a trade is live when its ts falls among its symbol's records' arrivals (give or take
        # the skew); in a narrow batch (live traffic) the batch's arrivals stand for them
        batch_span = (self._arrival_ms(records[0]), max(arrived_ms, self._arrival_ms(records[-1])))
        spans = self._arrival_spans(records, trades) if batch_span[1] - batch_span[0] > WIDE_BATCH_MS else {}
        updates: list[SymbolUpdate] = []
        for sym, u in res.touched.items():
            d = depths[sym]
            up = SymbolUpdate(sym, u, orjson.dumps(messages.depth_message(sym, now_ms, u, d["b"], d["a"])))
            self.rebuilder.wrote(sym, u, now_ms)
            tr = trades.get(sym)
            if tr:
                for rec in self.ticker.fold(sym, [(t, p, q) for _, t, p, q in tr]):
                    self.svc.write_prev(sym, rec)
                msg = self.ticker.message(sym, tr[-1][1])
                up.ticker_json = orjson.dumps(msg) if msg else b""
                up.trades = [(seq, minute_of(t), p, q) for seq, t, p, q in tr]
                up.now_minute = now_minute
                lo, hi = spans.get(sym, batch_span)
                self.candles.note(sym, up.trades[-1][1], lo - LIVE_SKEW_MS <= tr[-1][1] <= hi + LIVE_SKEW_MS)
            updates.append(up)
        self.svc.write_depth(updates)

        while len(self._inflight) >= MAX_INFLIGHT:
            self._wait_oldest()
        futs: list[Future] = []
        if fill_items:
            futs.append(self._fills_pool.submit(self.svc.fills_publisher.put, fill_items))
        if status_items:
            futs.append(self._status_pool.submit(self.svc.status_publisher.put, status_items))
        self.checkpoint = records[-1]["SequenceNumber"]
        self._inflight.append((self.checkpoint, futs))

        self.records_since_snapshot += len(records)
        m = self.svc.metrics
        m.inc("fills_total", len(res.fills))
        m.inc("statuses_total", len(res.statuses))
        m.observe_batch(time.perf_counter() - t0, len(records))
        m.set_shard("records_since_snapshot", self.shard_id, self.records_since_snapshot)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=batch shard=%s records=%d fills=%d statuses=%d symbols=%s checkpoint=%s",
                      self.shard_id, len(records), len(res.fills), len(res.statuses),
                      ",".join(res.touched), self.checkpoint)

    def _arrival_spans(self, records: list[dict], symbols) -> dict[str, tuple[int, int]]:  # noqa: ANN001
        """(first, last) arrival ms of the records of each traded symbol (partition key = symbol)."""
        spans: dict[str, tuple[int, int]] = {}
        for r in records:
            sym = r.get("PartitionKey")
            if sym in symbols:
                a = self._arrival_ms(r)
                lo, hi = spans.get(sym, (a, a))
                spans[sym] = (min(lo, a), max(hi, a))
        return spans

    def _maybe_close_candles(self) -> None:
        """About once a second: close the candles of minutes the shard has been read past."""
        due = self.candles.due()
        if due is None:
            return
        cutoff, first, live, unknown = due
        left = 0
        if live:
            still_open = self.svc.close_candles(live, cutoff)
            self.candles.checked(live, still_open)
            left += len(still_open)
        if unknown:  # restored: liveness unknown, so only recent candles close
            still_open = self.svc.close_candles(unknown, cutoff, first)
            self.candles.checked(unknown, still_open, first)
            left += len(still_open)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=candles_close_check shard=%s cutoff=%s checked=%d closed=%d", self.shard_id,
                      cutoff, len(live) + len(unknown), len(live) + len(unknown) - left)

    def _maybe_rebuild_depth(self) -> None:
        """About once a second: write back this shard's depth-cache keys that went missing
        (`depth_rebuild`). Not during a silent replay (the book is behind what the previous owner
        wrote), and only while the lease is valid. A Valkey error is logged; the next check retries."""
        if self.replay_until is not None or not self.rebuilder.due(self.svc.valkey_recoveries):
            return
        with self.lock:
            symbols = self.engine.symbols()
        traded = [s for s in symbols if s in self.ticker.days]
        writer = self.svc.depth_writer
        try:
            no_depth, no_ticker, no_candle = writer.missing(symbols, traded)
            if not (no_depth or no_ticker or no_candle) or time.monotonic() > self.lease_valid_until:
                return
            with self.lock:
                updates = self.rebuilder.plan(self.engine, self.ticker, no_depth, no_ticker, no_candle,
                                              int(time.time() * 1000))
            guards = set(no_candle)
            writer.rebuild(updates, guards)
        except redis.RedisError as exc:
            # best effort: any cache error (down, OOM, a key of the wrong type) waits for the
            # next check; it must not fail the shard, which matches on without it
            log.warning("event=depth_check_failed shard=%s error=%s", self.shard_id, exc)
            return
        self.svc.metrics.inc("depth_rebuilt_total", len(updates))
        for up in updates:
            rebuilt = [k for k, done in (("depth", up.depth_json), ("ticker", up.ticker_json),
                                         ("candle_seq", up.symbol in guards)) if done]
            log.info("event=depth_rebuilt shard=%s symbol=%s u=%d keys=%s", self.shard_id, up.symbol, up.u,
                     ",".join(rebuilt))

    def _replay_silently(self, records: list[dict]) -> None:
        """Re-apply records whose effects a previous owner already wrote (up to the emitted
        mark): books and ticker state only, no Kinesis puts, no depth-cache writes."""
        t0 = time.perf_counter()
        with self.lock:
            res = self._process_records(records)
        for f in res.fills:
            d = orjson.loads(f)
            self.ticker.fold(d["s"], [(d["t"], d["p"], d["q"])])
            self.candles.open.setdefault(d["s"], "")  # its candle, written before, may be open
        self.checkpoint = records[-1]["SequenceNumber"]
        self.records_since_snapshot += len(records)
        self.svc.metrics.inc("silent_replay_records_total", len(records))
        self.svc.metrics.observe_batch(time.perf_counter() - t0, len(records))

    def _wait_oldest(self) -> None:
        seq, futs = self._inflight[0]
        for fut in futs:
            # PublishError propagates and the batch stays queued, unacknowledged: every later
            # drain fails on it again, so no snapshot or emitted mark can ever claim it (or any
            # batch after it) -- a restart re-reads and re-publishes from the last snapshot
            fut.result()
        self._inflight.popleft()
        self.emitted = seq

    def _reap(self) -> None:
        """Acknowledge finished batches; advance the emitted mark in the backup cache."""
        while self._inflight and all(f.done() for f in self._inflight[0][1]):
            self._wait_oldest()
        if self.emitted is not None and self.emitted != self._emitted_saved:
            self.svc.save_emitted(self.shard_id, self.emitted)
            self._emitted_saved = self.emitted

    def _drain(self) -> None:
        while self._inflight:
            self._wait_oldest()
        self._reap()

    # -- snapshots -----------------------------------------------------------------------
    def _maybe_snapshot(self) -> None:
        st = self.svc.settings
        age = time.monotonic() - self.last_snapshot_mono
        if self.last_snapshot_wall:
            self.svc.metrics.set_shard("snapshot_age_seconds", self.shard_id,
                                       round(time.time() - self.last_snapshot_wall, 3))
        if self.records_since_snapshot and (
            self.records_since_snapshot >= st.engine_snapshot_records
            or age >= st.engine_snapshot_seconds
            or self.snapshot_missing_seq
        ):
            self._snapshot()

    def _snapshot(self) -> None:
        try:
            self._drain()
        except PublishError as exc:
            log.warning("event=snapshot_skipped shard=%s reason=unpublished detail=%s", self.shard_id, exc)
            return
        with self.lock:
            data = self.engine.snapshot()
            ticker_state = self.ticker.to_state()
            books = [(sym, self.engine.last_seq(sym), self.engine.depth(sym, VIEW_LEVELS))
                     for sym in self.engine.symbols()]
        snap = Snapshot(shard_id=self.shard_id, seq=self.checkpoint, start=self.start_type, engine=data,
                        ticker=ticker_state, records=self.records_since_snapshot, writer=self.svc.engine_id)
        t0 = time.perf_counter()
        size = self.svc.snapshots.save(snap, self.svc.leases.token)
        try:
            self.svc.snapshots.save_views([
                {"s": sym, "u": seq, "t": snap.written_ms, "stream": self.svc.snapshots.stream,
                 "shard": self.shard_id, "checkpoint": self.checkpoint,
                 "snapshot": self.svc.snapshots.key(self.shard_id), "b": d["b"], "a": d["a"]}
                for sym, seq, d in books])
        except SnapshotError as exc:  # the restorable shard snapshot is written; views catch up next time
            log.warning("event=snapshot_views_failed shard=%s error=%s", self.shard_id, exc)
        self.records_since_snapshot = 0
        self.snapshot_missing_seq = self.checkpoint is None
        self.last_snapshot_mono = time.monotonic()
        self.last_snapshot_wall = time.time()
        self.svc.metrics.inc("snapshots_total")
        self.svc.metrics.set_shard("snapshot_age_seconds", self.shard_id, 0)
        self.svc.metrics.set_shard("records_since_snapshot", self.shard_id, 0)
        log.info("event=snapshot shard=%s checkpoint=%s bytes=%d ms=%.1f", self.shard_id, self.checkpoint,
                 size, (time.perf_counter() - t0) * 1000)

