"""Replay of real daily prices as intraday ticks on the shared `ReplayClock`.

Every price is a pure function of (symbol, replayed day, fraction of the session): the day's
adjusted open, high, low and close joined by a path whose turning points and wiggles are seeded by
(symbol, day). Ticks are sampled on a grid of wall times (`epoch + k / tick_hz`), so two processes
with the same settings emit the same ticks without talking to each other.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import time
import zlib
from collections.abc import AsyncIterator, Collection

from engine import calendar
from engine.clock import ReplayClock
from engine.feeds.base import FeedStatus
from engine.feeds.counts import FeedCounts
from engine.feeds.validate import split_symbols
from engine.prices_data import DailyBar, PriceData, load_price_data
from engine.types import Tick

_WIGGLES = 3  # sine components of the noise on each leg of the path
_NOISE = 0.12  # noise amplitude as a share of the day's high-low range


class _DayPath:
    """The intraday path of one symbol on one day: open -> first extreme -> second extreme -> close.

    Up days (close >= open) dip to the low first, down days rally to the high first. The noise on
    each leg is zero at its ends, so the path passes exactly through open, low, high and close, and
    it is clamped to [low, high].
    """

    __slots__ = ("high", "low", "times", "values", "waves")

    def __init__(self, bar: DailyBar) -> None:
        rng = random.Random(zlib.crc32(f"{bar.symbol}:{bar.day.isoformat()}".encode()))
        first, second = (bar.low, bar.high) if bar.close >= bar.open else (bar.high, bar.low)
        self.low, self.high = bar.low, bar.high
        self.times = (0.0, rng.uniform(0.1, 0.45), rng.uniform(0.55, 0.9), 1.0)
        self.values = (bar.open, first, second, bar.close)
        amplitude = _NOISE * (bar.high - bar.low)
        self.waves = tuple(
            tuple(
                (amplitude * rng.uniform(-1, 1) / (k + 1), rng.randint(2, 9), rng.uniform(0, math.tau))
                for k in range(_WIGGLES)
            )
            for _ in range(3)
        )

    def price(self, s: float) -> float:
        s = min(max(s, 0.0), 1.0)
        leg = 0 if s < self.times[1] else 1 if s < self.times[2] else 2
        t0, t1 = self.times[leg], self.times[leg + 1]
        u = (s - t0) / (t1 - t0)
        base = self.values[leg] + (self.values[leg + 1] - self.values[leg]) * u
        wiggle = sum(a * math.sin(math.tau * f * u + phase) for a, f, phase in self.waves[leg])
        return min(max(base + math.sin(math.pi * u) * wiggle, self.low), self.high)


class ReplayFeed:
    """Ticks of the shipped daily prices replayed on `clock` at `tick_hz` per symbol per wall second.

    While the replayed market is closed nothing is sent except, once per day, the close of the day
    that just ended (so the last tick of every session is exactly its close) and the current price
    of a symbol subscribed during the night. A symbol without a bar on the replayed day (FB before
    2012-05-18, or every symbol after the data ends) sends nothing that day.
    """

    source = "replay"

    def __init__(
        self,
        clock: ReplayClock,
        symbols: Collection[str] | None = None,
        tick_hz: float = 4.0,
        data: PriceData | None = None,
    ) -> None:
        if not tick_hz > 0:
            raise ValueError(f"tick_hz must be > 0, got {tick_hz!r}")
        self.data = data if data is not None else load_price_data()
        known = set(self.data.symbols())
        universe = [s.upper() for s in symbols] if symbols else sorted(known)
        missing = [s for s in universe if s not in known]
        if missing:
            raise ValueError(f"replay symbols not in the price data: {', '.join(missing)} (known: {sorted(known)})")
        self.clock = clock
        self.tick_hz = float(tick_hz)
        self.universe = frozenset(universe)
        last = self.data.last_day()
        self.days: list[dt.date] = calendar.trading_days(clock.first_day, last) if last else []
        self._paths: dict[tuple[str, dt.date], _DayPath | None] = {}
        self._session_bounds: dict[dt.date, tuple[float, float]] = {}
        self._subscribed: dict[str, None] = {}
        self._fresh: set[str] = set()  # subscribed since the last step: owed their current price
        self._last_step: int | None = None
        self._close_sent_for: int | None = None  # day index whose closing ticks went out
        self._open_day: int | None = None  # day index last seen in session, its close not yet sent
        self._counts = FeedCounts()

    # --- the pure part: prices as a function of the clock ---------------------------------
    def daily_bars(self, symbol: str) -> list[DailyBar]:
        return self.data.daily_bars(symbol)

    def close_on(self, symbol: str, day: dt.date) -> float | None:
        return self.data.close_on(symbol, day)

    def day_at(self, index: int) -> dt.date | None:
        return self.days[index] if 0 <= index < len(self.days) else None

    def _path(self, symbol: str, day: dt.date) -> _DayPath | None:
        key = (symbol, day)
        if key not in self._paths:
            if len(self._paths) > 4096:  # a replay moves forward: old days are not needed again
                self._paths.clear()
            bar = self.data.bar_on(symbol, day)
            self._paths[key] = None if bar is None else _DayPath(bar)
        return self._paths[key]

    def _bounds(self, day: dt.date) -> tuple[float, float]:
        if day not in self._session_bounds:
            opens, closes = calendar.session_bounds(day)
            self._session_bounds[day] = (opens.timestamp(), closes.timestamp())
        return self._session_bounds[day]

    def prev_close(self, symbol: str, day: dt.date) -> float | None:
        """The previous trading day's adjusted close; a symbol's first day in the data uses its open."""
        bar = self.data.bar_on(symbol, day)
        if bar is None:
            return None
        previous = self.data.prev_close(symbol, day)
        return bar.open if previous is None else previous

    def price_at(self, symbol: str, day_index: int, fraction: float) -> float | None:
        """Price of `symbol` `fraction` (0..1) of the way through replayed day `day_index`."""
        day = self.day_at(day_index)
        path = None if day is None else self._path(symbol, day)
        return None if path is None else path.price(fraction)

    def tick_at(self, symbol: str, day_index: int, fraction: float) -> Tick | None:
        """The tick for `symbol` at that point of the session; event time is the replayed market time."""
        day = self.day_at(day_index)
        price = self.price_at(symbol, day_index, fraction)
        if day is None or price is None:
            return None
        opens, closes = self._bounds(day)
        fraction = min(max(fraction, 0.0), 1.0)
        prev = self.prev_close(symbol, day)
        assert prev is not None  # a bar exists, so prev_close does
        return Tick(symbol, price, prev, opens + (closes - opens) * fraction, day.isoformat(), self.source)

    def ticks_at(self, wall: float, symbols: Collection[str]) -> list[Tick]:
        """What every process emits for `symbols` at wall time `wall`: the session price, or the close at night."""
        index, frac = self.clock.position(wall)
        share = self.clock.open_fraction
        return self._ticks_for(symbols, index, frac / share if frac < share else 1.0)

    # --- the Feed port ----------------------------------------------------------------------
    def subscribe(self, symbols: Collection[str]) -> list[str]:
        good, bad = split_symbols(symbols)
        unknown = bad + [s for s in good if s not in self.universe]
        for s in good:
            if s in self.universe and s not in self._subscribed:
                self._subscribed[s] = None
                self._fresh.add(s)
        self._counts.rejected += len(unknown)
        return unknown

    def unsubscribe(self, symbols: Collection[str]) -> None:
        for s in split_symbols(symbols)[0]:
            self._subscribed.pop(s, None)
            self._fresh.discard(s)

    def _wall_now(self) -> float:
        """Wall time as the clock sees it (its own wall function), clamped at the epoch."""
        index, frac = self.clock.position()
        return self.clock.epoch + (index + frac) * self.clock.session_seconds

    def step(self, wall: float) -> list[Tick]:
        """The ticks due at grid point floor(wall): all symbols in session, closes once per night.

        A session seen open always ends on its close, even when a stalled consumer skipped the
        rest of it (and its night): those closing ticks come first.
        """
        k = math.floor((wall - self.clock.epoch) * self.tick_hz)
        grid_wall = self.clock.epoch + k / self.tick_hz
        index, frac = self.clock.position(grid_wall)
        in_session = frac < self.clock.open_fraction
        fresh, self._fresh = self._fresh, set()  # subscribe() may run on another thread: take, then copy
        subscribed = list(self._subscribed)
        out: list[Tick] = []
        if self._open_day is not None and (self._open_day != index or not in_session):
            out += self._ticks_for(subscribed, self._open_day, 1.0)
            if self._open_day == index:
                self._close_sent_for = index
            self._open_day = None
        repeat = k == self._last_step or (not in_session and self._close_sent_for == index)
        due = [s for s in subscribed if s in fresh] if repeat else subscribed
        if not in_session and out and self._close_sent_for == index:
            due = []  # the closes just sent include every fresh symbol
        out += self.ticks_at(grid_wall, due)
        if in_session:
            self._open_day = index
        else:
            self._close_sent_for = index
        self._last_step = k
        return out

    def _ticks_for(self, symbols: Collection[str], index: int, fraction: float) -> list[Tick]:
        return [t for s in symbols if (t := self.tick_at(s, index, fraction)) is not None]

    async def batches(self) -> AsyncIterator[list[Tick]]:
        while not self._counts.closed:
            wall = self._wall_now()
            batch = self.step(wall)
            if batch:
                self._counts.sent(len(batch), time.time())
                yield batch
            next_step = self.clock.epoch + (math.floor((wall - self.clock.epoch) * self.tick_hz) + 1) / self.tick_hz
            await asyncio.sleep(max(next_step - self._wall_now(), 0.001))

    async def close(self) -> None:
        self._counts.closed = True

    def status(self) -> FeedStatus:
        return self._counts.status(self.source, len(self._subscribed), error=self._ended())

    def _ended(self) -> str | None:
        """Say so once the replay has run past the data: the market goes quiet for good."""
        if self.clock.position()[0] < len(self.days):
            return None
        last = self.days[-1].isoformat() if self.days else "before the replay start"
        return (
            f"the replayed prices ended ({last}): "
            "restart with an earlier CLERA_REPLAY_START or a slower CLERA_REPLAY_SESSION_SECONDS"
        )
