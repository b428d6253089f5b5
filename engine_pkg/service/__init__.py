"""The engine service: `python -m engine_pkg` (issue 4, docs/engine_service.md).

Kinesis `supernoba-orders` in; fills and order statuses to Kinesis, depth / ticker /
candles to the Valkey depth cache, snapshots and leases in the backup cache out. One
`Engine` per shard, each shard owned by one engine process at a time through a lease.
"""

from engine_pkg.service.errors import (
    CorruptSnapshot,
    EngineServiceError,
    LeaseLost,
    PublishError,
    SnapshotError,
)

__all__ = ["CorruptSnapshot", "EngineServiceError", "LeaseLost", "PublishError", "SnapshotError"]
