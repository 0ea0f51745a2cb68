"""Interactive API docs at `/docs`: Swagger UI over `/openapi.json`, served from the files the
swagger-ui-py package ships, so the page works on a machine with no network."""

from __future__ import annotations

from pathlib import Path

import swagger_ui
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(swagger_ui.__file__).parent / "static"

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Clera engine API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
  <link rel="icon" href="/docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
  </script>
</body>
</html>
"""


async def docs_page(_: Request) -> Response:
    return HTMLResponse(PAGE)


def routes(_: object) -> list[BaseRoute]:
    return [Route("/docs", docs_page, methods=["GET"]), Mount("/docs/static", StaticFiles(directory=STATIC))]
