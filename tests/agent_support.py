"""An agent world for the chat tests: a paper broker on a manual 2012 clock, real prices from the
shipped data in the real Redis, a funded account per person, and the gateway with the chat routes
served by the in-process runner under a real uvicorn."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from conftest import free_port
from gateway_support import ALICE, API_KEY, BOB, Gateway, make_settings, token
from paper_support import open_account, set_price

from agents.deps import AgentDeps
from agents.history import OfflineHistory
from agents.llm.offline import OfflineChatModel
from agents.runner import AgentRunner
from agents.symbols import default_resolver
from agents.threads import ThreadRegistry
from brokerage.closure.process import ClosureProcess
from brokerage.closure.records import ClosureStore
from brokerage.company_profiles import load_default_company_profiles
from brokerage.email import OutboxMailer
from brokerage.models import OrderRequest
from brokerage.paper import PaperBroker
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from engine.clock import ManualClock
from engine.config import Settings
from engine.prices_data import load_price_data
from gateway import routes_chat, routes_core
from gateway.app import default_providers
from gateway.services import Services

UTC = dt.UTC
# Mon 2012-06-11 and Tue 2012-06-12 are trading days; 15:00 UTC is 11:00 in New York, market open.
MONDAY = dt.datetime(2012, 6, 11, 15, 0, tzinfo=UTC)
TUESDAY = dt.datetime(2012, 6, 12, 15, 0, tzinfo=UTC)
PRICE_DAY = dt.date(2012, 6, 11)
SYMBOLS = ("AAPL", "MSFT", "IBM", "GOOG", "FB")


def real_close(symbol: str, day: dt.date = PRICE_DAY) -> tuple[float, float]:
    data = load_price_data()
    close, prev = data.close_on(symbol, day), data.prev_close(symbol, day)
    assert close is not None and prev is not None
    return close, prev


def set_real_prices(redis_url: str, day: dt.date = PRICE_DAY) -> None:
    for symbol in SYMBOLS:
        close, prev = real_close(symbol, day)
        set_price(redis_url, symbol, close, prev)


@dataclass
class AgentWorld:
    gateway: Gateway
    http: httpx.AsyncClient
    clock: ManualClock
    broker: PaperBroker
    store: SqlStore
    runner: AgentRunner
    settings: Settings
    redis_url: str
    accounts: dict[str, str]

    def headers(self, user: str) -> dict[str, str]:
        return {"X-API-Key": API_KEY, "Authorization": f"Bearer {token(user)}"}

    async def chat(
        self, user: str, message: str, thread: str | None = None, account: str | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"message": message, "accountId": account or self.accounts[user]}
        if thread is not None:
            body["threadId"] = thread
        return await self.http.post("/api/chat", json=body, headers=self.headers(user))

    async def resume(self, user: str, thread: str, interrupt: str, decision: str, **edit: str) -> httpx.Response:
        body: dict[str, Any] = {"threadId": thread, "interruptId": interrupt, "decision": decision}
        if edit:
            body["edit"] = edit
        return await self.http.post("/api/chat/resume", json=body, headers=self.headers(user))

    async def restart(self) -> None:
        """A new runner and a new gateway on the same port and databases: what a redeploy looks like."""
        await self.gateway.stop()
        self.runner = AgentRunner(self.runner.deps, self.runner.registry)
        services = Services.in_process(self.settings, self.redis_url, self.store, self.broker, chat=self.runner)
        self.gateway = Gateway(services, self.gateway.port, self.gateway.providers)
        await self.gateway.start()

    async def ok(self, response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        return response.json()


def agent_deps(settings: Settings, broker: PaperBroker, store: SqlStore, clock: ManualClock, redis_url: str,
               model: Any = None) -> AgentDeps:
    resolver = default_resolver(SYMBOLS)
    return AgentDeps(
        settings=settings, broker=broker, store=store, prices=RedisPriceReader(redis_url), history=OfflineHistory(),
        clock=clock, resolver=resolver, model=model if model is not None else OfflineChatModel(resolver=resolver),
    )


def fund(broker: PaperBroker, clock: ManualClock, email: str, amount: str, buys: dict[str, str]) -> str:
    """An account opened and funded on Monday, holding `buys` (symbol -> shares) by Tuesday's open."""
    clock.set(MONDAY)
    account_id, rel_id = open_account(broker, email)
    broker.create_transfer(account_id, rel_id, Decimal(amount), "INCOMING")
    clock.set(TUESDAY)
    for symbol, qty in buys.items():
        broker.submit_order(account_id, OrderRequest(symbol=symbol, side="buy", qty=Decimal(qty)))
    return account_id


def paper_world(
    tmp_path: Path, redis_url: str, **env: str
) -> tuple[Settings, Database, SqlStore, ManualClock, PaperBroker]:
    """The store with the offline company profiles, the real prices in Redis, a paper ledger on Monday."""
    settings = make_settings(redis_url, tmp_path, **env)
    db = Database.for_settings(settings.database_url, settings.sqlite_path)
    store = SqlStore(db)
    store.migrate()
    load_default_company_profiles(store)
    set_real_prices(redis_url)
    clock = ManualClock(MONDAY)
    broker = PaperBroker(Database(f"sqlite:///{tmp_path / 'ledger.db'}"), clock, RedisPriceReader(redis_url),
                         settings=settings)
    return settings, db, store, clock, broker


@contextlib.asynccontextmanager
async def agent_world(tmp_path: Path, redis_url: str, model: Any = None, **env: str) -> AsyncIterator[AgentWorld]:
    settings, db, store, clock, broker = paper_world(tmp_path, redis_url, **env)
    accounts = {
        ALICE: fund(broker, clock, "alice@example.com", "20000", {"AAPL": "10", "MSFT": "50"}),
        BOB: fund(broker, clock, "bob@example.com", "5000", {"IBM": "5"}),
    }
    for user, account in accounts.items():
        store.ensure_user(user)
        store.add_account(user, account, status="active")
    registry = ThreadRegistry(db)
    registry.migrate()
    runner = AgentRunner(agent_deps(settings, broker, store, clock, redis_url, model), registry)
    services = Services.in_process(settings, redis_url, store, broker, chat=runner)
    gateway = Gateway(services, free_port(), [routes_core.routes, routes_chat.routes])
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.http, timeout=60) as http:
            yield AgentWorld(gateway, http, clock, broker, store, runner, settings, redis_url, accounts)
    finally:
        await gateway.stop()


def whole_app(
    tmp_path: Path, redis_url: str, settings: Settings, db: Database, store: SqlStore, clock: ManualClock,
    broker: PaperBroker,
) -> Gateway:
    """Every route set of the app on a paper world, with the in-process chat runner and closure process
    (not started): what a client of the whole API meets."""
    registry, records = ThreadRegistry(db), ClosureStore(db)
    registry.migrate()
    records.migrate()
    runner = AgentRunner(agent_deps(settings, broker, store, clock, redis_url), registry)
    closure = ClosureProcess(broker, records, store, clock, OutboxMailer(tmp_path / "outbox"), settings)
    services = Services.in_process(settings, redis_url, store, broker, chat=runner, closure=closure)
    return Gateway(services, free_port(), default_providers())
