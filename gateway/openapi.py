"""`/openapi.json` generated from the routes themselves and the msgspec Structs they declare.

A route declares its body/response types and auth by being an `ApiRoute`; plain Starlette routes
(and WebSocket routes) are still listed, so the document names every route the app serves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from gateway.errors import ErrorResponse

# service_user / service_owner: a service call made on behalf of a person, so both credentials are needed.
Auth = Literal["none", "api_key", "jwt", "owner", "caller", "service_user", "service_owner"]

_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "none": [],
    "api_key": [{"ApiKey": []}],
    "jwt": [{"BearerJWT": []}],
    "owner": [{"BearerJWT": []}],
    "caller": [{"ApiKey": []}, {"BearerJWT": []}],
    "service_user": [{"ApiKey": [], "BearerJWT": []}],
    "service_owner": [{"ApiKey": [], "BearerJWT": []}],
}
_ERRORS_BY_AUTH: dict[str, tuple[int, ...]] = {
    "none": (),
    "api_key": (401,),
    "jwt": (401,),
    "owner": (401, 403, 404),
    "caller": (401,),
    "service_user": (401,),
    "service_owner": (401, 403, 404),
}


class ApiRoute(Route):
    """A Starlette route that also documents itself (body and response types, auth, summary)."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Sequence[str] = ("GET",),
        summary: str = "",
        auth: Auth = "none",
        body: Any = None,
        response: Any = None,
        errors: Sequence[int] = (),
        tags: Sequence[str] = (),
    ) -> None:
        super().__init__(path, endpoint, methods=list(methods))
        self.summary = summary
        self.auth = auth
        self.body_type = body
        self.response_type = response
        self.errors = tuple(errors)
        self.tags = list(tags)


def _flatten(routes: Sequence[BaseRoute], prefix: str = "") -> list[tuple[str, BaseRoute]]:
    out: list[tuple[str, BaseRoute]] = []
    for route in routes:
        if isinstance(route, Mount):
            out.extend(_flatten(route.routes, prefix + route.path))
        elif isinstance(route, (Route, WebSocketRoute)):
            out.append((prefix + route.path, route))
    return out


def _error_ref(status: int) -> dict[str, Any]:
    return {
        "description": {400: "malformed request", 401: "not authenticated", 403: "not your account",
                        404: "not found", 409: "conflict", 422: "invalid request",
                        503: "dependency unavailable"}.get(status, "error"),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


def build_openapi(routes: Sequence[BaseRoute], *, title: str, version: str) -> dict[str, Any]:
    flat = _flatten(routes)
    types: list[Any] = [ErrorResponse]
    for _, route in flat:
        if isinstance(route, ApiRoute):
            types.extend(t for t in (route.body_type, route.response_type) if t is not None)
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    schema_of = {id(t): s for t, s in zip(types, schemas)}

    paths: dict[str, dict[str, Any]] = {}
    for path, route in flat:
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.param_convertors
        ]
        if isinstance(route, WebSocketRoute):
            paths.setdefault(path, {})["get"] = {
                "summary": "WebSocket (upgrade); see the route's documentation",
                "parameters": params,
                "responses": {"101": {"description": "switching protocols"}},
                "x-websocket": True,
            }
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            op: dict[str, Any] = {"parameters": params, "responses": {}}
            if isinstance(route, ApiRoute):
                op["summary"] = route.summary
                op["tags"] = route.tags
                op["security"] = _SECURITY[route.auth]
                ok: dict[str, Any] = {"description": "OK"}
                if route.response_type is not None:
                    ok["content"] = {"application/json": {"schema": schema_of[id(route.response_type)]}}
                op["responses"]["200"] = ok
                if route.body_type is not None:
                    op["requestBody"] = {
                        "required": True,
                        "content": {"application/json": {"schema": schema_of[id(route.body_type)]}},
                    }
                statuses = set(_ERRORS_BY_AUTH[route.auth]) | set(route.errors)
                if route.body_type is not None:
                    statuses |= {400, 422}
                for status in sorted(statuses):
                    op["responses"][str(status)] = _error_ref(status)
            else:
                op["responses"]["200"] = {"description": "OK"}
            paths.setdefault(path, {})[method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "BearerJWT": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def openapi_route(title: str, version: str) -> Route:
    """The document is built once, on first request, from the app's final route table."""
    cache: dict[str, bytes] = {}

    async def endpoint(request: Request) -> Response:
        if "doc" not in cache:
            doc = build_openapi(request.app.routes, title=title, version=version)
            cache["doc"] = msgspec.json.encode(doc)
        return Response(cache["doc"], media_type="application/json")

    return Route("/openapi.json", endpoint, methods=["GET"])
