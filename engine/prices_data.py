"""The shipped daily prices (Quandl WIKI, public domain), split-adjusted, as plain data.

Raw WIKI open/high/low/close jump at every split (AAPL halves on 2000-06-21), so every price is
scaled by the row's `Adj Close / Close`; the replay, the tests and the benchmarks all read the
prices through this one loader so they agree on every number.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import functools
import gzip
import math
from importlib import resources
from pathlib import Path

import msgspec

DATA_FILE = "daily-ohlcv-quandl-wiki.csv.gz"
# The days the shipped file covers, known without reading it (settings check a replay start
# against them at start-up; a test keeps them equal to the file's).
SHIPPED_FIRST_DAY = dt.date(2000, 3, 1)
SHIPPED_LAST_DAY = dt.date(2013, 3, 1)
COLUMNS = ("Ticker", "Date", "Open", "High", "Low", "Close", "Volume", "Adj Close")


class PriceDataError(ValueError):
    """The price file is not what the loader expects (wrong columns, a non-positive price...)."""


class DailyBar(msgspec.Struct, frozen=True, gc=False):
    """One split-adjusted trading day; `factor` is the `Adj Close / Close` applied, `volume` is raw."""

    symbol: str
    day: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: float
    factor: float


class PriceData:
    """Adjusted daily bars per symbol, sorted by day, with lookups by day."""

    def __init__(self, bars: list[DailyBar]) -> None:
        by_symbol: dict[str, list[DailyBar]] = {}
        for bar in sorted(bars, key=lambda b: (b.symbol, b.day)):
            by_symbol.setdefault(bar.symbol, []).append(bar)
        self._bars = by_symbol
        self._days = {symbol: [b.day for b in rows] for symbol, rows in by_symbol.items()}

    def symbols(self) -> list[str]:
        return sorted(self._bars)

    def daily_bars(self, symbol: str) -> list[DailyBar]:
        """All adjusted bars of `symbol`, oldest first (empty for an unknown symbol)."""
        return list(self._bars.get(symbol, ()))

    def first_day(self, symbol: str) -> dt.date | None:
        days = self._days.get(symbol)
        return days[0] if days else None

    def last_day(self) -> dt.date | None:
        return max((days[-1] for days in self._days.values()), default=None)

    def bar_on(self, symbol: str, day: dt.date) -> DailyBar | None:
        days = self._days.get(symbol)
        if not days:
            return None
        i = bisect.bisect_left(days, day)
        return self._bars[symbol][i] if i < len(days) and days[i] == day else None

    def close_on(self, symbol: str, day: dt.date) -> float | None:
        bar = self.bar_on(symbol, day)
        return None if bar is None else bar.close

    def prev_close(self, symbol: str, day: dt.date) -> float | None:
        """Adjusted close of the last bar strictly before `day` (None before the symbol's first bar)."""
        days = self._days.get(symbol)
        if not days:
            return None
        i = bisect.bisect_left(days, day)
        return self._bars[symbol][i - 1].close if i > 0 else None


def _positive(row: dict[str, str], column: str, line: int) -> float:
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        raise PriceDataError(f"line {line}: {column}={row.get(column)!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise PriceDataError(f"line {line}: {column}={value!r} must be a positive number")
    return value


def parse_rows(lines: list[str]) -> list[DailyBar]:
    """Adjusted bars from the CSV text lines (header first)."""
    reader = csv.DictReader(lines)
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise PriceDataError(f"expected columns {','.join(COLUMNS)}, got {reader.fieldnames}")
    bars = []
    for line, row in enumerate(reader, start=2):
        o, h, lo, c, adj = (_positive(row, k, line) for k in ("Open", "High", "Low", "Close", "Adj Close"))
        factor = adj / c
        try:
            day = dt.date.fromisoformat(row["Date"])
        except ValueError:
            raise PriceDataError(f"line {line}: Date={row['Date']!r} is not YYYY-MM-DD") from None
        if not lo <= min(o, c) <= max(o, c) <= h:
            raise PriceDataError(f"line {line}: open/close outside [low, high]")
        bars.append(
            DailyBar(row["Ticker"].strip().upper(), day, o * factor, h * factor, lo * factor, adj,
                     float(row["Volume"] or 0), factor)
        )
    return bars


def load_price_data(path: str | Path | None = None) -> PriceData:
    """Prices from a WIKI-format CSV (gzip or plain); the shipped file when `path` is None (cached)."""
    if path is None:
        return _shipped()
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return PriceData(parse_rows(f.read().splitlines()))


@functools.cache
def _shipped() -> PriceData:
    with resources.files("engine.data").joinpath(DATA_FILE).open("rb") as raw, gzip.open(raw, "rt") as f:
        return PriceData(parse_rows(f.read().splitlines()))
