"""Demo accounts of `clera serve` on the real paper ledger: opened, funded by ACH, bought, never twice."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from paper_support import MON_MORNING, make_broker, set_price, sqlite_url

from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from engine.clock import ManualClock
from gateway import demo

TUE_MORNING = MON_MORNING + dt.timedelta(days=1)


def test_demo_accounts_reach_their_holdings_once(tmp_path: Path, redis_url: str) -> None:
    holdings = demo.demo_holdings(None)
    symbols = {p.symbol for h in holdings for p in h.positions}
    for i, symbol in enumerate(sorted(symbols)):
        set_price(redis_url, symbol, 100.0 + i, 99.0 + i)
    prices = RedisPriceReader(redis_url)

    def price_of(symbol: str) -> float | None:
        last = prices.last(symbol)
        return None if last is None else last.last

    clock = ManualClock(MON_MORNING)
    broker = make_broker(sqlite_url(tmp_path), clock, redis_url)
    store = SqlStore(Database(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()

    ids = demo.create_demo_accounts(store, broker, holdings)
    assert len(ids) == len(holdings) and sorted(broker.list_account_ids()) == sorted(ids)
    assert all(store.owner_of(i) == demo.DEMO_USER for i in ids)
    assert demo.create_demo_accounts(store, broker, holdings) == ids  # a restart creates nothing new
    pairs = demo.demo_targets(store, holdings)
    assert sorted(t.account_id for _, t in pairs) == sorted(h.account_id for h in holdings)

    done = {account_id: demo.converge(broker, account_id, target, price_of) for account_id, target in pairs}
    assert not any(done[a] for a, t in pairs if t.positions)  # Monday: deposits sent, nothing bought yet
    clock.set(TUE_MORNING)  # the deposits clear at the next open; the buys go in and fill
    for _ in range(3):
        done = {account_id: demo.converge(broker, account_id, target, price_of) for account_id, target in pairs}
    assert all(done.values())
    for account_id, target in pairs:
        held = {p.symbol: p.qty for p in broker.list_positions(account_id)}
        assert held == {p.symbol: p.qty for p in target.positions}
        transfers = broker.list_transfers(account_id)
        assert len(transfers) <= 1 and all(t.direction == "INCOMING" for t in transfers)  # never funded twice
        assert len(transfers) == 1  # every demo account is funded, the cash-only one too
        assert broker.get_account(account_id).cash >= target.cash
