"""Every agent tool's figures against independent computations on the shipped real prices.

The world is real (paper broker on a manual June 2012 clock, the shipped closes in the real Redis,
the store's company profiles) and the expected numbers are worked out here, straight from the bars
of `engine.prices_data.load_price_data()` with pandas/numpy and Decimal arithmetic, never through
`agents.metrics`, `agents.rebalance` or a tool's own helpers. Percentages are compared to the tool's
two-decimal strings within half a unit of their last digit.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from agent_support import (
    MONDAY,
    PRICE_DAY,
    SYMBOLS,
    TUESDAY,
    agent_deps,
    paper_world,
    set_real_prices,
)
from paper_support import open_account

import agents.tools.analyst
import agents.tools.portfolio
import agents.tools.trade  # noqa: F401
from agents.deps import AgentDeps
from agents.tools.registry import REGISTRY
from brokerage.models import OrderRequest
from brokerage.paper import PaperBroker
from brokerage.sql_store import SqlStore
from engine.clock import ManualClock
from engine.config import Settings
from engine.prices_data import load_price_data

UTC = dt.UTC
TODAY = TUESDAY.date()  # 2012-06-12
# 17:00 in New York: Tuesday's session is over, so its close is known history.
TUESDAY_EVENING = dt.datetime(2012, 6, 12, 21, 0, tzinfo=UTC)
CENT = Decimal("0.01")
DATA = load_price_data()
ALL_SYMBOLS = DATA.symbols()

EXPECTED_TOOLS = {
    "company_profile": "financial_analyst",
    "get_quote": "financial_analyst",
    "stock_performance": "financial_analyst",
    "get_portfolio": "portfolio_management",
    "diversification": "portfolio_management",
    "risk_metrics": "portfolio_management",
    "rebalance_plan": "portfolio_management",
    "account_activity": "portfolio_management",
    "cash_available": "portfolio_management",
    "buy": "trade_execution",
    "sell": "trade_execution",
    "rebalance_orders": "trade_execution",
}


# --- the independent side: plain pandas over the shipped bars ----------------------------------
@functools.cache
def closes(symbol: str) -> pd.Series:
    """All adjusted closes of `symbol` by day (cached: callers only read it)."""
    bars = DATA.daily_bars(symbol)
    return pd.Series([b.close for b in bars], index=pd.DatetimeIndex([pd.Timestamp(b.day) for b in bars]),
                     name=symbol)


def window(series: pd.Series | pd.DataFrame, start: dt.date, end: dt.date) -> Any:
    return series[(series.index >= pd.Timestamp(start)) & (series.index <= pd.Timestamp(end))]


def day(ts: pd.Timestamp) -> str:
    return ts.date().isoformat()


def close_of(symbol: str, on: dt.date) -> float:
    s = closes(symbol)
    return float(s[s.index == pd.Timestamp(on)].iloc[0])


def prev_close_of(symbol: str, on: dt.date) -> float:
    s = closes(symbol)
    return float(s[s.index < pd.Timestamp(on)].iloc[-1])


def price4(x: float) -> Decimal:
    """A float close as the 4-decimal price the feed's consumers use."""
    return Decimal(repr(x)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def cents(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def daily_returns(s: pd.Series) -> pd.Series:
    return (s / s.shift(1) - 1).iloc[1:]


def ann_vol(s: pd.Series) -> float:
    return float(np.std(daily_returns(s).to_numpy(), ddof=1) * math.sqrt(252))


def total_ret(s: pd.Series) -> float:
    return float(s.iloc[-1] / s.iloc[0] - 1)


def drawdown(s: pd.Series) -> tuple[float, str | None, str | None]:
    dd = s / s.cummax() - 1
    depth = float(dd.min())
    if depth == 0:
        return 0.0, None, None
    trough = dd.idxmin()  # first time at the deepest point
    peak = s[s.index <= trough].idxmax()  # first time at the running high before it
    return depth, day(peak), day(trough)


def equal_weight_returns(start: dt.date, end: dt.date) -> pd.Series:
    """Each trading day's mean simple return over the shipped symbols that have a close on both that day
    and the previous trading day (of any symbol) in the window."""
    wide = window(pd.concat([closes(s) for s in ALL_SYMBOLS], axis=1).sort_index(), start, end)
    returns = wide / wide.shift(1) - 1  # NaN unless the symbol traded on both days
    return returns.iloc[1:].mean(axis=1, skipna=True)


def equal_weight_index(start: dt.date, end: dt.date) -> pd.Series:
    r = equal_weight_returns(start, end)
    first = window(pd.concat([closes(s) for s in ALL_SYMBOLS], axis=1).sort_index(), start, end).index[0]
    return pd.concat([pd.Series([100.0], index=[first]), 100.0 * (1 + r).cumprod()])


def months_back(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.year * 12 + d.month - 1 - months, 12)
    return dt.date(y, m + 1, d.day)  # the days used here exist in every month


def assert_pct(got: str | None, fraction: float) -> None:
    assert got is not None, f"expected {fraction * 100:.4f}%, got None"
    assert abs(float(got) - fraction * 100) <= 0.005 + 1e-9, f"got {got}%, expected {fraction * 100:.6f}%"


def assert_2dp(got: str | None, value: float) -> None:
    assert got is not None, f"expected {value:.4f}, got None"
    assert abs(float(got) - value) <= 0.005 + 1e-9, f"got {got}, expected {value:.6f}"


# --- the world -----------------------------------------------------------------------------------
@dataclass
class World:
    deps: AgentDeps
    broker: PaperBroker
    store: SqlStore
    clock: ManualClock
    settings: Settings
    redis_url: str

    def run(self, tool: str, account: str, **args: Any) -> dict[str, Any]:
        return REGISTRY[tool].run(self.deps, account, args)

    def open(self, email: str, amount: str, qty: dict[str, str] | None = None,
             notional: dict[str, str] | None = None) -> str:
        """Opened and funded on Monday; on Tuesday morning buys `qty` shares and `notional` dollars."""
        self.clock.set(MONDAY)
        account, rel = open_account(self.broker, email)
        self.broker.create_transfer(account, rel, Decimal(amount), "INCOMING")
        self.clock.set(TUESDAY)
        for symbol, q in (qty or {}).items():
            self.broker.submit_order(account, OrderRequest(symbol=symbol, side="buy", qty=Decimal(q)))
        for symbol, n in (notional or {}).items():
            self.broker.submit_order(account, OrderRequest(symbol=symbol, side="buy", notional=Decimal(n)))
        return account

    def position_qty(self, account: str) -> dict[str, Decimal]:
        return {p.symbol: p.qty for p in self.broker.list_positions(account) if p.qty > 0}


def make_world(tmp_path: Path, redis_url: str, **env: str) -> World:
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings, _, store, clock, broker = paper_world(tmp_path, redis_url, **env)
    return World(agent_deps(settings, broker, store, clock, redis_url), broker, store, clock, settings, redis_url)


@pytest.fixture
def world(tmp_path: Path, redis_url: str) -> World:
    return make_world(tmp_path, redis_url)


def market_value(symbol: str, qty: Decimal, on: dt.date = PRICE_DAY) -> Decimal:
    return cents(qty * price4(close_of(symbol, on)))


def sector_of(store: SqlStore, symbol: str) -> str:
    profile = store.get_company_profile(symbol)
    if profile is None:
        return "Unknown"
    return profile.sector or profile.industry or "Unknown"


# --- company_profile and get_quote ------------------------------------------------------------------
def test_company_profile_is_the_stored_profile(world: World) -> None:
    for symbol, asked in (("AAPL", "Apple"), ("MSFT", "MSFT"), ("IBM", "ibm")):
        stored = world.store.get_company_profile(symbol)
        assert stored is not None
        got = world.run("company_profile", "acct", symbol=asked)
        assert got["symbol"] == symbol and got["name"] == stored.company_name
        assert got.get("sector") == stored.sector and got["industry"] == stored.industry
        assert got.get("description") == stored.description and got["country"] == stored.country
        assert got["source"] == "pytickersymbols" and got["live"] is False and got["stale"] is False
    missing = world.run("company_profile", "acct", symbol="ZZZZ")
    assert missing["symbol"] == "ZZZZ" and "no company profile" in missing["error"]


@pytest.mark.parametrize(("asked", "symbol"), [(s, s) for s in SYMBOLS] + [("Apple", "AAPL"), ("microsoft", "MSFT")])
def test_get_quote_is_the_real_close_and_previous_close(world: World, asked: str, symbol: str) -> None:
    bars = DATA.daily_bars(symbol)
    i = next(k for k, b in enumerate(bars) if b.day == PRICE_DAY)
    close, prev = bars[i].close, bars[i - 1].close
    price, prev_price = price4(close), price4(prev)
    got = world.run("get_quote", "acct", symbol=asked)
    assert got["symbol"] == symbol
    assert Decimal(got["price"]) == price
    assert Decimal(got["prev_close"]) == prev_price
    assert Decimal(got["day_change"]) == price - prev_price
    assert got["day_change_pct"] == f"{(price - prev_price) / prev_price * 100:.2f}"
    assert abs(float(got["day_change_pct"]) - (close / prev - 1) * 100) < 0.0051  # the raw closes agree too
    assert got["source"] == "replay" and "not live" in got["source_note"]


def test_get_quote_of_an_unpriced_symbol_is_an_error(world: World) -> None:
    got = world.run("get_quote", "acct", symbol="ZZZZ")
    assert got["symbol"] == "ZZZZ" and "not priced" in got["error"] and "price" not in got


# --- stock_performance ------------------------------------------------------------------------------
def expected_performance(symbol: str, start: dt.date, end: dt.date) -> dict[str, Any]:
    s = window(closes(symbol), start, end)
    depth, peak, trough = drawdown(s)
    first, last = s.index[0].date(), s.index[-1].date()
    market = equal_weight_index(first, last)
    m_depth, m_peak, m_trough = drawdown(market)
    return {
        "series": s, "depth": depth, "peak": peak, "trough": trough, "market": market,
        "m_depth": m_depth, "m_peak": m_peak, "m_trough": m_trough,
    }


def check_performance(got: dict[str, Any], symbol: str, start: dt.date, end: dt.date) -> None:
    e = expected_performance(symbol, start, end)
    s, market = e["series"], e["market"]
    assert "error" not in got, got
    assert got["symbol"] == symbol
    assert got["start"] == day(s.index[0]) and got["end"] == day(s.index[-1])
    assert got["trading_days"] == len(s)
    assert Decimal(got["start_price"]) == price4(float(s.iloc[0]))
    assert Decimal(got["end_price"]) == price4(float(s.iloc[-1]))
    assert_pct(got["total_return_pct"], total_ret(s))
    assert_pct(got["annualized_volatility_pct"], ann_vol(s))
    assert_pct(got["max_drawdown_pct"], e["depth"])
    assert (got["drawdown_peak"], got["drawdown_trough"]) == (e["peak"], e["trough"])

    m = got["market"]
    assert "equal-weight index" in m["label"] and "SPY" not in m["label"] and "not the S&P 500" in m["label"]
    assert all(sym in m["label"] for sym in ALL_SYMBOLS)
    assert_pct(m["total_return_pct"], total_ret(market))
    assert_pct(m["annualized_volatility_pct"], ann_vol(market))
    assert_pct(m["max_drawdown_pct"], e["m_depth"])
    assert (m["drawdown_peak"], m["drawdown_trough"]) == (e["m_peak"], e["m_trough"])
    assert_pct(got["excess_return_pct"], total_ret(s) - total_ret(market))
    assert got["history_source"].startswith("shipped daily data")


def test_stock_performance_of_apple_since_march_2011(world: World) -> None:
    world.clock.set(TUESDAY_EVENING)
    got = world.run("stock_performance", "acct", symbol="AAPL", start_date="2011-03-01")
    check_performance(got, "AAPL", dt.date(2011, 3, 1), TODAY)
    # spot checks that the window is what was asked for, not a default
    assert got["start"] == "2011-03-01" and got["end"] == "2012-06-12"
    market_returns = equal_weight_returns(dt.date(2011, 3, 1), TODAY)
    assert len(market_returns) == got["trading_days"] - 1  # AAPL traded on every index day


@pytest.mark.parametrize(
    ("symbol", "args", "start", "end"),
    [
        ("AAPL", {"period": "ytd"}, dt.date(2012, 1, 1), TODAY),
        ("MSFT", {"period": "6m"}, months_back(TODAY, 6), TODAY),
        ("IBM", {"period": "1y"}, months_back(TODAY, 12), TODAY),
        ("GOOG", {}, months_back(TODAY, 12), TODAY),  # nothing given: the last year
        ("AAPL", {"period": "30d"}, TODAY - dt.timedelta(days=30), TODAY),
        ("MSFT", {"start_date": "2011-01-01", "end_date": "2011-12-31"}, dt.date(2011, 1, 1), dt.date(2011, 12, 31)),
        ("FB", {"period": "1y"}, months_back(TODAY, 12), TODAY),  # listed 2012-05-18: starts there
        (
            "Apple",
            {"end_date": "2030-01-01", "start_date": "2012-03-01"},
            dt.date(2012, 3, 1),
            TODAY,
        ),  # end cut to today
    ],
)
def test_stock_performance_windows(world: World, symbol: str, args: dict[str, str], start: dt.date,
                                   end: dt.date) -> None:
    world.clock.set(TUESDAY_EVENING)
    ticker = "AAPL" if symbol == "Apple" else symbol
    got = world.run("stock_performance", "acct", symbol=symbol, **args)
    s = window(closes(ticker), start, end)
    first_trading_day = min(d for d in closes(ticker).index if d >= pd.Timestamp(start))
    assert got["start"] == day(first_trading_day) == day(s.index[0])
    check_performance(got, ticker, start, end)
    if ticker == "FB":
        assert got["start"] == "2012-05-18"
    if args.get("period") == "ytd":
        assert got["start"] == "2012-01-03"  # the first session of 2012


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"period": "6m", "start_date": "2012-01-01"}, "either period or start_date"),
        ({"period": "6q"}, "not understood"),
        ({"period": "0d"}, "not understood"),
        ({"start_date": "2012-13-01"}, "YYYY-MM-DD"),
        ({"start_date": "2013-01-01"}, "in the future"),
        ({"start_date": "2012-05-01", "end_date": "2012-04-01"}, "before start_date"),
    ],
)
def test_stock_performance_bad_windows_are_errors(world: World, args: dict[str, str], words: str) -> None:
    got = world.run("stock_performance", "acct", symbol="AAPL", **args)
    assert words in got["error"] and got["symbol"] == "AAPL"


