"""Puts engine events on a Kinesis stream with PutRecords, reliably and in per-key order.

Records go out in chunks of at most 500 records / 5 MiB, one chunk at a time: a chunk is
finished (every record acknowledged) before the next is sent, so a later record never
overtakes an earlier one across chunks. Within a chunk, only the records that failed are
retried, in their original order, with exponential backoff (ThrottlingException-style
errors on the whole call are retried the same way). Kinesis may still have accepted a
later record of the same key in the same call as a failed one; that case is counted
(`publish_reordered_total`) and logged — consumers order by the engine `seq` anyway
(docs/engine_service.md).

A record Kinesis can never accept must not block the shard (retrying it forever would):
a partition key that is empty or longer than 256 characters (a status's key is its user id,
which a malformed command may carry at any length) is replaced by a digest of itself, so the
status still goes out and one user's statuses still share a key; a record over 1 MiB is
dropped, logged and counted (`publish_dropped_total`). A call refused as a whole for another
non-retryable reason is halved until the record at fault is found and dropped.

    PublishError   raised only when the service is stopping while records are unsent
"""

from __future__ import annotations

import hashlib
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
MAX_KEY_CHARS = 256
#: errors that no retry can fix (the request itself is refused)
NOT_RETRYABLE = frozenset({"ValidationException", "InvalidArgumentException", "SerializationException"})


def safe_key(key: str) -> str:
    """`key`, or a digest of it when Kinesis would refuse it (empty, or over 256 characters)."""
    if 0 < len(key) <= MAX_KEY_CHARS:
        return key
    return "~" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


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
        sendable = []
        for data, key in items:
            key = safe_key(key)
            if too_big(data, key):
                self._drop(data, key, "record over 1 MiB")
            else:
                sendable.append((data, key))
        for chunk in chunks(sendable):
            self._put_chunk(chunk)

    def _drop(self, data: bytes, key: str, why: str) -> None:
        self.metrics.inc("publish_dropped_total")
        log.error("event=publish_dropped stream=%s key=%.64s bytes=%d why=%s data=%.200r",
                  self.stream, key, len(data), why, data[:200])

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
                if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in NOT_RETRYABLE:
                    self._isolate(pending, exc)
                    return
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


    def _isolate(self, pending: list[tuple[bytes, str]], exc: ClientError) -> None:
        """The call was refused as a whole: send each half on its own, in order, down to the
        single record at fault, which is dropped."""
        if len(pending) == 1:
            self._drop(*pending[0], f"refused: {exc}")
            return
        half = len(pending) // 2
        self._put_chunk(pending[:half])
        self._put_chunk(pending[half:])


def too_big(data: bytes, key: str = "") -> bool:
    """Kinesis's limit is on the data blob plus the partition key."""
    return len(data) + len(key.encode()) > MAX_RECORD_BYTES
