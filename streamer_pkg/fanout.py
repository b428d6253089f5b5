"""Fan-out: deliver queued messages to many connections, fast, in order, isolated from each other.

Model: each connection has its own small outbox (`_Outbox`); a connection with something
to send sits once in a ready queue; `concurrency` worker tasks take a connection, send
the head of its outbox, and put it back at the tail if more is waiting. So

- per-connection order is preserved (a connection is in flight at most once);
- one slow connection holds at most one worker: after a send slower than `slow_after`
  (or a timeout) it is moved to a small *slow lane* with its own workers, so even many
  never-reading clients cannot take the fast lane's workers;
- outboxes are bounded: a newer message with the same coalescing key (`depth:SYM`,
  `candle:SYM`, `ticker:SYM`, per tier) replaces the pending older one in place (one shared
  cell per key, see `submit_many`: O(1) for connections that still wait), so a lagging
  client gets the latest state, not a backlog; `candle_close` is never coalesced.

Outcomes of one send (see transport.py): success; `ConnectionGone` → the transport already
ran the shared cleanup, the outbox is dropped and the id ignored for a while;
`RetryableError` → the message stays at the head, retried after exponential backoff
(`retries` times, then dropped and counted); `PermanentError` → dropped and counted.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from streamer_pkg.metrics import Metrics
from streamer_pkg.transport import ConnectionGone, PermanentError, RetryableError, Transport, TransportError

log = logging.getLogger("supernoba.streamer.fanout")

#: Messages kept per connection beyond the coalesced ones (candle_close backlog).
MAX_OUTBOX = 64
GONE_MEMORY_SECONDS = 60.0


class Lane(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


class _Outbox:
    __slots__ = ("items", "lane", "queued", "attempt", "seq", "slow_since")

    def __init__(self) -> None:
        # key -> (data, born), or None for a coalescing key whose data is in Fanout._cells
        self.items: OrderedDict[object, tuple[bytes, float] | None] = OrderedDict()
        self.lane = Lane.FAST
        self.queued = False  # in a ready queue, in flight, or waiting for a retry
        self.attempt = 0
        self.seq = 0
        self.slow_since = 0.0


class Fanout:
    """Bounded-concurrency sender; `submit()` is cheap and never blocks."""

    def __init__(
        self,
        transport: Transport,
        metrics: Metrics,
        *,
        concurrency: int = 64,
        slow_concurrency: int = 8,
        slow_after: float = 0.25,
        retries: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.metrics = metrics
        self.concurrency = concurrency
        self.slow_concurrency = slow_concurrency
        self.slow_after = slow_after
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.clock = clock
        self._boxes: dict[str, _Outbox] = {}
        self._ready: dict[Lane, deque[str]] = {Lane.FAST: deque(), Lane.SLOW: deque()}
        self._wake: dict[Lane, asyncio.Event] = {}
        self._gone: dict[str, float] = {}
        self._tasks: list[asyncio.Task] = []
        self._uniq = 0
        self._pending = 0  # messages in all outboxes (kept, not counted: read every tick)
        self._cells: dict[object, tuple[bytes, float]] = {}  # coalescing key -> latest (data, born)
        # coalescing key -> ids whose outbox holds it: a tick re-sending a key to thousands of
        # lagging connections skips them with one C-level set difference, not a loop over all
        self._holding: dict[object, set[str]] = {}

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        self._wake = {Lane.FAST: asyncio.Event(), Lane.SLOW: asyncio.Event()}
        for lane, n in ((Lane.FAST, self.concurrency), (Lane.SLOW, self.slow_concurrency)):
            for i in range(n):
                self._tasks.append(asyncio.create_task(self._worker(lane), name=f"fanout-{lane.value}-{i}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- producer side -------------------------------------------------------
    def is_gone(self, conn_id: str) -> bool:
        at = self._gone.get(conn_id)
        if at is None:
            return False
        if self.clock() - at > GONE_MEMORY_SECONDS:
            del self._gone[conn_id]
            return False
        return True

    def submit(self, conn_id: str, key: object | None, data: bytes, born: float = 0.0) -> None:
        """Queue `data` for one connection (see `submit_many`)."""
        self.submit_many((conn_id,), key, data, born)

    def submit_many(self, conn_ids: Iterable[str], key: object | None, data: bytes, born: float = 0.0) -> None:
        """Queue `data` for every connection of `conn_ids`. `born` (epoch s of the data's
        origin) feeds push lag. `key=None` never coalesces (one entry per connection).

        A coalescing `key` has ONE shared cell holding its latest data: an outbox only holds
        the key, and a send reads the cell. So a newer message for connections that still
        have the key pending costs one dict write, not one per connection, and a message
        that became stale in an outbox is never sent."""
        entry = (data, born)
        boxes = self._boxes
        gone = self._gone
        if key is not None:
            self._cells[key] = entry
        coalesced = added = 0
        holding: set[str] | None = None
        if key is not None:
            holding = self._holding.get(key)
            if holding is None:
                holding = self._holding[key] = set()
            elif holding:
                if not isinstance(conn_ids, set | frozenset):
                    conn_ids = frozenset(conn_ids)
                todo = conn_ids - holding
                coalesced = len(conn_ids) - len(todo)
                conn_ids = todo
        for conn_id in conn_ids:
            box = boxes.get(conn_id)
            if box is None:
                if conn_id in gone and self.is_gone(conn_id):
                    continue
                box = boxes[conn_id] = _Outbox()
            items = box.items
            if key is None:
                self._uniq += 1
                k: object = ("u", self._uniq)
                value: tuple[bytes, float] | None = entry
            elif key in items:
                coalesced += 1
                holding.add(conn_id)  # type: ignore[union-attr]
                continue
            else:
                k, value = key, None
                holding.add(conn_id)  # type: ignore[union-attr]
            if len(items) >= MAX_OUTBOX:
                old_key, _ = items.popitem(last=False)
                self._release(old_key, conn_id)
                added -= 1
                self.metrics.error("dropped_overflow")
            items[k] = value
            added += 1
            if not box.queued:
                box.queued = True
                self._ready[box.lane].append(conn_id)
                self._wake[box.lane].set()
        self._pending += added
        if coalesced:
            self.metrics.inc("streamer_coalesced_total", coalesced)

    def _release(self, key: object, conn_id: str) -> None:
        """`key` left `conn_id`'s outbox."""
        holding = self._holding.get(key)
        if holding is not None:
            holding.discard(conn_id)

    def _drop_box(self, conn_id: str) -> _Outbox | None:
        box = self._boxes.pop(conn_id, None)
        if box is not None:
            for key in box.items:
                self._release(key, conn_id)
        return box

    def pending(self) -> int:
        return self._pending

    def idle(self) -> bool:
        return not any(b.queued for b in self._boxes.values())

    async def drain(self, timeout: float = 10.0) -> bool:
        deadline = self.clock() + timeout
        while not self.idle():
            if self.clock() > deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    # -- workers -------------------------------------------------------------
    async def _worker(self, lane: Lane) -> None:
        ready = self._ready[lane]
        wake = self._wake[lane]
        while True:
            if not ready:
                wake.clear()
                await wake.wait()
                continue
            conn_id = ready.popleft()
            box = self._boxes.get(conn_id)
            if box is None or not box.items:
                if box is not None:
                    box.queued = False
                    self._forget_if_empty(conn_id, box)
                continue
            if box.lane is not lane:  # moved lanes while waiting: hand over
                self._ready[box.lane].append(conn_id)
                self._wake[box.lane].set()
                continue
            await self._send_head(conn_id, box)

    async def _send_head(self, conn_id: str, box: _Outbox) -> None:
        key, entry = next(iter(box.items.items()))
        if entry is None:
            entry = self._cells[key]
        data, born = entry
        started = self.clock()
        try:
            await self.transport.post(conn_id, data)
        except ConnectionGone:
            self.metrics.error("gone")
            self._gone[conn_id] = self.clock()
            self._drop_box(conn_id)
            self._pending -= len(box.items)
            log.info("event=conn_gone conn=%s dropped=%d", conn_id, len(box.items))
            return
        except RetryableError as exc:
            self.metrics.error(exc.kind)
            self._note_speed(box, self.clock() - started, timed_out=exc.kind == "timeout")
            box.attempt += 1
            if box.attempt > self.retries:
                self._drop_head(conn_id, box, key, entry, f"gave up after {box.attempt} attempts: {exc}")
            else:
                delay = min(self.max_backoff, self.backoff * (2 ** (box.attempt - 1)))
                log.debug("event=send_retry conn=%s attempt=%d delay=%.3f error=%s", conn_id, box.attempt, delay, exc)
                asyncio.get_running_loop().call_later(delay, self._requeue, conn_id)
                return
        except PermanentError as exc:
            self.metrics.error(exc.kind)
            self._drop_head(conn_id, box, key, entry, str(exc))
        except TransportError as exc:  # a transport's own subclass we do not know
            self.metrics.error(exc.kind)
            self._drop_head(conn_id, box, key, entry, str(exc))
        except Exception as exc:  # a bug below us must not kill this worker (and stall the lane)
            log.exception("event=send_bug conn=%s", conn_id)
            self.metrics.error("internal")
            self._drop_head(conn_id, box, key, entry, repr(exc))
        else:
            box.attempt = 0
            self._pop_if_same(conn_id, box, key, entry)
            self.metrics.sent(born)
            self._note_speed(box, self.clock() - started, timed_out=False)
        self._requeue(conn_id)

    def _pop_if_same(self, conn_id: str, box: _Outbox, key: object, entry: tuple[bytes, float]) -> None:
        """Remove the message just sent/dropped — unless its key's cell got newer data while it
        was in flight: that is still to be sent (in the same place). The same bytes again are
        not newer: a new subscriber's snapshot of unchanged data rewrites the cell with equal
        data, which must not be resent to the connections that had it in flight."""
        items = box.items
        if key not in items:
            return
        shared = items[key] is None
        if shared:
            cell = self._cells.get(key)
            if cell is not entry and (cell is None or cell[0] != entry[0]):
                return
        del items[key]
        self._pending -= 1
        if shared:
            self._release(key, conn_id)

    def _drop_head(self, conn_id: str, box: _Outbox, key: object, entry: tuple[bytes, float], why: str) -> None:
        self._pop_if_same(conn_id, box, key, entry)
        box.attempt = 0
        self.metrics.error("dropped")
        log.warning("event=send_dropped conn=%s key=%s reason=%s", conn_id, key, why)

    def _note_speed(self, box: _Outbox, took: float, *, timed_out: bool) -> None:
        if timed_out or took > self.slow_after:
            if box.lane is Lane.FAST:
                box.lane = Lane.SLOW
                box.slow_since = self.clock()
                self.metrics.inc("streamer_slow_lane_moves_total")
        elif box.lane is Lane.SLOW and self.clock() - box.slow_since > 5.0:
            box.lane = Lane.FAST  # fast again for a while: back to the fast lane

    def _requeue(self, conn_id: str) -> None:
        box = self._boxes.get(conn_id)
        if box is None:
            return
        if box.items:
            self._ready[box.lane].append(conn_id)
            self._wake[box.lane].set()
        else:
            box.queued = False
            self._forget_if_empty(conn_id, box)

    def _forget_if_empty(self, conn_id: str, box: _Outbox) -> None:
        if not box.items and not box.queued and box.lane is Lane.FAST:
            self._boxes.pop(conn_id, None)

    def prune(self, keep_slow_for: float = 30.0) -> int:
        """Forget idle slow-lane outboxes older than `keep_slow_for` seconds (and old gone ids)."""
        now = self.clock()
        stale = [c for c, b in self._boxes.items()
                 if not b.items and not b.queued and now - b.slow_since > keep_slow_for]
        for c in stale:
            del self._boxes[c]
        for c in [c for c, at in self._gone.items() if now - at > GONE_MEMORY_SECONDS]:
            del self._gone[c]
        return len(stale)

    def slow_connections(self) -> int:
        return sum(1 for b in self._boxes.values() if b.lane is Lane.SLOW)