def test_stock_performance_without_enough_history_is_an_error(world: World) -> None:
    got = world.run("stock_performance", "acct", symbol="FB", start_date="2011-01-01", end_date="2012-05-18")
    assert "not enough price history" in got["error"]


def test_stock_performance_during_the_session_does_not_use_todays_close(world: World) -> None:
    world.clock.set(TUESDAY)
    assert world.clock.is_open()
    got = world.run("stock_performance", "acct", symbol="AAPL", start_date="2011-03-01")
    assert got["end"] < TODAY.isoformat()


# --- get_portfolio and diversification ---------------------------------------------------------
def test_get_portfolio_values_weights_sectors_and_cash(world: World) -> None:
    bought = {"AAPL": "10", "MSFT": "50", "IBM": "5", "GOOG": "1.5"}
    account = world.open("pf@example.com", "20000", qty=bought)
    cost = {s: cents(Decimal(q) * price4(close_of(s, PRICE_DAY))) for s, q in bought.items()}
    # Tuesday's closes replace Monday's in Redis: the holdings now show a gain or a loss
    set_real_prices(world.redis_url, TODAY)
    got = world.run("get_portfolio", account)

    values = {s: market_value(s, Decimal(q), TODAY) for s, q in bought.items()}
    invested = sum(values.values(), Decimal(0))
    cash = world.broker.get_account(account).cash
    assert cash == Decimal(20000) - sum(cost.values(), Decimal(0))  # what the fills cost, to the cent
    assert Decimal(got["cash"]) == cash
    assert Decimal(got["invested"]) == invested
    assert Decimal(got["total_value"]) == invested + cash

    holdings = {h["symbol"]: h for h in got["holdings"]}
    assert set(holdings) == set(bought)
    assert [h["symbol"] for h in got["holdings"]] == sorted(values, key=lambda s: values[s], reverse=True)
    for symbol, h in holdings.items():
        assert Decimal(h["qty"]) == Decimal(bought[symbol])
        assert Decimal(h["market_value"]) == values[symbol]
        assert Decimal(h["cost_basis"]) == cost[symbol]
        assert Decimal(h["unrealized_pl"]) == values[symbol] - cost[symbol]
        assert_pct(h["weight_pct"], float(values[symbol] / invested))
        assert h["sector"] == sector_of(world.store, symbol)
    assert sum(Decimal(h["unrealized_pl"]) for h in got["holdings"]) != 0  # the prices did move

    sectors: dict[str, Decimal] = {}
    for symbol, value in values.items():
        sectors[sector_of(world.store, symbol)] = sectors.get(sector_of(world.store, symbol), Decimal(0)) + value
    assert {s["sector"]: Decimal(s["value"]) for s in got["sectors"]} == sectors
    for row in got["sectors"]:
        assert_pct(row["weight_pct"], float(sectors[row["sector"]] / invested))
    assert "Unknown" not in sectors


