"""Builds the agents' dependencies and runner from the settings, as every process does."""

from __future__ import annotations

from agents.deps import AgentDeps
from agents.history import history_from_settings
from agents.llm import chat_model
from agents.runner import AgentRunner
from agents.symbols import default_resolver
from agents.threads import ThreadRegistry
from brokerage.broker import Broker
from brokerage.factory import process_broker
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from brokerage.store import Store
from brokerage.store_factory import store_from_settings
from engine.clock import clock_from_settings
from engine.config import ConfigError, Settings

DEFAULT_PREFERRED = ("AAPL", "MSFT", "IBM", "GOOG", "FB")


def preferred_symbols(settings: Settings) -> tuple[str, ...]:
    """The symbols the feed prices, preferred when a company name has several tickers (Meta: FB or META)."""
    if settings.feed == "replay":
        return tuple(settings.replay_symbol_list)
    return tuple(settings.pinned_symbol_list) or DEFAULT_PREFERRED


def deps_from_settings(
    settings: Settings, redis_url: str | None = None, *, store: Store | None = None, broker: Broker | None = None
) -> AgentDeps:
    url = redis_url or settings.redis_external_url
    if url is None:
        raise ConfigError("the agents read prices from Redis: set REDIS_URL (or run them under `clera serve`)")
    resolver = default_resolver(preferred_symbols(settings))
    return AgentDeps(
        settings=settings,
        broker=broker if broker is not None else process_broker(settings, url),
        store=store if store is not None else store_from_settings(settings),
        prices=RedisPriceReader(url),
        history=history_from_settings(settings),
        clock=clock_from_settings(settings),
        resolver=resolver,
        model=chat_model(settings, resolver),
    )


def runner_from_settings(
    settings: Settings, redis_url: str | None = None, *, store: Store | None = None, broker: Broker | None = None
) -> AgentRunner:
    """The runner with its thread registry in the store's database (the SQLite file or DATABASE_URL)."""
    registry = ThreadRegistry(Database.for_settings(settings.database_url, settings.sqlite_path))
    registry.migrate()
    return AgentRunner(deps_from_settings(settings, redis_url, store=store, broker=broker), registry)
