"""Daily price history for the agents' metrics: the shipped real prices offline, Alpaca's bars live.

Both sources answer the same two questions (a symbol's adjusted daily closes, the market proxy's
level) and say what they are: the offline market proxy is an equal-weight index of the few shipped
symbols, not the S&P 500, and the agents must not present it as one, so it carries its own label.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Protocol, cast
from zoneinfo import ZoneInfo

import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.models import BarSet
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame

from brokerage.errors import Unavailable
from engine.config import Settings
from engine.prices_data import PriceData, load_price_data
from engine.timeout_session import TimeoutSession

NEW_YORK = ZoneInfo("America/New_York")
OFFLINE_SOURCE = "shipped daily data (Quandl WIKI, split-adjusted)"
ALPACA_SOURCE = "alpaca"
ALPACA_MARKET_SYMBOL = "SPY"
ALPACA_MARKET_LABEL = "SPY (S&P 500 ETF)"
INDEX_BASE = 100.0

DatedSeries = list[tuple[dt.date, float]]


class PriceHistory(Protocol):
    """Adjusted daily closes, oldest first, over an inclusive day range; [] when nothing is known."""

    market_label: str
    source: str

    def closes(self, symbol: str, start: dt.date, end: dt.date) -> DatedSeries: ...

    def market_closes(self, start: dt.date, end: dt.date) -> DatedSeries: ...


class OfflineHistory:
    """The shipped daily prices; the market proxy is an equal-weight index of the shipped symbols.

    Five large-cap tech stocks are no market, and there is no index in the shipped file, so the proxy
    is built from what exists and labelled as such (beta against it measures co-movement with those
    stocks, not with the S&P 500).
    """

    source = OFFLINE_SOURCE

    def __init__(self, price_data: PriceData | None = None) -> None:
        self._data = price_data if price_data is not None else load_price_data()
        self._symbols = self._data.symbols()
        self.market_label = (
            f"equal-weight index of the shipped symbols ({', '.join(self._symbols)}), not the S&P 500"
        )

    def closes(self, symbol: str, start: dt.date, end: dt.date) -> DatedSeries:
        return [(b.day, b.close) for b in self._data.daily_bars(symbol.strip().upper()) if start <= b.day <= end]

    def market_closes(self, start: dt.date, end: dt.date) -> DatedSeries:
        """Index level: 100 on the range's first trading day, then compounded by each day's mean return.

        A day's return averages only the symbols with a close on both that day and the previous index
        day, so a listing (FB from 2012-05-18) joins the index without a jump and a missing bar does
        not count as a zero return.
        """
        by_day: dict[dt.date, dict[str, float]] = {}
        for symbol in self._symbols:
            for day, close in self.closes(symbol, start, end):
                by_day.setdefault(day, {})[symbol] = close
        days = sorted(by_day)
        if not days:
            return []
        level = INDEX_BASE
        series = [(days[0], level)]
        for previous, day in itertools.pairwise(days):
            before, now = by_day[previous], by_day[day]
            returns = [now[s] / before[s] - 1 for s in now if s in before]
            if returns:
                level *= 1 + sum(returns) / len(returns)
            series.append((day, level))
        return series


class AlpacaHistory:
    """Daily bars from Alpaca's market-data REST API through alpaca-py; the market proxy is SPY.

    Prices are adjusted for splits and dividends (`Adjustment.ALL`), like the shipped data's
    `Adj Close`, so returns over a split or an ex-dividend day are real returns. alpaca-py follows
    `next_page_token` itself, so one call returns the whole range.
    """

    source = ALPACA_SOURCE
    market_label = ALPACA_MARKET_LABEL

    def __init__(
        self,
        api_key: str,
        secret: str,
        data_url: str | None = None,
        feed: str = "iex",
        *,
        sandbox: bool = False,
        use_basic_auth: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self._client = StockHistoricalDataClient(
            api_key, secret, use_basic_auth=use_basic_auth, url_override=data_url, sandbox=sandbox
        )
        self._client._session = TimeoutSession(timeout)
        self._feed = DataFeed(feed)

    def closes(self, symbol: str, start: dt.date, end: dt.date) -> DatedSeries:
        symbol = symbol.strip().upper()
        if end < start:
            return []
        request = StockBarsRequest(
            symbol_or_symbols=symbol,
            timeframe=TimeFrame.Day,
            start=dt.datetime.combine(start, dt.time(0), NEW_YORK),
            end=dt.datetime.combine(end, dt.time(23, 59, 59), NEW_YORK),
            adjustment=Adjustment.ALL,
            feed=self._feed,
        )
        try:
            # typed `BarSet | RawData`; with raw_data off (the default) it is the BarSet
            bars = cast(BarSet, self._client.get_stock_bars(request)).data.get(symbol, [])
        except (APIError, requests.RequestException, ValueError) as exc:  # ValueError: a body alpaca-py can't parse
            raise Unavailable(f"Alpaca daily bars for {symbol} unavailable: {exc}") from exc
        # A daily bar is stamped at midnight New York time: its New York date is the session.
        dated = {bar.timestamp.astimezone(NEW_YORK).date(): bar.close for bar in bars}
        return sorted((day, close) for day, close in dated.items() if start <= day <= end)

    def market_closes(self, start: dt.date, end: dt.date) -> DatedSeries:
        return self.closes(ALPACA_MARKET_SYMBOL, start, end)


def history_from_settings(settings: Settings) -> PriceHistory:
    """Alpaca's history when the live feed is Alpaca and keys are set, else the shipped prices.

    The keys are broker-partner keys (`BROKER_API_KEY`), which authenticate market data with Basic
    auth, as the live feed does.
    """
    if settings.feed == "alpaca" and settings.broker_api_key and settings.broker_secret_key:
        return AlpacaHistory(
            settings.broker_api_key,
            settings.broker_secret_key,
            data_url=settings.alpaca_data_url,
            feed=settings.alpaca_data_feed,
            sandbox=settings.alpaca_environment == "sandbox",
            use_basic_auth=True,
        )
    return OfflineHistory()