def test_get_portfolio_of_an_account_with_only_cash(world: World) -> None:
    account = world.open("cash@example.com", "1234.56")
    got = world.run("get_portfolio", account)
    assert got["holdings"] == [] and got["sectors"] == []
    assert got["cash"] == got["total_value"] == "1234.56" and got["invested"] == "0.00"


def test_diversification_figures_and_score(world: World) -> None:
    bought = {"AAPL": "10", "MSFT": "50", "IBM": "3", "GOOG": "2"}
    account = world.open("div@example.com", "20000", qty=bought)
    got = world.run("diversification", account)
    values = {s: market_value(s, Decimal(q)) for s, q in bought.items()}
    total = sum(values.values(), Decimal(0))
    w = {s: float(v / total) for s, v in values.items()}
    hhi = sum(x * x for x in w.values())
    largest = max(w, key=lambda s: w[s])
    assert got["positions"] == 4 and got["largest_position"] == largest
    assert_pct(got["largest_weight_pct"], w[largest])
    assert abs(float(got["hhi"]) - hhi) <= 0.00005 + 1e-12
    assert_2dp(got["effective_holdings"], 1 / hhi)
    sector_values: dict[str, float] = {}
    for s, x in w.items():
        sector_values[sector_of(world.store, s)] = sector_values.get(sector_of(world.store, s), 0.0) + x
    assert got["sectors"] == len(sector_values)
    # the documented formula, worked out here: 1 + round(9 (0.7 h + 0.3 s)) on log scales
    h = min(1.0, math.log(1 / hhi) / math.log(10))
    sv = min(1.0, math.log(1 / sum(x * x for x in sector_values.values())) / math.log(5))
    assert got["score"] == 1 + math.floor(9 * (0.7 * h + 0.3 * sv) + 0.5)
    assert 1 <= got["score"] <= 10


