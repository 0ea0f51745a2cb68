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
from gateway.socket_server import SocketServer

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


def build_app(
    services: Services, providers: Sequence[RouteProvider] | None = None, *, socket_server: bool = False
) -> Starlette:
    """`socket_server`: also serve `/ws/portfolio` from the replica's own WebSocket server (when
    CLERA_NATIVE_WS allows), started and stopped with the app. Only a Serve replica asks for it: tests
    and a plain uvicorn bind no port they did not ask for."""
    routes: list[BaseRoute] = []
    for provide in default_providers() if providers is None else providers:
        routes.extend(provide(services))
    routes.append(openapi_route("Clera engine API", version()))

    monitor = HealthMonitor(services)
    hub = PortfolioHub(services)
    settings = services.settings
    sockets = SocketServer(hub, services) if socket_server and settings.native_ws else None

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await monitor.check_once()  # health is truthful from the first request on
        monitor.start()
        if sockets is not None:
            await sockets.start(settings.host, settings.ws_port)
        try:
            yield
        finally:
            if sockets is not None:
                await sockets.close()
            await hub.close()
            await monitor.stop()
            await services.aclose()

    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.services = services
    app.state.monitor = monitor
    app.state.hub = hub
    app.state.socket_server = sockets
    app.state.version = version()
    return app
