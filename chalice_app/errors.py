"""The Chalice app's error classes, and the ONE place that turns them into responses.

Services raise these; `app.py` wraps every route with `http_errors` (and a middleware
rewrites Chalice's own error bodies) so that every HTTP error is a JSON body
`{"code": "...", "message": "..."}` with a stable upper-case code; `http_errors` also wraps
the WebSocket `$connect` handler, whose error response refuses the handshake. WebSocket
messages turn the same errors into `error` events with `ws_error_event`.

    ApiError (code, message, status)
     ├── BadRequest            400  BAD_REQUEST, INVALID_JSON, VALIDATION_ERROR, INVALID_SYMBOL,
     │                              INVALID_TICK, PRICE_OUT_OF_BAND, INVALID_INTERVAL, ...
     ├── Unauthorized          401  UNAUTHORIZED, TOKEN_EXPIRED, INVALID_TOKEN, TEST_MODE_DISABLED
     ├── Forbidden             403  FORBIDDEN
     ├── NotFound              404  UNKNOWN_SYMBOL, NOT_FOUND
     ├── Conflict              409  NO_LIQUIDITY, IDEMPOTENCY_CONFLICT
     ├── PayloadTooLarge       413  PAYLOAD_TOO_LARGE
     ├── UnsupportedMediaType  415  UNSUPPORTED_MEDIA_TYPE
     └── Unavailable           503  SERVICE_UNAVAILABLE, ORDER_STREAM_UNAVAILABLE, CACHE_UNAVAILABLE
    (anything else)            500  INTERNAL_ERROR, logged with its traceback
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import redis
from chalice import Response

log = logging.getLogger("supernoba.errors")


class ApiError(Exception):
    status = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(ApiError):
    status = 400
    code = "BAD_REQUEST"


class Unauthorized(ApiError):
    status = 401
    code = "UNAUTHORIZED"


class Forbidden(ApiError):
    status = 403
    code = "FORBIDDEN"


class NotFound(ApiError):
    status = 404
    code = "NOT_FOUND"


class Conflict(ApiError):
    status = 409
    code = "CONFLICT"


class PayloadTooLarge(ApiError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class Unavailable(ApiError):
    status = 503
    code = "SERVICE_UNAVAILABLE"


JSON_HEADERS = {"Content-Type": "application/json"}


def error_response(err: ApiError) -> Response:
    headers = dict(JSON_HEADERS)
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="supernoba"'
    return Response(body=err.body(), status_code=err.status, headers=headers)


def http_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Chalice view (or the `$connect` handler): ApiError → its JSON response; anything
    else → logged 500."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except ApiError as err:
            log.info("event=http_error status=%d code=%s message=%r", err.status, err.code, err.message)
            return error_response(err)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # Valkey restarting or unreachable: a clear, retryable 503, not a 500 (found by `make soak`)
            log.warning("event=http_cache_unavailable view=%s error=%s", view.__name__, exc)
            return error_response(Unavailable("the cache is unavailable; retry", "CACHE_UNAVAILABLE"))
        except Exception:
            log.exception("event=http_unhandled view=%s", view.__name__)
            return Response(
                body={"code": "INTERNAL_ERROR", "message": "internal error"},
                status_code=500,
                headers=JSON_HEADERS,
            )

    return wrapper


_CHALICE_CODES = {
    "BadRequestError": "BAD_REQUEST",
    "UnauthorizedError": "UNAUTHORIZED",
    "ForbiddenError": "FORBIDDEN",
    "NotFoundError": "NOT_FOUND",
    "MethodNotAllowedError": "METHOD_NOT_ALLOWED",
    "RequestTimeoutError": "REQUEST_TIMEOUT",
    "ConflictError": "CONFLICT",
    "UnprocessableEntityError": "VALIDATION_ERROR",
    "TooManyRequestsError": "TOO_MANY_REQUESTS",
    "UnsupportedMediaType": "UNSUPPORTED_MEDIA_TYPE",
    "ChaliceViewError": "INTERNAL_ERROR",
    "InternalServerError": "INTERNAL_ERROR",
}


def _upper_code(name: str) -> str:
    return _CHALICE_CODES.get(name) or re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def normalize_chalice_error(response: Response) -> Response:
    """Rewrite a Chalice-made error body `{"Code","Message"}` into `{"code","message"}`."""
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and "Code" in body and "code" not in body:
        response.body = {"code": _upper_code(str(body["Code"])), "message": str(body.get("Message", ""))}
        response.headers = {**(response.headers or {}), **JSON_HEADERS}
    return response


def ws_error_event(err: ApiError) -> dict[str, str]:
    from chalice_app.messages import error_message

    return error_message(err.code, err.message)
