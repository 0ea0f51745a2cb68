"""Builds the configured broker (CLERA_BROKER): the paper ledger by default, Alpaca when asked."""

from __future__ import annotations

from brokerage.broker import Broker
from brokerage.paper import OnChange, PaperBroker
from brokerage.prices import PriceReader
from brokerage.sql import Database
from engine.clock import Clock
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
