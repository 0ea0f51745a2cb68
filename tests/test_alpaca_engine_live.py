"""The realtime engine with CLERA_BROKER=alpaca: real topology on local Ray, AlpacaBroker (alpaca-py)
against the spec-validating Broker API stand-in, the store in a SQLite file, real Redis.

The accounts the shards value are the ones the store knows. What Alpaca changes on its own (a
deposit clearing) or through a client that announces nothing reaches `portfolio:last:{account}` at
the scheduled re-sync; an order placed through an AlpacaBroker with the change hook reaches it
right away (the re-sync period is an hour there, so only the hook can have brought it). Accounts
opened while the engine runs join too.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from conftest import RAY_SECRETS
from paper_support import BANK, application
from realtime_support import engine_settings, eventually, replay_of, replay_prices, running_engine
from standins.alpaca_broker_api import AlpacaBrokerStandIn

from brokerage.alpaca_broker import AlpacaBroker
from brokerage.models import OrderRequest
from brokerage.positions import HoldingsNotifier
from brokerage.store_factory import store_from_settings
from engine import pubsub
from engine.config import Settings
from engine.feeds.replay import ReplayFeed
from engine.types import PortfolioSnapshot

KEY, SECRET = RAY_SECRETS["BROKER_API_KEY"], RAY_SECRETS["BROKER_SECRET_KEY"]  # what the Ray workers have
DEADLINE_S = 90.0  # engine start on a busy 2-core machine, then a re-sync


def alpaca_engine(api: AlpacaBrokerStandIn, redis_url: str, tmp_path: Path, resync_s: float) -> Settings:
    return engine_settings(
        redis_url, tmp_path, [], CLERA_POSITIONS="broker", CLERA_BROKER="alpaca", BROKER_API_KEY=KEY,
        BROKER_SECRET_KEY=SECRET, CLERA_ALPACA_BROKER_URL=api.url, CLERA_ALPACA_RESYNC_S=str(resync_s),
    )


def open_funded(broker: AlpacaBroker, api: AlpacaBrokerStandIn, email: str, cash: str) -> tuple[str, str]:
    """A new Alpaca account with `cash` deposited and cleared; (account id, bank relationship id)."""
    account = broker.create_account(application(email))
    rel = broker.create_ach_relationship(account.id, BANK)
    api.complete_transfer(broker.create_transfer(account.id, rel.id, Decimal(cash), "INCOMING").id)
    return account.id, rel.id


def correct(snap: PortfolioSnapshot, cash: str, qty: dict[str, str], feed: ReplayFeed) -> bool:
    """The snapshot holds Alpaca's cash and quantities, valued at the replay's prices.

    Alpaca's fills are dated today while the replayed session is in 2012, so every share counts as
    held since that session's start: the day change is qty x (last - previous close).
    """
    held = {p.symbol: p.qty for p in snap.positions}
    if snap.cash != pytest.approx(float(cash)) or held != pytest.approx({s: float(q) for s, q in qty.items()}):
        return False
    prices = replay_prices(feed, snap) if qty else {}  # no position, no tick: no session to price at
    total = float(cash) + sum(float(q) * prices[s][0] for s, q in qty.items())
    day = sum(float(q) * (prices[s][0] - prices[s][1]) for s, q in qty.items())
    return snap.total_value == pytest.approx(total, abs=0.006) and snap.day_change == pytest.approx(day, abs=0.006)


async def reaches(redis_url: str, account_id: str, cash: str, qty: dict[str, str], feed: ReplayFeed, what: str) -> None:
    """Wait until `portfolio:last:{account_id}` shows these holdings correctly valued."""
    client = pubsub.connect(redis_url)

    async def shown() -> bool:
        snap = (await pubsub.read_last_snapshots(client, [account_id])).get(account_id)
        return snap is not None and correct(snap, cash, qty, feed)

    try:
        await eventually(shown, what, timeout=DEADLINE_S)
    finally:
        await client.aclose()


@pytest.mark.usefixtures("ray_session")
async def test_alpaca_holdings_and_changes_reach_the_engine_at_the_scheduled_resync(
    tmp_path: Path, redis_url: str
) -> None:
    with AlpacaBrokerStandIn(KEY, SECRET) as api:
        settings = alpaca_engine(api, redis_url, tmp_path, resync_s=1.0)
        broker = AlpacaBroker(settings)  # no change hook: only the schedule can carry these changes
        store = store_from_settings(settings)
        feed = replay_of(settings)
        api.set_price("AAPL", "100.00")
        api.set_price("MSFT", "50.00")
        ada, ada_bank = open_funded(broker, api, "ada@example.com", "1000.00")
        broker.submit_order(ada, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(3)))
        store.add_account("user-ada", ada, status="active")
        _stranger, _ = open_funded(broker, api, "stranger@example.com", "500.00")  # not ours: not in the store

        with running_engine(settings, redis_url) as topo:
            await reaches(redis_url, ada, "700.00", {"AAPL": "3"}, feed, "Alpaca's holdings in portfolio:last")

            broker.submit_order(ada, OrderRequest(symbol="AAPL", side="sell", qty=Decimal(1)))
            broker.submit_order(ada, OrderRequest(symbol="MSFT", side="buy", notional=Decimal("100.00")))
            await reaches(redis_url, ada, "700.00", {"AAPL": "2", "MSFT": "2"}, feed, "fills made at Alpaca")

            deposit = broker.create_transfer(ada, ada_bank, Decimal("250.50"), "INCOMING")
            api.complete_transfer(deposit.id)  # clears at Alpaca: nobody on our side hears of it
            await reaches(redis_url, ada, "950.50", {"AAPL": "2", "MSFT": "2"}, feed, "a deposit cleared at Alpaca")

            bea, _ = open_funded(broker, api, "bea@example.com", "300.00")  # opened while the engine runs
            broker.submit_order(bea, OrderRequest(symbol="MSFT", side="buy", qty=Decimal("1.5")))
            store.add_account("user-bea", bea)
            await reaches(redis_url, bea, "225.00", {"MSFT": "1.5"}, feed, "an account opened since the start")

            held = sorted([a for shard in topo.portfolio_shards for a in await shard.accounts.remote()])
            assert held == sorted([ada, bea])  # the stranger's account at Alpaca is not ours to value


@pytest.mark.usefixtures("ray_session")
async def test_an_order_through_the_broker_reaches_the_engine_by_its_change_hook(
    tmp_path: Path, redis_url: str
) -> None:
    with AlpacaBrokerStandIn(KEY, SECRET) as api:
        settings = alpaca_engine(api, redis_url, tmp_path, resync_s=3600.0)
        notifier = HoldingsNotifier(redis_url)
        broker = AlpacaBroker(settings, on_change=notifier)  # as the gateway builds it
        store = store_from_settings(settings)
        feed = replay_of(settings)
        api.set_price("IBM", "20.00")
        ada, _ = open_funded(broker, api, "ada@example.com", "400.00")
        store.add_account("user-ada", ada, status="active")
        try:
            with running_engine(settings, redis_url) as topo:
                await reaches(redis_url, ada, "400.00", {}, feed, "a cash-only account in portfolio:last")

                broker.submit_order(ada, OrderRequest(symbol="IBM", side="buy", qty=Decimal(4)))
                await reaches(redis_url, ada, "320.00", {"IBM": "4"}, feed, "the order, announced by the hook")

                bea, _ = open_funded(broker, api, "bea@example.com", "60.00")
                store.add_account("user-bea", bea)
                broker.submit_order(bea, OrderRequest(symbol="IBM", side="buy", notional=Decimal("30.00")))
                await reaches(redis_url, bea, "30.00", {"IBM": "1.5"}, feed, "a new account's first order")
                assert (await topo.position_sync.status.remote())["announced"] >= 2
        finally:
            notifier.close()
