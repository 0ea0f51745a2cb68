"""The agents' metrics against independent computations (numpy/pandas) on the shipped real prices,
plus small cases checkable by hand and the edge cases (empty, one price, flat)."""

from __future__ import annotations

import datetime as dt
import math
from decimal import ROUND_UP, Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import metrics, rebalance
from agents.metrics import Drawdown
from brokerage.errors import InvalidRequest
from engine.prices_data import load_price_data

START, END = dt.date(2011, 1, 1), dt.date(2012, 12, 31)
D = dt.date
ZERO = Decimal(0)


def shipped(symbol: str, start: dt.date = START, end: dt.date = END) -> list[tuple[dt.date, float]]:
    return [(b.day, b.close) for b in load_price_data().daily_bars(symbol) if start <= b.day <= end]


def frame(symbol: str, start: dt.date = START, end: dt.date = END) -> pd.Series:
    days, closes = zip(*shipped(symbol, start, end), strict=True)
    return pd.Series(closes, index=pd.DatetimeIndex(days))


def closes(symbol: str) -> list[float]:
    return [c for _, c in shipped(symbol)]


# --- against independent computations on real prices ------------------------------------------
@pytest.mark.parametrize("symbol", ["AAPL", "MSFT", "IBM", "GOOG"])
def test_returns_volatility_and_sharpe_match_pandas(symbol: str) -> None:
    series = frame(symbol)
    returns = series.pct_change().dropna()
    assert metrics.daily_returns(closes(symbol)) == pytest.approx(returns.to_list(), rel=1e-12)
    assert metrics.total_return(closes(symbol)) == pytest.approx(series.iloc[-1] / series.iloc[0] - 1, rel=1e-12)
    assert metrics.annualized_volatility(closes(symbol)) == pytest.approx(returns.std(ddof=1) * np.sqrt(252), rel=1e-10)
    excess = returns - 0.02 / 252
    expected = excess.mean() / returns.std(ddof=1) * np.sqrt(252)
    assert metrics.sharpe(closes(symbol), Decimal("0.02")) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("symbol", ["AAPL", "GOOG", "FB"])
def test_max_drawdown_matches_a_cumulative_maximum(symbol: str) -> None:
    series = frame(symbol)
    underwater = series / series.cummax() - 1
    trough = underwater.idxmin()
    peak = series.loc[:trough].idxmax()
    got = metrics.max_drawdown(shipped(symbol))
    assert got.depth == pytest.approx(underwater.min(), rel=1e-12)
    assert (got.peak_day, got.trough_day) == (peak.date(), trough.date())
    assert metrics.max_drawdown(closes(symbol)) == Drawdown(got.depth)  # undated: no days


def test_fb_ipo_drawdown_is_the_real_one() -> None:
    """FB fell from its first close (38.23 on 2012-05-18) to 17.73 on 2012-09-04."""
    got = metrics.max_drawdown(shipped("FB"))
    assert (got.peak_day, got.trough_day) == (D(2012, 5, 18), D(2012, 9, 4))
    assert got.depth == pytest.approx(17.73 / 38.2318 - 1, abs=1e-3)


@pytest.mark.parametrize("symbol", ["AAPL", "IBM", "FB"])
def test_beta_matches_numpy_covariance(symbol: str) -> None:
    market = frame("MSFT")
    both = pd.concat([frame(symbol), market], axis=1, join="inner").pct_change().dropna()
    cov = np.cov(both.iloc[:, 0], both.iloc[:, 1], ddof=1)
    assert metrics.beta(shipped(symbol), shipped("MSFT")) == pytest.approx(cov[0, 1] / cov[1, 1], rel=1e-10)


def test_beta_of_a_series_with_itself_is_one_and_of_a_multiple_too() -> None:
    aapl = shipped("AAPL")
    assert metrics.beta(aapl, aapl) == pytest.approx(1.0)
    assert metrics.beta([(d, 3 * c) for d, c in aapl], aapl) == pytest.approx(1.0)


