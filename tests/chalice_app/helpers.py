"""Test helpers for the Chalice app: a tiny `@connections` server and JWT signing.

`ConnectionsServer` speaks the API Gateway management API on a loopback port:
POST /{stage}/@connections/{id} records the body for a known id and answers 410
GoneException for an unknown one; DELETE closes; GET returns info.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class ConnectionsServer:
    def __init__(self, stage: str = "api") -> None:
        self.stage = stage
        self.open_ids: set[str] = set()
        self.received: dict[str, list[bytes]] = defaultdict(list)
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # else headers + body cost a 40 ms delayed ACK
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _conn_id(self) -> str | None:
                prefix = f"/{outer.stage}/@connections/"
                if not self.path.startswith(prefix):
                    return None
                return unquote(self.path[len(prefix):])

            def _reply(self, code: int, body: dict | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if code == 410:
                    self.send_header("x-amzn-ErrorType", "GoneException")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                conn_id = self._conn_id()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    if conn_id is None or conn_id not in outer.open_ids:
                        self._reply(410, {"message": "GoneException"})
                        return
                    outer.received[conn_id].append(body)
                self._reply(200)

            def do_DELETE(self) -> None:  # noqa: N802
                conn_id = self._conn_id()
                with outer.lock:
                    if conn_id not in outer.open_ids:
                        self._reply(410, {"message": "GoneException"})
                        return
                    outer.open_ids.discard(conn_id)
                self._reply(204)

            def do_GET(self) -> None:  # noqa: N802
                conn_id = self._conn_id()
                if conn_id not in outer.open_ids:
                    self._reply(410, {"message": "GoneException"})
                    return
                self._reply(200, {"ConnectedAt": "2025-01-01T00:00:00Z", "Identity": {"SourceIp": "127.0.0.1"}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.stage}"

    def start(self) -> ConnectionsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def messages(self, conn_id: str) -> list[dict]:
        with self.lock:
            return [json.loads(b) for b in self.received.get(conn_id, [])]

    def wait_for(self, conn_id: str, pred, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msgs = self.messages(conn_id)
            if any(pred(m) for m in msgs):
                return msgs
            time.sleep(0.02)
        raise AssertionError(f"no matching message for {conn_id}: {self.messages(conn_id)}")


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
