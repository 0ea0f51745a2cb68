"""Seeded GBM feed: determinism, exact offered rates, GBM statistics, session roll-over, live batches."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time

import numpy as np
import pytest

from engine.clock import ManualClock, WallClock
from engine.config import load_settings
from engine.feeds import feed_from_settings
from engine.feeds.simulated import SimulatedFeed, synthetic_symbols

UTC = dt.UTC


def started(**kw: object) -> SimulatedFeed:
    feed = SimulatedFeed(**kw)
    assert feed.subscribe(feed.symbols) == []
    return feed


def rows(ticks: list) -> list[tuple[str, float, float]]:
    return [(t.symbol, t.price, t.prev_close) for t in ticks]


def test_names_and_subscriptions() -> None:
    assert synthetic_symbols(3) == ["S0000", "S0001", "S0002"]
    assert synthetic_symbols(10_001)[-1] == "S10000"
    feed = SimulatedFeed(3, 100.0, seed=1, symbols=["AAPL", "S0001"])
    assert feed.symbols == ["S0000", "S0001", "S0002", "AAPL"]
    assert feed.subscribe(["AAPL", "S0002", "NOPE", "S0002", "not a symbol"]) == ["not a symbol", "NOPE"]
    assert {t.symbol for t in feed.generate(10, 1.0)} == {"AAPL", "S0002"}
    feed.unsubscribe(["AAPL"])
    assert {t.symbol for t in feed.generate(5, 2.0)} == {"S0002"}
    status = feed.status()
    assert (status.subscribed, status.ticks, status.rejected, status.source) == (1, 15, 2, "simulated")
    with pytest.raises(ValueError, match="not ticker symbols"):
        SimulatedFeed(3, 100.0, symbols=["bad symbol"])


def test_same_seed_same_ticks_other_seed_other_ticks() -> None:
    one, two, other = (started(n_symbols=50, ticks_per_s=1000.0, seed=s) for s in (3, 3, 4))
    for n in (7, 50, 123, 1):
        batch = one.generate(n, 0.0)
        assert rows(batch) == rows(two.generate(n, 0.0))
        assert rows(batch) != rows(other.generate(n, 0.0))


def test_every_symbol_ticks_in_turn_and_the_rate_adds_up() -> None:
    feed = started(n_symbols=7, ticks_per_s=1234.0, seed=2, interval_s=0.015)
    steps = [feed.ticks_in_step(k) for k in range(200)]  # 3 s of 15 ms intervals
    assert set(steps) == {18, 19} and sum(steps) == pytest.approx(1234 * 3, abs=1)
    ticks = feed.generate(70, 0.0)
    counts = {s: sum(1 for t in ticks if t.symbol == s) for s in feed.symbols}
    assert set(counts.values()) == {10}
    assert [t.symbol for t in ticks[:8]] == feed.symbols + feed.symbols[:1]


def test_a_symbol_twice_in_one_batch_moves_on_from_its_own_last_price() -> None:
    batched, stepwise = started(n_symbols=3, ticks_per_s=300.0, seed=9), started(n_symbols=3, ticks_per_s=300.0, seed=9)
    big = batched.generate(10, 0.0)  # S0000..S0002 three times over, and S0000 once more
    small = [t for _ in range(10) for t in stepwise.generate(1, 0.0)]
    assert [t.symbol for t in big] == [t.symbol for t in small]
    assert [t.price for t in big] == pytest.approx([t.price for t in small], rel=1e-12)
    after, after_stepwise = batched.generate(4, 0.0), stepwise.generate(4, 0.0)
    assert [t.symbol for t in after] == [t.symbol for t in after_stepwise]
    assert [t.price for t in after] == pytest.approx([t.price for t in after_stepwise], rel=1e-12)


def test_log_returns_have_the_gbm_drift_and_volatility() -> None:
    feed = started(n_symbols=20, ticks_per_s=200.0, seed=11, volatility=0.01)
    sigma = 0.01 * math.sqrt(20 / 200.0)  # per tick of one symbol: 0.1 s apart
    prices = np.array([[t.price for t in feed.generate(20, 0.0)] for _ in range(2500)])  # (ticks, symbols)
    assert np.all(np.isfinite(prices)) and np.all(prices > 0)
    returns = np.diff(np.log(prices), axis=0).ravel()
    assert returns.std() == pytest.approx(sigma, rel=0.03)
    assert abs(returns.mean() + sigma * sigma / 2) < 4 * sigma / math.sqrt(returns.size)


def test_prev_close_is_the_session_start_and_rolls_with_the_trading_day() -> None:
    clock = ManualClock(dt.datetime(2026, 11, 24, 15, 0, tzinfo=UTC))  # a Tuesday session
    feed = started(n_symbols=4, ticks_per_s=40.0, seed=5, clock=clock)
    first = feed.generate(4, 0.0)
    assert {t.session for t in first} == {"2026-11-24"}
    start = {t.symbol: t.prev_close for t in first}
    assert all(t.price != t.prev_close for t in first)
    for _ in range(50):
        batch = feed.generate(4, 1.0)
    assert {t.symbol: t.prev_close for t in batch} == start  # fixed within the session
    last = {t.symbol: t.price for t in batch}
    clock.set(dt.datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
    rolled = feed.generate(4, 100.0)  # the session is re-read at most once a minute of feed time
    assert {t.session for t in rolled} == {"2026-11-25"}
    assert {t.symbol: t.prev_close for t in rolled} == last


async def test_live_batches_offer_the_fixed_rate() -> None:
    feed = SimulatedFeed(30, 2000.0, seed=1, interval_s=0.01, clock=WallClock())
    feed.subscribe(feed.symbols[:20])
    sizes, batches = [], feed.batches()
    async for batch in batches:
        assert batch and all(t.source == "simulated" and t.symbol in feed.symbols[:20] for t in batch)
        assert len({t.ts for t in batch}) == 1  # one interval, one due time
        sizes.append(len(batch))
        if len(sizes) == 50:
            break
    await batches.aclose()
    await asyncio.sleep(30 * feed.interval_s)  # the consumer pauses, then restarts its loop
    again = feed.batches()  # it carries on with the next interval...
    restart = time.time()
    resumed = await asyncio.wait_for(anext(again), 5)
    assert len(resumed) == feed.ticks_in_step(50)
    # ...due after the restart: the first loop's grid would have stamped it before the pause ended
    assert resumed[0].ts > restart
    await feed.close()
    assert await asyncio.wait_for(anext(again, None), 5) is None
    assert sizes == [feed.ticks_in_step(k) for k in range(50)]
    assert sum(sizes) == 1000 and feed.status().ticks == 1000 + len(resumed) and not feed.status().connected


def test_settings_build_the_simulated_feed() -> None:
    settings = load_settings({"CLERA_FEED": "simulated", "CLERA_SIM_SYMBOLS": "12", "CLERA_SIM_TICKS_PER_S": "600",
                              "CLERA_SIM_SEED": "4"}, env_file=None)
    feed = feed_from_settings(settings, WallClock())
    assert isinstance(feed, SimulatedFeed) and len(feed.symbols) == 12 and feed.ticks_per_s == 600.0
    twin = SimulatedFeed(12, 600.0, seed=4)
    feed.subscribe(feed.symbols)
    twin.subscribe(twin.symbols)
    assert rows(feed.generate(30, 0.0)) == rows(twin.generate(30, 0.0))
