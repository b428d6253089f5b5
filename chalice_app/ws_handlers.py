"""WebSocket `$connect` / `$default` / `$disconnect` logic (SPEC §6).

`$connect`: `?token=JWT` (verified like REST; a bad token refuses the connection with
401), `?testMode=true&userId=u1` (only when ALLOW_TEST_MODE, else 401), or nothing
(anonymous, 500 ms tier). The connection is registered by `connections.register_connection`.

`$default` messages (at most MAX_MESSAGE_BYTES, a JSON object with `action`):

    {"action":"subscribe","main":"TEST","sub":["AAA","BBB"]}
        → {"e":"subscribed","main":"TEST","sub":["AAA","BBB"]}. The current state (the main
          symbol's depth, ticker and open 1m candle, each sub symbol's ticker) is NOT sent
          here: the streamer sends it once, in order with the later updates and within the
          anonymous tier's 2 updates/s (docs/streamer.md). The registry marks each symbol
          named as owed to the connection (`symbol:{SYM}:fresh`), so a repeated subscribe
          gets the state again.
    {"action":"unsubscribe","main":"TEST","sub":["AAA"]}   (no fields = everything)
        → {"e":"unsubscribed","main":…,"sub":[…]}
    {"action":"ping"}  → {"e":"pong","t":ms}

A subscribe is all-or-nothing: one malformed or inactive symbol, or going past the cap
of sub symbols, answers an `error` event and changes nothing. Every problem is an
`error` event `{"e":"error","code","message"}`; the handler itself never fails.

Error codes: INVALID_JSON, MESSAGE_TOO_LARGE, UNKNOWN_ACTION, INVALID_SYMBOL,
UNKNOWN_SYMBOL, TOO_MANY_SUBSCRIPTIONS, BAD_REQUEST, CACHE_UNAVAILABLE (Valkey unreachable),
INTERNAL_ERROR (anything unexpected; logged with its traceback).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
import redis

from chalice_app import connections, keys
from chalice_app.auth import Authenticator, Principal
from chalice_app.cache import as_str
from chalice_app.errors import ApiError, BadRequest, NotFound
from chalice_app.messages import E_PONG, error_message
from chalice_app.symbols import SymbolRegistry

log = logging.getLogger("supernoba.ws")

MAX_MESSAGE_BYTES = 4096

Reply = dict[str, Any] | bytes


def event_body(event: Mapping[str, Any]) -> str | bytes | None:
    """The `$default` event's message: `body`, or its bytes when API Gateway base64-encoded it
    (`isBase64Encoded`: the client sent a binary frame). A body that is not valid base64 is
    passed on as it is (and answered INVALID_JSON)."""
    body = event.get("body")
    if event.get("isBase64Encoded") and isinstance(body, str):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return body
    return body


class WsService:
    def __init__(self, redis_client: redis.Redis, auth: Authenticator, symbols: SymbolRegistry,
                 max_subs: int = connections.MAX_SUB_SYMBOLS) -> None:
        self.r = redis_client
        self.auth = auth
        self.symbols = symbols
        self.max_subs = max_subs

    # ------------------------------------------------------------------ connect
    def connect(self, conn_id: str, query: Mapping[str, str] | None) -> Principal | None:
        """Register the connection; raises Unauthorized / Forbidden / BadRequest to refuse it."""
        query = query or {}
        principal: Principal | None = None
        if query.get("token"):
            principal = self.auth.verify_token(query["token"])
        elif str(query.get("testMode", "")).lower() == "true":
            principal = self.auth.test_user(query.get("userId"))
        connections.register_connection(
            self.r, conn_id, principal.user_id if principal else None, is_logged_in=principal is not None
        )
        log.info("event=ws_connect conn=%s user=%s test_mode=%s", conn_id,
                 principal.user_id if principal else None, bool(principal and principal.test_mode))
        return principal

    def disconnect(self, conn_id: str) -> None:
        connections.remove_connection(self.r, conn_id)

    def remove_stale(self) -> list[str]:
        """The schedule's sweep: drop connections whose ``ws:`` key expired (their ids)."""
        return connections.remove_stale_connections(self.r)

    # ------------------------------------------------------------------ messages
    def message(self, conn_id: str, body: str | bytes | None) -> list[Reply]:
        """Handle one client message; returns the replies to send back (never raises ApiError)."""
        try:
            return self._message(conn_id, body)
        except ApiError as err:
            log.info("event=ws_error conn=%s code=%s message=%r", conn_id, err.code, err.message)
            return [error_message(err.code, err.message)]
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("event=ws_cache_unavailable conn=%s error=%s", conn_id, exc)
            return [error_message("CACHE_UNAVAILABLE", "the cache is unavailable; retry")]
        except Exception:  # a bug or unexpected data: still an `error` event, as REST answers 500
            log.exception("event=ws_unhandled conn=%s", conn_id)
            return [error_message("INTERNAL_ERROR", "internal error")]

    def _message(self, conn_id: str, body: str | bytes | None) -> list[Reply]:
        raw = body.encode() if isinstance(body, str) else (body or b"")
        if len(raw) > MAX_MESSAGE_BYTES:
            raise BadRequest(f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}", "MESSAGE_TOO_LARGE")
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("message is not valid JSON", "INVALID_JSON") from exc
        if not isinstance(msg, dict):
            raise BadRequest("message must be a JSON object with an action", "INVALID_JSON")
        self._ensure_registered(conn_id)
        action = msg.get("action")
        if action == "ping":
            return [{"e": E_PONG, "t": int(time.time() * 1000)}]
        if action == "subscribe":
            return self._subscribe(conn_id, msg)
        if action == "unsubscribe":
            return self._unsubscribe(conn_id, msg)
        raise BadRequest("action must be subscribe, unsubscribe or ping", "UNKNOWN_ACTION")

    def _ensure_registered(self, conn_id: str) -> None:
        if connections.touch(self.r, conn_id):
            return
        user = self.r.get(keys.conn_user(conn_id))
        user_id = None if user is None else as_str(user)
        connections.register_connection(self.r, conn_id, user_id, is_logged_in=user_id is not None)
        log.warning("event=ws_reregistered conn=%s user=%s", conn_id, user_id)

    def _symbol_list(self, value: Any, field: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise BadRequest(f"{field} must be a symbol or a list of symbols", "BAD_REQUEST")
        if len(value) > self.max_subs:
            raise BadRequest(f"at most {self.max_subs} sub symbols per connection", "TOO_MANY_SUBSCRIPTIONS")
        return [self._valid(s) for s in value]

    @staticmethod
    def _valid(symbol: Any) -> str:
        if not keys.is_valid_symbol(symbol):
            raise BadRequest(f"invalid symbol {str(symbol)[:40]!r}", "INVALID_SYMBOL")
        return symbol

    def _subscribe(self, conn_id: str, msg: dict[str, Any]) -> list[Reply]:
        main = msg.get("main")
        if main is not None:
            main = self._valid(main)
        subs = self._symbol_list(msg.get("sub"), "sub")
        if main is None and not subs:
            raise BadRequest("subscribe needs main and/or sub", "BAD_REQUEST")
        unknown = [s for s in dict.fromkeys(([main] if main else []) + subs) if not self.symbols.is_active(s)]
        if unknown:
            raise NotFound(f"unknown symbol(s): {', '.join(unknown)}", "UNKNOWN_SYMBOL")
        try:
            info = connections.subscribe(self.r, conn_id, main, subs, max_subs=self.max_subs)
        except connections.SubscriptionLimit as exc:
            raise BadRequest(str(exc), "TOO_MANY_SUBSCRIPTIONS") from exc
        return [{
            "e": "subscribed",
            "main": info.main if info else main,
            "sub": sorted(info.subs) if info else subs,
        }]

    def _unsubscribe(self, conn_id: str, msg: dict[str, Any]) -> list[Reply]:
        main = msg.get("main")
        if main is not None and main is not True:
            main = self._valid(main)
        subs = self._symbol_list(msg.get("sub"), "sub") if "sub" in msg else None
        info = connections.unsubscribe(self.r, conn_id, main, subs)
        return [{"e": "unsubscribed", "main": info.main if info else None,
                 "sub": sorted(info.subs) if info else []}]
