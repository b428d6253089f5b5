"""Puts engine events on a Kinesis stream with PutRecords, reliably and in per-key order.

Records go out in chunks of at most 500 records / 5 MiB, one chunk at a time: a chunk is
finished (every record acknowledged) before the next is sent, so a later record never
overtakes an earlier one across chunks. Within a chunk, only the records that failed are
retried, in their original order, with exponential backoff (ThrottlingException-style
errors on the whole call are retried the same way). Kinesis may still have accepted a
later record of the same key in the same call as a failed one; that case is counted
(`publish_reordered_total`) and logged — consumers order by the engine `seq` anyway
(docs/engine_service.md).

    PublishError   raised only when the service is stopping while records are unsent
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError

from engine_pkg.service.errors import PublishError
from engine_pkg.service.metrics import Metrics

log = logging.getLogger("supernoba.engine.publisher")

MAX_RECORDS = 500
MAX_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024


def chunks(items: Sequence[tuple[bytes, str]]) -> list[list[tuple[bytes, str]]]:
    """Split `(data, key)` pairs into PutRecords-sized chunks, keeping their order."""
    out: list[list[tuple[bytes, str]]] = []
    cur: list[tuple[bytes, str]] = []
    size = 0
    for data, key in items:
        n = len(data) + len(key.encode())
        if cur and (len(cur) >= MAX_RECORDS or size + n > MAX_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append((data, key))
        size += n
    if cur:
        out.append(cur)
    return out


class Publisher:
    """PutRecords to one stream. Blocks until every record is in, or the service stops."""

    def __init__(self, kinesis, stream: str, *, metrics: Metrics | None = None,
                 stop: threading.Event | None = None, base_delay: float = 0.05, max_delay: float = 2.0) -> None:
        self.kinesis = kinesis
        self.stream = stream
        self.metrics = metrics or Metrics()
        self.stop = stop or threading.Event()
        self.base_delay = base_delay
        self.max_delay = max_delay

    def put(self, items: Sequence[tuple[bytes, str]]) -> None:
        for chunk in chunks(items):
            self._put_chunk(chunk)

    def _backoff(self, attempt: int) -> None:
        delay = min(self.max_delay, self.base_delay * (2 ** min(attempt, 10)))
        if self.stop.wait(delay) and attempt > 3:
            raise PublishError(f"stream={self.stream} stopping with unsent records")

    def _put_chunk(self, pending: list[tuple[bytes, str]]) -> None:
        attempt = 0
        while pending:
            try:
                resp = self.kinesis.put_records(
                    StreamName=self.stream,
                    Records=[{"Data": d, "PartitionKey": k} for d, k in pending],
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("event=put_records_error stream=%s records=%d attempt=%d error=%s",
                            self.stream, len(pending), attempt, exc)
                self.metrics.inc("publish_retries_total", len(pending))
                self._backoff(attempt)
                attempt += 1
                continue
            if not resp.get("FailedRecordCount"):
                return
            failed: list[tuple[bytes, str]] = []
            failed_keys: set[str] = set()
            reordered = 0
            for item, result in zip(pending, resp["Records"], strict=True):
                if "ErrorCode" in result:
                    failed.append(item)
                    failed_keys.add(item[1])
                elif item[1] in failed_keys:
                    reordered += 1
            if reordered:
                self.metrics.inc("publish_reordered_total", reordered)
                log.warning("event=put_records_reordered stream=%s records=%d", self.stream, reordered)
            log.info("event=put_records_partial stream=%s failed=%d of=%d attempt=%d",
                     self.stream, len(failed), len(pending), attempt)
            self.metrics.inc("publish_retries_total", len(failed))
            pending = failed
            self._backoff(attempt)
            attempt += 1


def too_big(data: bytes) -> bool:
    return len(data) > MAX_RECORD_BYTES