def test_diversification_score_grows_with_holdings(world: World) -> None:
    scores = []
    for n in range(1, 6):
        account = world.open(f"n{n}@example.com", "10000", notional=dict.fromkeys(ALL_SYMBOLS[:n], "1000"))
        got = world.run("diversification", account)
        assert got["positions"] == n
        assert abs(float(got["hhi"]) - 1 / n) < 0.001  # $1000 each (fills rounded down to the share)
        scores.append(got["score"])
    assert scores[0] == 1  # one stock
    assert all(1 <= s <= 10 for s in scores)
    assert scores == sorted(scores) and scores[-1] > scores[0], scores
    assert len(set(scores)) == len(scores), f"each extra holding should raise the score: {scores}"
    empty = world.open("none@example.com", "100")
    assert "no positions" in world.run("diversification", empty)["error"]


# --- risk_metrics ------------------------------------------------------------------------------------
def portfolio_series(qty: dict[str, Decimal], start: dt.date, end: dt.date) -> pd.Series:
    wide = window(pd.concat([closes(s) for s in qty], axis=1), start, end).dropna()  # days all held trade
    return sum(float(q) * wide[s] for s, q in qty.items())


def expected_risk(qty: dict[str, Decimal], start: dt.date, end: dt.date, rf: float) -> dict[str, Any]:
    series = portfolio_series(qty, start, end)
    r = daily_returns(series).to_numpy()
    market = equal_weight_index(series.index[0].date(), series.index[-1].date())
    m = daily_returns(market.reindex(series.index)).to_numpy()  # the index on the portfolio's days
    beta = np.cov(r, m, ddof=1)[0, 1] / np.var(m, ddof=1)
    sd = np.std(r, ddof=1)
    return {
        "series": series,
        "vol": sd * math.sqrt(252),
        "beta": float(beta),
        "sharpe": float((r.mean() - rf / 252) / sd * math.sqrt(252)),
        "depth": drawdown(series)[0],
        "sd": float(sd),
    }


@pytest.mark.parametrize(("period", "start"), [("", months_back(TODAY, 12)), ("ytd", dt.date(2012, 1, 1)),
                                           ("6m", months_back(TODAY, 6)), ("2y", months_back(TODAY, 24))])
