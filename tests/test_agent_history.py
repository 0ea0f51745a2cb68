"""Price history for the agents: the shipped prices and their equal-weight index, and Alpaca's daily
bars through the real alpaca-py client against the local stand-in (paging, errors)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from http import HTTPStatus

import pytest
from standins.alpaca_stream import AlpacaStreamStandIn

from agents.history import AlpacaHistory, OfflineHistory, history_from_settings
from brokerage.errors import Unavailable
from engine.config import load_settings
from engine.prices_data import load_price_data

D = dt.date


# --- offline ------------------------------------------------------------------------------------
def test_offline_closes_are_the_shipped_adjusted_closes() -> None:
    history = OfflineHistory()
    data = load_price_data()
    got = history.closes("AAPL", D(2012, 1, 3), D(2012, 3, 30))
    assert got == [(b.day, b.close) for b in data.daily_bars("AAPL") if D(2012, 1, 3) <= b.day <= D(2012, 3, 30)]
    assert got[0] == (D(2012, 1, 3), data.close_on("AAPL", D(2012, 1, 3)))
    assert got[-1][0] == D(2012, 3, 30)  # inclusive at both ends
    assert history.closes(" aapl ", D(2012, 1, 3), D(2012, 1, 3)) == got[:1]
    assert history.source == "shipped daily data (Quandl WIKI, split-adjusted)"


def test_offline_closes_across_a_split_have_no_jump() -> None:
    closes = OfflineHistory().closes("AAPL", D(2000, 6, 19), D(2000, 6, 23))  # 2:1 split on 2000-06-21
    assert all(0.8 < b / a < 1.2 for (_, a), (_, b) in itertools.pairwise(closes))


def test_offline_unknown_symbol_and_empty_range() -> None:
    history = OfflineHistory()
    assert history.closes("ZZZZ", D(2012, 1, 1), D(2012, 12, 31)) == []
    assert history.closes("AAPL", D(2012, 1, 7), D(2012, 1, 8)) == []  # a weekend
    assert history.closes("AAPL", D(2012, 2, 1), D(2012, 1, 1)) == []
    assert history.market_closes(D(2012, 1, 7), D(2012, 1, 8)) == []


def test_fb_before_its_listing_has_no_closes() -> None:
    history = OfflineHistory()
    assert history.closes("FB", D(2012, 1, 1), D(2012, 5, 17)) == []
    assert history.closes("FB", D(2012, 1, 1), D(2012, 5, 18))[0][0] == D(2012, 5, 18)


def independent_index(start: dt.date, end: dt.date) -> list[tuple[dt.date, float]]:
    """The equal-weight index by a plain loop over a day x symbol table of the shipped file."""
    data = load_price_data()
    table: dict[dt.date, dict[str, float]] = {}
    for symbol in ("AAPL", "FB", "GOOG", "IBM", "MSFT"):
        for bar in data.daily_bars(symbol):
            if start <= bar.day <= end:
                table.setdefault(bar.day, {})[symbol] = bar.close
    days = sorted(table)
    out = [(days[0], 100.0)]
    for i in range(1, len(days)):
        total, count = 0.0, 0
        for symbol, close in table[days[i]].items():
            if symbol in table[days[i - 1]]:
                total += close / table[days[i - 1]][symbol] - 1
                count += 1
        out.append((days[i], out[-1][1] * (1 + total / count)))
    return out


@pytest.mark.parametrize(("start", "end"), [(D(2011, 6, 1), D(2012, 12, 31)), (D(2000, 3, 1), D(2000, 12, 31))])
def test_equal_weight_index_matches_an_independent_loop(start: dt.date, end: dt.date) -> None:
    got = OfflineHistory().market_closes(start, end)
    expected = independent_index(start, end)
    assert [d for d, _ in got] == [d for d, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-12)
    assert got[0][1] == 100.0


def test_fb_joins_the_index_without_a_jump() -> None:
    """On FB's first day the index averages the four others only; FB counts from the next day."""
    history = OfflineHistory()
    data = load_price_data()
    index = dict(history.market_closes(D(2012, 5, 17), D(2012, 5, 21)))

    def day_return(symbol: str, before: dt.date, day: dt.date) -> float:
        return data.close_on(symbol, day) / data.close_on(symbol, before) - 1

    four = [day_return(s, D(2012, 5, 17), D(2012, 5, 18)) for s in ("AAPL", "GOOG", "IBM", "MSFT")]
    assert index[D(2012, 5, 18)] == pytest.approx(100 * (1 + sum(four) / 4))
    five = [day_return(s, D(2012, 5, 18), D(2012, 5, 21)) for s in ("AAPL", "FB", "GOOG", "IBM", "MSFT")]
    assert index[D(2012, 5, 21)] == pytest.approx(index[D(2012, 5, 18)] * (1 + sum(five) / 5))


