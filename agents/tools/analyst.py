"""The financial analyst's tools: company profile, quote, performance against the market."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from agents import metrics
from agents.deps import AgentDeps
from agents.tools.registry import agent_tool, pct, plain
from brokerage import paper_rules as rules
from brokerage.errors import BrokerageError
from engine import calendar

AGENT = "financial_analyst"
SOURCE_NOTES = {
    "replay": "replayed historical prices (not live)",
    "simulated": "simulated prices (not real market data)",
    "alpaca": "live market data from Alpaca",
}


def last_close_day(deps: AgentDeps) -> dt.date:
    """The latest day whose close is known at the market clock's now: today only once its session has
    closed (during the session today's bar is the future)."""
    now = deps.clock.now()
    session = rules.current_session(now)
    return session if now >= rules.session_close(session) else calendar.previous_trading_day(session)


def symbol_of(deps: AgentDeps, symbol: str) -> str:
    """A ticker or a company name, as the person wrote it, resolved to a ticker."""
    found = deps.resolver.resolve(symbol)
    return found[0] if found else rules.check_symbol(symbol)


@agent_tool(AGENT)
def company_profile(deps: AgentDeps, account_id: str, symbol: str) -> dict[str, Any]:
    """Company profile: name, sector, industry, description, country, key figures and facts. `symbol`: ticker or company name."""  # noqa: E501 - the tool's description for the model, kept on one line
    ticker = symbol_of(deps, symbol)
    found = deps.company.lookup(ticker)
    profile = found.profile
    if profile is None:
        reason = f"FMP failed ({found.error}) and " if found.stale else ""
        return {"symbol": ticker, "error": f"{reason}no company profile is stored for {ticker}"}
    result: dict[str, Any] = {
        "symbol": profile.symbol,
        "name": profile.company_name,
        "sector": profile.sector,
        "industry": profile.industry,
        "description": profile.description,
        "country": profile.country,
        "exchange": profile.exchange_short_name or profile.exchange,
        "ceo": profile.ceo,
        "employees": profile.full_time_employees,
        "market_cap": profile.market_cap,
        "website": profile.website,
        "ipo_date": None if profile.ipo_date is None else profile.ipo_date.isoformat(),
        "facts": profile.facts,
        "source": profile.source,
        "live": found.live,
        "stale": found.stale,
    }
    if found.quote is not None:
        result["quote"] = {"price": found.quote.price, "change_pct": found.quote.change_pct, "source": "fmp"}
    return {k: v for k, v in result.items() if v not in (None, {}, "")}


@agent_tool(AGENT)
def get_quote(deps: AgentDeps, account_id: str, symbol: str) -> dict[str, Any]:
    """Current price and day change of a stock, and where the price comes from. `symbol`: ticker or company name."""
    ticker = symbol_of(deps, symbol)
    last = deps.prices.last(ticker)
    if last is None:
        return {"symbol": ticker, "error": f"{ticker} is not priced by the market data feed"}
    price = rules.to_price(last.last)
    prev = rules.to_price(last.prev_close) if last.prev_close > 0 and math.isfinite(last.prev_close) else None
    change = None if prev is None else price - prev
    return {
        "symbol": ticker,
        "price": plain(price),
        "prev_close": None if prev is None else plain(prev),
        "day_change": None if change is None else plain(change),
        "day_change_pct": None if change is None or not prev else pct(float(change / prev)),
        "session": last.session,
        "source": last.source,
        "source_note": SOURCE_NOTES.get(last.source, last.source),
    }


@agent_tool(AGENT)
def stock_performance(
    deps: AgentDeps, account_id: str, symbol: str, start_date: str = "", end_date: str = "", period: str = ""
) -> dict[str, Any]:
    """Performance of a stock over a period against the market: total return, annualised volatility,
    max drawdown. `start_date`/`end_date`: YYYY-MM-DD or "". `period`: "ytd" or N followed by d/w/m/y
    ("6m", "1y"), or "". Nothing given: the last year."""
    ticker = symbol_of(deps, symbol)
    try:
        start, end = metrics.period_window(last_close_day(deps), period, start_date, end_date)
    except BrokerageError as exc:
        return {"symbol": ticker, "error": exc.message}
    closes = deps.history.closes(ticker, start, end)
    if len(closes) < 2:
        return {
            "symbol": ticker,
            "error": f"not enough price history for {ticker} between {start} and {end}",
            "history_source": deps.history.source,
        }
    market = deps.history.market_closes(closes[0][0], closes[-1][0])
    result: dict[str, Any] = {
        "symbol": ticker,
        "start": closes[0][0].isoformat(),
        "end": closes[-1][0].isoformat(),
        "trading_days": len(closes),
        "start_price": plain(rules.to_price(closes[0][1])),
        "end_price": plain(rules.to_price(closes[-1][1])),
        **_series_figures([c for _, c in closes], closes),
        "history_source": deps.history.source,
        "market": {"label": deps.history.market_label},
    }
    if len(market) >= 2:
        result["market"].update(_series_figures([c for _, c in market], market))
        mine, theirs = metrics.total_return([c for _, c in closes]), metrics.total_return([c for _, c in market])
        result["excess_return_pct"] = None if mine is None or theirs is None else pct(mine - theirs)
    return result


def _series_figures(values: list[float], dated: list[tuple[Any, float]]) -> dict[str, Any]:
    drawdown = metrics.max_drawdown(dated)
    return {
        "total_return_pct": pct(metrics.total_return(values)),
        "annualized_volatility_pct": pct(metrics.annualized_volatility(values)),
        "max_drawdown_pct": pct(drawdown.depth),
        "drawdown_peak": None if drawdown.peak_day is None else drawdown.peak_day.isoformat(),
        "drawdown_trough": None if drawdown.trough_day is None else drawdown.trough_day.isoformat(),
    }

