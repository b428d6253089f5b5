"""Test helpers for the Chalice app: REST calls, symbols, reading Kinesis streams.

The `@connections` stand-in the app sends to is tests/mgmt_server.py (shared with the
streamer tests; see the `ws_server` fixture in conftest.py)."""

from __future__ import annotations

import json
import time

# --------------------------------------------------------------------------- REST / Kinesis helpers

ADMIN_HEADERS = {"X-Admin-Key": "local-admin-key", "Content-Type": "application/json"}


def post_json(client, path: str, body, headers: dict | None = None, method: str = "post"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return getattr(client.http, method)(path, headers={"Content-Type": "application/json", **(headers or {})},
                                        body=data)


def add_symbol(client, symbol: str, **meta) -> None:
    resp = post_json(client, "/admin/symbols", {"symbol": symbol, **meta}, ADMIN_HEADERS)
    assert resp.status_code in (200, 201), resp.body


def read_stream(kinesis, stream: str, min_records: int = 0, timeout: float = 15.0) -> list[tuple[str, dict]]:
    """All records on a stream as (partition key, decoded JSON), polling until min_records."""
    deadline = time.monotonic() + timeout
    while True:
        out = []
        shards = kinesis.list_shards(StreamName=stream)["Shards"]
        for shard in shards:
            it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while it:
                resp = kinesis.get_records(ShardIterator=it, Limit=1000)
                out.extend((r["PartitionKey"], json.loads(r["Data"])) for r in resp["Records"])
                if not resp["Records"] or resp.get("MillisBehindLatest", 0) == 0:
                    break
                it = resp.get("NextShardIterator")
        if len(out) >= min_records or time.monotonic() > deadline:
            return out
        time.sleep(0.05)
