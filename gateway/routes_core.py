"""Health, portfolio reads and company profiles: the routes every deployment has."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from brokerage.company_profiles import SYMBOL_ALIASES
from brokerage.fmp_rows import FmpQuote
from brokerage.store import CompanyProfile
from engine.types import PortfolioSnapshot, PositionValue
from gateway.auth import require_caller, require_owner, services_of
from gateway.body import json_response
from gateway.errors import ApiError, not_found
from gateway.monitor import HealthMonitor
from gateway.openapi import ApiRoute
from gateway.services import EngineState

TICKER_PATTERN = r"^[A-Za-z][A-Za-z0-9.\-]{0,11}$"
_TICKER = re.compile(TICKER_PATTERN)


class HealthResponse(msgspec.Struct):
    status: str
    version: str
    uptime_s: float
    redis_reachable: bool | None
    engine: EngineState
    websockets: int


class WsHealthResponse(HealthResponse):
    """The seed's `/ws/health` (`status` "healthy", `service`, `websocket_host`, `websocket_port` as a
    string, `timestamp`) beside what the other health routes report; "degraded" when they would say so."""

    service: str
    websocket_host: str
    websocket_port: str
    timestamp: str


SEED_WS_SERVICE = "api-server-websocket-proxy"  # the seed's name for this check, kept for its consumers


class PositionsResponse(msgspec.Struct):
    account_id: str
    as_of: float
    source: str
    positions: list[PositionValue]


class PriceInfo(msgspec.Struct):
    symbol: str  # the price data's symbol, which may be an alias (Meta trades as FB in the replayed data)
    last: float
    prev_close: float
    change: float
    change_pct: float
    ts: float
    session: str
    source: str
    live: bool


class CompanyResponse(msgspec.Struct, kw_only=True):
    """`price` is the engine's latest price (what portfolios are valued at, with its source); `quote`
    FMP's live quote when the FMP key is set. `live`: profile and quote are FMP's, fetched at
    `fetched_at` (cached up to CLERA_COMPANY_CACHE_TTL_S); `stale`: FMP failed (`error` says why) and
    the profile is the stored one."""

    symbol: str
    profile: CompanyProfile
    price: PriceInfo | None
    quote: FmpQuote | None = None
    live: bool = False
    stale: bool = False
    fetched_at: dt.datetime | None = None
    error: str | None = None


def _health(request: Request) -> HealthResponse:
    """Answered from memory (the monitor refreshes in the background): load balancers may poll freely.
    "ok" only when Redis answered and the engine was seen healthy; not knowing is "degraded"."""
    monitor: HealthMonitor = request.app.state.monitor
    engine = monitor.engine
    ok = monitor.redis_ok is True and engine.state == "ok"
    return HealthResponse(
        status="ok" if ok else "degraded",
        version=request.app.state.version,
        uptime_s=round(time.time() - monitor.started_at, 3),
        redis_reachable=monitor.redis_ok,
        engine=engine,
        websockets=request.app.state.hub.sockets,
    )


async def health(request: Request) -> Response:
    return json_response(_health(request))


async def ws_health(request: Request) -> Response:
    report = msgspec.structs.asdict(_health(request))
    report["status"] = "healthy" if report["status"] == "ok" else report["status"]
    settings = services_of(request).settings
    return json_response(
        WsHealthResponse(
            **report,
            service=SEED_WS_SERVICE,
            websocket_host=settings.host,
            websocket_port=str(settings.socket_port),
            timestamp=dt.datetime.now(dt.UTC).isoformat(),
        )
    )


async def _snapshot(request: Request) -> PortfolioSnapshot:
    account_id = request.path_params["account_id"]
    await require_owner(request, account_id)
    snapshot = await services_of(request).portfolio.latest(account_id)
    if snapshot is None:
        raise not_found("no portfolio snapshot for this account yet", {"account_id": account_id})
    return snapshot


async def portfolio(request: Request) -> Response:
    return json_response(await _snapshot(request))


async def positions(request: Request) -> Response:
    snapshot = await _snapshot(request)
    return json_response(
        PositionsResponse(
            account_id=snapshot.account_id, as_of=snapshot.as_of, source=snapshot.source, positions=snapshot.positions
        )
    )


def _price_symbols(symbol: str) -> list[str]:
    """The symbol itself, then its aliases either way (FB <-> META)."""
    aliases = [alias for alias, target in SYMBOL_ALIASES.items() if target == symbol]
    if symbol in SYMBOL_ALIASES:
        aliases.append(SYMBOL_ALIASES[symbol])
    return [symbol, *aliases]


async def company(request: Request) -> Response:
    require_caller(request)
    ticker = request.path_params["ticker"]
    if not _TICKER.match(ticker):
        raise ApiError(
            422,
            "invalid_request",
            "ticker must be a letter, then up to 11 letters, digits, '.' or '-'",
            {"ticker": ticker},
        )
    symbol = ticker.upper()
    services = services_of(request)
    found = await asyncio.to_thread(services.company.lookup, symbol)
    if found.profile is None and found.stale:
        raise ApiError(
            503, "company_data_unavailable", f"FMP failed and no profile of {symbol} is stored",
            {"ticker": symbol, "reason": found.error},
        )
    if found.profile is None:
        raise not_found(f"no company profile for {symbol}", {"ticker": symbol})
    last = None
    for candidate in _price_symbols(symbol):
        last = await services.portfolio.last_price(candidate)
        if last is not None:
            break
    price = None
    if last is not None:
        change = last.last - last.prev_close
        price = PriceInfo(
            symbol=last.symbol,
            last=last.last,
            prev_close=last.prev_close,
            change=round(change, 4),
            change_pct=round(change * 100 / last.prev_close, 4) if last.prev_close else 0.0,
            ts=last.ts,
            session=last.session,
            source=last.source,
            live=last.source == "alpaca",
        )
    return json_response(
        CompanyResponse(
            symbol=symbol, profile=found.profile, price=price, quote=found.quote, live=found.live,
            stale=found.stale, fetched_at=found.fetched_at, error=found.error,
        )
    )


def routes(_: object) -> list[BaseRoute]:
    health_doc: dict[str, Any] = {"auth": "none", "response": HealthResponse, "tags": ["health"]}
    return [
        ApiRoute("/api/health", health, summary="Gateway health (cheap, no external calls)", **health_doc),
        ApiRoute("/health", health, summary="Gateway health (alias)", **health_doc),
        ApiRoute(
            "/ws/health",
            ws_health,
            summary="Gateway health in the seed's WebSocket shape (for WebSocket load balancers)",
            auth="none",
            response=WsHealthResponse,
            tags=["health"],
        ),
        ApiRoute(
            "/api/portfolio/{account_id}",
            portfolio,
            summary="Latest portfolio snapshot",
            auth="owner",
            response=PortfolioSnapshot,
            tags=["portfolio"],
        ),
        ApiRoute(
            "/api/portfolio/{account_id}/positions",
            positions,
            summary="Positions of the latest snapshot",
            auth="owner",
            response=PositionsResponse,
            tags=["portfolio"],
        ),
        ApiRoute(
            "/api/company/{ticker}",
            company,
            summary="Company profile with the latest price and its source",
            auth="caller",
            response=CompanyResponse,
            errors=(404, 422, 503),
            tags=["company"],
            path_schemas={"ticker": {"type": "string", "pattern": TICKER_PATTERN}},
        ),
    ]
