"""Starlette glue for engine.auth: who the caller is, and whether they own the account they name.

Identity comes only from a verified credential (API key or JWT `sub`); headers such as `X-User-ID`
are never read. Route handlers call these helpers first thing and let the raised errors become the
documented 401/403/404 answers.
"""

from __future__ import annotations

import asyncio

from starlette.requests import HTTPConnection

from engine.auth import AuthError, bearer_token, check_api_key, verify_jwt
from gateway.errors import ApiError
from gateway.services import Services

SERVICE_CALLER = "service"


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services  # Starlette's app state is untyped
    return services


def require_api_key(conn: HTTPConnection) -> None:
    """Service-to-service calls: `X-API-Key` must equal BACKEND_API_KEY (constant-time)."""
    check_api_key(conn.headers.get("x-api-key"), services_of(conn).settings.backend_api_key)


def require_user(conn: HTTPConnection) -> str:
    """The user id of the `Authorization: Bearer` JWT (or `?token=` on a WebSocket)."""
    if conn.scope["type"] == "websocket":
        return socket_user(conn.headers.get("authorization"), conn.query_params.get("token"), services_of(conn))
    token = bearer_token(conn.headers.get("authorization"))
    if token is None:
        raise AuthError("bearer token missing")
    return verify_jwt(token, services_of(conn).settings.jwt_secret)


def socket_user(authorization: str | None, query_token: str | None, services: Services) -> str:
    """A socket's user id: the `Authorization: Bearer` header wins, else `?token=` (browsers cannot set
    headers on a WebSocket). Shared by the ASGI route and the replica's own WebSocket server."""
    token = bearer_token(authorization)
    if token is None:
        token = query_token
    if token is None:
        raise AuthError("bearer token missing")
    return verify_jwt(token, services.settings.jwt_secret)


def require_caller(conn: HTTPConnection) -> str:
    """A route open to services and to people: the API key wins when present, else a user JWT."""
    if conn.headers.get("x-api-key") is not None:
        require_api_key(conn)
        return SERVICE_CALLER
    return require_user(conn)


async def check_owner(services: Services, user_id: str, account_id: str) -> None:
    """403 for any account that is not the caller's, whether it exists or not: the answer must
    not tell a signed-in person which account ids exist."""
    owner = await asyncio.to_thread(services.store.owner_of, account_id)
    if owner != user_id:
        raise ApiError(403, "forbidden", "you have no account with this id", {"account_id": account_id})


async def require_owner(conn: HTTPConnection, account_id: str) -> str:
    """The user id of a caller who owns `account_id`."""
    user_id = require_user(conn)
    await check_owner(services_of(conn), user_id, account_id)
    return user_id
