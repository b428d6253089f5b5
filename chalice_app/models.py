"""Request bodies of the REST API (SPEC §5) as pydantic models, and their parsing.

`parse_body(model, raw)` is the one way a view reads a body: size limit, JSON, then the
model; every failure is a BadRequest / PayloadTooLarge with a message naming the field.
Numbers are strict JSON integers (no strings, floats or booleans; `price_band_pct` alone
may also be a float, never a boolean or string), unknown fields are
refused (a typo like `tiff` must not silently become a default), and a field sent as null
counts as absent (as in order commands, SPEC §3a): `"tif": null` is the default GTC.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from chalice_app import keys
from chalice_app.errors import BadRequest, PayloadTooLarge
from chalice_app.messages import MAX_PRICE, MAX_QTY

#: REST bodies larger than this are refused with 413 before parsing.
MAX_BODY_BYTES = 16 * 1024

Symbol = Annotated[str, StringConstraints(pattern=f"^{keys.SYMBOL_PATTERN}$")]
ClientOrderId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
Price = Annotated[StrictInt, Field(gt=0, le=MAX_PRICE)]
Quantity = Annotated[StrictInt, Field(gt=0, le=MAX_QTY)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: object) -> object:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class PlaceOrder(_Model):
    symbol: Symbol
    side: Literal["BUY", "SELL"]
    price: Price | None = None
    quantity: Quantity
    type: Literal["LIMIT", "MARKET"] = "LIMIT"
    tif: Literal["GTC", "IOC", "FOK"] = "GTC"
    client_order_id: ClientOrderId | None = None

    @model_validator(mode="before")
    @classmethod
    def _market_price_is_ignored(cls, data: object) -> object:
        # SPEC §2/§3a: price is ignored for MARKET, whatever it holds (a 0, a string, > 10^12)
        if isinstance(data, dict) and data.get("type") == "MARKET":
            return {k: v for k, v in data.items() if k != "price"}
        return data


class ReplaceOrder(_Model):
    symbol: Symbol
    price: Price | None = None
    quantity: Quantity | None = None


class SymbolSpec(_Model):
    symbol: Symbol
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    tick_size: Annotated[StrictInt, Field(gt=0, le=MAX_PRICE)] = 1
    #: orders priced more than this percentage away from the last trade are refused; 0 = off
    #: strict: a JSON number, never a boolean (`true` was 1.0) or a string
    price_band_pct: Annotated[StrictInt | StrictFloat, Field(ge=0, le=1000)] = 0
    min_price: Annotated[StrictInt, Field(gt=0, le=MAX_PRICE)] | None = None
    max_price: Annotated[StrictInt, Field(gt=0, le=MAX_PRICE)] | None = None


class SymbolRef(_Model):
    symbol: Symbol


M = TypeVar("M", bound=BaseModel)


def check_size(raw: bytes | None) -> bytes:
    raw = raw or b""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    return raw


def parse_json(raw: bytes | None) -> object:
    raw = check_size(raw)
    if not raw.strip():
        raise BadRequest("request body is empty; send a JSON object", "INVALID_JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", "INVALID_JSON") from exc


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def parse_body(model: type[M], raw: bytes | None) -> M:
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", "INVALID_JSON")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
        code = "INVALID_SYMBOL" if tuple(first) == ("symbol",) else "VALIDATION_ERROR"
        raise BadRequest(validation_message(exc), code) from exc
