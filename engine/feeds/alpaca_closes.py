"""Previous closes for the Alpaca feed, from the market data snapshot endpoint (REST).

alpaca-py's REST client sends no timeout: here every request has one, so a hung data host cannot
hang a subscribe.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.models import Snapshot
from alpaca.data.requests import StockSnapshotRequest

from engine.feeds.validate import is_price
from engine.timeout_session import TimeoutSession

NEW_YORK = ZoneInfo("America/New_York")
SNAPSHOT_CHUNK = 500  # symbols per snapshot request (Alpaca's URL length and page limits)
FETCH_ERRORS = (APIError, requests.RequestException, ValueError)  # ValueError: pydantic on a bad body


class PrevCloses:
    """The close of the trading day before a session, per symbol."""

    def __init__(
        self, key: str, secret: str, data_feed: DataFeed, *, data_url: str | None, sandbox: bool,
        use_basic_auth: bool, timeout: float,
    ) -> None:
        self._rest = StockHistoricalDataClient(key, secret, use_basic_auth=use_basic_auth, url_override=data_url,
                                               sandbox=sandbox)
        self._rest._session = TimeoutSession(timeout)
        self._data_feed = data_feed

    def fetch(self, symbols: list[str], session: dt.date) -> dict[str, float]:
        """Previous closes as of `session` from the snapshot endpoint; raises on transport/API errors."""
        found: dict[str, float] = {}
        for i in range(0, len(symbols), SNAPSHOT_CHUNK):
            chunk = symbols[i : i + SNAPSHOT_CHUNK]
            snapshots = self._rest.get_stock_snapshot(
                StockSnapshotRequest(symbol_or_symbols=chunk, feed=self._data_feed)
            )
            for symbol, snap in snapshots.items():
                value = prev_close(snap, session)
                if value is not None:
                    found[symbol] = value
        return found


def prev_close(snap: Snapshot, session: dt.date) -> float | None:
    """The close of the trading day before `session`: today's daily bar may or may not exist yet."""
    daily, previous = snap.daily_bar, snap.previous_daily_bar
    if daily is not None and daily.timestamp.astimezone(NEW_YORK).date() < session:
        value: float | None = daily.close
    elif previous is not None:
        value = previous.close
    else:  # a first trading day: its open stands in, as in the replay
        value = daily.open if daily is not None else None
    return value if is_price(value) else None