def test_risk_metrics_of_the_holdings(world: World, period: str, start: dt.date) -> None:
    account = world.open("risk@example.com", "20000", qty={"AAPL": "10", "MSFT": "50", "IBM": "5"})
    world.clock.set(TUESDAY_EVENING)
    got = world.run("risk_metrics", account, period=period)
    qty = world.position_qty(account)
    e = expected_risk(qty, start, TODAY, 0.02)
    series = e["series"]
    assert got["start"] == day(series.index[0]) and got["end"] == day(series.index[-1]) == "2012-06-12"
    assert_pct(got["total_return_pct"], total_ret(series))
    assert_pct(got["annualized_volatility_pct"], e["vol"])
    assert_2dp(got["beta"], e["beta"])
    assert_2dp(got["sharpe"], e["sharpe"])
    assert got["risk_free_rate_pct"] == "2.00"
    assert_pct(got["max_drawdown_pct"], e["depth"])
    assert got["left_out"] == []
    assert "equal-weight index" in got["market"] and "SPY" not in got["market"]


def test_risk_metrics_uses_only_the_days_every_holding_trades(world: World) -> None:
    account = world.open("fb@example.com", "20000", qty={"AAPL": "5", "FB": "20"})
    world.clock.set(TUESDAY_EVENING)
    got = world.run("risk_metrics", account)
    e = expected_risk(world.position_qty(account), months_back(TODAY, 12), TODAY, 0.02)
    assert got["start"] == "2012-05-18" == day(e["series"].index[0])  # FB's first day
    assert_pct(got["total_return_pct"], total_ret(e["series"]))
    assert_pct(got["annualized_volatility_pct"], e["vol"])
    assert_2dp(got["beta"], e["beta"])
    assert_2dp(got["sharpe"], e["sharpe"])
    assert_pct(got["max_drawdown_pct"], e["depth"])


def test_sharpe_follows_the_configured_risk_free_rate(tmp_path: Path, redis_url: str) -> None:
    results = {}
    for rate in ("0.02", "0.08"):
        w = make_world(tmp_path / rate, redis_url, CLERA_RISK_FREE_RATE=rate)
        account = w.open("rf@example.com", "20000", qty={"AAPL": "10", "MSFT": "50", "IBM": "5"})
        w.clock.set(TUESDAY_EVENING)
        results[rate] = (w.run("risk_metrics", account), w.position_qty(account))
    low, qty = results["0.02"]
    high, _ = results["0.08"]
    assert low["risk_free_rate_pct"] == "2.00" and high["risk_free_rate_pct"] == "8.00"
    e_low = expected_risk(qty, months_back(TODAY, 12), TODAY, 0.02)
    e_high = expected_risk(qty, months_back(TODAY, 12), TODAY, 0.08)
    assert_2dp(low["sharpe"], e_low["sharpe"])
    assert_2dp(high["sharpe"], e_high["sharpe"])
    assert low["sharpe"] != high["sharpe"]
    # Sharpe falls by Δrf / annualised volatility when the rate rises
    drop = (0.08 - 0.02) / (e_low["sd"] * math.sqrt(252))
    assert abs((float(low["sharpe"]) - float(high["sharpe"])) - drop) <= 0.01 + 1e-9
    for key in ("total_return_pct", "annualized_volatility_pct", "beta", "max_drawdown_pct"):
        assert low[key] == high[key]


def test_risk_metrics_errors(world: World) -> None:
    empty = world.open("norisk@example.com", "100")
    assert "no positions" in world.run("risk_metrics", empty)["error"]
    account = world.open("badperiod@example.com", "2000", qty={"AAPL": "1"})
    assert "not understood" in world.run("risk_metrics", account, period="forever")["error"]


# --- rebalance_plan ----------------------------------------------------------------------------------
PROFILES = {  # cash reserve (fraction of the account; None keeps today's cash), inverse-vol share, cap
    "equal_weight": (None, 0.0, None),
    "conservative": (Decimal("0.25"), 1.0, 0.30),
    "balanced": (Decimal("0.10"), 0.5, 0.40),
    "aggressive": (Decimal("0.02"), 0.0, None),
}


def expected_targets(values: dict[str, Decimal], cash: Decimal, target: str) -> tuple[dict[str, float], Decimal]:
    reserve_share, k, cap = PROFILES[target]
    total = cash + sum(values.values(), Decimal(0))
    reserve = cash if reserve_share is None else (total * reserve_share).quantize(CENT, rounding=ROUND_UP)
    investable = float(total - reserve)
    start = months_back(TODAY, 12)
    inverse = {s: 1 / ann_vol(window(closes(s), start, TODAY)) for s in values}
    n = len(values)
    w = {s: (1 - k) / n + k * inverse[s] / sum(inverse.values()) for s in values}
    if cap is not None:  # water-filling: capped weights fixed, the excess spread pro rata over the rest
        limit = cap * float(total) / investable
        fixed: dict[str, float] = {}
        while True:
            free = {s: x for s, x in w.items() if s not in fixed}
            if not free:  # every position at the cap: the rest stays in cash
                w = fixed
                break
            room = 1 - sum(fixed.values())
            scaled = {s: x * room / sum(free.values()) for s, x in free.items()}
            over = [s for s, x in scaled.items() if x > limit]
            if not over:
                w = {**fixed, **scaled}
                break
            fixed.update(dict.fromkeys(over, limit))
    return {s: investable * x for s, x in w.items()}, reserve


LOPSIDED = {"AAPL": "60", "MSFT": "40", "IBM": "10", "GOOG": "2"}  # mostly AAPL, $2.4k cash of $10k
PAIR = {"AAPL": "40", "IBM": "5"}  # two holdings: the 30% / 40% caps bind


