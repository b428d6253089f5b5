"""One recording WebSocket client of a load run.

It connects (test mode `?testMode=true&userId=…` when logged in, no query when
anonymous), subscribes to its symbol as `main`, and records every frame with its receive
time. When the server closes the connection it reconnects with a bounded backoff and
subscribes again; when it has heard nothing for `stale_after` seconds while orders are
flowing it sends its subscription again (counted, so a silent loss shows in the report).
Two fault behaviours: `pause(seconds)` stops reading (the socket's buffers fill up) and
`drop()` aborts the TCP connection without a close frame.

    ClientState: IDLE → CONNECTING → OPEN ⇄ PAUSED → CLOSED

Errors are counted in `ClientLog.errors`, never raised::

    connect refused | connect timeout | handshake rejected <status> | closed by server <code>
    | error event <code> | reconnects exhausted
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from tools.load.model import TIER_LOGGED_IN, ClientLog, now_ms

log = logging.getLogger("supernoba.load.client")


#: frames the websockets library queues before it stops reading the socket (its high-water
#: mark): small, so a paused client really stops reading and the server sees a slow client
READ_QUEUE_FRAMES = 16

class ClientState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    PAUSED = "paused"
    CLOSED = "closed"


class LoadClient:
    def __init__(self, ws_url: str, logbook: ClientLog, *, connect_timeout: float = 10.0,
                 max_reconnects: int = 50, stale_after: float = 5.0) -> None:
        self.ws_url = ws_url
        self.log = logbook
        self.connect_timeout = connect_timeout
        self.max_reconnects = max_reconnects
        self.stale_after = stale_after
        self.state = ClientState.IDLE
        self.flowing = False  # set by the runner while orders are being sent
        self._ws: ClientConnection | None = None
        self._stop = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._last_msg = time.monotonic()
        self.opened = asyncio.Event()

    @property
    def url(self) -> str:
        if self.log.tier == TIER_LOGGED_IN and self.log.user_id:
            return f"{self.ws_url}?{urlencode({'testMode': 'true', 'userId': self.log.user_id})}"
        return self.ws_url

    async def _connect(self) -> ClientConnection | None:
        self.state = ClientState.CONNECTING
        try:
            ws = await connect(self.url, open_timeout=self.connect_timeout, proxy=None,
                               max_size=4 * 1024 * 1024, max_queue=READ_QUEUE_FRAMES, ping_interval=None,
                               compression=None)
        except InvalidStatus as exc:
            self.log.errors[f"handshake rejected {exc.response.status_code}"] += 1
            return None
        except TimeoutError:
            self.log.errors["connect timeout"] += 1
            return None
        except (OSError, WebSocketException) as exc:
            self.log.errors[f"connect failed {type(exc).__name__}"] += 1
            return None
        self.log.subscribing(now_ms())
        await ws.send(orjson.dumps({"action": "subscribe", "main": self.log.symbol}).decode())
        self.log.connects += 1
        self.log.last_connect_ms = now_ms()
        self._last_msg = time.monotonic()
        self.state = ClientState.OPEN
        self.opened.set()
        return ws

    async def _read(self, ws: ClientConnection) -> None:
        while not self._stop.is_set():
            await self._reading.wait()
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
            except TimeoutError:
                if self.flowing and time.monotonic() - self._last_msg > self.stale_after:
                    self.log.errors["resubscribe after silence"] += 1
                    self._last_msg = time.monotonic()
                    self.log.subscribing(now_ms())
                    await ws.send(orjson.dumps({"action": "subscribe", "main": self.log.symbol}).decode())
                continue
            recv = now_ms()
            self._last_msg = time.monotonic()
            try:
                ev = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.log.raw_errors += 1
                continue
            if not isinstance(ev, dict):
                self.log.raw_errors += 1
                continue
            self.log.record(recv, ev)
            if ev.get("e") == "error":
                self.log.errors[f"error event {ev.get('code')}"] += 1

    async def run(self) -> None:
        """Connect and read until `stop()`; reconnect after the server drops us (bounded)."""
        delay = 0.1
        attempts = 0
        while not self._stop.is_set():
            ws = await self._connect()
            if ws is None:
                attempts += 1
                if attempts > self.max_reconnects:
                    self.log.errors["reconnects exhausted"] += 1
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self.log.connects > 1:
                self.log.reconnects += 1
                log.info("event=reconnected client=%d user=%s symbol=%s", self.log.index, self.log.user_id,
                         self.log.symbol)
            delay = 0.1
            self._ws = ws
            try:
                await self._read(ws)
                if not self.log.dropped_on_purpose:
                    await self._close(ws)
            except ConnectionClosed as exc:
                if self.log.dropped_on_purpose:
                    break
                code = exc.rcvd.code if exc.rcvd else "no close frame"
                self.log.errors[f"closed by server {code}"] += 1
                attempts += 1
                if attempts > self.max_reconnects:
                    self.log.errors["reconnects exhausted"] += 1
                    break
                continue
            finally:
                self._ws = None
            break
        self.state = ClientState.CLOSED

    @staticmethod
    async def _close(ws: ClientConnection) -> None:
        try:
            await asyncio.wait_for(ws.close(), timeout=2.0)
        except (TimeoutError, OSError, WebSocketException):
            ws.transport.abort()

    async def pause(self, seconds: float) -> None:
        """Stop reading for `seconds` (a client that stops reading): once READ_QUEUE_FRAMES frames
        wait in the library, it stops reading the socket, the kernel buffers fill, and frames pile
        up server-side (the gateway's slow-client path)."""
        self.state = ClientState.PAUSED
        self._reading.clear()
        try:
            await asyncio.sleep(seconds)
        finally:
            self._reading.set()
            if self.state is ClientState.PAUSED:
                self.state = ClientState.OPEN

    def drop(self) -> None:
        """Abort the TCP connection without a close frame; the client then stays gone."""
        self.log.dropped_on_purpose = True
        self._stop.set()
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

    def stop(self) -> None:
        """Ask `run()` to close cleanly (it notices within half a second)."""
        self._stop.set()
        self._reading.set()
