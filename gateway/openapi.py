"""`/openapi.json` generated from the routes themselves and the msgspec Structs they declare.

A route declares its body/response types and auth by being an `ApiRoute`; plain Starlette routes
(and WebSocket routes) are still listed, so the document names every route the app serves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from gateway.errors import ErrorResponse

# A decimal as the server reads it in a body: a plain decimal string or a JSON number.
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
# An id in a query string (`?accountId=`): surrounding spaces are trimmed, so it needs one non-space.
ID_QUERY: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"\S"}

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
        query: Mapping[str, dict[str, Any]] | None = None,
        path_schemas: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        """`query` names the required query parameters with their schemas; `path_schemas` constrains
        path parameters beyond "a string" (both as the endpoint enforces them)."""
        super().__init__(path, endpoint, methods=list(methods))
        self.summary = summary
        self.auth = auth
        self.body_type = body
        self.response_type = response
        self.errors = tuple(errors)
        self.tags = list(tags)
        self.query = dict(query or {})
        self.path_schemas = dict(path_schemas or {})


class SocketCompanion(Route):
    """The plain-HTTP GET of a WebSocket path (answering 426); documented with the socket, not apart."""

    def __init__(self, path: str, endpoint: Callable[..., Any]) -> None:
        super().__init__(path, endpoint, methods=["GET"])


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


def _decimals_as_read(schema: Any) -> Any:
    """msgspec describes a Decimal as a string of format "decimal", which no client generator knows;
    say what the server parses instead (a plain decimal string, or a number)."""
    if isinstance(schema, list):
        return [_decimals_as_read(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") == "string" and schema.get("format") == "decimal":
        return {"anyOf": [{"type": "string", "pattern": DECIMAL_PATTERN}, {"type": "number"}]}
    return {k: _decimals_as_read(v) for k, v in schema.items()}


def _parameters(route: BaseRoute) -> list[dict[str, Any]]:
    overrides = route.path_schemas if isinstance(route, ApiRoute) else {}
    params = [
        {"name": name, "in": "path", "required": True, "schema": overrides.get(name, {"type": "string"})}
        for name in route.param_convertors  # type: ignore[attr-defined]  # Route and WebSocketRoute both have it
    ]
    if isinstance(route, ApiRoute):
        params += [{"name": name, "in": "query", "required": True, "schema": s} for name, s in route.query.items()]
    return params


def build_openapi(routes: Sequence[BaseRoute], *, title: str, version: str) -> dict[str, Any]:
    flat = _flatten(routes)
    types: list[Any] = [ErrorResponse]
    for _, route in flat:
        if isinstance(route, ApiRoute):
            types.extend(t for t in (route.body_type, route.response_type) if t is not None)
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    schemas, components = _decimals_as_read(list(schemas)), _decimals_as_read(components)
    schema_of = {id(t): s for t, s in zip(types, schemas, strict=True)}

    paths: dict[str, dict[str, Any]] = {}
    for path, route in flat:
        params = _parameters(route)
        if isinstance(route, WebSocketRoute):
            paths.setdefault(path, {})["get"] = {
                "summary": "WebSocket (upgrade); see the route's documentation",
                "parameters": params,
                "responses": {
                    "101": {"description": "switching protocols"},
                    "426": {
                        "description": "a plain HTTP request: this path only speaks WebSocket",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
                    },
                },
                "x-websocket": True,
            }
            continue
        if isinstance(route, SocketCompanion):
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):  # type: ignore[attr-defined]  # a Route by now
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
