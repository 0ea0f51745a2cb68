"""Request bodies and JSON responses through msgspec: one decode, typed errors, Decimals as plain strings."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from engine.wire import json_encoder
from gateway.errors import ApiError, validation_details

T = TypeVar("T")

MAX_BODY_BYTES = 1 << 20


async def parse_body(request: Request, struct_type: type[T]) -> T:
    """The body decoded into `struct_type`: 400 for malformed JSON, 422 (with the path) for schema errors."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
    if not body.strip():
        raise ApiError(400, "bad_request", "request body is empty; a JSON object is expected")
    try:
        return msgspec.json.decode(body, type=struct_type, strict=True)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid_request", "request does not match the schema", validation_details(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_request", "malformed JSON", {"reason": str(exc)}) from None


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Any msgspec-encodable object (Structs, dicts, lists) as JSON."""
    return Response(json_encoder.encode(obj), status_code=status, media_type="application/json", headers=headers)
