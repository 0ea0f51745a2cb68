"""Seeded geometric Brownian motion for any number of symbols at a fixed total tick rate.

Breadth and load for benchmarks: ticks are generated with numpy one interval at a time (a batch
per `interval_s`), cycling through the subscribed symbols in a fixed order, so every symbol ticks
at `ticks_per_s / subscribed` per second. The sequence of (symbol, price) is a pure function of the
seed and the subscription history, never of timing; only `ts` is wall time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Collection

import numpy as np

from engine import calendar
from engine.clock import Clock, WallClock
from engine.feeds.base import FeedStatus
from engine.feeds.validate import split_symbols
from engine.types import Tick


def synthetic_symbols(n: int) -> list[str]:
    """S0000, S0001, ... (wider when n needs more digits)."""
    width = max(4, len(str(max(n - 1, 0))))
    return [f"S{i:0{width}d}" for i in range(n)]


class SimulatedFeed:
    """GBM prices; `prev_close` is each symbol's price when the simulated session began.

    `volatility` is per square-root second of wall time (0.002 moves a price ~1.5% a minute), so a
    benchmark or a demo sees lively values. When the clock's trading day changes, the last price
    becomes the new previous close.
    """

    source = "simulated"

    def __init__(
        self,
        n_symbols: int = 500,
        ticks_per_s: float = 1000.0,
        seed: int = 7,
        *,
        symbols: Collection[str] = (),
        interval_s: float = 0.02,
        volatility: float = 0.002,
        clock: Clock | None = None,
    ) -> None:
        if n_symbols < 0 or not ticks_per_s > 0 or not interval_s > 0 or volatility < 0:
            raise ValueError("n_symbols >= 0, ticks_per_s > 0, interval_s > 0 and volatility >= 0 are required")
        explicit, bad = split_symbols(symbols)
        if bad:
            raise ValueError(f"not ticker symbols: {bad}")
        names = list(dict.fromkeys(synthetic_symbols(n_symbols) + explicit))
        self.symbols = names
        self.ticks_per_s = float(ticks_per_s)
        self.interval_s = float(interval_s)
        self.volatility = float(volatility)
        self.clock = clock or WallClock()
        self._index = {s: i for i, s in enumerate(names)}
        self._rng = np.random.default_rng(seed)
        self._log_price = np.log(self._rng.uniform(10.0, 500.0, len(names)))
        self._prev_close = np.exp(self._log_price)
        self._session = ""
        self._session_checked = -math.inf
        self._active = np.empty(0, dtype=np.int64)  # subscribed symbol indices, in subscription order
        self._cursor = 0
        self._step = 0
        self._closed = False
        self._ticks = 0
        self._rejected = 0
        self._last_data_ts: float | None = None

    # --- the Feed port ----------------------------------------------------------------------
    def subscribe(self, symbols: Collection[str]) -> list[str]:
        good, bad = split_symbols(symbols)
        unknown = bad + [s for s in good if s not in self._index]
        active = set(self._active.tolist())
        new = [self._index[s] for s in good if s in self._index and self._index[s] not in active]
        if new:
            self._active = np.concatenate([self._active, np.array(new, dtype=np.int64)])
        self._rejected += len(unknown)
        return unknown

    def unsubscribe(self, symbols: Collection[str]) -> None:
        gone = {self._index[s] for s in split_symbols(symbols)[0] if s in self._index}
        if gone:
            self._active = self._active[~np.isin(self._active, list(gone))]
            self._cursor = self._cursor % len(self._active) if len(self._active) else 0

    # --- generation ---------------------------------------------------------------------------
    def _current_session(self, now: float) -> str:
        """Trading day of the clock, re-checked once a minute; a new day rolls prev_close forward."""
        if now - self._session_checked >= 60.0:
            self._session_checked = now
            session = calendar.session_of(self.clock.now()).isoformat()
            if self._session and session != self._session:
                self._prev_close = np.exp(self._log_price)
            self._session = session
        return self._session

    def generate(self, n: int, ts: float) -> list[Tick]:
        """The next `n` ticks (cycling through the subscribed symbols), all stamped `ts`."""
        active = self._active  # one reference: subscribe() may swap the array from another thread
        m = len(active)
        if n <= 0 or m == 0:
            return []
        session = self._current_session(ts)  # before moving: a new day's prev close is the last price
        positions = self._cursor % m + np.arange(n)
        idx = active[positions % m]
        self._cursor = int((self._cursor + n) % m)
        dt_sym = m / self.ticks_per_s  # wall seconds between two ticks of one symbol
        sigma = self.volatility * math.sqrt(dt_sym)
        increments = sigma * self._rng.standard_normal(n) - 0.5 * sigma * sigma
        rounds = positions // m - positions[0] // m
        if rounds[-1] == 0:  # each symbol at most once: the common case
            prices_log = self._log_price[idx] + increments
            self._log_price[idx] = prices_log
        else:  # a symbol several times in one batch: its ticks follow one another
            grid = np.zeros((int(rounds[-1]) + 1, len(self._log_price)))
            grid[rounds, idx] = increments
            path = np.cumsum(grid, axis=0)
            prices_log = self._log_price[idx] + path[rounds, idx]
            self._log_price += path[-1]
        prices = np.exp(prices_log)
        names = self.symbols
        prev = self._prev_close[idx]
        self._ticks += n
        self._last_data_ts = ts
        return [
            Tick(names[i], p, pc, ts, session, "simulated")
            for i, p, pc in zip(idx.tolist(), prices.tolist(), prev.tolist(), strict=True)
        ]

    def ticks_in_step(self, step: int) -> int:
        """Ticks of interval `step`: whole-number shares of the total rate that add up exactly."""
        per = self.ticks_per_s * self.interval_s
        return math.floor(per * (step + 1)) - math.floor(per * step)

    async def batches(self) -> AsyncIterator[list[Tick]]:
        """One batch per interval on a fixed wall-time grid; a late consumer gets the missed
        intervals' ticks (the offered rate stays fixed), stamped with their due times."""
        start = time.time() - self._step * self.interval_s  # a restarted iterator resumes the grid now
        while not self._closed:
            due = start + (self._step + 1) * self.interval_s
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._closed:
                break
            batch = self.generate(self.ticks_in_step(self._step), due)
            self._step += 1
            if batch:
                yield batch

    async def close(self) -> None:
        self._closed = True

    def status(self) -> FeedStatus:
        return FeedStatus(
            source=self.source,
            connected=not self._closed,
            subscribed=len(self._active),
            ticks=self._ticks,
            rejected=self._rejected,
            last_data_ts=self._last_data_ts,
        )
