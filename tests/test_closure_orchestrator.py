"""The ClosureOrchestrator in the session's Ray: closures complete on their own as the replayed market
clock moves, and a killed orchestrator comes back and finishes them without selling or withdrawing
anything twice.

Every Ray process (the orchestrator, the step tasks, this test) derives the same replay clock from
the shared settings (start date, epoch, CLERA_REPLAY_SESSION_SECONDS), so T+1 and the ACH
schedule pass in seconds of wall time. The paper ledger, the store and the closure records share
one SQLite file under the test's data directory; prices come from the real Redis.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import ray
from paper_support import open_account, set_price
from realtime_support import eventually

from actors.closure_orchestrator import (
    closure_process,
    get_orchestrator,
    start_orchestrator,
    stop_orchestrator,
)
from brokerage.closure.records import ClosureRecord, ClosureStore
from brokerage.errors import NotFound
from brokerage.models import OrderRequest
from brokerage.paper import PaperBroker
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from brokerage.store_factory import store_from_settings
from engine.clock import ManualClock, clock_from_settings
from engine.config import Settings, load_settings
from serve_app import RayClosureRunner

UTC = dt.UTC
SESSION_S = 3.0  # wall seconds per replayed trading day
ALICE = "user-alice"
LIMIT = Decimal("1000")  # the daily ACH limit: $3,000 leaves in three chunks on three banking days
pytestmark = pytest.mark.usefixtures("ray_session")


def closure_settings(tmp_path: Path, redis_url: str) -> Settings:
    """A replay that starts now on Tue 2012-06-05, its own Ray namespace, a quick orchestrator."""
    return load_settings(
        {
            "REDIS_URL": redis_url,
            "CLERA_DATA_DIR": str(tmp_path / "data"),
            "CLERA_FEED": "replay",
            "CLERA_REPLAY_START": "2012-06-05",
            "CLERA_REPLAY_SESSION_SECONDS": str(SESSION_S),
            "CLERA_REPLAY_EPOCH": repr(time.time()),
            "CLERA_CLOSURE_WAKE_S": "0.25",
            "CLERA_ACH_DAILY_LIMIT": str(LIMIT),
            "CLERA_RAY_NAMESPACE": f"clera-closure-{uuid.uuid4().hex[:8]}",
        },
        env_file=None,
    )


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Iterator[Settings]:
    settings = closure_settings(tmp_path, redis_url)
    yield settings
    stop_orchestrator(settings)


def holding_account(settings: Settings, redis_url: str, symbol: str = "AAPL") -> tuple[str, str, PaperBroker]:
    """Opened and funded with $3,000 on Mon 2012-06-04 (the deposit lands at the replay's first open),
    then $500 of `symbol` bought at $100 on the replay clock; recorded in the store as Alice's."""
    db = Database.for_settings(None, settings.sqlite_path)
    setup = PaperBroker(db, ManualClock(dt.datetime(2012, 6, 4, 15, 0, tzinfo=UTC)), RedisPriceReader(redis_url),
                        settings=settings)
    account_id, rel_id = open_account(setup)
    setup.create_transfer(account_id, rel_id, Decimal("3000"), "INCOMING")
    store = store_from_settings(settings)
    store.ensure_user(ALICE)
    store.add_account(ALICE, account_id, status="active")
    set_price(redis_url, symbol, 100.0)
    broker = PaperBroker(db, clock_from_settings(settings), RedisPriceReader(redis_url), settings=settings)
    order = broker.submit_order(account_id, OrderRequest(symbol=symbol, side="buy", notional=Decimal("500")))
    assert order.status == "filled", order
    return account_id, rel_id, broker


def record(settings: Settings, account_id: str) -> ClosureRecord:
    found = ClosureStore(Database.for_settings(None, settings.sqlite_path)).get(account_id)
    assert found is not None
    return found


def assert_closed_exactly_once(settings: Settings, broker: PaperBroker, account_id: str, balance: Decimal) -> None:
    sells = [o for o in broker.list_orders(account_id, "all") if o.side == "sell"]
    assert len(sells) == 1 and sells[0].status == "filled", sells
    outgoing = [t for t in broker.list_transfers(account_id) if t.direction == "OUTGOING"]
    sent = [t for t in outgoing if t.status not in ("CANCELED", "REJECTED", "RETURNED")]
    assert sum(t.amount for t in sent) == balance, outgoing
    assert all(t.amount <= LIMIT for t in sent) and len(sent) == 3, outgoing
    assert {t.status for t in sent} == {"COMPLETE"}
    assert broker.get_account(account_id).status == "ACCOUNT_CLOSED"
    assert broker.get_account(account_id).cash == Decimal("0.00")
    assert store_from_settings(settings).get_account(account_id).status == "closed"
    rec = record(settings, account_id)
    assert rec.step == "completed" and rec.completed_at is not None
    assert sorted(t.id for t in rec.transfers) == sorted(t.id for t in outgoing)


async def test_the_orchestrator_completes_a_closure_as_the_replayed_days_pass(
    settings: Settings, redis_url: str
) -> None:
    account_id, rel_id, broker = holding_account(settings, redis_url)
    process = closure_process(settings)  # as every Ray worker builds it
    started = process.initiate(account_id, ALICE, rel_id)
    assert started["success"] is True, started
    balance = broker.get_account(account_id).cash
    assert balance == Decimal("3000.00")
    assert process.unfinished() == [account_id]

    orchestrator = start_orchestrator(settings)
    assert ray.get(orchestrator.status.remote())["wakes"] >= 0
    # initiated on day 0: T+1, then a chunk a banking day, each complete at the next open, then close
    await eventually(lambda: record(settings, account_id).step == "completed", "the closure completed",
                     timeout=SESSION_S * 12 + 30)
    assert_closed_exactly_once(settings, broker, account_id, balance)
    assert process.unfinished() == []
    # the step that completed it has written its record before its task returns to the orchestrator
    await eventually(lambda: ray.get(orchestrator.status.remote())["running"] == [], "no advance left in flight")
    assert ray.get(orchestrator.status.remote())["advanced"] > 0
    assert start_orchestrator(settings)._actor_id == orchestrator._actor_id  # get-or-create finds it

    # the Serve gateway's runner: the same calls as Ray tasks, typed errors raised again for the routes
    runner = RayClosureRunner(settings)
    answer = await runner.status(account_id)
    assert (answer["step"], answer["withdrawn"], answer["account_status"]) == ("completed", "3000.00", "closed")
    assert await runner.unfinished() == []
    with pytest.raises(NotFound):
        await runner.progress("no-such-account")


async def test_a_killed_orchestrator_comes_back_and_finishes_without_repeating_anything(
    settings: Settings, redis_url: str
) -> None:
    account_id, rel_id, broker = holding_account(settings, redis_url)
    process = closure_process(settings)
    assert process.initiate(account_id, ALICE, rel_id)["success"] is True
    balance = broker.get_account(account_id).cash

    orchestrator = start_orchestrator(settings)
    first = ray.get(orchestrator.status.remote())
    # mid-run: the first withdrawal has gone out, more are to come
    await eventually(lambda: len(record(settings, account_id).transfers) >= 1, "the first withdrawal",
                     timeout=SESSION_S * 6 + 30)
    assert record(settings, account_id).step != "completed"
    ray.kill(orchestrator, no_restart=False)

    async def restarted() -> bool:
        handle = get_orchestrator(settings)
        if handle is None:
            return False
        try:
            now = await asyncio.wait_for(handle.status.remote(), 5)
        except (TimeoutError, ray.exceptions.RayError):
            return False
        return now["started_at"] > first["started_at"]

    await eventually(restarted, "the orchestrator restarted", timeout=60)
    await eventually(lambda: record(settings, account_id).step == "completed", "the closure completed",
                     timeout=SESSION_S * 12 + 30)
    assert_closed_exactly_once(settings, broker, account_id, balance)