def test_align_keeps_only_shared_days() -> None:
    aapl, fb = shipped("AAPL"), shipped("FB")
    a, b = metrics.align(aapl, fb)
    assert [d for d, _ in a] == [d for d, _ in b] == [d for d, _ in fb]  # FB's days are a subset of AAPL's
    assert a[0] == (D(2012, 5, 18), load_price_data().close_on("AAPL", D(2012, 5, 18)))


def test_portfolio_series_is_quantity_times_close_on_common_days() -> None:
    holdings = {"AAPL": Decimal("10"), "FB": Decimal("2.5"), "IBM": Decimal("0")}
    got = metrics.portfolio_series(holdings, {"AAPL": shipped("AAPL"), "FB": shipped("FB"), "IBM": shipped("IBM")})
    expected = (10 * frame("AAPL") + 2.5 * frame("FB")).dropna()  # pandas aligns on the index
    assert [d for d, _ in got] == [t.date() for t in expected.index]
    assert [v for _, v in got] == pytest.approx(expected.to_list(), rel=1e-12)
    assert got[0][0] == D(2012, 5, 18)


def test_portfolio_series_without_data_for_a_holding_is_empty() -> None:
    assert metrics.portfolio_series({"AAPL": 1, "ZZZZ": 1}, {"AAPL": shipped("AAPL")}) == []
    assert metrics.portfolio_series({}, {"AAPL": shipped("AAPL")}) == []


# --- small cases by hand ------------------------------------------------------------------------
def test_hand_checked_small_series() -> None:
    prices = [100.0, 110.0, 99.0, 108.9]
    assert metrics.daily_returns(prices) == pytest.approx([0.10, -0.10, 0.10])
    assert metrics.total_return(prices) == pytest.approx(0.089)
    # returns 0.1, -0.1, 0.1: mean 1/30, sample variance ((2/30)^2*2 + (4/30)^2)/2 = 0.04/3
    assert metrics.annualized_volatility(prices) == pytest.approx(math.sqrt(0.04 / 3 * 252))
    assert metrics.sharpe(prices, 0.0) == pytest.approx((1 / 30) / math.sqrt(0.04 / 3) * math.sqrt(252))
    assert metrics.max_drawdown(prices).depth == pytest.approx(-0.10)


def test_beta_by_hand() -> None:
    days = [D(2020, 1, d) for d in range(1, 5)]
    market = list(zip(days, [100.0, 110.0, 99.0, 108.9], strict=True))  # returns .1 -.1 .1
    asset = list(zip(days, [50.0, 60.0, 48.0, 57.6], strict=True))  # returns .2 -.2 .2: twice the market
    assert metrics.beta(asset, market) == pytest.approx(2.0)
    assert metrics.beta(market, asset) == pytest.approx(0.5)


def test_edge_cases_empty_one_price_flat() -> None:
    assert metrics.daily_returns([]) == [] and metrics.daily_returns([5.0]) == []
    assert metrics.total_return([]) is None
    assert metrics.total_return([5.0]) == 0.0
    for short in ([], [5.0], [5.0, 6.0]):
        assert metrics.annualized_volatility(short) is None
        assert metrics.sharpe(short, 0.02) is None
    flat = [5.0] * 10
    assert metrics.annualized_volatility(flat) == 0.0
    assert metrics.sharpe(flat, 0.02) is None  # no variation: undefined, not infinite
    assert metrics.max_drawdown([]) == Drawdown(0.0)
    assert metrics.max_drawdown([(D(2020, 1, 1), 5.0)]) == Drawdown(0.0)
    assert metrics.max_drawdown([1.0, 2.0, 3.0]) == Drawdown(0.0)  # only rises
    dated_flat = [(D(2020, 1, d), 5.0) for d in range(1, 6)]
    assert metrics.beta(dated_flat, dated_flat) is None
    assert metrics.beta(shipped("AAPL"), []) is None