@pytest.mark.parametrize("bought", [LOPSIDED, PAIR], ids=["four", "pair"])
@pytest.mark.parametrize("target", ["", "equal_weight", "conservative", "balanced", "aggressive"])
def test_rebalance_plan_reaches_its_target_in_whole_cents(world: World, target: str, bought: dict[str, str]) -> None:
    account = world.open("rb@example.com", "10000", qty=bought)
    world.clock.set(TUESDAY_EVENING)
    got = world.run("rebalance_plan", account, target=target)
    goal = target or "equal_weight"
    assert got["target"] == goal and "error" not in got, got

    values = {s: market_value(s, Decimal(q)) for s, q in bought.items()}
    cash = world.broker.get_account(account).cash
    total = cash + sum(values.values(), Decimal(0))
    targets, reserve = expected_targets(values, cash, goal)

    trades = got["trades"]
    assert trades, "a lopsided account needs trades"
    sides = [t["side"] for t in trades]
    assert sides == sorted(sides, key=lambda side: side != "sell"), f"sells come first: {sides}"
    if bought == LOPSIDED:  # too much AAPL for every target
        assert any(t["symbol"] == "AAPL" and t["side"] == "sell" for t in trades)
    after = dict(values)
    cash_after = cash
    for t in trades:
        amount = Decimal(t["notional"])
        assert amount == amount.quantize(CENT) and amount >= 1, t
        assert t["symbol"] in values and len([u for u in trades if u["symbol"] == t["symbol"]]) == 1
        after[t["symbol"]] += amount if t["side"] == "buy" else -amount
        cash_after += -amount if t["side"] == "buy" else amount
    assert Decimal(got["cash_after"]) == cash_after
    assert cash_after + sum(after.values(), Decimal(0)) == total
    assert cash_after >= reserve  # the reserve is kept
    for symbol, value in after.items():
        assert abs(float(value) - targets[symbol]) <= 0.01 + 1e-6, (symbol, value, targets[symbol])
        assert_pct(got["target_weights_pct"][symbol], targets[symbol] / float(total))
        assert_pct(got["current_weights_pct"][symbol], float(values[symbol] / total))
    if goal == "equal_weight":
        assert cash_after == cash  # the invested value is only reshuffled
    cap = PROFILES[goal][2]
    for symbol, value in after.items():
        assert cap is None or float(value / total) <= cap + 1e-9, (symbol, value, total)
    if bought == PAIR and cap is not None:  # both held at the cap, the rest left in cash
        assert all(abs(float(v) - cap * float(total)) <= 0.01 for v in after.values()), after
        assert any("cap" in note for note in got["notes"])

    # the trade agent's rebalance queues exactly these trades as orders, sells first
    orders = world.run("rebalance_orders", account, target=target)
    assert orders["status"] == "planned" and orders["target"] == goal
    assert orders["orders"] == [{"side": t["side"], "symbol": t["symbol"], "notional": t["notional"]} for t in trades]


def test_rebalance_plan_errors(world: World) -> None:
    empty = world.open("norb@example.com", "100")
    assert "no positions" in world.run("rebalance_plan", empty)["error"]
    assert world.run("rebalance_orders", empty)["status"] == "refused"
    account = world.open("badrb@example.com", "2000", qty={"AAPL": "1"})
    got = world.run("rebalance_plan", account, target="yolo")
    assert "unknown rebalance target" in got["error"]
    assert "unknown rebalance target" in world.run("rebalance_orders", account, target="yolo")["error"]


def test_a_balanced_account_needs_no_trades(world: World) -> None:
    account = world.open("even@example.com", "3000", notional={"AAPL": "1000", "MSFT": "1000", "IBM": "1000"})
    got = world.run("rebalance_plan", account, target="equal_weight")
    # $1000 each (to the share's nano): every gap to the equal weight is under the $1 minimum order
    assert got["trades"] == [] and Decimal(got["cash_after"]) == world.broker.get_account(account).cash
    assert world.run("rebalance_orders", account)["status"] == "nothing_to_do"


# --- account_activity and cash_available ------------------------------------------------------------
def test_account_activity_matches_the_ledger(world: World) -> None:
    world.clock.set(MONDAY)
    account, rel = open_account(world.broker, "act@example.com")
    world.broker.create_transfer(account, rel, Decimal(20000), "INCOMING")
    world.clock.set(TUESDAY)
    buys = {"AAPL": Decimal(10), "MSFT": Decimal(50)}
    for symbol, q in buys.items():
        world.broker.submit_order(account, OrderRequest(symbol=symbol, side="buy", qty=q))
    world.broker.submit_order(account, OrderRequest(symbol="AAPL", side="sell", qty=Decimal(4)))
    world.broker.create_transfer(account, rel, Decimal("250.50"), "OUTGOING")

    ledger = world.broker.list_activities(account)
    bought = sum((market_value(s, q) for s, q in buys.items()), Decimal(0))
    sold = market_value("AAPL", Decimal(4))
    for kind, keep in (("", lambda a: True), ("trades", lambda a: a.activity_type == "FILL"),
                       ("cash", lambda a: a.activity_type != "FILL")):
        got = world.run("account_activity", account, kind=kind)
        expected = [a for a in ledger if keep(a)]
        assert got["kind"] == (kind or "all") and got["count"] == got["shown"] == len(expected)
        assert [(r["date"], r["type"], r["symbol"], r["side"]) for r in got["activities"]] == [
            (a.date.isoformat(), a.activity_type, a.symbol, a.side) for a in expected
        ]
        for row, a in zip(got["activities"], expected, strict=True):
            assert Decimal(row["net_amount"]) == a.net_amount
            assert (row["qty"] is None) == (a.qty is None) and (row["qty"] is None or Decimal(row["qty"]) == a.qty)
            assert (row["price"] is None) == (a.price is None)
            if a.price is not None and a.symbol is not None:
                assert Decimal(row["price"]) == price4(close_of(a.symbol, PRICE_DAY))  # filled at the Redis price
        assert Decimal(got["total_bought"]) == (bought if kind != "cash" else 0)
        assert Decimal(got["total_sold"]) == (sold if kind != "cash" else 0)
    everything = world.run("account_activity", account)
    assert [r["type"] for r in everything["activities"]].count("FILL") == 3
    assert {r["type"] for r in world.run("account_activity", account, kind="cash")["activities"]} == {"CSD", "CSW"}
    deposit = next(r for r in everything["activities"] if r["type"] == "CSD")
    withdrawal = next(r for r in everything["activities"] if r["type"] == "CSW")
    assert deposit["net_amount"] == "20000.00" and withdrawal["net_amount"] == "-250.50"
    assert "kind must be" in world.run("account_activity", account, kind="dividends")["error"]

    cash = world.run("cash_available", account)
    acct = world.broker.get_account(account)
    assert Decimal(cash["cash"]) == acct.cash == Decimal(20000) - bought + sold - Decimal("250.50")
    assert Decimal(cash["cash_withdrawable"]) == cents(acct.cash_withdrawable)
    assert Decimal(cash["buying_power"]) == cents(acct.buying_power)
    assert Decimal(cash["equity"]) == cents(acct.equity)


