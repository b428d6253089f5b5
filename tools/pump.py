"""Local event pump: Kinesis event source mappings and schedules for a Chalice app (SPEC §11).

`chalice local` serves REST only. The pump gives the app's other triggers a local life:

- every `@app.on_kinesis_record` handler gets what a Lambda event source mapping gives
  it: each shard of its stream is read in order (one reader per shard, as Lambda keeps
  one batch in flight per shard), with the decorator's `batch_size`, `starting_position`
  and `maximum_batching_window_in_seconds`; the handler receives a Kinesis-shaped event
  (`Records[].kinesis.data` base64, `sequenceNumber`, `partitionKey`,
  `approximateArrivalTimestamp`, `eventID`, `eventSourceARN`, ...). A handler that raises
  gets the SAME batch again, with exponential backoff, until it succeeds (Lambda's default
  of unlimited retries; `max_retries` caps it, after which the batch is written to
  `<data>/pump/failed/<handler>.jsonl`, like an on-failure destination). After each
  successful batch the shard's position is checkpointed in `<data>/pump/checkpoints.json`,
  so a restart continues after it instead of replaying (a stream that was recreated is
  detected by its creation time and starts afresh).
- every `@app.schedule` fires at its rate (`Rate`, `rate(...)`) or on its cron expression
  (`Cron`, `cron(...)`, UTC, AWS's six fields), with a CloudWatch scheduled event.
- `invoke(name)` fires one schedule at once; `python -m tools.pump invoke NAME`
  (`make invoke NAME=trades_backup`) asks the running local stack (its control endpoint,
  named in `<data>/run/stack.json`) to do it in its pump, and prints the handler's result.

    python -m tools.pump list|invoke NAME [--data-dir .local]

Errors::

    PumpError
     ├── UnknownHandler       no schedule (or handler) of that name
     ├── UnsupportedSchedule  a cron feature the pump does not evaluate (L, W, #)
     └── StackNotRunning      `invoke` found no running stack on that data folder
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import Cron, KinesisEventConfig, Rate, ScheduledEventConfig

from chalice_app.config import Settings
from chalice_app.logs import setup_logging
from tools.gateway import LambdaContext

log = logging.getLogger("supernoba.pump")

ACCOUNT = "000000000000"
DISCOVERY_SECONDS = 5.0


class PumpError(RuntimeError):
    """The pump cannot do what was asked."""


class UnknownHandler(PumpError):
    """No handler of that name."""


class UnsupportedSchedule(PumpError):
    """A schedule expression the pump cannot evaluate."""


class StackNotRunning(PumpError):
    """`invoke` was asked for, but no local stack is running on that data folder."""


# --------------------------------------------------------------------- schedules
_RATE_RE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)", re.I)
_CRON_RE = re.compile(r"cron\((.*)\)", re.I)
_UNIT_SECONDS = {"MINUTE": 60, "HOUR": 3600, "DAY": 86400}
_MONTHS = {m: i for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1)}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], start=1)}


def _cron_field(text: str, lo: int, hi: int, names: dict[str, int] | None = None) -> set[int] | None:
    """Values of one cron field; None means "any" (`*` or `?`)."""
    text = text.strip().upper()
    if text in ("*", "?"):
        return None
    if any(c in text for c in "LW#"):
        raise UnsupportedSchedule(f"cron field {text!r}: L, W and # are not supported locally")
    names = names or {}

    def num(tok: str) -> int:
        value = names.get(tok)
        return value if value is not None else int(tok)

    out: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_s = part.split("/", 1)
            step = int(step_s)
        if part in ("*", ""):
            start, end = lo, hi
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = num(a), num(b)
        else:
            start = num(part)
            end = hi if step != 1 else start
        if not (lo <= start <= hi and lo <= end <= hi) or step < 1:
            raise UnsupportedSchedule(f"cron field {text!r} is out of range {lo}-{hi}")
        out.update(range(start, end + 1, step))
    return out


@dataclass(frozen=True)
class CronSpec:
    minutes: set[int] | None
    hours: set[int] | None
    days: set[int] | None
    months: set[int] | None
    weekdays: set[int] | None  # AWS numbering: 1 = SUN ... 7 = SAT
    years: set[int] | None

    @classmethod
    def parse(cls, fields: Iterable[Any]) -> CronSpec:
        parts = [str(f) for f in fields]
        if len(parts) != 6:
            raise UnsupportedSchedule(f"cron needs 6 fields, got {len(parts)}: {' '.join(parts)}")
        return cls(
            _cron_field(parts[0], 0, 59), _cron_field(parts[1], 0, 23), _cron_field(parts[2], 1, 31),
            _cron_field(parts[3], 1, 12, _MONTHS), _cron_field(parts[4], 1, 7, _DAYS),
            _cron_field(parts[5], 1970, 2199),
        )

    def _day_ok(self, d: datetime) -> bool:
        aws_dow = (d.weekday() + 1) % 7 + 1
        return ((self.years is None or d.year in self.years) and (self.months is None or d.month in self.months)
                and (self.days is None or d.day in self.days)
                and (self.weekdays is None or aws_dow in self.weekdays))

    def next_after(self, after: datetime) -> datetime | None:
        t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(366 * 3):
            if self._day_ok(t):
                while True:
                    if (self.hours is None or t.hour in self.hours) and (self.minutes is None or t.minute in self.minutes):
                        return t
                    nxt = t + timedelta(minutes=1)
                    if nxt.day != t.day:
                        t = nxt
                        break
                    t = nxt
            else:
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
        return None


@dataclass
class Schedule:
    """When one `@app.schedule` fires: every `period` seconds, or on `cron`."""

    name: str
    expression: str
    period: float | None = None
    cron: CronSpec | None = None

    @classmethod
    def from_expression(cls, name: str, expr: Any) -> Schedule:
        if isinstance(expr, Rate):
            unit = expr.unit.rstrip("S").upper()
            return cls(name, expr.to_string(), period=float(expr.value * _UNIT_SECONDS[unit]))
        if isinstance(expr, Cron):
            return cls(name, expr.to_string(), cron=CronSpec.parse(
                [expr.minutes, expr.hours, expr.day_of_month, expr.month, expr.day_of_week, expr.year]))
        text = str(expr).strip()
        m = _RATE_RE.fullmatch(text)
        if m:
            unit = m.group(2).upper().rstrip("S")
            return cls(name, text, period=float(int(m.group(1)) * _UNIT_SECONDS[unit]))
        m = _CRON_RE.fullmatch(text)
        if m:
            return cls(name, text, cron=CronSpec.parse(m.group(1).split()))
        raise UnsupportedSchedule(f"schedule {name}: cannot parse {text!r}")

    def next_fire(self, after: float) -> float | None:
        """Epoch seconds of the next firing strictly after `after`."""
        if self.period is not None:
            return after + self.period
        assert self.cron is not None
        nxt = self.cron.next_after(datetime.fromtimestamp(after, tz=UTC))
        return nxt.timestamp() if nxt else None


def scheduled_event(name: str, region: str, when: float | None = None) -> dict[str, Any]:
    """The CloudWatch/EventBridge event a scheduled Lambda receives."""
    when = time.time() if when is None else when
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT}:rule/{name}"],
        "detail": {},
    }


# --------------------------------------------------------------------- checkpoints
class CheckpointStore:
    """Last processed sequence number per handler and shard, in one JSON file (or memory)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            try:
                self._data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("event=checkpoint_unreadable path=%s error=%s; starting from each trigger's "
                            "starting position", path, exc)
                self._data = {}

    def shards(self, source: str, stream: str, created: float) -> dict[str, str]:
        with self._lock:
            entry = self._data.get(source)
            if not entry or entry.get("stream") != stream or entry.get("created") != created:
                if entry:
                    log.info("event=checkpoint_discarded source=%s stream=%s reason=stream_changed", source, stream)
                self._data[source] = {"stream": stream, "created": created, "shards": {}}
                return {}
            return dict(entry.get("shards", {}))

    def save(self, source: str, shard_id: str, sequence: str) -> None:
        with self._lock:
            self._data.setdefault(source, {"shards": {}}).setdefault("shards", {})[shard_id] = sequence
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