def test_allocation_hhi_and_largest_weight() -> None:
    weights = metrics.allocation({"AAPL": Decimal("600.00"), "MSFT": Decimal("300.00"), "IBM": Decimal("100.00")})
    assert weights == pytest.approx({"AAPL": 0.6, "MSFT": 0.3, "IBM": 0.1})
    assert metrics.hhi(weights) == pytest.approx(0.36 + 0.09 + 0.01)
    assert metrics.largest_weight(weights) == ("AAPL", pytest.approx(0.6))
    assert metrics.largest_weight({"B": 0.5, "A": 0.5}) == ("A", 0.5)
    assert metrics.largest_weight({}) is None
    assert metrics.allocation({}) == {} and metrics.allocation({"X": Decimal(0)}) == {}
    assert metrics.hhi({"X": 1.0}) == 1.0 and metrics.hhi({}) == 0.0


def equal(n: int) -> dict[str, float]:
    return {f"S{i}": 1 / n for i in range(n)}


def test_diversification_score_anchors() -> None:
    assert metrics.diversification_score({"AAPL": 1.0}, {"Technology": 1.0}) == 1
    assert metrics.diversification_score({}, {}) == 1
    assert metrics.diversification_score(equal(10), {"Technology": 1.0}) == 7
    assert metrics.diversification_score(equal(10), equal(3)) == 9
    assert metrics.diversification_score(equal(12), equal(4)) in (9, 10)
    assert metrics.diversification_score(equal(20), equal(6)) == 10
    assert metrics.diversification_score(equal(2), equal(2)) == 4
    # weights of the whole account (cash included) give the same score as invested weights
    assert metrics.diversification_score({"A": 0.25, "B": 0.25}, {"x": 0.25, "y": 0.25}) == 4


def test_diversification_score_is_monotone() -> None:
    for sectors in (1, 2, 3, 5, 8):
        scores = [metrics.diversification_score(equal(n), equal(min(n, sectors))) for n in range(1, 30)]
        assert scores == sorted(scores) and all(1 <= s <= 10 for s in scores)
    for n in (1, 3, 10, 25):
        scores = [metrics.diversification_score(equal(n), equal(k)) for k in range(1, n + 1)]
        assert scores == sorted(scores)
    # one dominant holding among ten equals less than ten equal holdings
    lopsided = {"A": 0.91, **{f"S{i}": 0.01 for i in range(9)}}
    assert metrics.diversification_score(lopsided, equal(3)) < metrics.diversification_score(equal(10), equal(3))


# --- period windows -----------------------------------------------------------------------------
TODAY = D(2012, 8, 15)


@pytest.mark.parametrize(
    ("period", "start_date", "end_date", "expected"),
    [
        ("", "", "", (D(2011, 8, 15), TODAY)),
        ("6m", "", "", (D(2012, 2, 15), TODAY)),
        ("6M", "", "", (D(2012, 2, 15), TODAY)),
        ("ytd", "", "", (D(2012, 1, 1), TODAY)),
        ("30d", "", "", (D(2012, 7, 16), TODAY)),
        ("2w", "", "", (D(2012, 8, 1), TODAY)),
        ("2y", "", "", (D(2010, 8, 15), TODAY)),
        ("1m", "", "2012-03-31", (D(2012, 2, 29), D(2012, 3, 31))),  # clamped to February's last day
        ("1y", "", "2012-02-29", (D(2011, 2, 28), D(2012, 2, 29))),
        ("", "2012-01-03", "", (D(2012, 1, 3), TODAY)),
        ("", "2012-01-03", "2012-03-01", (D(2012, 1, 3), D(2012, 3, 1))),
        ("", "2012-01-03", "2013-01-01", (D(2012, 1, 3), TODAY)),  # end beyond today: cut to today
        ("", TODAY.isoformat(), "", (TODAY, TODAY)),
    ],
)
def test_period_window(period: str, start_date: str, end_date: str, expected: tuple[dt.date, dt.date]) -> None:
    assert metrics.period_window(TODAY, period, start_date, end_date) == expected