def test_cash_available_matches_the_broker_account(world: World) -> None:
    account = world.open("ca@example.com", "5000", qty={"IBM": "5"})
    got = world.run("cash_available", account)
    acct = world.broker.get_account(account)
    spent = market_value("IBM", Decimal(5))
    assert Decimal(got["cash"]) == acct.cash == Decimal(5000) - spent
    assert Decimal(got["buying_power"]) == cents(acct.buying_power) == Decimal(5000) - spent
    assert Decimal(got["cash_withdrawable"]) == cents(acct.cash_withdrawable)
    assert Decimal(got["equity"]) == cents(acct.equity) == Decimal(5000)  # bought at the price it is valued at
    assert got["account_id"] == account


# --- buy / sell pre-trade checks -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tool", "args", "code"),
    [
        ("sell", {"symbol": "GOOG", "qty": "1"}, "no_position"),
        ("sell", {"symbol": "GOOG", "qty": "all"}, "no_position"),
        ("sell", {"symbol": "GOOG", "notional": "100"}, "no_position"),
        ("sell", {"symbol": "AAPL", "qty": "10.5"}, "insufficient_qty"),
        ("sell", {"symbol": "AAPL", "notional": "1000"}, "insufficient_qty"),  # 10 AAPL are worth $734
        ("sell", {"symbol": "AAPL", "qty": "0.01"}, "below_minimum"),
        ("buy", {"symbol": "AAPL", "notional": "5000.01"}, "insufficient_funds"),  # just over the cash left
        ("buy", {"symbol": "AAPL", "qty": "1000"}, "insufficient_funds"),
        ("buy", {"symbol": "AAPL", "notional": "0.99"}, None),
        ("buy", {"symbol": "AAPL", "qty": "0.01"}, "below_minimum"),  # $0.73 of stock
        ("buy", {"symbol": "ZZZZ", "notional": "100"}, "no_price"),
        ("buy", {"symbol": "TSLA", "notional": "100"}, "no_price"),
        ("buy", {"symbol": "$$$", "notional": "100"}, None),
        ("buy", {"symbol": "AAPL", "notional": "10.005"}, None),
        ("buy", {"symbol": "AAPL", "notional": "-5"}, None),
        ("buy", {"symbol": "AAPL", "notional": "ten"}, None),
        ("buy", {"symbol": "AAPL", "qty": "0.0000000001"}, None),  # 10 decimals
        ("buy", {"symbol": "AAPL", "qty": "-1"}, None),
        ("buy", {"symbol": "AAPL"}, "amount_missing"),
        ("buy", {"symbol": "AAPL", "notional": "100", "qty": "1"}, "amount_missing"),
    ],
)
def test_trade_checks_refuse(world: World, tool: str, args: dict[str, str], code: str | None) -> None:
    deposit = Decimal(5000) + market_value("AAPL", Decimal(10))  # $5000.00 left after buying AAPL
    account = world.open("tr@example.com", str(deposit), qty={"AAPL": "10"})
    assert world.broker.get_account(account).buying_power == Decimal(5000)
    orders = len(world.broker.list_orders(account, "all"))
    got = world.run(tool, account, **args)
    assert got["status"] == "refused" and got["error"], got
    if code is not None:
        assert got["code"] == code, got
    assert "order" not in got
    assert len(world.broker.list_orders(account, "all")) == orders  # a check never places anything


def test_buying_power_boundary(world: World) -> None:
    account = world.open("bp@example.com", "2000", qty={"MSFT": "10"})
    power = world.broker.get_account(account).buying_power
    assert power == Decimal(2000) - market_value("MSFT", Decimal(10))
    ok = world.run("buy", account, symbol="IBM", notional=str(power))
    assert ok["status"] == "awaiting_confirmation", ok
    over = world.run("buy", account, symbol="IBM", notional=str(power + CENT))
    assert over["code"] == "insufficient_funds"


