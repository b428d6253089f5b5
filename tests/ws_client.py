"""A real WebSocket test client (websocket-client) that reads on its own thread, shared by the
tests that talk to the local gateway: send JSON, wait for a message, filter what arrived."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import websocket


class WsClient:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                raw = self.ws.recv()
            except (websocket.WebSocketException, OSError):
                return
            if not raw:
                return
            with self.lock:
                self._received(json.loads(raw))

    def _received(self, msg: dict[str, Any]) -> None:
        """Keep one message (called under ``self.lock`` on the reading thread)."""
        self.messages.append(msg)

    def send(self, obj: dict[str, Any]) -> None:
        self.ws.send(json.dumps(obj))

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for m in self.messages:
                    if pred(m):
                        return m
            time.sleep(0.02)
        with self.lock:
            seen = [m.get("e") for m in self.messages]
        raise AssertionError(f"no {what} within {timeout}s; got events {seen}")

    def all(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def depth(self, symbol: str) -> list[dict[str, Any]]:
        """The `depth` events (SPEC §6, `e` = "d") received for `symbol`, in order."""
        return [m for m in self.all() if m.get("e") == "d" and m.get("s") == symbol]

    def close(self) -> None:
        self.ws.close()
