"""The `Feed` port: one upstream source of trade prices (replay, simulated or Alpaca).

The engine holds exactly one feed (in the `MarketFeed` actor). Symbol reference counting happens
in the symbol shards; a feed only hears "start/stop sending this symbol" when a count crosses zero.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import Protocol

import msgspec

from engine.types import Tick


class FeedStatus(msgspec.Struct, kw_only=True):
    source: str
    connected: bool
    authenticated: bool = True
    error: str | None = None  # last problem a person must act on (e.g. "auth failed (402)")
    subscribed: int = 0
    ticks: int = 0  # accepted
    rejected: int = 0  # malformed frames, NaN/negative prices, unknown symbols
    reconnects: int = 0
    last_data_ts: float | None = None


class Feed(Protocol):
    source: str

    def subscribe(self, symbols: Collection[str]) -> list[str]:
        """Start sending these symbols; returns the ones this feed cannot serve (unknown)."""
        ...

    def unsubscribe(self, symbols: Collection[str]) -> None: ...

    def batches(self) -> AsyncIterator[list[Tick]]:
        """Validated ticks in batches, until `close()`; each tick carries its previous close."""
        ...

    async def close(self) -> None: ...

    def status(self) -> FeedStatus: ...
