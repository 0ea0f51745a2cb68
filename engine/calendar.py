"""NYSE trading days and hours (XNYS from exchange_calendars), loaded once per process.

exchange_calendars defaults to the last 20 years; the shipped price data starts in 2000, so the
calendar is built from 2000-01-01.
"""

from __future__ import annotations

import datetime as dt
import functools

import exchange_calendars as xcals
import pandas as pd

FIRST_DAY = "2000-01-01"


@functools.cache
def xnys() -> xcals.ExchangeCalendar:
    return xcals.get_calendar("XNYS", start=FIRST_DAY)


def is_trading_day(day: dt.date) -> bool:
    return bool(xnys().is_session(pd.Timestamp(day)))


def next_trading_day(day: dt.date) -> dt.date:
    """The first trading day strictly after `day` (which need not be a trading day)."""
    session: pd.Timestamp = xnys().date_to_session(pd.Timestamp(day) + pd.Timedelta(days=1), direction="next")
    next_day: dt.date = session.date()  # pandas is untyped here
    return next_day


def previous_trading_day(day: dt.date) -> dt.date:
    """The last trading day strictly before `day`."""
    session: pd.Timestamp = xnys().date_to_session(pd.Timestamp(day) - pd.Timedelta(days=1), direction="previous")
    previous_day: dt.date = session.date()  # pandas is untyped here
    return previous_day


def trading_days(start: dt.date, end: dt.date) -> list[dt.date]:
    """Trading days in [start, end]."""
    return [ts.date() for ts in xnys().sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))]


def add_trading_days(day: dt.date, n: int) -> dt.date:
    """`day` moved n trading days forward (T+n settlement); `day` itself needn't be a session."""
    for _ in range(n):
        day = next_trading_day(day)
    return day


def session_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """Open and close (UTC, aware) of a trading day; half days close early."""
    cal = xnys()
    ts = pd.Timestamp(day)
    return cal.session_open(ts).to_pydatetime(), cal.session_close(ts).to_pydatetime()


def session_of(moment: dt.datetime) -> dt.date:
    """The trading day a moment belongs to: today's session if it is one, else the next one."""
    day = moment.astimezone(dt.UTC).date()
    if is_trading_day(day) and moment < session_bounds(day)[1]:
        return day
    return next_trading_day(day)
