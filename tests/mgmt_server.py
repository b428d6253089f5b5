"""A stand-in for API Gateway's `@connections` management API, shared by the chalice_app tests
(ws_send, triggers: only known ids are open) and the streamer tests (any id is open; failures
injected: 5xx, slow, held or gone ids); the real gateway is used by test_gateway.py and the benchmark.

Speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) over asyncio to sustain
tens of thousands of PostToConnection calls a second on loopback:

    POST   /{stage}/@connections/{id}   200, records (receive time, body) for an open id;
                                        410 + `x-amzn-ErrorType: GoneException` otherwise
    DELETE /{stage}/@connections/{id}   204 (closes) / 410
    GET    /{stage}/@connections/{id}   200 info / 410

`delays[id] = seconds` makes every answer for that id slow; an id in `holds` gets no answer
(and nothing is recorded) until it is removed from the set: a client that never reads, for as
long as the test wants. `reset()` forgets every id and message (between tests).
Runs on its own event loop in a daemon thread (`start()` / `stop()`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from urllib.parse import unquote

import orjson

_GONE_BODY = b'{"message":"GoneException"}'
_GONE = (
    b"HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\nx-amzn-ErrorType: GoneException\r\n"
    + f"Content-Length: {len(_GONE_BODY)}\r\n\r\n".encode()
    + _GONE_BODY
)
_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
_NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_SERVER_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nx-amzn-ErrorType: InternalServerErrorException\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)


async def _cancel_all() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class MgmtServer:
    """The `@connections` API on 127.0.0.1:port. `open_ids=None` accepts any id not in `gone`."""

    def __init__(self, stage: str = "api", open_ids: Iterable[str] | None = None) -> None:
        self.stage = stage
        self.prefix = f"/{stage}/@connections/"
        self.open_ids: set[str] | None = set(open_ids) if open_ids is not None else None
        self.gone: set[str] = set()
        self.delays: dict[str, float] = {}
        self.holds: set[str] = set()
        self.fail_next: dict[str, int] = {}  # id -> number of 500 answers before success
        self.received: dict[str, list[tuple[float, bytes]]] = defaultdict(list)
        self.posts = 0
        self.gone_answers = 0
        self.lock = threading.Lock()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.on_post: Callable[[str, bytes, float], None] | None = None

    # -- lifecycle -----------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.stage}"

    def start(self) -> MgmtServer:
        self._thread = threading.Thread(target=self._run, name="mgmt-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("management server did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.run_until_complete(_cancel_all())
            loop.close()

    # -- state helpers -------------------------------------------------------
    def is_open(self, conn_id: str) -> bool:
        if conn_id in self.gone:
            return False
        return self.open_ids is None or conn_id in self.open_ids

    def messages(self, conn_id: str) -> list[dict]:
        with self.lock:
            return [orjson.loads(b) for _, b in self.received.get(conn_id, [])]

    def clear(self) -> None:
        """Forget the messages received (open, gone and failing ids stay as they are)."""
        with self.lock:
            self.received.clear()
            self.posts = 0

    def reset(self) -> None:
        """Back to a fresh server: no open (when `open_ids` is a set), gone, slow, held or
        failing id, nothing received."""
        with self.lock:
            if self.open_ids is not None:
                self.open_ids.clear()
            self.gone.clear()
            self.delays.clear()
            self.holds.clear()
            self.fail_next.clear()
            self.received.clear()
            self.posts = 0
            self.gone_answers = 0

    # -- HTTP ----------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, path, _ = lines[0].split(b" ", 2)
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:].strip())
                body = await reader.readexactly(length) if length else b""
                reply = await self._answer(method, unquote(path.decode()), body)
                writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: bytes, path: str, body: bytes) -> bytes:
        if not path.startswith(self.prefix):
            return _NOT_FOUND
        conn_id = path[len(self.prefix):]
        delay = self.delays.get(conn_id)
        if delay:
            await asyncio.sleep(delay)
        while conn_id in self.holds:
            await asyncio.sleep(0.01)
        if not self.is_open(conn_id):
            self.gone_answers += 1
            return _GONE
        if method == b"POST":
            left = self.fail_next.get(conn_id, 0)
            if left > 0:
                self.fail_next[conn_id] = left - 1
                return _SERVER_ERROR
            now = time.time()
            with self.lock:
                self.received[conn_id].append((now, body))
                self.posts += 1
            if self.on_post is not None:
                self.on_post(conn_id, body, now)
            return _OK
        if method == b"DELETE":
            self.gone.add(conn_id)
            return _NO_CONTENT
        info = orjson.dumps({"ConnectedAt": "2025-01-01T00:00:00Z", "Identity": {"SourceIp": "127.0.0.1"}})
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            len(info), info)
