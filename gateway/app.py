"""The gateway's Starlette app, built from services so Serve and plain uvicorn run the same code.

Routes come from provider functions `(services) -> list[BaseRoute]`. By default every module
named in `PROVIDER_MODULES` contributes its `routes` function: a later feature (agents, account
closure) mounts into this app by adding its module's name there and its service to `Services`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
from collections.abc import AsyncIterator, Callable, Sequence

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from gateway.errors import EXCEPTION_HANDLERS
from gateway.hub import PortfolioHub
from gateway.monitor import HealthMonitor
from gateway.openapi import openapi_route
from gateway.services import Services

RouteProvider = Callable[[Services], list[BaseRoute]]

PROVIDER_MODULES: tuple[str, ...] = (
    "gateway.routes_core", "gateway.ws", "gateway.routes_brokerage", "gateway.routes_chat", "gateway.routes_closure",
    "gateway.docs",
)


def version() -> str:
    try:
        return importlib.metadata.version("clera-engine")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def default_providers() -> list[RouteProvider]:
    """`routes` of each provider module (one that fails to import raises: a route set never goes missing quietly)."""
    return [importlib.import_module(name).routes for name in PROVIDER_MODULES]


def build_app(services: Services, providers: Sequence[RouteProvider] | None = None) -> Starlette:
    routes: list[BaseRoute] = []
    for provide in default_providers() if providers is None else providers:
        routes.extend(provide(services))
    routes.append(openapi_route("Clera engine API", version()))

    monitor = HealthMonitor(services)
    hub = PortfolioHub(services)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await monitor.check_once()  # health is truthful from the first request on
        monitor.start()
        try:
            yield
        finally:
            await hub.close()
            await monitor.stop()
            await services.aclose()

    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.services = services
    app.state.monitor = monitor
    app.state.hub = hub
    app.state.version = version()
    return app
