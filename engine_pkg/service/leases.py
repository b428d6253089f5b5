"""Shard leases in the backup cache: which engine process reads which shard.

A lease is `lease:{STREAM/SHARD}` = this process's token, set with `SET NX PX ttl` and
renewed every ttl/3 by a Lua compare-and-PEXPIRE; a lease whose holder died expires and is
taken by a live engine. Engines also heartbeat into `engines:{STREAM}` (a sorted set scored
by expiry), so each one knows how many are alive and takes only its fair share of the
shards (ceil(shards / engines)), releasing the surplus so that a new engine gets some.

A holder treats its lease as valid only until `renewed_at + ttl * 0.8` on its own
monotonic clock: it stops matching a shard before anyone else can take it over, so a
symbol is only ever matched by one engine at a time.
"""

from __future__ import annotations

import logging
import time

import redis

from chalice_app import keys
from chalice_app.cache import as_str

log = logging.getLogger("supernoba.engine.leases")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseManager:
    """Leases of one engine process (`token`) on one stream."""

    def __init__(self, client: redis.Redis, stream: str, engine_id: str, token: str, ttl_ms: int) -> None:
        self.client = client
        self.stream = stream
        self.engine_id = engine_id
        self.token = token
        self.ttl_ms = ttl_ms
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def key(self, shard_id: str) -> str:
        return keys.shard_lease(self.stream, shard_id)

    @property
    def valid_for(self) -> float:
        """Seconds a lease counts as ours after a successful SET/renew started."""
        return self.ttl_ms * 0.8 / 1000.0

    def heartbeat(self) -> int:
        """Announce this engine; return the number of live engines (including this one)."""
        now = int(time.time() * 1000)
        key = keys.engine_members(self.stream)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(key, {self.token: now + self.ttl_ms})
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zcard(key)
        return int(pipe.execute()[-1])

    def leave(self) -> None:
        self.client.zrem(keys.engine_members(self.stream), self.token)

    def try_acquire(self, shard_id: str) -> bool:
        return bool(self.client.set(self.key(shard_id), self.token, nx=True, px=self.ttl_ms))

    def renew(self, shard_id: str) -> bool:
        return bool(self._renew(keys=[self.key(shard_id)], args=[self.token, self.ttl_ms]))

    def release(self, shard_id: str) -> bool:
        return bool(self._release(keys=[self.key(shard_id)], args=[self.token]))

    def holder(self, shard_id: str) -> str | None:
        v = self.client.get(self.key(shard_id))
        return None if v is None else as_str(v)

    def delete_all(self) -> int:
        """Remove every lease and the membership set of this stream (`--dev`)."""
        n = 0
        for key in self.client.scan_iter(match=self.key("*"), count=500):
            n += self.client.delete(key)
        n += self.client.delete(keys.engine_members(self.stream))
        return n
