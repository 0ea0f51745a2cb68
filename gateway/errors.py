"""The one error shape of the API: `{"error": {"code", "message", "details"}}` with the right status.

Every failure a caller can cause maps to a 4xx here (typed brokerage errors, auth, validation);
only a genuine bug becomes a 500, and then with a generic message so no internals leak.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import redis.exceptions
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from brokerage.errors import BrokerageError
from brokerage.sql import DATABASE_DOWN
from engine.auth import AuthError
from engine.wire import json_encoder

log = logging.getLogger("clera.gateway")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the gateway itself raises (auth, ownership, missing resources, bad bodies)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: Any = None


class ErrorResponse(msgspec.Struct):
    """Documented in /openapi.json as the body of every non-2xx answer."""

    error: ErrorBody


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    body = json_encoder.encode(ErrorResponse(ErrorBody(code=code, message=message, details=details)))
    return Response(body, status_code=status, media_type="application/json")


def validation_details(exc: msgspec.ValidationError) -> dict[str, str]:
    """msgspec says `Expected int, got str - at $.amount`: split it into a reason and a JSON path."""
    text = str(exc)
    reason, sep, path = text.rpartition(" - at `")
    if not sep:
        return {"reason": text}
    return {"reason": reason, "path": path.rstrip("`")}


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details)


async def _brokerage_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, BrokerageError)
    return error_response(exc.status, exc.code, exc.message, exc.details)


async def _auth_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    return error_response(exc.status, exc.code, exc.message)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, msgspec.ValidationError)
    return error_response(422, "invalid_request", "request does not match the schema", validation_details(exc))


async def _decode_error(_: Request, exc: Exception) -> Response:
    return error_response(400, "bad_request", "malformed JSON", {"reason": str(exc)})


async def _redis_down(_: Request, exc: Exception) -> Response:
    return error_response(503, "unavailable", "the realtime store (Redis) is not reachable; retry shortly")


async def _database_down(_: Request, exc: Exception) -> Response:
    log.warning("the SQL database is unavailable: %s", exc)
    return error_response(503, "store_unavailable", "the database is not reachable; retry shortly")


async def _http_exception(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    headers = dict(exc.headers or {})
    response = error_response(exc.status_code, code, str(exc.detail))
    response.headers.update(headers)
    return response


async def _unexpected(_: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware re-raises after this answer, so the server logs the traceback.
    return error_response(500, "internal_error", "internal server error")


# Order matters for readers only: Starlette picks the most specific class along the MRO
# (msgspec.ValidationError subclasses DecodeError, so schema errors get 422 and syntax errors 400).
EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    BrokerageError: _brokerage_error,
    AuthError: _auth_error,
    msgspec.ValidationError: _validation_error,
    msgspec.DecodeError: _decode_error,
    HTTPException: _http_exception,
    redis.exceptions.ConnectionError: _redis_down,
    redis.exceptions.TimeoutError: _redis_down,
    **dict.fromkeys(DATABASE_DOWN, _database_down),
    Exception: _unexpected,
}


def not_found(message: str, details: Any = None) -> ApiError:
    return ApiError(404, "not_found", message, details)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message)
