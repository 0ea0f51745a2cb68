"""The gateway's Starlette app, built from services so Serve and plain uvicorn run the same code.

Routes come from provider functions `(services) -> list[BaseRoute]`. By default every module in
`PROVIDER_MODULES` that exists contributes its `routes` function, which is how later features
(brokerage, agents, closure) mount into this app without editing it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
from collections.abc import AsyncIterator, Callable, Sequence

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from gateway.errors import EXCEPTION_HANDLERS
from gateway.monitor import HealthMonitor
from gateway.openapi import openapi_route
from gateway.services import Services
from gateway.ws import PortfolioHub

RouteProvider = Callable[[Services], list[BaseRoute]]

PROVIDER_MODULES: tuple[str, ...] = ("gateway.routes_core", "gateway.ws", "gateway.routes_brokerage")


def version() -> str:
    try:
        return importlib.metadata.version("clera-engine")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def default_providers() -> list[RouteProvider]:
    """`routes` of each provider module present in this checkout (a module that fails to import raises)."""
    return [
        importlib.import_module(name).routes
        for name in PROVIDER_MODULES
        if importlib.util.find_spec(name) is not None
    ]


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
