"""The paper ledger's stepper: it sleeps until the wall time of the ledger's next step on a replayed clock.

Real SQLite ledger, real Redis price reader, real ReplayClock (driven by a hand-set wall time where
the test computes delays, by real time where the stepper runs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from decimal import Decimal
from pathlib import Path

import pytest
from paper_support import make_broker, open_account, set_price, sqlite_url

from brokerage.models import OrderRequest
from brokerage.paper_stepper import LATE_S, LedgerStepper
from engine.clock import ReplayClock

EPOCH = 1_000_000.0
SESSION_S = 60.0  # 48 s of session (open fraction 0.8), then 12 s of night


class Wall:
    """The wall time a ReplayClock reads, set by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_wall_time_at_is_the_inverse_of_the_replayed_now() -> None:
    wall = Wall(EPOCH)
    clock = ReplayClock(dt.date(2025, 1, 16), SESSION_S, EPOCH, wall=wall)  # Thursday: a weekend and MLK day follow
    rng = random.Random(7)
    for _ in range(500):
        wall.now = EPOCH + rng.uniform(0, 8 * SESSION_S)
        assert clock.wall_time_at(clock.now()) == pytest.approx(wall.now, abs=1e-6)
    assert clock.wall_time_at(dt.datetime(2025, 1, 16, 14, 30, tzinfo=dt.UTC)) == EPOCH
    assert clock.wall_time_at(dt.datetime(2025, 1, 1, tzinfo=dt.UTC)) == EPOCH  # before the replay
    saturday = dt.datetime(2025, 1, 18, 12, 0, tzinfo=dt.UTC)  # in the night from Friday to Tuesday
    assert EPOCH + 1.8 * SESSION_S < clock.wall_time_at(saturday) < EPOCH + 2 * SESSION_S


def test_the_delay_is_the_wall_time_until_the_next_step(tmp_path: Path, redis_url: str) -> None:
    wall = Wall(EPOCH + 0.25 * SESSION_S)  # Monday 2025-01-13, in session
    clock = ReplayClock(dt.date(2025, 1, 13), SESSION_S, EPOCH, wall=wall)
    broker = make_broker(sqlite_url(tmp_path), clock, redis_url)
    stepper = LedgerStepper(broker, clock.wall_time_at, max_wait_s=1000.0, price_recheck_s=2.0, wall=wall)
    assert stepper.delay() == 1000.0  # nothing pending: only the longest sleep
    account_id, rel_id = open_account(broker)
    broker.create_transfer(account_id, rel_id, Decimal("100"), "INCOMING")
    cut_off, landing = EPOCH + 0.8 * SESSION_S, EPOCH + SESSION_S  # Monday's close, Tuesday's open
    assert stepper.delay() == pytest.approx(cut_off + LATE_S - wall.now)
    wall.now = cut_off + LATE_S
    broker.process_due()
    assert stepper.delay() == pytest.approx(landing + LATE_S - wall.now)
    wall.now = landing + 5
    assert stepper.delay() == 0.0  # overdue: at once
    assert broker.process_due() == [account_id]
    set_price(redis_url, "AAPL", 100.0)
    broker.submit_order(
        account_id, OrderRequest(symbol="AAPL", side="buy", type="limit", qty=Decimal(1), limit_price=Decimal("90"),
                                 time_in_force="gtc"),
    )
    assert stepper.delay() == 2.0  # a resting order waits on prices: re-checked while the market is open
    wall.now = landing + 0.9 * SESSION_S  # Tuesday night: the order fills at Wednesday's open at the earliest
    assert stepper.delay() == pytest.approx(landing + SESSION_S + LATE_S - wall.now)


async def test_the_stepper_lands_a_deposit_at_the_replayed_open_without_polling(
    tmp_path: Path, redis_url: str
) -> None:
    session_s = 4.0
    clock = ReplayClock(dt.date(2025, 1, 13), session_s, time.time() - 0.25 * session_s)
    loop = asyncio.get_running_loop()
    heard: list[tuple[float, list[str]]] = []
    stepper: LedgerStepper | None = None

    def on_change(ids: list[str]) -> None:  # what PositionSync does on hearing `holdings:changed`
        heard.append((time.time(), ids))
        if stepper is not None:
            loop.call_soon_threadsafe(stepper.wake)

    broker = make_broker(sqlite_url(tmp_path), clock, redis_url, on_change=on_change)
    account_id, rel_id = open_account(broker)
    stepper = LedgerStepper(broker, clock.wall_time_at, max_wait_s=3600.0)  # only a wake-up can make it plan again
    runner = asyncio.create_task(stepper.run())
    try:
        await asyncio.sleep(0.2)  # it has planned on an idle ledger: one very long sleep
        heard.clear()
        transfer = broker.create_transfer(account_id, rel_id, Decimal("250"), "INCOMING")
        row = broker.db.fetchone("SELECT complete_at FROM paper_transfers WHERE id = ?", (transfer.id,))
        landing = clock.wall_time_at(dt.datetime.fromtimestamp(row["complete_at"], dt.UTC))
        deadline = time.time() + 60
        while (len(heard) < 2 or stepper.steps < 2) and time.time() < deadline:
            await asyncio.sleep(0.02)
        assert [ids for _, ids in heard] == [[account_id], [account_id]]  # created, then landed
        assert heard[1][0] >= landing  # not before the open
        assert broker.get_account(account_id).cash == Decimal("250.00")
        assert stepper.steps == 2  # the ACH cut-off and the landing, and no step in between
    finally:
        runner.cancel()
        broker.db.close()
