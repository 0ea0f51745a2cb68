"""Builds the configured broker (CLERA_BROKER): the paper ledger by default, Alpaca when asked."""

from __future__ import annotations

from brokerage.broker import Broker
from brokerage.paper import PaperBroker
from brokerage.paper_session import OnChange
from brokerage.positions import HoldingsNotifier
from brokerage.prices import PriceReader, RedisPriceReader
from brokerage.sql import Database
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
