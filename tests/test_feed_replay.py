"""Replay feed on the real shipped prices, checked against the raw CSV read independently here."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import gzip
import itertools
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import calendar
from engine.clock import ReplayClock, clock_from_settings
from engine.config import ConfigError, load_settings
from engine.feeds import feed_from_settings
from engine.feeds.replay import ReplayFeed
from engine.prices_data import SHIPPED_FIRST_DAY, SHIPPED_LAST_DAY, PriceDataError, load_price_data, parse_rows

CSV = Path(__file__).resolve().parents[1] / "engine" / "data" / "daily-ohlcv-quandl-wiki.csv.gz"


@pytest.fixture(scope="module")
def raw() -> dict[tuple[str, str], dict[str, float]]:
    """The CSV as published: (ticker, date) -> raw numbers."""
    with gzip.open(CSV, "rt", newline="") as f:
        return {
            (row["Ticker"], row["Date"]): {k: float(row[k]) for k in ("Open", "High", "Low", "Close", "Adj Close")}
            for row in csv.DictReader(f)
        }


def adjusted(row: dict[str, float], column: str) -> float:
    return row[column] * row["Adj Close"] / row["Close"]


def feed_at(start: dt.date, session_seconds: float = 100.0, epoch: float = 1_000_000.0, **kw: object) -> ReplayFeed:
    return ReplayFeed(ReplayClock(start, session_seconds, epoch, 0.8), **kw)


def test_every_price_is_split_adjusted(raw: dict[tuple[str, str], dict[str, float]]) -> None:
    data = load_price_data()
    assert sum(len(data.daily_bars(s)) for s in data.symbols()) == len(raw)
    for (symbol, day), row in raw.items():
        bar = data.bar_on(symbol, dt.date.fromisoformat(day))
        assert bar is not None
        for column, value in (("Open", bar.open), ("High", bar.high), ("Low", bar.low), ("Close", bar.close)):
            assert value == pytest.approx(adjusted(row, column), rel=1e-12)


@pytest.mark.parametrize(("symbol", "day", "before"), [
    ("AAPL", "2000-06-21", "2000-06-20"),  # 2:1 split
    ("AAPL", "2005-02-28", "2005-02-25"),  # 2:1 split
    ("MSFT", "2003-02-18", "2003-02-14"),  # 2:1 split (2003-02-17 was a holiday)
])
def test_split_days_are_ordinary_days(raw: dict[tuple[str, str], dict[str, float]], symbol: str, day: str,
                                      before: str) -> None:
    assert raw[(symbol, day)]["Close"] / raw[(symbol, before)]["Close"] < 0.6  # the raw file shows the split
    feed = feed_at(dt.date.fromisoformat(before))
    assert feed.days[1].isoformat() == day
    feed.subscribe([symbol])
    closing = feed.tick_at(symbol, 0, 1.0)
    opening = feed.tick_at(symbol, 1, 0.0)
    closing_next = feed.tick_at(symbol, 1, 1.0)
    assert closing is not None and opening is not None and closing_next is not None
    assert opening.prev_close == closing.price
    assert abs(opening.price / opening.prev_close - 1) < 0.15  # no -50% gap at the open
    assert abs(closing_next.price / closing_next.prev_close - 1) < 0.15  # nor a -50% day
    assert closing_next.prev_close == pytest.approx(raw[(symbol, before)]["Adj Close"], rel=1e-12)


def test_intraday_path_stays_in_range_and_ends_at_close() -> None:
    data = load_price_data()
    rng = random.Random(5)
    feed = feed_at(dt.date(2000, 3, 1))
    index_of = {d: i for i, d in enumerate(feed.days)}
    steps = 2000
    for symbol in data.symbols():
        bars = data.daily_bars(symbol)
        for bar in rng.sample(bars, 60):
            i = index_of[bar.day]
            path = [feed.price_at(symbol, i, k / steps) for k in range(steps + 1)]
            assert all(p is not None and bar.low <= p <= bar.high for p in path), (symbol, bar.day)
            assert path[0] == bar.open and path[-1] == bar.close
            span = bar.high - bar.low
            assert max(path) >= bar.high - 0.05 * span and min(path) <= bar.low + 0.05 * span  # visits both
            moves = {round(b - a, 12) for a, b in itertools.pairwise(path)}
            assert len(moves) > 100  # an intraday path, not a straight line or a step


def test_prev_close_and_close_across_session_boundaries(raw: dict[tuple[str, str], dict[str, float]]) -> None:
    epoch, length = 1_000_000.0, 100.0
    feed = feed_at(dt.date(2012, 5, 16), length, epoch, symbols=["FB", "IBM"])  # FB listed on 2012-05-18
    clock = feed.clock
    assert feed.days[:4] == [dt.date(2012, 5, 16), dt.date(2012, 5, 17), dt.date(2012, 5, 18), dt.date(2012, 5, 21)]
    for i, day in enumerate(feed.days[:4]):
        during = feed.ticks_at(clock.wall_time_of(i, 0.5), ["FB", "IBM"])
        night = feed.ticks_at(epoch + (i + 0.9) * length, ["FB", "IBM"])
        expect = ["IBM"] if day < dt.date(2012, 5, 18) else ["FB", "IBM"]
        assert [t.symbol for t in during] == expect and [t.symbol for t in night] == expect
        for tick in during + night:
            assert tick.session == day.isoformat() and tick.source == "replay"
            previous = calendar.previous_trading_day(day).isoformat()
            if (tick.symbol, previous) in raw:
                assert tick.prev_close == pytest.approx(raw[(tick.symbol, previous)]["Adj Close"], rel=1e-12)
            else:  # FB's first day: no previous close exists, its open stands in
                assert tick.prev_close == pytest.approx(adjusted(raw[(tick.symbol, day.isoformat())], "Open"))
        opens, closes = calendar.session_bounds(day)
        for tick in night:  # the market is closed: the price is the day's close, stamped at the close
            assert tick.price == pytest.approx(raw[(tick.symbol, day.isoformat())]["Adj Close"], rel=1e-12)
            assert tick.ts == closes.timestamp()
        for tick in during:
            assert tick.ts == (opens + (closes - opens) / 2).timestamp()


def test_replay_can_start_on_any_day_and_stops_after_the_data() -> None:
    feed = feed_at(dt.date(2004, 7, 4))  # a holiday and a Sunday: starts on the next session
    assert feed.days[0] == dt.date(2004, 7, 6)
    assert feed.subscribe(["GOOG", "AAPL"]) == []
    ticks = feed.ticks_at(feed.clock.wall_time_of(0, 0.3), ["GOOG", "AAPL"])
    assert [t.symbol for t in ticks] == ["AAPL"]  # GOOG only from 2004-08-19
    beyond = len(feed.days)
    assert feed.ticks_at(feed.clock.wall_time_of(beyond + 3, 0.3), ["AAPL"]) == []
    assert ReplayFeed(ReplayClock(dt.date(2013, 2, 27), 100.0, time.time() - 250.0, 0.8)).status().error is None
    ended = ReplayFeed(ReplayClock(dt.date(2013, 2, 27), 100.0, time.time() - 350.0, 0.8))  # 3 days of data
    assert ended.status().error is not None and "ended (2013-03-01)" in ended.status().error


def test_the_shipped_range_the_settings_check_is_the_files() -> None:
    data = load_price_data()
    assert (min(data.first_day(s) for s in data.symbols()), data.last_day()) == (SHIPPED_FIRST_DAY, SHIPPED_LAST_DAY)


def test_two_instances_and_two_processes_agree() -> None:
    walls = [1_000_000.0 + k * 7.3 for k in range(200)]
    one, two = feed_at(dt.date(2010, 1, 4)), feed_at(dt.date(2010, 1, 4))
    symbols = ["AAPL", "GOOG", "IBM", "MSFT"]
    mine = [one.ticks_at(w, symbols) for w in walls]
    assert mine == [two.ticks_at(w, symbols) for w in walls]
    script = (
        "import datetime as dt, json, sys; from engine.clock import ReplayClock; "
        "from engine.feeds.replay import ReplayFeed;"
        "f = ReplayFeed(ReplayClock(dt.date(2010, 1, 4), 100.0, 1_000_000.0, 0.8));"
        "walls = [1_000_000.0 + k * 7.3 for k in range(200)];"
        "print(json.dumps([[[t.symbol, t.price, t.prev_close, t.ts, t.session] for t in f.ticks_at(w, sys.argv[1:])]"
        " for w in walls]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script, *symbols], capture_output=True, text=True, env=env,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    theirs = json.loads(out.stdout)
    assert theirs == [[[t.symbol, t.price, t.prev_close, t.ts, t.session] for t in batch] for batch in mine]


async def test_live_batches_follow_the_clock() -> None:
    length, hz = 0.6, 25.0
    clock = ReplayClock(dt.date(2000, 6, 20), length, time.time(), open_fraction=0.5)
    feed = ReplayFeed(clock, ["AAPL", "MSFT", "IBM"], tick_hz=hz)
    assert feed.subscribe(["AAPL", "MSFT", "TSLA", "bad symbol"]) == ["bad symbol", "TSLA"]
    seen = []
    batches = feed.batches()
    async for batch in batches:
        seen.extend(batch)
        if clock.position()[0] >= 3:
            break
    await feed.close()
    assert await asyncio.wait_for(anext(batches, None), 5) is None  # ends once closed
    status = feed.status()
    assert status.rejected == 2 and status.ticks == len(seen) and not status.connected
    assert {t.symbol for t in seen} == {"AAPL", "MSFT"}
    for symbol in ("AAPL", "MSFT"):
        mine = [t for t in seen if t.symbol == symbol]
        assert all(a.ts <= b.ts for a, b in itertools.pairwise(mine))
        sessions = sorted({t.session for t in mine})
        assert len(sessions) >= 3 and sessions[0] == feed.days[0].isoformat()
        for i, day in enumerate(feed.days[: len(sessions) - 1]):  # the last one was cut short by the break
            today = [t for t in mine if t.session == day.isoformat()]
            closes = calendar.session_bounds(day)[1].timestamp()
            bar = feed.data.bar_on(symbol, day)
            assert bar is not None and today, (symbol, day)
            assert today[-1].price == bar.close and today[-1].ts == closes  # the session ends on its close
            assert sum(1 for t in today if t.ts == closes) == 1  # and the night sends nothing more
            assert all(bar.low <= t.price <= bar.high for t in today)
            if i:
                assert all(t.prev_close == feed.data.bar_on(symbol, feed.days[i - 1]).close for t in today)


def test_a_stalled_consumer_still_gets_every_seen_session_closed() -> None:
    feed = feed_at(dt.date(2000, 6, 20), tick_hz=10.0)
    feed.subscribe(["AAPL", "IBM"])
    clock = feed.clock
    first = feed.step(clock.wall_time_of(0, 0.5))
    assert [t.session for t in first] == ["2000-06-20"] * 2 and first[0].price == feed.price_at("AAPL", 0, 0.5)
    assert feed.step(clock.wall_time_of(0, 0.5)) == []  # same grid point: nothing new
    later = feed.step(clock.wall_time_of(2, 0.25))  # day 1 never observed
    closing, now = later[:2], later[2:]
    assert [(t.symbol, t.price, t.session) for t in closing] == [
        (s, feed.close_on(s, dt.date(2000, 6, 20)), "2000-06-20") for s in ("AAPL", "IBM")
    ]
    assert [(t.symbol, t.price, t.session) for t in now] == [
        (s, feed.price_at(s, 2, 0.25), "2000-06-22") for s in ("AAPL", "IBM")
    ]
    night = feed.step(clock.epoch + 2.9 * clock.session_seconds)
    assert [t.price for t in night] == [feed.close_on(s, dt.date(2000, 6, 22)) for s in ("AAPL", "IBM")]
    assert feed.step(clock.epoch + 2.95 * clock.session_seconds) == []  # the close goes out once a night
    feed.subscribe(["MSFT"])
    late = feed.step(clock.epoch + 2.96 * clock.session_seconds)
    assert [(t.symbol, t.price) for t in late] == [("MSFT", feed.close_on("MSFT", dt.date(2000, 6, 22)))]


def test_settings_build_the_replay_feed() -> None:
    settings = load_settings({"CLERA_FEED": "replay", "CLERA_REPLAY_EPOCH": "1000", "CLERA_REPLAY_SYMBOLS": "ibm,FB"},
                             env_file=None)
    feed = feed_from_settings(settings, clock_from_settings(settings))
    assert isinstance(feed, ReplayFeed) and feed.universe == {"IBM", "FB"} and feed.tick_hz == settings.tick_hz
    bad = load_settings({"CLERA_REPLAY_EPOCH": "1000", "CLERA_REPLAY_SYMBOLS": "IBM,TSLA"}, env_file=None)
    with pytest.raises(ConfigError, match="TSLA"):
        feed_from_settings(bad, clock_from_settings(bad))


@pytest.mark.parametrize(("line", "error"), [
    ("AAPL,2000-03-01,1,2,0.5,1.5,10,nan", "Adj Close"),
    ("AAPL,2000-03-01,1,2,0.5,-1.5,10,1", "Close"),
    ("AAPL,03/01/2000,1,2,0.5,1.5,10,1", "Date"),
    ("AAPL,2000-03-01,1,2,1.6,1.5,10,1", "outside"),
])
def test_a_broken_price_file_is_refused_with_the_line(line: str, error: str) -> None:
    header = "Ticker,Date,Open,High,Low,Close,Volume,Adj Close"
    with pytest.raises(PriceDataError, match=error):
        parse_rows([header, line])
    assert math.isclose(parse_rows([header, "AAPL,2000-03-01,1,2,0.5,1.5,10,0.75"])[0].open, 0.5)