@pytest.mark.parametrize(
    ("tool", "args", "symbol", "notional"),
    [
        ("buy", {"symbol": "AAPL", "notional": "1000"}, "AAPL", "1000.00"),
        ("buy", {"symbol": "Microsoft", "notional": "$1,500"}, "MSFT", "1500.00"),
        ("buy", {"symbol": "GOOG", "notional": "1.00"}, "GOOG", "1.00"),
        ("buy", {"symbol": "FB", "notional": "333.33"}, "FB", "333.33"),
        ("sell", {"symbol": "AAPL", "notional": "100"}, "AAPL", "100.00"),
    ],
)
def test_a_notional_order_estimates_shares_rounded_down(world: World, tool: str, args: dict[str, str], symbol: str,
                                                         notional: str) -> None:
    account = world.open("ok@example.com", "5000", qty={"AAPL": "10"})
    orders = len(world.broker.list_orders(account, "all"))
    got = world.run(tool, account, **args)
    assert got["status"] == "awaiting_confirmation", got
    order = got["order"]
    price = price4(close_of(symbol, PRICE_DAY))
    assert order["symbol"] == symbol and order["side"] == tool and order["account_id"] == account
    assert order["notional"] == notional and "qty" not in order
    assert Decimal(order["estimated_price"]) == price
    expected_qty = (Decimal(notional) / price).quantize(Decimal("1e-9"), rounding=ROUND_DOWN)
    assert Decimal(order["estimated_qty"]) == expected_qty
    assert expected_qty * price <= Decimal(notional) < (expected_qty + Decimal("1e-9")) * price
    assert order["market_open"] is True
    assert len(world.broker.list_orders(account, "all")) == orders


def test_orders_by_shares(world: World) -> None:
    account = world.open("qty@example.com", "5000", qty={"AAPL": "10", "IBM": "2.5"})
    buy = world.run("buy", account, symbol="IBM", qty="3")
    assert buy["status"] == "awaiting_confirmation"
    assert buy["order"]["qty"] == "3" and buy["order"]["estimated_qty"] == "3" and "notional" not in buy["order"]
    assert Decimal(buy["order"]["estimated_price"]) == price4(close_of("IBM", PRICE_DAY))
    everything = world.run("sell", account, symbol="IBM", qty="all")
    assert everything["order"]["qty"] == "2.5" and everything["order"]["side"] == "sell"
    some = world.run("sell", account, symbol="AAPL", qty="10")
    assert some["order"]["qty"] == "10"
    world.clock.set(TUESDAY_EVENING)
    closed = world.run("buy", account, symbol="IBM", qty="1")
    assert closed["status"] == "awaiting_confirmation" and closed["order"]["market_open"] is False


# --- arguments ------------------------------------------------------------------------------------------
def test_the_registry_holds_every_tool_tested_here() -> None:
    assert {name: REGISTRY[name].agent for name in EXPECTED_TOOLS if name in REGISTRY} == EXPECTED_TOOLS


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_optional_arguments_default_to_an_empty_string(name: str) -> None:
    schema = REGISTRY[name].schema.args_schema.model_json_schema()
    required = set(schema.get("required", []))
    for arg, spec in schema.get("properties", {}).items():
        if arg not in required:
            assert "default" in spec and spec["default"] == "", (name, arg, spec)
            assert spec.get("type") == "string", (name, arg, spec)
    if name in EXPECTED_TOOLS:
        assert required <= {"symbol"}
        assert all(spec.get("type") == "string" for spec in schema.get("properties", {}).values())


VALID_ARGS = {"symbol": "AAPL"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_none_or_wrong_types_come_back_as_errors(world: World, name: str) -> None:
    account = world.open("args@example.com", "5000", qty={"AAPL": "1"})
    properties = REGISTRY[name].schema.args_schema.model_json_schema().get("properties", {})
    base = {arg: VALID_ARGS[arg] for arg in properties if arg in VALID_ARGS}
    if name in ("buy", "sell"):
        base["notional"] = "10"
    if name in EXPECTED_TOOLS:
        assert "error" not in REGISTRY[name].run(world.deps, account, base)  # the valid call works
    required = set(REGISTRY[name].schema.args_schema.model_json_schema().get("required", []))
    for arg in properties:
        for bad in (5, 1.5, True, ["AAPL"], {"x": "y"}, *((None,) if arg in required else ())):
            got = REGISTRY[name].run(world.deps, account, {**base, arg: bad})
            assert isinstance(got, dict) and isinstance(got.get("error"), str), (name, arg, bad, got)
            assert arg in got["error"]
        if arg not in required and name in EXPECTED_TOOLS and name not in ("buy", "sell"):
            # null for an optional argument is what a model sends for "not given": the default applies
            assert REGISTRY[name].run(world.deps, account, {**base, arg: None}) == REGISTRY[name].run(
                world.deps, account, base), (name, arg)
    if "symbol" in properties:
        got = REGISTRY[name].run(world.deps, account, {})
        assert "symbol" in got["error"]


def test_account_activity_shows_fifty_rows_but_totals_everything(world: World) -> None:
    account = world.open("many@example.com", "1000", qty={"IBM": "1"}, notional={"MSFT": "2"})
    for _ in range(54):
        world.broker.submit_order(account, OrderRequest(symbol="MSFT", side="buy", notional=Decimal(2)))
    got = world.run("account_activity", account, kind="trades")
    assert got["count"] == 56 and got["shown"] == 50 and len(got["activities"]) == 50
    spent = Decimal(1000) - world.broker.get_account(account).cash
    assert Decimal(got["total_bought"]) == spent == market_value("IBM", Decimal(1)) + 55 * Decimal(2)
    everything = world.run("account_activity", account)
    assert everything["count"] == 57 and everything["shown"] == 50
    assert everything["activities"][-1]["type"] == "FILL"  # the oldest rows (the deposit) are cut
