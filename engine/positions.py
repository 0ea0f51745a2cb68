"""The `PositionSource` port: where the realtime engine learns each account's cash and holdings.

Implementations: a JSON file of demo accounts (`engine.demo_positions`), the paper broker and
Alpaca (`brokerage.positions`). A source that changes holdings announces the account ids on the
Redis channel `holdings:changed` (see `engine.pubsub`), and `PositionSync` reloads just those.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol

from engine.types import AccountHoldings


class PositionSource(Protocol):
    def load_all(self, keep: Callable[[str], bool] | None = None) -> list[AccountHoldings]:
        """Every account with its holdings for the current trading session; with `keep`, only the
        accounts it accepts, chosen before any is loaded (a shard asks for its own: loading an
        account can cost a broker several API calls)."""
        ...

    def load(self, account_ids: Collection[str]) -> list[AccountHoldings]:
        """These accounts; unknown ids are left out (a closed account disappears)."""
        ...
