"""The paper ledger and the realtime engine on the same replayed clock, with nobody reading accounts.

Two things no request triggers: a deposit landing when the replayed market opens (PositionSync's
ledger stepper wakes at that moment, the ledger announces the account, the shard reloads it), and a first buy of a
symbol nobody held yet (it fills because pinned symbols keep `price:{SYMBOL}` written).
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import redis
from paper_support import open_account
from realtime_support import engine_settings, eventually, running_engine

from brokerage.models import OrderRequest
from brokerage.paper import PaperBroker
from brokerage.paper_rules import next_open_after
from brokerage.positions import HoldingsNotifier
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from engine import pubsub
from engine.clock import ManualClock, clock_from_settings
from engine.subscriptions import shard_of
from engine.types import LastPrice

UTC = dt.UTC
# The replayed world starts on Tue 2012-06-05; each replayed day lasts SESSION_S seconds of wall time.
SESSION_S = 30


@pytest.mark.usefixtures("ray_session")
async def test_a_deposit_lands_at_the_replayed_open_and_reaches_the_live_portfolio(
    tmp_path: Path, redis_url: str
) -> None:
    settings = engine_settings(
        redis_url, tmp_path, [], CLERA_POSITIONS="broker", CLERA_REPLAY_START="2012-06-05",
        CLERA_REPLAY_SESSION_SECONDS=str(SESSION_S),
    )
    setup = PaperBroker(Database.for_settings(None, settings.sqlite_path),
                        ManualClock(dt.datetime(2012, 6, 5, 15, 0, tzinfo=UTC)), RedisPriceReader(redis_url),
                        settings=settings)
    account_id, rel_id = open_account(setup)
    clock = clock_from_settings(settings)
    notifier = HoldingsNotifier(redis_url)
    broker = PaperBroker(Database.for_settings(None, settings.sqlite_path), clock, RedisPriceReader(redis_url),
                         settings=settings, on_change=notifier)  # as the gateway builds it

    hub = pubsub.PortfolioSubscriber(redis_url, interest_ttl_s=30)
    await hub.start()
    with running_engine(settings, redis_url):
        listener = await hub.listen(account_id)
        first = await listener.get(timeout=60)  # a new subscriber of a quiet account gets a snapshot too
        assert first.cash == 0.0

        # The deposit is made once the engine runs (however long that took), when the next replayed
        # open is at least a third of a replayed day away: time for the engine to show it not landed.
        async def open_far_enough() -> bool:
            return clock.wall_time_at(next_open_after(clock.now())) - time.time() >= SESSION_S / 3

        await eventually(open_far_enough, "the replay far enough from its next open", timeout=SESSION_S * 2)
        transfer = broker.create_transfer(account_id, rel_id, Decimal("1500.25"), "INCOMING")
        due = broker.db.fetchone("SELECT complete_at FROM paper_transfers WHERE id = ?", (transfer.id,))
        landing = clock.wall_time_at(dt.datetime.fromtimestamp(due["complete_at"], UTC))
        taken: list[tuple[float, float]] = []  # (wall time a snapshot was taken, its cash)

        async def landed() -> bool:
            snap = await listener.get(timeout=SESSION_S * 2)
            taken.append((time.time(), snap.cash))
            return snap.cash == pytest.approx(1500.25)

        await eventually(landed, "the deposit on the live portfolio", timeout=SESSION_S * 3)
        before_open = [cash for at, cash in taken if at < landing]
        assert before_open, "no snapshot between the deposit and the replayed open"
        assert set(before_open) == {0.0}, "the deposit must not count before the replayed open"
        assert taken[-1][0] >= landing
        assert broker.get_transfer(account_id, transfer.id).status == "COMPLETE"
        await listener.close()
    await hub.close()
    notifier.close()


@pytest.mark.usefixtures("ray_session")
async def test_a_first_buy_of_a_pinned_symbol_fills_and_shows_live(tmp_path: Path, redis_url: str) -> None:
    settings = engine_settings(
        redis_url, tmp_path, [], CLERA_POSITIONS="broker", CLERA_REPLAY_START="2012-06-05",
        CLERA_PINNED_SYMBOLS="AAPL",
    )
    setup = PaperBroker(Database.for_settings(None, settings.sqlite_path),
                        ManualClock(dt.datetime(2012, 6, 4, 15, 0, tzinfo=UTC)), RedisPriceReader(redis_url),
                        settings=settings)
    account_id, rel_id = open_account(setup)
    setup.create_transfer(account_id, rel_id, Decimal("1000"), "INCOMING")  # complete at Tuesday's open
    notifier = HoldingsNotifier(redis_url)
    broker = PaperBroker(Database.for_settings(None, settings.sqlite_path), clock_from_settings(settings),
                         RedisPriceReader(redis_url), settings=settings, on_change=notifier)
    client = redis.Redis.from_url(redis_url)
    hub = pubsub.PortfolioSubscriber(redis_url, interest_ttl_s=30)
    await hub.start()
    with running_engine(settings, redis_url) as topo:
        assert "AAPL" in await topo.symbol_shards[0].symbols.remote()  # pinned, though nobody holds it

        async def priced() -> bool:
            return client.get("price:AAPL") is not None

        await eventually(priced, "price:AAPL written for a symbol nobody holds", timeout=60)
        price = msgspec.json.decode(client.get("price:AAPL"), type=LastPrice)
        assert (price.session, price.source) == ("2012-06-05", "replay")

        listener = await hub.listen(account_id)
        order = broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", notional=Decimal("250")))
        assert order.status == "filled"

        async def holds_aapl() -> bool:
            snap = await listener.get(timeout=60)
            return [p.symbol for p in snap.positions] == ["AAPL"] and snap.cash == pytest.approx(750.0)

        await eventually(holds_aapl, "the first buy on the live portfolio", timeout=60)
        await listener.close()
    await hub.close()
    notifier.close()
    client.close()


@pytest.mark.usefixtures("ray_session")
async def test_a_change_nobody_announced_while_the_listener_was_down_is_picked_up(
    tmp_path: Path, redis_url: str
) -> None:
    """PositionSync reloads everything whenever it resubscribes, not only at its first start."""
    settings = engine_settings(redis_url, tmp_path, [], CLERA_POSITIONS="broker", CLERA_REPLAY_START="2012-06-05")
    quiet = PaperBroker(Database.for_settings(None, settings.sqlite_path),
                        ManualClock(dt.datetime(2012, 6, 5, 15, 0, tzinfo=UTC)), RedisPriceReader(redis_url),
                        settings=settings)  # no change hook: what it does is announced to nobody
    client = redis.Redis.from_url(redis_url)
    with running_engine(settings, redis_url) as topo:
        account_id, _ = open_account(quiet)
        shard = topo.portfolio_shards[shard_of(account_id, settings.portfolio_shards)]
        assert account_id not in await shard.accounts.remote()  # nobody told the engine

        db = client.connection_pool.connection_kwargs.get("db", 0)
        listeners = [c["id"] for c in client.client_list(_type="pubsub") if int(c["db"]) == db]
        assert listeners and all(client.client_kill_filter(_id=c) == 1 for c in listeners)

        async def loaded() -> bool:
            return account_id in await shard.accounts.remote()

        await eventually(loaded, "the unannounced account loaded after the listener resubscribed", timeout=60)
    client.close()
