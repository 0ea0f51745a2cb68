"""The one market clock the replay feed, the paper broker and account closure all read.

`ReplayClock` is a pure function of wall time and shared configuration (start date, seconds per
session, epoch), so every process on every node agrees on "now" without calling anyone. Each
replayed trading day occupies `session_seconds` of wall time: the first `open_fraction` of it is the
session (mapped linearly onto the day's real open..close), the rest is the night until the next
trading day's open.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from engine import calendar
from engine.config import Settings

UTC = dt.UTC


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Aware UTC datetime in the market's world."""
        ...

    def is_open(self) -> bool:
        """Whether the market is in session now."""
        ...


def market_is_open(moment: dt.datetime) -> bool:
    day = moment.astimezone(UTC).date()
    if not calendar.is_trading_day(day):
        return False
    opens, closes = calendar.session_bounds(day)
    return opens <= moment < closes


class WallClock:
    """Real time, for live data."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)

    def is_open(self) -> bool:
        return market_is_open(self.now())

    def wall_time_at(self, moment: dt.datetime) -> float:
        return moment.timestamp()


class ManualClock:
    """A clock a test moves by hand."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def set(self, moment: dt.datetime) -> None:
        with self._lock:
            self._now = moment.astimezone(UTC)

    def advance(self, delta: dt.timedelta) -> None:
        with self._lock:
            self._now += delta

    def is_open(self) -> bool:
        return market_is_open(self.now())


class ReplayClock:
    """Maps wall time onto replayed trading days starting at `start`."""

    def __init__(
        self,
        start: dt.date,
        session_seconds: float,
        epoch: float,
        open_fraction: float = 0.8,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.first_day = start if calendar.is_trading_day(start) else calendar.next_trading_day(start)
        self.session_seconds = session_seconds
        self.epoch = epoch
        self.open_fraction = open_fraction
        self._wall = wall or time.time
        self._days: list[dt.date] = [self.first_day]

    def _day(self, index: int) -> dt.date:
        while len(self._days) <= index:
            self._days.append(calendar.next_trading_day(self._days[-1]))
        return self._days[index]

    def position(self, wall: float | None = None) -> tuple[int, float]:
        """(index of the replayed trading day, fraction of that day's wall period elapsed)."""
        elapsed = max(0.0, (self._wall() if wall is None else wall) - self.epoch) / self.session_seconds
        index = math.floor(elapsed)
        return index, elapsed - index

    def now(self) -> dt.datetime:
        index, frac = self.position()
        day = self._day(index)
        opens, closes = calendar.session_bounds(day)
        if frac < self.open_fraction:
            return opens + (closes - opens) * (frac / self.open_fraction)
        night = (frac - self.open_fraction) / (1 - self.open_fraction) if self.open_fraction < 1 else 1.0
        next_open = calendar.session_bounds(self._day(index + 1))[0]
        return closes + (next_open - closes) * night

    def is_open(self) -> bool:
        return self.position()[1] < self.open_fraction

    def ahead(self, seconds: float) -> ReplayClock:
        """The same replay read `seconds` of wall time later: where it will be by then."""
        return ReplayClock(
            self.first_day, self.session_seconds, self.epoch, self.open_fraction, wall=lambda: self._wall() + seconds
        )

    def wall_time_of(self, day_index: int, session_fraction: float) -> float:
        """Wall time at which replayed day `day_index` is `session_fraction` of the way from open to close."""
        return self.epoch + (day_index + session_fraction * self.open_fraction) * self.session_seconds

    def wall_time_at(self, moment: dt.datetime) -> float:
        """Wall time at which `now()` reaches `moment` (the epoch for moments before the first open).

        The inverse of `now`: what lets a process sleep until a market moment instead of polling.
        """
        day = moment.astimezone(UTC).date()
        while self._days[-1] < day:
            self._day(len(self._days))
        index = bisect.bisect_right(self._days, day) - 1
        if index >= 0 and calendar.session_bounds(self._days[index])[0] > moment:
            index -= 1
        if index < 0:
            return self.epoch
        opens, closes = calendar.session_bounds(self._days[index])
        if moment <= closes:
            return self.wall_time_of(index, (moment - opens) / (closes - opens))
        next_open = calendar.session_bounds(self._day(index + 1))[0]
        night = (moment - closes) / (next_open - closes)
        return self.epoch + (index + self.open_fraction + night * (1 - self.open_fraction)) * self.session_seconds


def clock_from_settings(settings: Settings) -> ReplayClock | WallClock:
    """The market clock every process derives identically from the shared settings."""
    if settings.feed == "replay":
        if settings.replay_epoch is None:
            raise RuntimeError(
                "CLERA_REPLAY_EPOCH is unset: `clera serve` sets it for every process it starts; "
                "set it yourself (a unix time) when starting parts of the system separately"
            )
        return ReplayClock(
            settings.replay_start,
            settings.replay_session_seconds,
            settings.replay_epoch,
            settings.replay_open_fraction,
        )
    return WallClock()
