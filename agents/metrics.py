"""Portfolio and price metrics the agents quote: pure functions over plain lists, no I/O.

The agents' numbers come from here, never from the model, so every metric either has an answer the
data supports or says it has none: a function returns None when the series is too short (or flat)
for the metric to mean anything, rather than inventing a 0.

Conventions: prices are adjusted daily closes, oldest first; a dated series is a list of
`(date, close)`; returns are simple daily returns; annualising uses 252 trading days a year.
"""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal

import msgspec

from brokerage.errors import InvalidRequest

TRADING_DAYS = 252
# The diversification score saturates at this many effective holdings / effective sectors.
FULL_HOLDINGS = 10.0
FULL_SECTORS = 5.0
HOLDINGS_SHARE = 0.7  # of the score; the rest comes from sectors

DatedSeries = Sequence[tuple[dt.date, float]]
DatedList = list[tuple[dt.date, float]]


class Drawdown(msgspec.Struct, frozen=True):
    """The deepest fall from a running peak: `depth` is a negative fraction (0.0 when never below a
    peak); the days are set only when the series was dated and it did fall."""

    depth: float
    peak_day: dt.date | None = None
    trough_day: dt.date | None = None


def _values(series: Sequence[float] | DatedSeries) -> list[float]:
    return [point[1] if isinstance(point, tuple) else point for point in series]


