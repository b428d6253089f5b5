"""Writes `docs/openapi.yaml`, the OpenAPI 3.1 description of the REST API (SPEC §5).

Request bodies come from the app's own pydantic models (`chalice_app.models`), so the
description cannot drift from what the router validates; routes, parameters, responses and
the error body `{code, message}` are spelled here once. The description feeds the
schemathesis fuzz of `tests/reliability/test_rest_fuzz.py` (every 5xx is a failure).

    python -m tools.openapi [--out docs/openapi.yaml] [--check]

`--check` exits 1 when the file on disk differs from what would be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from chalice_app import keys, messages
from chalice_app.models import PlaceOrder, ReplaceOrder, SymbolRef, SymbolSpec
from tools.ports import REST_URL

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "docs" / "openapi.yaml"

SYMBOL_SCHEMA = {"type": "string", "pattern": f"^{keys.SYMBOL_RE.pattern}$"}
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _model_schemas() -> dict[str, Any]:
    """JSON Schemas (2020-12, as OpenAPI 3.1 takes them) of the request models."""
    out: dict[str, Any] = {}
    for model in (PlaceOrder, ReplaceOrder, SymbolSpec, SymbolRef):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            out[name] = sub
        out[model.__name__] = schema
    return out


def build() -> dict[str, Any]:
    queued = {"type": "object", "required": ["order_id", "status"],
              "properties": {"order_id": {"type": "string"}, "status": {"const": "QUEUED"}}}
    level = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
    depth = {"type": "object", "properties": {
        "e": {"const": messages.E_DEPTH}, "s": {"type": "string"}, "t": {"type": ["integer", "null"]},
        "u": {"type": ["integer", "null"]}, "b": {"type": "array", "items": level},
        "a": {"type": "array", "items": level}}}
    candle = {"type": "object", "required": ["time", "open", "high", "low", "close", "volume"],
              "properties": {k: {"type": ["integer", "number", "string"]}
                             for k in ("time", "open", "high", "low", "close", "volume")}}
    user = [{"testUser": []}, {"bearer": []}]
    admin = [{"adminKey": []}, {"bearer": []}]
    order_id = {"name": "order_id", "in": "path", "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
    symbol_q = {"name": "symbol", "in": "query", "required": True, "schema": SYMBOL_SCHEMA}
    common = {"400": _err("bad input (code names the problem)"), "401": _err("no or bad credentials"),
              "413": _err("body over the size limit")}
    paths = {
        "/orders": {"post": {
            "operationId": "placeOrder", "summary": "Queue an ADD order command", "security": user,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/PlaceOrder"}}}},
            "responses": {"202": _json(queued, "queued for the engine"), **common,
                          "404": _err("unknown symbol"), "409": _err("no liquidity / idempotency conflict"),
                          "503": _err("order stream unavailable")}}},
        "/orders/{order_id}": {
            "delete": {"operationId": "cancelOrder", "summary": "Queue a CANCEL", "security": user,
                       "parameters": [order_id, symbol_q],
                       "responses": {"202": _json(queued, "queued"), **common, "404": _err("unknown symbol"),
                                     "503": _err("order stream unavailable")}},
            "patch": {"operationId": "replaceOrder", "summary": "Queue a REPLACE", "security": user,
                      "parameters": [order_id],
                      "requestBody": {"required": True, "content": {"application/json": {
                          "schema": {"$ref": "#/components/schemas/ReplaceOrder"}}}},
                      "responses": {"202": _json(queued, "queued"), **common, "404": _err("unknown symbol"),
                                    "503": _err("order stream unavailable")}}},
        "/chart": {"get": {
            "operationId": "chart", "summary": "Candles, hot merged over cold",
            "parameters": [symbol_q,
                           {"name": "interval", "in": "query", "required": False,
                            "schema": {"enum": ["1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d"]}},
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {"200": _json({"type": "object", "properties": {
                "symbol": {"type": "string"}, "interval": {"type": "string"},
                "data": {"type": "array", "items": candle}}}, "candles, ascending"),
                "400": _err("bad parameter"), "404": _err("unknown symbol")}}},
        "/depth/{symbol}": {"get": {
            "operationId": "depth", "summary": "Current depth snapshot",
            "parameters": [{"name": "symbol", "in": "path", "required": True, "schema": SYMBOL_SCHEMA}],
            "responses": {"200": _json(depth, "depth"), "400": _err("bad symbol"), "404": _err("unknown symbol")}}},
        "/admin/symbols": {
            "get": {"operationId": "listSymbols", "security": admin,
                    "responses": {"200": {"description": "tradable symbols"}, "401": _err("no credentials"),
                                  "403": _err("not admin")}},
            "post": {"operationId": "addSymbol", "security": admin,
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/SymbolSpec"}}}},
                     "responses": {"200": {"description": "added"}, "201": {"description": "added"}, **common,
                                   "403": _err("not admin"), "409": _err("exists")}},
            "delete": {"operationId": "removeSymbol", "security": admin,
                       "parameters": [{**symbol_q, "required": False}],
                       "responses": {"200": {"description": "removed"}, "204": {"description": "removed"},
                                     **common, "403": _err("not admin"), "404": _err("unknown symbol")}}},
        "/health": {"get": {"operationId": "health",
                            "responses": {"200": {"description": "alive; state of Valkey and Kinesis"},
                                          "503": {"description": "a dependency is down"}}}},
    }
    schemas = {"Error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"}, "message": {"type": "string"}}},
        **_model_schemas()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Supernoba REST API", "version": "1.0.0",
                 "description": "Generated by `python -m tools.openapi` from chalice_app.models (SPEC §5)."},
        "servers": [{"url": REST_URL}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "testUser": {"type": "apiKey", "in": "header", "name": "X-Test-User"},
            "adminKey": {"type": "apiKey", "in": "header", "name": "X-Admin-Key"}}},
    }


def render() -> str:
    return "# Generated by `python -m tools.openapi`; do not edit by hand.\n" + yaml.safe_dump(
        build(), sort_keys=False, allow_unicode=True, width=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.openapi", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--check", action="store_true", help="fail when the file is out of date")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date; run python -m tools.openapi", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
