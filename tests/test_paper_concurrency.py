"""Concurrent requests on one paper account (threads, two broker instances on one ledger) never overdraw it.

Runs on a SQLite file (BEGIN IMMEDIATE) and on the real PostgreSQL (SELECT ... FOR UPDATE).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from paper_support import BANK, MON_MORNING, application, funded_account, make_broker, set_price, sqlite_url

from brokerage.errors import BrokerageError, Conflict, Rejected
from brokerage.models import OrderRequest
from brokerage.paper import PaperBroker
from engine.clock import ManualClock

THREADS = 8


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return request.getfixturevalue("pg_url")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MON_MORNING)


def race(brokers: list[PaperBroker], action: Callable[[PaperBroker, int], object]) -> list[str]:
    """Runs `action` from THREADS threads released together; returns each outcome's error code or 'ok'."""
    outcomes: list[str] = []
    barrier = threading.Barrier(THREADS)

    def worker(i: int) -> None:
        broker = brokers[i % len(brokers)]
        barrier.wait()
        try:
            action(broker, i)
            outcomes.append("ok")
        except BrokerageError as exc:
            outcomes.append(exc.code)
        finally:
            broker.db.close()  # this thread's connection

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == THREADS
    return outcomes


def test_concurrent_buys_and_withdrawals_cannot_overdraw(db_url: str, clock: ManualClock, redis_url: str) -> None:
    set_price(redis_url, "AAPL", 100.0)
    setup = make_broker(db_url, clock, redis_url)
    account_id, rel_id = funded_account(setup, clock, "1000")
    brokers = [make_broker(db_url, clock, redis_url) for _ in range(2)]  # two "processes" on one ledger

    def act(broker: PaperBroker, i: int) -> None:
        if i % 4 == 3:
            broker.create_transfer(account_id, rel_id, Decimal("300"), "OUTGOING")
        else:
            broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", notional=Decimal("300")))

    outcomes = race(brokers, act)
    assert outcomes.count("ok") == 3
    assert set(outcomes) - {"ok"} <= {"insufficient_buying_power", "insufficient_funds"}
    account = setup.get_account(account_id)
    moved = sum((a.net_amount for a in setup.list_activities(account_id)), Decimal(0))
    assert account.cash == moved == Decimal("100.00")


def test_concurrent_sells_cannot_sell_more_than_held(db_url: str, clock: ManualClock, redis_url: str) -> None:
    set_price(redis_url, "AAPL", 10.0)
    broker = make_broker(db_url, clock, redis_url)
    account_id, _ = funded_account(broker, clock, "1000")
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal("2.5")))
    outcomes = race(
        [broker], lambda b, i: b.submit_order(account_id, OrderRequest(symbol="AAPL", side="sell", qty=Decimal(1)))
    )
    assert outcomes.count("ok") == 2
    assert [p.qty for p in broker.list_positions(account_id)] == [Decimal("0.5")]
    assert broker.get_account(account_id).cash == Decimal("995.00")


def test_concurrent_sign_ups_and_bank_links_keep_their_uniqueness(
    db_url: str, clock: ManualClock, redis_url: str
) -> None:
    broker = make_broker(db_url, clock, redis_url)
    outcomes = race([broker], lambda b, i: b.create_account(application("same@example.com")))
    assert outcomes.count("ok") == 1 and outcomes.count(Conflict.code) + outcomes.count("email_in_use") == THREADS - 1
    [account_id] = broker.list_account_ids()
    links = race([broker], lambda b, i: b.create_ach_relationship(account_id, BANK))
    assert links.count("ok") == 1 and set(links) == {"ok", "ach_relationship_exists"}
    assert len(broker.list_ach_relationships(account_id)) == 1


def test_rejections_under_contention_are_typed(db_url: str, clock: ManualClock, redis_url: str) -> None:
    set_price(redis_url, "AAPL", 100.0)
    broker = make_broker(db_url, clock, redis_url)
    account_id, _ = funded_account(broker, clock, "150")
    outcomes = race(
        [broker], lambda b, i: b.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))
    )
    assert outcomes.count("ok") == 1 and outcomes.count("insufficient_buying_power") == THREADS - 1
    with pytest.raises(Rejected):
        broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))