# --------------------------------------------------------------------- the pump
def kinesis_event(records: list[dict[str, Any]], shard_id: str, stream_arn: str, region: str) -> dict[str, Any]:
    """A Lambda Kinesis event for records as GetRecords returned them."""
    out = []
    for r in records:
        arrival = r.get("ApproximateArrivalTimestamp")
        out.append({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": r["PartitionKey"],
                "sequenceNumber": r["SequenceNumber"],
                "data": base64.b64encode(r["Data"]).decode(),
                "approximateArrivalTimestamp": arrival.timestamp() if arrival is not None else time.time(),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{r['SequenceNumber']}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/supernoba-local",
            "awsRegion": region,
            "eventSourceARN": stream_arn,
        })
    return {"Records": out}


@dataclass
class _Source:
    config: KinesisEventConfig
    handler: Callable[..., Any]
    arn: str = ""
    created: float = 0.0
    readers: dict[str, threading.Thread] = field(default_factory=dict)


class Pump:
    """Feeds a Chalice app's Kinesis triggers and fires its schedules, in background threads."""

    def __init__(
        self,
        app: Any,
        *,
        data_dir: Path | None = None,
        session: boto3.Session | None = None,
        region: str | None = None,
        idle_sleep: float = 0.05,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_retries: int = -1,
        run_schedules: bool = True,
    ) -> None:
        self.app = app
        self.region = region or Settings.from_env().aws_region
        self.session = session or boto3.Session(region_name=self.region)
        self.data_dir = data_dir
        self.idle_sleep = idle_sleep
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_retries = max_retries
        self.run_schedules = run_schedules
        self.checkpoints = CheckpointStore(data_dir / "pump" / "checkpoints.json" if data_dir else None)
        self._kinesis = self.session.client("kinesis")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counters: Counter[str] = Counter()
        self._counter_lock = threading.Lock()
        self._running: set[str] = set()
        self._sources: list[_Source] = []
        self.schedules: dict[str, Schedule] = {}
        for cfg in getattr(app, "event_sources", []):
            if isinstance(cfg, KinesisEventConfig):
                self._sources.append(_Source(cfg, app.handler_map[cfg.name]))
            elif isinstance(cfg, ScheduledEventConfig):
                try:
                    self.schedules[cfg.name] = Schedule.from_expression(cfg.name, cfg.schedule_expression)
                except UnsupportedSchedule as exc:
                    log.warning("event=schedule_unsupported name=%s error=%s (invoke it by hand)", cfg.name, exc)

    # ----------------------------------------------------------------- public surface
    def start(self) -> Pump:
        """Position a reader on every shard (synchronously, so LATEST means "from now"), then run."""
        for src in self._sources:
            self._discover(src)
            t = threading.Thread(target=self._discovery_loop, args=(src,), name=f"pump-discover-{src.config.name}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        if self.run_schedules and self.schedules:
            t = threading.Thread(target=self._schedule_loop, name="pump-schedules", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("event=pump_started kinesis=%s schedules=%s",
                 ",".join(f"{s.config.name}<-{s.config.stream}" for s in self._sources),
                 ",".join(f"{n}:{s.expression}" for n, s in self.schedules.items()))
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for src in self._sources:
            for t in list(src.readers.values()):
                t.join(max(0.0, deadline - time.monotonic()))
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        log.info("event=pump_stopped counters=%s", dict(self._counters))

    def stats(self) -> dict[str, int]:
        with self._counter_lock:
            return dict(self._counters)

    def invoke(self, name: str) -> Any:
        """Fire one schedule now, in the caller's thread; returns what the handler returned."""
        if name not in self.handler_names("schedule"):
            raise UnknownHandler(f"no schedule named {name!r}; schedules: {', '.join(self.handler_names('schedule'))}")
        return self._fire(name)

    def handler_names(self, kind: str = "schedule") -> list[str]:
        cls = ScheduledEventConfig if kind == "schedule" else KinesisEventConfig
        return [c.name for c in getattr(self.app, "event_sources", []) if isinstance(c, cls)]

    def __enter__(self) -> Pump:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- counters
    def _count(self, key: str, n: int = 1) -> None:
        with self._counter_lock:
            self._counters[key] += n

    # ----------------------------------------------------------------- Kinesis
    def _discover(self, src: _Source) -> None:
        """Start a reader on every shard not yet read (at start, and on resharding)."""
        stream = src.config.stream
        try:
            summary = self._kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
            shards = []
            kwargs: dict[str, Any] = {"StreamName": stream}
            while True:
                resp = self._kinesis.list_shards(**kwargs)
                shards += resp["Shards"]
                if not resp.get("NextToken"):
                    break
                kwargs = {"NextToken": resp["NextToken"]}
        except (ClientError, BotoCoreError) as exc:
            log.warning("event=stream_unavailable source=%s stream=%s error=%s", src.config.name, stream, exc)
            return
        first = not src.arn
        src.arn = summary["StreamARN"]
        created = summary["StreamCreationTimestamp"].timestamp()
        if first or created != src.created:
            src.created = created
            saved = self.checkpoints.shards(src.config.name, stream, created)
        else:
            saved = {}
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in src.readers:
                continue
            if shard_id in saved:
                start = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": saved[shard_id]}
            elif first:
                start = {"ShardIteratorType": src.config.starting_position}
            else:  # a shard born after we started (resharding): read it from its beginning
                start = {"ShardIteratorType": "TRIM_HORIZON"}
            iterator = self._iterator(src, shard_id, start)
            if iterator is None:
                continue
            t = threading.Thread(target=self._read_shard, args=(src, shard_id, iterator),
                                 name=f"pump-{src.config.name}-{shard_id}", daemon=True)
            src.readers[shard_id] = t
            t.start()
            log.info("event=shard_reader_started source=%s stream=%s shard=%s from=%s",
                     src.config.name, stream, shard_id, start["ShardIteratorType"])

    def _iterator(self, src: _Source, shard_id: str, start: dict[str, str]) -> str | None:
        try:
            return self._kinesis.get_shard_iterator(StreamName=src.config.stream, ShardId=shard_id, **start)[
                "ShardIterator"]
        except ClientError as exc:
            if start["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER":
                log.warning("event=checkpoint_invalid source=%s shard=%s error=%s; using %s",
                            src.config.name, shard_id, exc, src.config.starting_position)
                return self._iterator(src, shard_id, {"ShardIteratorType": src.config.starting_position})
            log.error("event=iterator_failed source=%s shard=%s error=%s", src.config.name, shard_id, exc)
            return None

    def _discovery_loop(self, src: _Source) -> None:
        while not self._stop.wait(DISCOVERY_SECONDS):
            self._discover(src)

    def _read_shard(self, src: _Source, shard_id: str, iterator: str) -> None:
        cfg = src.config
        last_seq: str | None = None
        backoff = self.initial_backoff
        while not self._stop.is_set():
            try:
                records, iterator = self._next_batch(cfg, iterator)
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                if code == "ExpiredIteratorException":
                    start = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": last_seq}
                             if last_seq else {"ShardIteratorType": cfg.starting_position})
                    iterator = self._iterator(src, shard_id, start)
                    if iterator is None:
                        return
                    continue
                log.warning("event=get_records_failed source=%s shard=%s code=%s", cfg.name, shard_id, code)
                self._stop.wait(backoff)
                backoff = min(self.max_backoff, backoff * 2)
                continue
            except BotoCoreError as exc:
                log.warning("event=get_records_failed source=%s shard=%s error=%s", cfg.name, shard_id, exc)
                self._stop.wait(backoff)
                backoff = min(self.max_backoff, backoff * 2)
                continue
            backoff = self.initial_backoff
            if records:
                if not self._deliver(src, shard_id, records):
                    return  # stopping in the middle of retries: the batch is read again next start
                last_seq = records[-1]["SequenceNumber"]
                self.checkpoints.save(cfg.name, shard_id, last_seq)
            if iterator is None:
                log.info("event=shard_closed source=%s shard=%s", cfg.name, shard_id)
                return
            if not records:
                self._stop.wait(self.idle_sleep)

    def _next_batch(self, cfg: KinesisEventConfig, iterator: str) -> tuple[list[dict[str, Any]], str | None]:
        """Up to batch_size records; waits up to the batching window to fill a batch."""
        window = float(cfg.maximum_batching_window_in_seconds or 0)
        deadline = time.monotonic() + window
        records: list[dict[str, Any]] = []
        next_it: str | None = iterator
        while next_it is not None:
            resp = self._kinesis.get_records(ShardIterator=next_it, Limit=cfg.batch_size - len(records))
            records += resp["Records"]
            next_it = resp.get("NextShardIterator")
            if len(records) >= cfg.batch_size or time.monotonic() >= deadline or self._stop.is_set():
                break
            if not resp["Records"]:
                self._stop.wait(min(self.idle_sleep, max(0.0, deadline - time.monotonic())))
        return records, next_it

    def _deliver(self, src: _Source, shard_id: str, records: list[dict[str, Any]]) -> bool:
        """Invoke the handler until it accepts the batch; False if stopped before that."""
        cfg = src.config
        event = kinesis_event(records, shard_id, src.arn, self.region)
        attempt = 0
        backoff = self.initial_backoff
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                src.handler(event, LambdaContext(cfg.name))
            except Exception:  # a failing Lambda: retried with the same batch, as a mapping does
                attempt += 1
                self._count(f"{cfg.name}.errors")
                log.exception("event=handler_error source=%s shard=%s records=%d first_seq=%s attempt=%d",
                              cfg.name, shard_id, len(records), records[0]["SequenceNumber"], attempt)
                if 0 <= self.max_retries < attempt:
                    self._dead_letter(cfg.name, shard_id, event)
                    return True
                self._stop.wait(backoff)
                backoff = min(self.max_backoff, backoff * 2)
                continue
            self._count(f"{cfg.name}.batches")
            self._count(f"{cfg.name}.records", len(records))
            log.debug("event=batch_done source=%s shard=%s records=%d ms=%.1f", cfg.name, shard_id, len(records),
                      (time.perf_counter() - started) * 1000)
            return True
        return False

    def _dead_letter(self, name: str, shard_id: str, event: dict[str, Any]) -> None:
        self._count(f"{name}.dead_lettered", len(event["Records"]))
        log.error("event=batch_dropped source=%s shard=%s records=%d after=%d retries", name, shard_id,
                  len(event["Records"]), self.max_retries)
        if self.data_dir is None:
            return
        path = self.data_dir / "pump" / "failed" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps({"shard": shard_id, "event": event}) + "\n")

    # ----------------------------------------------------------------- schedules
    def _fire(self, name: str) -> Any:
        handler = self.app.handler_map[name]
        started = time.perf_counter()
        try:
            result = handler(scheduled_event(name, self.region), LambdaContext(name, timeout_ms=900_000))
        except Exception:
            self._count(f"{name}.errors")
            log.exception("event=schedule_error name=%s", name)
            raise
        self._count(f"{name}.fired")
        log.info("event=schedule_fired name=%s ms=%.1f", name, (time.perf_counter() - started) * 1000)
        return result

    def _fire_in_background(self, name: str) -> None:
        if name in self._running:
            self._count(f"{name}.skipped")
            log.warning("event=schedule_skipped name=%s reason=previous_run_still_running", name)
            return
        self._running.add(name)

        def run() -> None:
            try:
                self._fire(name)
            except Exception:  # already logged and counted by _fire; the scheduler lives on
                pass
            finally:
                self._running.discard(name)

        threading.Thread(target=run, name=f"pump-schedule-{name}", daemon=True).start()

    def _schedule_loop(self) -> None:
        now = time.time()
        due = {n: s.next_fire(now) for n, s in self.schedules.items()}
        while not self._stop.is_set():
            pending = {n: t for n, t in due.items() if t is not None}
            if not pending:
                return
            name = min(pending, key=lambda n: pending[n])
            if self._stop.wait(max(0.0, pending[name] - time.time())):
                return
            self._fire_in_background(name)
            due[name] = self.schedules[name].next_fire(max(time.time(), pending[name]))


# --------------------------------------------------------------------- command line
def _stack_info(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "run" / "stack.json"
    if not path.exists():
        raise StackNotRunning(f"no running local stack found ({path} is missing); start it with `make dev`")
    info = json.loads(path.read_text())
    pid = info.get("pid")
    if pid:
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError) as exc:
            raise StackNotRunning(f"the local stack (pid {pid}) is not running; start it with `make dev`") from exc
        except PermissionError:
            pass
    return info


def invoke_running(data_dir: Path, name: str, timeout: float = 900.0) -> dict[str, Any]:
    """Ask the running stack of `data_dir` to fire schedule `name` in its pump; its answer."""
    import urllib.error
    import urllib.request

    info = _stack_info(data_dir)
    url = (info.get("urls") or {}).get("control")
    if not url:
        raise StackNotRunning("the running stack has no control endpoint (started by an older tools/dev.py)")
    req = urllib.request.Request(f"{url}/invoke/{name}", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        if exc.code == 404:
            raise UnknownHandler(body.get("error", f"no schedule named {name!r}")) from exc
        raise PumpError(f"{name} failed: {body.get('error')} (traceback in the stack's pump.log)") from exc
    except urllib.error.URLError as exc:
        raise StackNotRunning(f"the local stack does not answer at {url}: {exc.reason}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.pump",
        description="Fire or list the Chalice app's schedules and Kinesis triggers of the running local stack.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SUPERNOBA_DATA_DIR", ".local")),
                        help="the local stack's data folder (default .local)")
    parser.add_argument("--stage", default="local", help="Chalice stage whose environment applies (default local)")
    sub = parser.add_subparsers(dest="command", required=True)
    inv = sub.add_parser("invoke", help="fire one schedule now in the running stack's pump (e.g. trades_backup)")
    inv.add_argument("name")
    sub.add_parser("list", help="list the app's schedules and Kinesis triggers")
    args = parser.parse_args(argv)
    setup_logging(logging.WARNING)
    if args.command == "invoke":
        try:
            answer = invoke_running(args.data_dir.resolve(), args.name)
        except (UnknownHandler, StackNotRunning) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except PumpError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(answer, default=str))
        return 0
    from tools.dev import load_app

    app = load_app(args.stage)
    for cfg in app.event_sources:
        if isinstance(cfg, ScheduledEventConfig):
            expr = cfg.schedule_expression
            print(f"schedule  {cfg.name:32} {expr.to_string() if hasattr(expr, 'to_string') else expr}")
        elif isinstance(cfg, KinesisEventConfig):
            print(f"kinesis   {cfg.name:32} {cfg.stream} batch={cfg.batch_size} from={cfg.starting_position}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
