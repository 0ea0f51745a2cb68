"""Runs the paper ledger's time-driven steps at the moments they fall due, instead of polling.

Deposits land, queued orders fill at the open, day orders expire and sale proceeds settle at
moments of the market clock that the ledger knows in advance (`PaperBroker.next_due`). The
stepper sleeps until the wall time of the earliest one (the clock maps market time to wall time:
a replayed day passes in seconds) and then runs `process_due`, whose change hook announces the
accounts that changed. A call that schedules a new step announces its account too; whoever hears
that calls `wake()` and the stepper plans again.

Two things are not on the clock: orders open during the session fill when the price lets them,
so while there are any the ledger is re-checked every `price_recheck_s`; and a wake-up can be
lost (an announcement that failed to publish), so no sleep is longer than `max_wait_s`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable

from brokerage.paper import PaperBroker
from brokerage.positions import HoldingsNotifier
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from engine.clock import clock_from_settings
from engine.config import Settings

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0  # the longest sleep: what a lost wake-up can delay a step by
PRICE_RECHECK_S = 1.0  # orders open in the session wait on prices, which no clock predicts
LATE_S = 0.001  # wake a hair after the moment: float rounding must not wake it a hair before
GATHER_S = 0.05  # wake-ups within this window are planned for once (a burst of fills is one plan)
RETRY_S = 1.0  # after a failed plan or step (the database is down): try again this much later

WallTimeAt = Callable[[dt.datetime], float]


class LedgerStepper:
    """Sleeps until `broker.next_due()` (via `wall_time_at`, the clock's market -> wall time), then steps."""

    def __init__(
        self,
        broker: PaperBroker,
        wall_time_at: WallTimeAt,
        *,
        max_wait_s: float = MAX_WAIT_S,
        price_recheck_s: float = PRICE_RECHECK_S,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.broker = broker
        self.wall_time_at = wall_time_at
        self.max_wait_s = max_wait_s
        self.price_recheck_s = price_recheck_s
        self._wall = wall
        self._woken = asyncio.Event()
        self.steps = 0

    def delay(self) -> float:
        """Wall seconds until the next step is due: 0 when it is, at most `max_wait_s`."""
        due = self.broker.next_due()
        wait = self.max_wait_s
        if due.waiting_on_prices:
            wait = min(wait, self.price_recheck_s)
        if due.at is not None:
            wait = min(wait, self.wall_time_at(due.at) + LATE_S - self._wall())
        return max(wait, 0.0)

    def wake(self) -> None:
        """Something was scheduled (or changed): plan again, the next step may now be sooner."""
        self._woken.set()

    async def run(self) -> None:
        while True:
            self._woken.clear()
            try:
                delay = await asyncio.to_thread(self.delay)
            except Exception:
                log.exception("planning the next paper ledger step failed")
                delay = RETRY_S
            # a step due now runs now: under a steady stream of announcements, re-planning first
            # could otherwise put it off again and again
            if delay > 0 and await self._woken_within(delay):
                await asyncio.sleep(GATHER_S)
                continue
            try:
                await asyncio.to_thread(self.broker.process_due)
                self.steps += 1
            except Exception:
                log.exception("paper ledger step failed")
                await asyncio.sleep(RETRY_S)

    async def _woken_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._woken.wait(), seconds)
        except TimeoutError:
            return False
        return True


def ledger_stepper(settings: Settings, redis_url: str) -> LedgerStepper:
    """The stepper of the configured paper ledger, announcing changed accounts on `holdings:changed`."""
    clock = clock_from_settings(settings)
    db = Database.for_settings(settings.database_url, settings.sqlite_path)
    broker = PaperBroker(
        db, clock, RedisPriceReader(redis_url), settings=settings, on_change=HoldingsNotifier(redis_url)
    )
    return LedgerStepper(broker, clock.wall_time_at)
