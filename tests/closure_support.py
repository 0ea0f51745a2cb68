"""A closure world for the tests: the paper broker on a manual clock with prices in the real Redis,
the store and the closure records in one real database (SQLite file or PostgreSQL schema), and an
outbox folder for the emails. `crash_main` is the entry point of the subprocess the crash tests
SIGKILL right after the broker accepted a liquidation or a withdrawal."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from paper_support import open_account, set_price

from brokerage.closure.process import ClosureProcess
from brokerage.closure.records import ClosureStore
from brokerage.email import OutboxMailer
from brokerage.models import OrderRequest
from brokerage.paper import PaperBroker
from brokerage.paper_session import OnChange
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from engine.clock import ManualClock
from engine.config import Settings, load_settings

UTC = dt.UTC
USER = "user-ada"
PRICES = {"AAPL": 200.0, "MSFT": 400.0}
BUYS = {"AAPL": "100", "MSFT": "50"}  # $40,000 of the $120,000 balance


def ny_morning(day: dt.date) -> dt.datetime:
    """10:00 in New York (January: UTC-5), the market open on a trading day."""
    return dt.datetime.combine(day, dt.time(15, 0), UTC)


# Mon 2025-01-13 .. Fri 2025-01-17 trade; Mon 2025-01-20 is Martin Luther King Jr. Day.
MON = dt.date(2025, 1, 13)
TUE = dt.date(2025, 1, 14)
WED = dt.date(2025, 1, 15)


@dataclass
class World:
    settings: Settings
    db_url: str
    redis_url: str
    clock: ManualClock
    broker: PaperBroker
    store: SqlStore
    records: ClosureStore
    mailer: OutboxMailer
    process: ClosureProcess
    env: dict[str, str]

    def config(self) -> dict[str, Any]:
        """What a subprocess needs to build the same world."""
        return {
            "data_dir": str(self.settings.data_path),
            "db_url": self.db_url,
            "redis_url": self.redis_url,
            "now": self.clock.now().isoformat(),
            "env": dict(self.env),
        }

    @property
    def log_dir(self) -> Path:
        return self.settings.data_path / "logs" / "account_closures"


def make_world(
    data_dir: Path, redis_url: str, db_url: str | None = None, *, now: dt.datetime | None = None,
    clock: ManualClock | None = None, on_change: OnChange | None = None, **env: str,
) -> World:
    """The store, the closure records and the paper ledger share one database, as in production."""
    settings = load_settings({"CLERA_DATA_DIR": str(data_dir), "REDIS_URL": redis_url, **env}, env_file=None)
    url = db_url or f"sqlite:///{settings.sqlite_path}"
    db = Database(url)
    store = SqlStore(db)
    store.migrate()
    records = ClosureStore(db)
    records.migrate()
    clock = clock or ManualClock(now or ny_morning(MON))
    broker = PaperBroker(Database(url), clock, RedisPriceReader(redis_url), settings=settings, on_change=on_change)
    mailer = OutboxMailer(settings.data_path / "outbox")
    process = ClosureProcess(broker, records, store, clock, mailer, settings)
    return World(settings, url, redis_url, clock, broker, store, records, mailer, process, dict(env))


def set_prices(redis_url: str) -> None:
    for symbol, price in PRICES.items():
        set_price(redis_url, symbol, price)


def funded_account(
    world: World, amount: str = "120000", buys: dict[str, str] | None = None, email: str = "ada@example.com",
    user: str = USER,
) -> tuple[str, str]:
    """Opened and funded on Monday, positions bought on Tuesday; the clock is left on Wednesday 10:00.
    Returns (account id, relationship id); the store knows the account as `active`."""
    set_prices(world.redis_url)
    world.clock.set(ny_morning(MON))
    account_id, rel_id = open_account(world.broker, email)
    world.broker.create_transfer(account_id, rel_id, Decimal(amount), "INCOMING")
    world.clock.set(ny_morning(TUE))
    for symbol, qty in (BUYS if buys is None else buys).items():
        world.broker.submit_order(account_id, OrderRequest(symbol=symbol, side="buy", qty=Decimal(qty)))
    world.store.ensure_user(user, email)
    world.store.add_account(user, account_id, email=email, status="active")
    world.clock.set(ny_morning(WED))
    return account_id, rel_id


def sell_orders(world: World, account_id: str) -> list[Any]:
    return [o for o in world.broker.list_orders(account_id, "all") if o.side == "sell"]


def withdrawals(world: World, account_id: str) -> list[Any]:
    return [t for t in world.broker.list_transfers(account_id) if t.direction == "OUTGOING"]


def ledger_count(db_url: str, sql: str, params: tuple[Any, ...] = ()) -> int:
    db = Database(db_url)
    try:
        row = db.fetchone(sql, params)
        return int(next(iter(row.values()))) if row else 0
    finally:
        db.close()


# --- the crash subprocess ------------------------------------------------------------------------
COUNTS = {
    "sell": "SELECT COUNT(*) AS n FROM paper_orders WHERE account_id = ? AND side = 'sell'",
    "withdraw": "SELECT COUNT(*) AS n FROM paper_transfers WHERE account_id = ? AND direction = 'OUTGOING'",
}


def crash_main() -> None:
    """argv[1]: JSON {config, account_id, action ('initiate' or 'advance'), rel_id, kill_on ('sell'/'withdraw')}.

    Builds the world with a broker whose `on_change` hook (called right after the ledger committed
    a change) SIGKILLs this process as soon as the ledger holds a new sell order or withdrawal: the
    broker has accepted the call, the closure record has not recorded it yet."""
    job = json.loads(sys.argv[1])
    cfg = job["config"]
    account_id = job["account_id"]
    sql = COUNTS[job["kill_on"]]
    before = ledger_count(cfg["db_url"], sql, (account_id,))

    def killer(ids: list[str]) -> None:
        if ledger_count(cfg["db_url"], sql, (account_id,)) > before:
            os.kill(os.getpid(), signal.SIGKILL)

    world = make_world(
        Path(cfg["data_dir"]), cfg["redis_url"], cfg["db_url"], now=dt.datetime.fromisoformat(cfg["now"]),
        on_change=killer, **cfg["env"],
    )
    if job["action"] == "initiate":
        world.process.initiate(account_id, USER, job["rel_id"])
    else:
        world.process.advance(account_id)
    print("NOT KILLED", flush=True)
    sys.exit(3)
