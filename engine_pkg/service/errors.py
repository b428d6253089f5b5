"""Error classes of the engine service.

    EngineServiceError
     ├── PublishError        PutRecords kept failing and the service is stopping
     ├── SnapshotError       a snapshot could not be written
     │    └── CorruptSnapshot   a stored snapshot cannot be decoded or restored
     └── LeaseLost           this process no longer holds the shard's lease (fenced write refused)
"""

from __future__ import annotations


class EngineServiceError(RuntimeError):
    """Base of every error the engine service raises."""


class PublishError(EngineServiceError):
    """Records could not be put on a Kinesis stream."""


class SnapshotError(EngineServiceError):
    """A snapshot could not be written or read."""


class CorruptSnapshot(SnapshotError):
    """A stored snapshot is malformed; the shard is then read from TRIM_HORIZON."""


class LeaseLost(EngineServiceError):
    """The shard's lease is held by another engine (or expired): stop writing for it."""
