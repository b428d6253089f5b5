"""Supernoba's Chalice app: the wiring of every REST route, WebSocket handler, Kinesis
trigger and schedule (SPEC §5, §6, §7). The logic lives in the `chalice_app` package.

`services` is built once from the environment at import; tests replace it with
`chalice_app.services.build(settings)` (every view reads the module global at call time).
"""

from __future__ import annotations

import boto3
from chalice import Chalice, CORSConfig, Rate, Response

from chalice_app.config import Settings
from chalice_app.errors import http_errors, normalize_chalice_error
from chalice_app.models import PlaceOrder, ReplaceOrder, SymbolRef, SymbolSpec, check_size, parse_body
from chalice_app.services import build, configure_logging
from chalice_app.ws_handlers import event_body

_settings = Settings.from_env()
configure_logging(_settings)
services = build(_settings)
services.sender.warm()  # Lambda init phase: the first WebSocket send does not pay for the client

# Chalice would set our "supernoba" logger to ERROR and stop propagation; configure_logging() owns it.
app = Chalice(app_name="supernoba", configure_logs=False)
# WebSocket handlers are still an experimental Chalice feature: without this opt-in
# `chalice package` / `chalice deploy` refuse the app (issue 9).
app.experimental_feature_flags.update(["WEBSOCKETS"])
# Before each WebSocket handler Chalice looks up the region (AWS_REGION / AWS_DEFAULT_REGION,
# else this session's) and raised ValueError without one; SPEC §8's default region applies instead.
app.websocket_api.session = boto3.Session(region_name=_settings.aws_region)
app.api.cors = CORSConfig(
    allow_origin="*",
    allow_headers=["Authorization", "Content-Type", "X-Test-User", "X-Admin-Key"],
    max_age=600,
)


def _request():
    return app.current_request


def _query(name: str) -> str | None:
    return (_request().query_params or {}).get(name)


@app.middleware("http")
def _json_errors(event, get_response):
    return normalize_chalice_error(get_response(event))


# ---------------------------------------------------------------------------- orders


@app.route("/orders", methods=["POST"])
@http_errors
def place_order():
    req = _request()
    user = services.auth.authenticate(req.headers)
    order = parse_body(PlaceOrder, req.raw_body)
    return Response(body=services.orders.place(user.user_id, order).body(), status_code=202)


@app.route("/orders/{order_id}", methods=["DELETE"])
@http_errors
def cancel_order(order_id):
    req = _request()
    user = services.auth.authenticate(req.headers)
    check_size(req.raw_body)
    return Response(body=services.orders.cancel(user.user_id, order_id, _query("symbol")).body(), status_code=202)


@app.route("/orders/{order_id}", methods=["PATCH"])
@http_errors
def replace_order(order_id):
    req = _request()
    user = services.auth.authenticate(req.headers)
    body = parse_body(ReplaceOrder, req.raw_body)
    return Response(body=services.orders.replace(user.user_id, order_id, body).body(), status_code=202)


# ---------------------------------------------------------------------------- market data


@app.route("/chart", methods=["GET"])
@http_errors
def chart():
    return services.market.chart(_query("symbol"), _query("interval"), _query("limit"))


@app.route("/depth/{symbol}", methods=["GET"])
@http_errors
def depth(symbol):
    return services.market.depth(symbol)


@app.route("/health", methods=["GET"])
@http_errors
def health():
    ok, body = services.market.health()
    return Response(body=body, status_code=200 if ok else 503)


# ---------------------------------------------------------------------------- admin


@app.route("/admin/symbols", methods=["GET"])
@http_errors
def list_symbols():
    services.auth.require_admin(_request().headers)
    return {"symbols": [m.to_dict() for m in services.symbols.list()]}


@app.route("/admin/symbols", methods=["POST"])
@http_errors
def add_symbol():
    req = _request()
    services.auth.require_admin(req.headers)
    meta, created = services.symbols.add(parse_body(SymbolSpec, req.raw_body))
    return Response(body=meta.to_dict(), status_code=201 if created else 200)


@app.route("/admin/symbols", methods=["DELETE"])
@http_errors
def remove_symbol():
    req = _request()
    services.auth.require_admin(req.headers)
    symbol = _query("symbol") or (parse_body(SymbolRef, req.raw_body).symbol if req.raw_body else None)
    return {"symbol": services.symbols.remove(symbol), "removed": True}


@app.route("/admin/symbols/{symbol}", methods=["DELETE"])
@http_errors
def remove_symbol_by_path(symbol):
    services.auth.require_admin(_request().headers)
    return {"symbol": services.symbols.remove(symbol), "removed": True}


# ---------------------------------------------------------------------------- WebSocket


@app.on_ws_connect()
@http_errors
def ws_connect(event):
    services.ws.connect(event.connection_id, event.to_dict().get("queryStringParameters"))
    return {"statusCode": 200}


@app.on_ws_message()
def ws_message(event):
    replies = services.ws.message(event.connection_id, event_body(event.to_dict()))
    services.send_replies(event.connection_id, replies, event.domain_name, event.stage)


@app.on_ws_disconnect()
def ws_disconnect(event):
    services.ws.disconnect(event.connection_id)


# ---------------------------------------------------------------------------- Kinesis triggers


@app.on_kinesis_record(
    stream=_settings.fills_stream,
    batch_size=_settings.fills_trigger_batch_size,
    starting_position=_settings.fills_trigger_starting_position,
)
def on_fills(event):
    return services.notifier.handle_fills(record.data for record in event).to_dict()


@app.on_kinesis_record(
    stream=_settings.status_stream,
    batch_size=_settings.status_trigger_batch_size,
    starting_position=_settings.status_trigger_starting_position,
)
def on_order_status(event):
    return services.notifier.handle_statuses(record.data for record in event).to_dict()


# ---------------------------------------------------------------------------- schedules


@app.schedule(Rate(3, unit=Rate.MINUTES))
def trades_backup(event):
    return services.backup.run().to_dict()


@app.schedule(Rate(5, unit=Rate.MINUTES))
def stale_connection_cleanup(event):
    return {"removed": len(services.ws.remove_stale())}
