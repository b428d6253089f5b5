"""Per-shard snapshots in the backup cache: the shard's books plus its Kinesis checkpoint.

One value under `snapshot:{STREAM/SHARD}`, written with one SET (so it is atomic):

    b"SBS1\\n" + JSON header + b"\\n" + Engine.snapshot() bytes

After each one, every symbol of the shard gets a JSON view under SPEC §4's `snapshot:{SYM}`:
its aggregated book (up to VIEW_LEVELS levels a side), last `seq`, and the checkpoint it
reflects (stream, shard, Kinesis sequence number, the shard snapshot's key). Views are for
operators and tools; a restore reads the shard snapshot, which alone holds the order-level
books and the remembered ids of every symbol of the shard.

The header holds `seq` (the last processed Kinesis sequence number, or null), `start`
(where to read when `seq` is null: `AT_TIMESTAMP:<epoch ms>` of the `--dev` start, else
`TRIM_HORIZON`; `LATEST` in snapshots written before that change), the
ticker day statistics, the record count and who wrote it when. The write is *fenced*: a
Lua script writes only while the lease key of the shard still holds this process's token,
so an engine that lost its lease can never overwrite the new owner's snapshot.

    SnapshotError
     └── CorruptSnapshot   stored bytes that cannot be decoded
    LeaseLost              fenced write refused
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import redis

from chalice_app import keys
from engine_pkg.service.errors import CorruptSnapshot, LeaseLost, SnapshotError

log = logging.getLogger("supernoba.engine.snapshots")

MAGIC = b"SBS1\n"
#: `start` of a shard read from a moment on: f"{AT_TIMESTAMP}:{epoch_ms}"
AT_TIMESTAMP = "AT_TIMESTAMP"
#: levels a side in a `snapshot:{SYM}` view
VIEW_LEVELS = 1000

_FENCED_SET = """
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


@dataclass
class Snapshot:
    shard_id: str
    seq: str | None
    start: str = "TRIM_HORIZON"
    engine: bytes = b""
    ticker: dict = field(default_factory=dict)
    records: int = 0
    written_ms: int = 0
    writer: str = ""

    def encode(self) -> bytes:
        header = {"shard": self.shard_id, "seq": self.seq, "start": self.start, "ticker": self.ticker,
                  "records": self.records, "written_ms": self.written_ms, "writer": self.writer}
        return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + self.engine

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        if not data.startswith(MAGIC):
            raise CorruptSnapshot("snapshot does not start with SBS1")
        end = data.find(b"\n", len(MAGIC))
        if end < 0:
            raise CorruptSnapshot("snapshot header is not terminated")
        try:
            h = json.loads(data[len(MAGIC):end])
            return cls(shard_id=h["shard"], seq=h["seq"], start=h.get("start") or "TRIM_HORIZON",
                       engine=data[end + 1:], ticker=h.get("ticker") or {}, records=int(h.get("records") or 0),
                       written_ms=int(h.get("written_ms") or 0), writer=h.get("writer") or "")
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptSnapshot(f"snapshot header unreadable: {exc}") from exc


class SnapshotStore:
    """Reads and (fenced) writes the snapshots of one stream's shards."""

    def __init__(self, client: redis.Redis, stream: str) -> None:
        self.client = client
        self.stream = stream
        self._fenced = client.register_script(_FENCED_SET)

    def key(self, shard_id: str) -> str:
        return keys.shard_snapshot(self.stream, shard_id)

    def load(self, shard_id: str) -> Snapshot | None:
        data = self.client.get(self.key(shard_id))
        if data is None:
            return None
        return Snapshot.decode(data)

    def save(self, snap: Snapshot, token: str | None) -> int:
        """Write `snap`; with a lease token, only while that lease is held. Returns bytes written."""
        snap.written_ms = int(time.time() * 1000)
        data = snap.encode()
        try:
            if token is None:
                self.client.set(self.key(snap.shard_id), data)
            elif not self._fenced(keys=[self.key(snap.shard_id), keys.shard_lease(self.stream, snap.shard_id)],
                                  args=[data, token]):
                raise LeaseLost(f"shard={snap.shard_id} lease no longer held; snapshot not written")
        except redis.RedisError as exc:
            raise SnapshotError(f"shard={snap.shard_id} snapshot write failed: {exc}") from exc
        return len(data)

    def save_views(self, views: list[dict]) -> None:
        """Write the `snapshot:{SYM}` view of each symbol (after its shard snapshot was written)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for v in views:
                pipe.set(keys.snapshot(v["s"]), json.dumps(v, separators=(",", ":")))
            pipe.execute()
        except redis.RedisError as exc:
            raise SnapshotError(f"snapshot views write failed: {exc}") from exc

    def delete_all(self) -> int:
        """Remove every snapshot of this stream, and the symbol views that point at one (`--dev`)."""
        n = 0
        for key in self.client.scan_iter(match=keys.snapshot(keys.shard_tag(self.stream, "*")), count=500):
            n += self.client.delete(key)
        for key in self.client.scan_iter(match=keys.SNAPSHOT_PATTERN, count=500):
            name = key.decode(errors="replace") if isinstance(key, bytes) else key
            if "/" in name:
                continue
            try:
                view = json.loads(self.client.get(key) or b"null")
            except ValueError:
                view = None
            if isinstance(view, dict) and view.get("stream") == self.stream:
                n += self.client.delete(key)
        return n
