"""Starting, finding and checking the realtime engine's named actors.

`start_topology` is get-or-create: `clera serve` calls it after starting Ray and Redis, and a Serve
application on a cluster calls it to make sure the engine exists. Actors are detached (they outlive
the driver that created them), named in the settings' Ray namespace, and restart without limit;
each rebuilds its state from the position source, Redis and the other actors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import ray

from actors import placement
from actors.common import (
    lookup,
    market_feed_name,
    portfolio_shard_name,
    position_sync_name,
    symbol_shard_name,
)
from actors.market_feed import FeedFactory, MarketFeed
from actors.portfolio_shard import PortfolioShard
from actors.position_sync import PositionSync
from actors.symbol_shard import SymbolShard
from brokerage.factory import position_source_from_settings as broker_source
from engine.config import Settings
from engine.demo_positions import FilePositionSource
from engine.positions import PositionSource

log = logging.getLogger(__name__)

SourceFactory = Callable[[Settings], PositionSource]
RESTARTABLE: dict[str, Any] = {"lifetime": "detached", "max_restarts": -1, "max_task_retries": 2, "num_cpus": 0}


def position_source_from_settings(settings: Settings) -> PositionSource:
    """The one place that maps CLERA_POSITIONS to a position source (used inside the actors)."""
    if settings.positions == "file":
        return FilePositionSource(settings.demo_accounts_file)
    return broker_source(settings)


class Topology(msgspec.Struct, kw_only=True):
    """Handles of the engine's actors (each also reachable by name in the namespace)."""

    market_feed: Any
    symbol_shards: list[Any]
    portfolio_shards: list[Any]
    position_sync: Any


def _actor(cls: Any, name: str, settings: Settings, where: dict[str, Any], *args: Any) -> Any:
    return cls.options(
        name=name, namespace=settings.ray_namespace, get_if_exists=True, **where, **RESTARTABLE
    ).remote(settings, *args)


def start_topology(
    settings: Settings,
    redis_url: str,
    *,
    source_factory: SourceFactory = position_source_from_settings,
    feed_factory: FeedFactory | None = None,
    wait: bool = True,
) -> Topology:
    """Get or create every engine actor; with `wait`, return once the shards have loaded their accounts.

    Symbol shards come first (the portfolio shards register with them), the feed last but one,
    the position sync last (it tells every shard to reload when it starts).
    """
    # the actors find Redis in their settings: a URL with a password travels as a secret does (not at
    # all: each process takes it from its own environment), never as an argument of its own
    settings = msgspec.structs.replace(settings, redis_url=redis_url)
    place = placement.spread(placement.REALTIME)
    symbol_shards = [
        _actor(SymbolShard, symbol_shard_name(i), settings, next(place), i) for i in range(settings.symbol_shards)
    ]
    portfolio_shards = [
        _actor(PortfolioShard, portfolio_shard_name(j), settings, next(place), j, source_factory)
        for j in range(settings.portfolio_shards)
    ]
    market_feed = _actor(MarketFeed, market_feed_name(), settings, next(place), feed_factory)
    position_sync = _actor(PositionSync, position_sync_name(), settings, next(place))
    topology = Topology(
        market_feed=market_feed,
        symbol_shards=symbol_shards,
        portfolio_shards=portfolio_shards,
        position_sync=position_sync,
    )
    if wait:
        ray.get([s.ready.remote() for s in portfolio_shards] + [position_sync.ready.remote()], timeout=120)
        ray.get(market_feed.ready.remote(), timeout=60)  # after the shards: it takes over their symbols
    return topology


def stop_topology(settings: Settings) -> None:
    """Kill every engine actor for good (tests and benchmarks; `clera serve` ends its whole Ray instead)."""
    ns = settings.ray_namespace
    names = [market_feed_name(), position_sync_name()]  # upstream first: fewer calls die in flight
    names += [symbol_shard_name(i) for i in range(settings.symbol_shards)]
    names += [portfolio_shard_name(j) for j in range(settings.portfolio_shards)]
    for name in names:
        handle = lookup(name, ns)
        if handle is not None:
            ray.kill(handle, no_restart=True)


async def _probe(handle: Any, timeout: float) -> dict[str, Any] | None:
    if handle is None:
        return None
    try:
        return await asyncio.wait_for(handle.status.remote(), timeout)
    except (TimeoutError, ray.exceptions.RayError):
        return None


async def health(settings: Settings, timeout: float = 2.0) -> dict[str, Any]:
    """Feed status and which shards answer; `ok` when every actor answered and the feed is connected."""
    ns = settings.ray_namespace
    feed, sync = await asyncio.gather(
        _probe(lookup(market_feed_name(), ns), timeout), _probe(lookup(position_sync_name(), ns), timeout)
    )
    symbols = await asyncio.gather(
        *(_probe(lookup(symbol_shard_name(i), ns), timeout) for i in range(settings.symbol_shards))
    )
    portfolios = await asyncio.gather(
        *(_probe(lookup(portfolio_shard_name(j), ns), timeout) for j in range(settings.portfolio_shards))
    )
    feed_ok = feed is not None and bool(feed["feed"]["connected"])
    return {
        "ok": feed_ok and sync is not None and all(symbols) and all(p and p["ready"] for p in portfolios),
        "feed": feed,
        "position_sync": sync,
        "symbol_shards": [{"index": i, "alive": s is not None, "status": s} for i, s in enumerate(symbols)],
        "portfolio_shards": [{"index": j, "alive": p is not None, "status": p} for j, p in enumerate(portfolios)],
    }