def daily_returns(closes: Sequence[float]) -> list[float]:
    return [now / before - 1 for before, now in itertools.pairwise(closes)]


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def _sample_stdev(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def total_return(closes: Sequence[float]) -> float | None:
    """None for an empty series: no price, no return."""
    return closes[-1] / closes[0] - 1 if closes else None


def annualized_volatility(closes: Sequence[float]) -> float | None:
    """Needs two returns (three closes): a sample standard deviation of one return is undefined."""
    returns = daily_returns(closes)
    return _sample_stdev(returns) * math.sqrt(TRADING_DAYS) if len(returns) >= 2 else None


def sharpe(closes: Sequence[float], risk_free_rate: float | Decimal) -> float | None:
    """Annualised Sharpe ratio of daily returns over a daily risk-free rate of `risk_free_rate / 252`.
    None when it is undefined: fewer than two returns, or no variation (a flat series)."""
    returns = daily_returns(closes)
    if len(returns) < 2:
        return None
    stdev = _sample_stdev(returns)
    if stdev == 0:
        return None
    return (_mean(returns) - float(risk_free_rate) / TRADING_DAYS) / stdev * math.sqrt(TRADING_DAYS)


def max_drawdown(closes: Sequence[float] | DatedSeries) -> Drawdown:
    """Accepts plain closes or a dated series; only the latter can name the peak and trough days."""
    values = _values(closes)
    dated = bool(closes) and isinstance(closes[0], tuple)
    days = [point[0] for point in closes if isinstance(point, tuple)] if dated else None
    worst, peak_i, trough_i = 0.0, 0, 0
    running_i = 0
    for i, value in enumerate(values):
        if value > values[running_i]:
            running_i = i
        depth = value / values[running_i] - 1
        if depth < worst:
            worst, peak_i, trough_i = depth, running_i, i
    if worst == 0.0 or days is None:
        return Drawdown(worst)
    return Drawdown(worst, days[peak_i], days[trough_i])


def align(series_a: DatedSeries, series_b: DatedSeries) -> tuple[DatedList, DatedList]:
    """Both series restricted to the days they share, oldest first, so their returns pair up day by day."""
    b_by_day = dict(series_b)
    common = sorted(day for day, _ in series_a if day in b_by_day)
    a_by_day = dict(series_a)
    return [(d, a_by_day[d]) for d in common], [(d, b_by_day[d]) for d in common]


def beta(asset: DatedSeries, market: DatedSeries) -> float | None:
    """cov(asset, market) / var(market) of daily returns on the shared days (between consecutive shared
    days when one series skips a day). None with fewer than two returns or a flat market."""
    a, m = align(asset, market)
    ra, rm = daily_returns(_values(a)), daily_returns(_values(m))
    if len(rm) < 2:
        return None
    mean_a, mean_m = _mean(ra), _mean(rm)
    var = math.fsum((y - mean_m) ** 2 for y in rm)
    if var == 0:
        return None
    return math.fsum((x - mean_a) * (y - mean_m) for x, y in zip(ra, rm, strict=True)) / var


def portfolio_series(
    holdings: Mapping[str, Decimal | float], closes_by_symbol: Mapping[str, DatedSeries]
) -> DatedList:
    """Value of today's holdings on each past day: Σ qty × close, on the days every held symbol has a close.

    This back-casts the current quantities (trades in the period are not replayed), so it answers
    "how would what I hold now have moved", not "what was my account worth". A held symbol without
    any close (missing from `closes_by_symbol` or empty) leaves no common day: the result is [] and
    the caller should drop or report that symbol. Zero quantities are ignored.
    """
    held = {symbol: float(qty) for symbol, qty in holdings.items() if qty != 0}
    if not held:
        return []
    by_symbol = {symbol: dict(closes_by_symbol.get(symbol, ())) for symbol in held}
    common = set.intersection(*(set(closes) for closes in by_symbol.values()))
    return [(day, math.fsum(qty * by_symbol[s][day] for s, qty in held.items())) for day in sorted(common)]


def allocation(values: Mapping[str, Decimal]) -> dict[str, float]:
    """Each key's share of the total (positions and, if the caller includes it, cash); {} when the total
    is not positive, since shares of nothing mean nothing."""
    total = sum(values.values(), Decimal(0))
    if total <= 0:
        return {}
    return {key: float(value / total) for key, value in values.items()}


def hhi(weights: Mapping[str, float]) -> float:
    """Herfindahl-Hirschman index Σw²: 1 for a single holding, 1/N for N equal ones (0 for none)."""
    return math.fsum(w * w for w in weights.values())


def largest_weight(weights: Mapping[str, float]) -> tuple[str, float] | None:
    """The biggest holding and its weight (ties: the first symbol alphabetically); None when empty."""
    if not weights:
        return None
    symbol = min(weights, key=lambda s: (-weights[s], s))
    return symbol, weights[symbol]


def _breadth(weights: Mapping[str, float], full: float) -> float:
    """0 for one effective holding, 1 at `full` or more, on a log scale (diminishing benefit).

    The weights are normalised first, so shares of the invested value or of the whole account
    (cash included) give the same answer."""
    concentration = hhi(weights)
    if concentration <= 0:
        return 0.0
    effective = math.fsum(weights.values()) ** 2 / concentration
    return min(1.0, max(0.0, math.log(effective) / math.log(full)))


def diversification_score(weights: Mapping[str, float], sector_weights: Mapping[str, float]) -> int:
    """A 1..10 score from the effective number of holdings and of sectors.

    Effective number N = 1/HHI (N equal holdings give N; a dominant one pulls it towards 1), for
    holdings and for sectors alike. Each is put on a log scale that is 0 at one and 1 at saturation
    (10 holdings, 5 sectors), because each extra holding cuts risk less than the one before:

        h = min(1, ln(N_holdings) / ln 10)      s = min(1, ln(N_sectors) / ln 5)
        score = 1 + round(9 × (0.7·h + 0.3·s))

    So one stock scores 1; ten equal holdings in one sector 7, over 3 equal sectors 9, over 5 sectors
    10; two equal stocks in two sectors 4. The score never falls when holdings or sectors are spread
    more evenly. Pass `sector_weights` = {} when sectors are unknown: they then count as one sector,
    the cautious reading. No holdings at all score 1.
    """
    h = _breadth(weights, FULL_HOLDINGS)
    s = _breadth(sector_weights, FULL_SECTORS)
    return 1 + math.floor(9 * (HOLDINGS_SHARE * h + (1 - HOLDINGS_SHARE) * s) + 0.5)


_PERIOD = re.compile(r"^(\d{1,4})([dwmy])$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PERIOD_FORMS = "'' (default: 1 year), 'ytd', or a count and unit such as '30d', '6w', '6m', '2y'"


def _parse_day(text: str, field: str) -> dt.date | None:
    text = text.strip()
    if not text:
        return None
    try:
        if not _DAY.match(text):
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{field}={text!r} is not a date in YYYY-MM-DD form", details={"field": field}) from None


def _months_back(day: dt.date, months: int) -> dt.date:
    """Same day of the month `months` earlier, clamped to that month's last day (Mar 31 - 1m = Feb 28/29)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    if year < dt.MINYEAR:
        raise OverflowError
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def period_window(today: dt.date, period: str, start_date: str, end_date: str) -> tuple[dt.date, dt.date]:
    """The inclusive (start, end) of a period the person asked for, with `today` from the market clock
    (the replayed day offline).

    `end_date` defaults to today, and a later one is cut to today (there is no data yet); `period`
    counts back from that end, `start_date` sets the start directly, and giving both is an error
    (which one was meant?). Nothing given means the last year. Bad input raises InvalidRequest with a
    message a model can act on.
    """
    end = _parse_day(end_date, "end_date") or today
    end = min(end, today)
    start = _parse_day(start_date, "start_date")
    period = period.strip().lower()
    if period and start is not None:
        raise InvalidRequest("give either period or start_date, not both", details={"field": "period"})
    if start is None:
        start = _start_of(period or "1y", end)
    if start > today:
        raise InvalidRequest(f"start_date {start} is in the future (today is {today})", details={"field": "start_date"})
    if start > end:
        raise InvalidRequest(f"end_date {end} is before start_date {start}", details={"field": "end_date"})
    return start, end


def _start_of(period: str, end: dt.date) -> dt.date:
    if period == "ytd":
        return dt.date(end.year, 1, 1)
    match = _PERIOD.match(period)
    if match is None or int(match[1]) == 0:
        raise InvalidRequest(f"period={period!r} is not understood; use {PERIOD_FORMS}", details={"field": "period"})
    n, unit = int(match[1]), match[2]
    try:
        if unit == "d":
            return end - dt.timedelta(days=n)
        if unit == "w":
            return end - dt.timedelta(weeks=n)
        return _months_back(end, n * 12 if unit == "y" else n)
    except (OverflowError, ValueError):
        raise InvalidRequest(f"period={period!r} reaches back too far", details={"field": "period"}) from None