@pytest.mark.parametrize(
    ("period", "start_date", "end_date", "message"),
    [
        ("", "2012-05-01", "2012-04-01", "before start_date"),
        ("", "2012-09-01", "", "in the future"),
        ("", "2012/01/03", "", "YYYY-MM-DD"),
        ("", "20120103", "", "YYYY-MM-DD"),
        ("", "", "yesterday", "YYYY-MM-DD"),
        ("", "2012-02-30", "", "YYYY-MM-DD"),
        ("6 months", "", "", "not understood"),
        ("0d", "", "", "not understood"),
        ("3q", "", "", "not understood"),
        ("9999y", "", "", "too far"),
        ("1y", "2012-01-03", "", "not both"),
    ],
)
def test_period_window_rejects_bad_input(period: str, start_date: str, end_date: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        metrics.period_window(TODAY, period, start_date, end_date)


# --- rebalancing plans ----------------------------------------------------------------------------
def buys_and_sells(plan: rebalance.RebalancePlan) -> list[tuple[str, str, Decimal]]:
    return [(t.side, t.symbol, t.notional) for t in plan.trades]


def test_equal_weight_by_hand() -> None:
    positions = {"A": Decimal("600"), "B": Decimal("300"), "C": Decimal("100")}
    got = rebalance.plan(positions, Decimal("50"), "equal_weight", {})
    assert buys_and_sells(got) == [("sell", "A", Decimal("266.67")), ("buy", "B", Decimal("33.33")),
                                   ("buy", "C", Decimal("233.33"))]
    assert got.cash_reserve == Decimal("50") and got.cash_after == Decimal("50.01")
    assert got.values_after == {"A": Decimal("333.33"), "B": Decimal("333.33"), "C": Decimal("333.33")}
    assert got.current_weights == pytest.approx({"A": 600 / 1050, "B": 300 / 1050, "C": 100 / 1050})


def test_conservative_by_hand_inverse_volatility_with_a_cap() -> None:
    """Inverse volatility gives 4/7, 2/7, 1/7 of the invested 75%; A's 42.9% of the account is cut to the
    30% cap and its excess goes to B and C pro rata (B 30%, C 15%)."""
    got = rebalance.plan({"A": Decimal("4000"), "B": Decimal("3000"), "C": Decimal("3000")}, ZERO, "conservative",
                         {"A": 0.1, "B": 0.2, "C": 0.4})
    assert got.target_values == {"A": Decimal("3000.00"), "B": Decimal("3000.00"), "C": Decimal("1500.00")}
    assert buys_and_sells(got) == [("sell", "A", Decimal("1000.00")), ("sell", "C", Decimal("1500.00"))]
    assert got.cash_reserve == Decimal("2500.00") and got.cash_after == Decimal("2500.00")
    assert got.target_weights == pytest.approx({"A": 0.30, "B": 0.30, "C": 0.15})


def test_balanced_mixes_equal_and_inverse_volatility() -> None:
    got = rebalance.plan({"A": Decimal("500"), "B": Decimal("500")}, Decimal("1000"), "balanced", {"A": 0.1, "B": 0.3})
    # invested 90%: A = 0.9 × (0.5×0.5 + 0.5×0.75) = 56.25%, over the 40% cap; B = 33.75% + A's excess = 40% too
    assert got.target_values == {"A": Decimal("800.00"), "B": Decimal("800.00")}
    assert got.cash_after == Decimal("400.00") and got.cash_reserve == Decimal("200.00")
    assert any("at the 40% cap" in note for note in got.notes)
    uncapped = rebalance.plan({f"S{i}": Decimal("100") for i in range(4)}, ZERO, "balanced",
                              {"S0": 0.1, "S1": 0.2, "S2": 0.2, "S3": 0.4})
    inverse = np.array([10, 5, 5, 2.5]) / 22.5
    expected = 0.9 * (0.5 * 0.25 + 0.5 * inverse)
    assert list(uncapped.target_weights.values()) == pytest.approx(expected.tolist(), abs=1e-4)


def test_aggressive_keeps_two_percent() -> None:
    got = rebalance.plan({"A": Decimal("1000"), "B": Decimal("0")}, ZERO, "aggressive", {})
    assert got.cash_reserve == Decimal("20.00") and got.cash_after == Decimal("20.00")
    assert buys_and_sells(got) == [("sell", "A", Decimal("20.00"))]  # B (zero value) is not a holding


def test_missing_volatility_uses_the_median_and_says_so() -> None:
    got = rebalance.plan({"A": Decimal("100"), "B": Decimal("100"), "C": Decimal("100")}, ZERO, "conservative",
                         {"A": 0.2, "B": float("nan")})
    assert got.target_values["A"] == got.target_values["B"] == got.target_values["C"]
    assert any("No volatility for B, C" in note for note in got.notes)


def test_small_trades_are_skipped_and_listed() -> None:
    got = rebalance.plan({"A": Decimal("100.50"), "B": Decimal("99.50")}, ZERO, "equal_weight", {})
    assert got.trades == [] and got.cash_after == ZERO
    assert any("under $1" in note and "sell A $0.50" in note for note in got.notes)


def test_no_positions_and_bad_input() -> None:
    empty = rebalance.plan({}, Decimal("500"), "aggressive", {})
    assert empty.trades == [] and empty.cash_after == Decimal("500")
    with pytest.raises(InvalidRequest, match="conservative, balanced, aggressive"):
        rebalance.plan({"A": Decimal("1")}, ZERO, "yolo", {})
    with pytest.raises(InvalidRequest, match="negative"):
        rebalance.plan({"A": Decimal("1")}, Decimal("-1"), "balanced", {})


def test_buys_wait_for_the_reserve() -> None:
    """Cash below the reserve and nothing to sell above $1: no buy may spend the reserve."""
    got = rebalance.plan({"A": Decimal("50"), "B": Decimal("50.40")}, Decimal("0.50"), "balanced", {})
    assert all(t.side == "sell" for t in got.trades)


money = st.decimals(min_value=0, max_value=2_000_000, places=3, allow_nan=False, allow_infinity=False)
volatility = st.one_of(st.none(), st.floats(min_value=0.01, max_value=3.0))


@settings(max_examples=400, deadline=None)
@given(
    positions=st.dictionaries(st.sampled_from(["AAPL", "MSFT", "IBM", "GOOG", "FB", "T", "XOM", "KO"]), money,
                              min_size=1, max_size=8),
    cash=money,
    target=st.sampled_from(list(rebalance.PROFILES)),
    vols=st.dictionaries(st.sampled_from(["AAPL", "MSFT", "IBM", "GOOG", "FB", "T", "XOM", "KO"]), volatility),
)
def test_plans_are_exact_and_safe(positions: dict[str, Decimal], cash: Decimal, target: str,
                                  vols: dict[str, float | None]) -> None:
    usable = {s: v for s, v in vols.items() if v is not None}
    got = rebalance.plan(positions, cash, target, usable)
    total = cash + sum(positions.values(), ZERO)
    assert got.total_value == total
    assert got.cash_after + sum(got.values_after.values(), ZERO) == total  # exact, not approximately
    sides = [t.side for t in got.trades]
    assert sides == sorted(sides, key=lambda side: side != "sell")  # sells, then buys
    assert len({t.symbol for t in got.trades}) == len(got.trades)
    for trade in got.trades:
        assert trade.notional == trade.notional.quantize(Decimal("0.01")) and trade.notional >= 1
        if trade.side == "sell":
            assert trade.notional <= positions[trade.symbol]
    sold = sum((t.notional for t in got.trades if t.side == "sell"), ZERO)
    bought = sum((t.notional for t in got.trades if t.side == "buy"), ZERO)
    if bought:
        assert bought <= cash + sold - got.cash_reserve
        assert got.cash_after >= got.cash_reserve
    assert got.cash_after >= min(cash, got.cash_reserve)
    profile = rebalance.PROFILES[target]
    if profile.cash_reserve is not None and total > 0:
        reserve = (total * profile.cash_reserve).quantize(Decimal("0.01"), rounding=ROUND_UP)
        assert got.cash_reserve == min(total, reserve)
    else:
        assert got.cash_reserve == cash
    assert sum(got.target_values.values(), ZERO) <= total - got.cash_reserve or not got.trades
    if profile.max_position is not None and got.trades:
        assert all(v <= profile.max_position * total + Decimal("0.005") for v in got.target_values.values())
    untouched = not any(word in note for note in got.notes for word in ("Skipped", "scaled", "No buys"))
    if untouched:
        for symbol, value in got.values_after.items():
            assert Decimal(0) <= got.target_values[symbol] - value < Decimal("0.01")
