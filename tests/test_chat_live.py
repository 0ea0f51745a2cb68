"""The whole path a person takes: ask to buy in the chat, see the order, confirm, and watch the live
portfolio (the realtime engine on Ray, replaying real prices) show the new position."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from agent_support import agent_deps
from conftest import free_port
from gateway_support import ALICE, API_KEY, JWT_SECRET, Gateway, token
from paper_support import open_account
from realtime_support import engine_settings, eventually, running_engine

from agents.runner import AgentRunner
from agents.threads import ThreadRegistry
from brokerage.paper import PaperBroker
from brokerage.positions import HoldingsNotifier
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from engine import pubsub
from engine.clock import ManualClock, clock_from_settings
from gateway import routes_chat
from gateway.services import Services

UTC = dt.UTC


@pytest.mark.usefixtures("ray_session")
async def test_a_confirmed_chat_order_reaches_the_live_portfolio(tmp_path: Path, redis_url: str) -> None:
    settings = engine_settings(
        redis_url, tmp_path, [], CLERA_POSITIONS="broker", CLERA_REPLAY_START="2012-06-05",
        CLERA_PINNED_SYMBOLS="AAPL", BACKEND_API_KEY=API_KEY, SUPABASE_JWT_SECRET=JWT_SECRET,
    )
    db = Database.for_settings(None, settings.sqlite_path)
    setup = PaperBroker(db, ManualClock(dt.datetime(2012, 6, 4, 15, 0, tzinfo=UTC)), RedisPriceReader(redis_url),
                        settings=settings)
    account_id, rel_id = open_account(setup)
    setup.create_transfer(account_id, rel_id, Decimal("1000"), "INCOMING")  # lands at the replayed open
    store = SqlStore(db)
    store.migrate()
    store.ensure_user(ALICE)
    store.add_account(ALICE, account_id, status="active")
    notifier = HoldingsNotifier(redis_url)
    clock = clock_from_settings(settings)
    broker = PaperBroker(db, clock, RedisPriceReader(redis_url), settings=settings, on_change=notifier)
    registry = ThreadRegistry(db)
    registry.migrate()
    runner = AgentRunner(agent_deps(settings, broker, store, clock, redis_url), registry)
    gateway = Gateway(Services.in_process(settings, redis_url, store, broker, chat=runner), free_port(),
                      [routes_chat.routes])
    headers = {"X-API-Key": API_KEY, "Authorization": f"Bearer {token(ALICE)}"}
    hub = pubsub.PortfolioSubscriber(redis_url, interest_ttl_s=30)
    await hub.start()
    await gateway.start()
    try:
        with running_engine(settings, redis_url):
            listener = await hub.listen(account_id)

            async def funded() -> bool:
                snap = await listener.get(timeout=60)
                return snap.cash == pytest.approx(1000.0) and not snap.positions

            await eventually(funded, "the deposit on the live portfolio", timeout=60)
            async with httpx.AsyncClient(base_url=gateway.http, timeout=60) as http:
                turn = (await http.post("/api/chat", headers=headers,
                                        json={"message": "buy $250 of Apple", "accountId": account_id})).json()
                assert turn["interrupt"]["order"]["notional"] == "250.00"
                assert broker.list_orders(account_id, "all") == []
                done = await http.post("/api/chat/resume", headers=headers, json={
                    "threadId": turn["threadId"], "interruptId": turn["interrupt"]["id"], "decision": "confirm"})
                assert done.status_code == 200, done.text
                placed = done.json()["steps"][0]["result"]
                assert placed["status"] == "placed" and placed["order"]["status"] == "filled"

            async def holds_aapl() -> bool:
                snap = await listener.get(timeout=60)
                return [p.symbol for p in snap.positions] == ["AAPL"] and snap.cash == pytest.approx(750.0)

            await eventually(holds_aapl, "the confirmed chat order on the live portfolio", timeout=60)
            await listener.close()
    finally:
        await gateway.stop()
        await hub.close()
        notifier.close()