def test_offline_market_label_names_what_it_is() -> None:
    history = OfflineHistory()
    assert history.market_label == (
        "equal-weight index of the shipped symbols (AAPL, FB, GOOG, IBM, MSFT), not the S&P 500"
    )
    assert "SPY" not in history.market_label


# --- Alpaca through the stand-in ------------------------------------------------------------------
WEEKDAYS = [day for i in range(28) if (day := D(2024, 6, 24) + dt.timedelta(days=i)).weekday() < 5]


@pytest.fixture
def server() -> Iterator[AlpacaStreamStandIn]:
    with AlpacaStreamStandIn() as stand_in:
        stand_in.set_bars("AAPL", [(d, 200.0 + i) for i, d in enumerate(WEEKDAYS)])
        stand_in.set_bars("SPY", [(d, 500.0 + i / 2) for i, d in enumerate(WEEKDAYS)])
        yield stand_in


def alpaca(server: AlpacaStreamStandIn) -> AlpacaHistory:
    return AlpacaHistory(server.key, server.secret, data_url=server.data_url, use_basic_auth=True)


def test_alpaca_closes_are_the_bars_of_the_range(server: AlpacaStreamStandIn) -> None:
    history = alpaca(server)
    got = history.closes("aapl", D(2024, 7, 1), D(2024, 7, 5))
    assert got == [(d, 200.0 + WEEKDAYS.index(d)) for d in WEEKDAYS if D(2024, 7, 1) <= d <= D(2024, 7, 5)]
    [query] = server.bars_requests
    assert (query["symbols"], query["timeframe"], query["adjustment"], query["feed"]) == ("AAPL", "1Day", "all", "iex")
    assert history.source == "alpaca"


def test_alpaca_market_proxy_is_spy(server: AlpacaStreamStandIn) -> None:
    history = alpaca(server)
    assert history.market_label == "SPY (S&P 500 ETF)"
    assert history.market_closes(D(2024, 6, 24), D(2024, 6, 25)) == [(D(2024, 6, 24), 500.0), (D(2024, 6, 25), 500.5)]
    assert server.bars_requests[-1]["symbols"] == "SPY"


def test_alpaca_pages_are_followed_to_the_end(server: AlpacaStreamStandIn) -> None:
    server.bars_page_size = 3
    got = alpaca(server).closes("AAPL", WEEKDAYS[0], WEEKDAYS[-1])
    assert got == [(d, 200.0 + i) for i, d in enumerate(WEEKDAYS)]
    assert len(server.bars_requests) == -(-len(WEEKDAYS) // 3)
    assert "page_token" not in server.bars_requests[0]
    assert all("page_token" in q for q in server.bars_requests[1:])


def test_alpaca_unknown_symbol_is_empty(server: AlpacaStreamStandIn) -> None:
    assert alpaca(server).closes("ZZZZ", WEEKDAYS[0], WEEKDAYS[-1]) == []


@pytest.mark.parametrize("status", [HTTPStatus.INTERNAL_SERVER_ERROR, HTTPStatus.FORBIDDEN])
def test_alpaca_http_errors_are_unavailable(server: AlpacaStreamStandIn, status: HTTPStatus) -> None:
    server.bars_error_status = status
    with pytest.raises(Unavailable, match="AAPL"):
        alpaca(server).closes("AAPL", WEEKDAYS[0], WEEKDAYS[-1])


def test_alpaca_wrong_keys_and_dead_host_are_unavailable(server: AlpacaStreamStandIn) -> None:
    with pytest.raises(Unavailable):
        AlpacaHistory("wrong", "keys", data_url=server.data_url).closes("AAPL", WEEKDAYS[0], WEEKDAYS[-1])
    dead = AlpacaHistory(server.key, server.secret, data_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(Unavailable):
        dead.closes("AAPL", WEEKDAYS[0], WEEKDAYS[-1])


def test_history_from_settings(server: AlpacaStreamStandIn) -> None:
    assert isinstance(history_from_settings(load_settings({}, env_file=None)), OfflineHistory)
    live = history_from_settings(load_settings({
        "CLERA_FEED": "alpaca", "BROKER_API_KEY": server.key, "BROKER_SECRET_KEY": server.secret,
        "CLERA_ALPACA_DATA_URL": server.data_url,
    }, env_file=None))
    assert isinstance(live, AlpacaHistory)
    assert live.closes("AAPL", WEEKDAYS[0], WEEKDAYS[0]) == [(WEEKDAYS[0], 200.0)]
    assert isinstance(history_from_settings(load_settings({"CLERA_FEED": "simulated"}, env_file=None)), OfflineHistory)
