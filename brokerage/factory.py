"""Builds what the configured broker (CLERA_BROKER) drives: the broker itself (the paper ledger by
default, Alpaca when asked) and the engine's position source on top of it (CLERA_POSITIONS=broker)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable

from brokerage.broker import Broker
from brokerage.paper import PaperBroker
from brokerage.paper_session import OnChange
from brokerage.positions import BrokerPositionSource, HoldingsNotifier
from brokerage.prices import PriceReader, RedisPriceReader
from brokerage.sql import Database
from brokerage.store_factory import store_from_settings
from engine.clock import Clock, clock_from_settings
from engine.config import Settings


def broker_from_settings(
    settings: Settings, clock: Clock, prices: PriceReader, *, on_change: OnChange | None = None
) -> Broker:
    """`on_change` (e.g. a `HoldingsNotifier`) hears which accounts' cash or positions a call changed."""
    if settings.broker == "alpaca":
        from brokerage.alpaca_broker import AlpacaBroker  # alpaca-py is only loaded when it is used

        return AlpacaBroker(settings, on_change=on_change)
    db = Database.for_settings(settings.database_url, settings.sqlite_path)
    return PaperBroker(db, clock, prices, settings=settings, on_change=on_change)


def process_broker(settings: Settings, redis_url: str) -> Broker:
    """The configured broker as every process builds it: shared clock, prices from Redis, and
    changed holdings announced on `holdings:changed` so the live values follow trades and transfers."""
    return broker_from_settings(
        settings, clock_from_settings(settings), RedisPriceReader(redis_url), on_change=HoldingsNotifier(redis_url)
    )


def position_source_from_settings(
    settings: Settings,
    *,
    redis_url: str | None = None,
    clock: Clock | None = None,
    prices: PriceReader | None = None,
    account_ids: Callable[[], Iterable[str]] | None = None,
) -> BrokerPositionSource:
    """The CLERA_POSITIONS=broker source.

    Redis comes from `redis_url`, else the settings, else the process environment's REDIS_URL
    (`clera serve` exports the embedded server's URL there before starting the actors). The paper
    ledger lists its own accounts; with Alpaca the accounts are the ones our store knows (see
    `store_account_ids`), unless `account_ids` says otherwise.
    """
    url = redis_url or settings.redis_external_url or os.environ.get("REDIS_URL")
    if not url:
        raise ValueError("the broker position source needs a Redis URL (pass redis_url or set REDIS_URL)")
    clock = clock or clock_from_settings(settings)
    broker = broker_from_settings(
        settings, clock, prices or RedisPriceReader(url), on_change=HoldingsNotifier(url)
    )
    if account_ids is None and settings.broker == "alpaca":
        account_ids = store_account_ids(settings)
    return BrokerPositionSource(broker, clock, account_ids)


def store_account_ids(settings: Settings) -> Callable[[], list[str]]:
    """The accounts to value when the broker cannot tell which of its accounts are ours.

    Alpaca's partner account holds whatever else shares its keys, so the store (where every account
    the product opens is recorded) decides. The list is read again at each full load, so an account
    opened since the last one joins at the next scheduled re-sync (sooner if it trades: the order's
    change hook reloads it by id). The store is opened at the first listing, not here, so a store
    that is down fails the load (which the shards retry), not the building of the source.
    """
    store = functools.cache(lambda: store_from_settings(settings))
    return lambda: store().list_account_ids()
