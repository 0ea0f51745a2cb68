"""The HTTP/WebSocket gateway: one Starlette app built from services (see gateway.app.build_app).

Helpers for route modules that mount into the app (each exposes `routes(services) -> list[BaseRoute]`):
`require_api_key`, `require_user`, `require_owner` (gateway.auth), `parse_body`, `json_response`
(gateway.body), `ApiRoute` (gateway.openapi) and the error types of gateway.errors.
"""

from gateway.app import build_app
from gateway.auth import require_api_key, require_caller, require_owner, require_user
from gateway.body import json_response, parse_body
from gateway.errors import ApiError
from gateway.openapi import ApiRoute
from gateway.services import Services

__all__ = [
    "ApiError",
    "ApiRoute",
    "Services",
    "build_app",
    "json_response",
    "parse_body",
    "require_api_key",
    "require_caller",
    "require_owner",
    "require_user",
]
